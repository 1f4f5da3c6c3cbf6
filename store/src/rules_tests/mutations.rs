//! Each mutation kind: valid, and every way it is invalid.

use crate::error::Reason;
use crate::{CaseStatus, Map, Mutation, ScopeId, ScopeStatus, TokenStatus, Value};

use super::*;

#[test]
fn set_ctx_replaces_and_requires_a_map() {
    let mut case = new_case();
    commit(&mut case, vec![Mutation::set_key("old", 1)]);
    let ctx = Map::from([("new".to_owned(), Value::from(2))]);
    commit(
        &mut case,
        vec![Mutation::SetCtx {
            ctx: Value::Map(ctx.clone()),
        }],
    );
    assert_eq!(case.state().ctx, ctx);
    let reasons = reject(
        &mut case,
        vec![Mutation::SetCtx {
            ctx: Value::from(3),
        }],
    );
    assert_eq!(reasons, [(0, Reason::CtxNotMap { found: "integer" })]);
}

#[test]
fn patch_ctx_merges_top_level_and_checks_keys() {
    let mut case = new_case();
    commit(
        &mut case,
        vec![Mutation::set_key("a", 1), Mutation::set_key("draft", true)],
    );
    commit(
        &mut case,
        vec![Mutation::PatchCtx {
            set: Map::from([("b".to_owned(), Value::from(2))]),
            remove: vec!["draft".into(), "never-there".into()],
        }],
    );
    let keys: Vec<&String> = case.state().ctx.keys().collect();
    assert_eq!(keys, ["a", "b"]);

    let long = "k".repeat(257);
    let reasons = reject(
        &mut case,
        vec![
            Mutation::set_key("", 1),
            Mutation::set_key(long.clone(), 1),
            Mutation::PatchCtx {
                set: Map::from([("x".to_owned(), Value::Null)]),
                remove: vec!["x".into()],
            },
        ],
    );
    assert_eq!(reasons[0], (0, Reason::KeyEmpty));
    assert!(matches!(
        &reasons[1],
        (
            1,
            Reason::KeyTooLong {
                length: 257,
                limit: 256,
                ..
            }
        )
    ));
    assert_eq!(
        reasons[2],
        (2, Reason::KeySetAndRemoved { key: "x".into() })
    );
}

#[test]
fn values_nested_too_deeply_are_refused() {
    let mut deep = Value::Null;
    for _ in 0..150 {
        deep = Value::Array(vec![deep]);
    }
    let mut case = new_case();
    let reasons = reject(&mut case, vec![Mutation::SetMetadata { value: deep }]);
    assert!(matches!(
        reasons[..],
        [(0, Reason::ValueTooDeep { limit: 100, .. })]
    ));
}

#[test]
fn add_token_needs_unused_id_and_active_scope() {
    let mut case = new_case();
    commit(
        &mut case,
        vec![Mutation::add_token(tid("t1"), 3, ScopeId::root(), "v")],
    );
    let token = &case.state().tokens[&tid("t1")];
    assert_eq!(
        (token.ip, token.status, &token.scope),
        (3, TokenStatus::Active, &ScopeId::root())
    );

    commit(
        &mut case,
        vec![
            Mutation::EnterScope {
                id: sid("dead"),
                parent: ScopeId::root(),
            },
            Mutation::CancelScope { id: sid("dead") },
        ],
    );
    let reasons = reject(
        &mut case,
        vec![
            Mutation::add_token(tid("t1"), 0, ScopeId::root(), Value::Null),
            Mutation::add_token(tid("t2"), 0, sid("nowhere"), Value::Null),
            Mutation::add_token(tid("t3"), 0, sid("dead"), Value::Null),
        ],
    );
    assert_eq!(
        reasons,
        [
            (0, Reason::TokenExists { id: "t1".into() }),
            (
                1,
                Reason::ScopeNotFound {
                    id: "nowhere".into()
                }
            ),
            (2, Reason::ScopeCancelled { id: "dead".into() }),
        ]
    );
}

#[test]
fn remove_token_needs_an_existing_token() {
    let mut case = new_case();
    commit(
        &mut case,
        vec![Mutation::add_token(
            tid("t1"),
            0,
            ScopeId::root(),
            Value::Null,
        )],
    );
    commit(&mut case, vec![Mutation::RemoveToken { id: tid("t1") }]);
    assert!(case.state().tokens.is_empty());
    let reasons = reject(&mut case, vec![Mutation::RemoveToken { id: tid("t1") }]);
    assert_eq!(reasons, [(0, Reason::TokenNotFound { id: "t1".into() })]);
}

#[test]
fn update_token_patches_given_fields_only() {
    let mut case = new_case();
    commit(
        &mut case,
        vec![
            Mutation::EnterScope {
                id: sid("s1"),
                parent: ScopeId::root(),
            },
            Mutation::add_token(tid("t1"), 1, ScopeId::root(), "keep"),
        ],
    );
    let mut change = update("t1");
    change.ip = Some(7);
    change.scope = Some(sid("s1"));
    commit(&mut case, vec![Mutation::UpdateToken(change)]);
    let token = &case.state().tokens[&tid("t1")];
    assert_eq!(
        (token.ip, &token.scope, &token.value),
        (7, &sid("s1"), &Value::from("keep"))
    );

    let mut to_null = update("t1");
    to_null.value = Some(Value::Null);
    commit(&mut case, vec![Mutation::UpdateToken(to_null)]);
    assert_eq!(case.state().tokens[&tid("t1")].value, Value::Null);
}

#[test]
fn update_token_status_moves_only_from_active() {
    let mut case = new_case();
    commit(
        &mut case,
        vec![
            Mutation::add_token(tid("a"), 0, ScopeId::root(), Value::Null),
            Mutation::add_token(tid("b"), 0, ScopeId::root(), Value::Null),
        ],
    );
    commit(
        &mut case,
        vec![
            status_update("a", TokenStatus::Complete),
            status_update("b", TokenStatus::Cancelled),
        ],
    );
    let mut bad_scope = update("a");
    bad_scope.scope = Some(sid("missing"));
    let reasons = reject(
        &mut case,
        vec![
            status_update("a", TokenStatus::Active),
            status_update("b", TokenStatus::Complete),
            status_update("ghost", TokenStatus::Complete),
            Mutation::UpdateToken(bad_scope),
        ],
    );
    assert_eq!(
        reasons,
        [
            (
                0,
                Reason::TokenStatusChange {
                    id: "a".into(),
                    from: "complete",
                    to: "active"
                }
            ),
            (
                1,
                Reason::TokenStatusChange {
                    id: "b".into(),
                    from: "cancelled",
                    to: "complete"
                }
            ),
            (2, Reason::TokenNotFound { id: "ghost".into() }),
            (
                3,
                Reason::ScopeNotFound {
                    id: "missing".into()
                }
            ),
        ]
    );

    let mut active = new_case();
    commit(
        &mut active,
        vec![Mutation::add_token(
            tid("c"),
            0,
            ScopeId::root(),
            Value::Null,
        )],
    );
    let reasons = reject(&mut active, vec![status_update("c", TokenStatus::Active)]);
    assert!(matches!(
        reasons[..],
        [(0, Reason::TokenStatusChange { .. })]
    ));
}

#[test]
fn enter_scope_needs_unused_id_and_active_parent() {
    let mut case = nested_case();
    assert_eq!(case.state().scopes[&sid("s2")].entered_at_ms, 1000);
    commit(&mut case, vec![Mutation::CancelScope { id: sid("s3") }]);
    let reasons = reject(
        &mut case,
        vec![
            Mutation::EnterScope {
                id: sid("s1"),
                parent: ScopeId::root(),
            },
            Mutation::EnterScope {
                id: ScopeId::root(),
                parent: ScopeId::root(),
            },
            Mutation::EnterScope {
                id: sid("x"),
                parent: sid("nope"),
            },
            Mutation::EnterScope {
                id: sid("y"),
                parent: sid("s3"),
            },
        ],
    );
    assert_eq!(
        reasons,
        [
            (0, Reason::ScopeExists { id: "s1".into() }),
            (1, Reason::ScopeExists { id: "root".into() }),
            (2, Reason::ScopeNotFound { id: "nope".into() }),
            (3, Reason::ScopeCancelled { id: "s3".into() }),
        ]
    );
}

#[test]
fn exit_scope_refused_with_active_token_child_scope_or_root() {
    let mut case = nested_case();
    let reasons = reject(
        &mut case,
        vec![
            Mutation::ExitScope {
                id: ScopeId::root(),
            },
            Mutation::ExitScope { id: sid("s2") },
            Mutation::ExitScope { id: sid("s3") },
            Mutation::ExitScope { id: sid("ghost") },
        ],
    );
    assert_eq!(
        reasons,
        [
            (0, Reason::ScopeIsRoot),
            (
                1,
                Reason::ScopeHasChildren {
                    id: "s2".into(),
                    child: "s3".into()
                }
            ),
            (
                2,
                Reason::ScopeHasActiveTokens {
                    id: "s3".into(),
                    token: "t3".into()
                }
            ),
            (3, Reason::ScopeNotFound { id: "ghost".into() }),
        ]
    );

    // Finish s3's token, then s3 can go, and its finished token goes with it.
    commit(
        &mut case,
        vec![
            status_update("t3", TokenStatus::Complete),
            Mutation::ExitScope { id: sid("s3") },
        ],
    );
    assert!(!case.state().scopes.contains_key(&sid("s3")));
    assert!(!case.state().tokens.contains_key(&tid("t3")));
    assert_eq!(case.state().check_invariants(), Ok(()));
}

#[test]
fn cancel_scope_cascades_through_nested_scopes() {
    let mut case = nested_case();
    commit(&mut case, vec![status_update("t2", TokenStatus::Complete)]);
    commit(&mut case, vec![Mutation::CancelScope { id: sid("s1") }]);
    let state = case.state();
    for scope in ["s1", "s2", "s3"] {
        assert_eq!(
            state.scopes[&sid(scope)].status,
            ScopeStatus::Cancelled,
            "{scope}"
        );
    }
    assert_eq!(state.scopes[&ScopeId::root()].status, ScopeStatus::Active);
    assert_eq!(state.tokens[&tid("t0")].status, TokenStatus::Active);
    assert_eq!(state.tokens[&tid("t1")].status, TokenStatus::Cancelled);
    // A finished token keeps its status.
    assert_eq!(state.tokens[&tid("t2")].status, TokenStatus::Complete);
    assert_eq!(state.tokens[&tid("t3")].status, TokenStatus::Cancelled);
    assert_eq!(state.check_invariants(), Ok(()));

    // Cancelled scopes can then be exited from the innermost out.
    commit(
        &mut case,
        vec![
            Mutation::ExitScope { id: sid("s3") },
            Mutation::ExitScope { id: sid("s2") },
            Mutation::ExitScope { id: sid("s1") },
        ],
    );
    assert_eq!(case.state().scopes.len(), 1);
    let reasons = reject(&mut case, vec![Mutation::CancelScope { id: sid("s1") }]);
    assert_eq!(reasons, [(0, Reason::ScopeNotFound { id: "s1".into() })]);
}

#[test]
fn step_count_metadata_and_case_status() {
    let mut case = new_case();
    commit(
        &mut case,
        vec![
            Mutation::IncrementStepCount,
            Mutation::IncrementStepCount,
            Mutation::SetMetadata {
                value: Value::from("m1"),
            },
        ],
    );
    assert_eq!(
        (case.state().step_count, &case.state().metadata),
        (2, &Value::from("m1"))
    );
    let reasons = reject(
        &mut case,
        vec![Mutation::SetCaseStatus {
            status: CaseStatus::Running,
        }],
    );
    assert_eq!(
        reasons,
        [(
            0,
            Reason::CaseStatusChange {
                from: "running",
                to: "running"
            }
        )]
    );
    commit(
        &mut case,
        vec![Mutation::SetCaseStatus {
            status: CaseStatus::Failed,
        }],
    );
    assert_eq!(case.state().status, CaseStatus::Failed);
}

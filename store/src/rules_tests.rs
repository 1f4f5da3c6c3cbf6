//! Guards the mutation rules of the specification: every kind valid and each invalid path,
//! sequential validation within a batch, all errors reported, nothing changed on failure,
//! the cancel cascade, `exit_scope` preconditions, terminal case status and closures.

use crate::validate::Reason;
use crate::{
    Case, CaseId, CaseStatus, CommitId, CommitMeta, Map, Mutation, PrepareError, ScopeId,
    ScopeStatus, TokenId, TokenStatus, TokenUpdate, Value,
};

fn tid(id: &str) -> TokenId {
    TokenId::new(id).unwrap()
}

fn sid(id: &str) -> ScopeId {
    ScopeId::new(id).unwrap()
}

fn meta(at: u64) -> CommitMeta {
    CommitMeta {
        commit_id: CommitId::generate(),
        committed_at_ms: at,
        writer: "test".into(),
    }
}

fn new_case() -> Case {
    Case::new(CaseId::new("case").unwrap())
}

/// Commits `mutations`, which must be valid.
fn commit(case: &mut Case, mutations: Vec<Mutation>) {
    for mutation in mutations {
        case.buffer(mutation);
    }
    let prepared = case
        .prepare_commit(meta(1000 + case.state().version))
        .unwrap();
    case.complete(prepared).unwrap();
}

/// Tries `mutations`, which must be invalid: returns the reasons by index and checks that the
/// case and its buffer were left as they were.
fn reject(case: &mut Case, mutations: Vec<Mutation>) -> Vec<(usize, Reason)> {
    let before = case.state().clone();
    let count = mutations.len();
    for mutation in mutations {
        case.buffer(mutation);
    }
    let error = case.prepare_commit(meta(5)).unwrap_err();
    assert_eq!(case.state(), &before, "state changed by a failed commit");
    assert_eq!(case.buffered(), count, "buffer not kept");
    case.rollback();
    assert_eq!(case.buffered(), 0);
    match error {
        PrepareError::Invalid(errors) => errors
            .0
            .into_iter()
            .map(|error| (error.index, error.reason))
            .collect(),
        other => panic!("expected validation errors, got {other:?}"),
    }
}

fn update(id: &str) -> TokenUpdate {
    TokenUpdate::new(tid(id))
}

fn status_update(id: &str, status: TokenStatus) -> Mutation {
    let mut update = update(id);
    update.status = Some(status);
    Mutation::UpdateToken(update)
}

/// root → s1 → s2 → s3, a token active in each of s1..s3 and one in root.
fn nested_case() -> Case {
    let mut case = new_case();
    commit(
        &mut case,
        vec![
            Mutation::EnterScope {
                id: sid("s1"),
                parent: ScopeId::root(),
            },
            Mutation::EnterScope {
                id: sid("s2"),
                parent: sid("s1"),
            },
            Mutation::EnterScope {
                id: sid("s3"),
                parent: sid("s2"),
            },
            Mutation::add_token(tid("t0"), 0, ScopeId::root(), Value::Null),
            Mutation::add_token(tid("t1"), 0, sid("s1"), Value::Null),
            Mutation::add_token(tid("t2"), 0, sid("s2"), Value::Null),
            Mutation::add_token(tid("t3"), 0, sid("s3"), Value::Null),
        ],
    );
    case
}

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

#[test]
fn a_finished_case_accepts_only_set_metadata() {
    for status in [CaseStatus::Done, CaseStatus::Failed, CaseStatus::Cancelled] {
        let mut case = nested_case();
        commit(&mut case, vec![Mutation::SetCaseStatus { status }]);
        let not_running = Reason::CaseNotRunning {
            status: status.as_str(),
        };
        let reasons = reject(
            &mut case,
            vec![
                Mutation::set_key("k", 1),
                Mutation::IncrementStepCount,
                Mutation::SetCaseStatus {
                    status: CaseStatus::Done,
                },
                Mutation::CancelScope { id: sid("s1") },
            ],
        );
        let indexes: Vec<usize> = reasons.iter().map(|(index, _)| *index).collect();
        assert_eq!(indexes, [0, 1, 2, 3]);
        assert!(reasons.iter().all(|(_, reason)| reason == &not_running));
        commit(
            &mut case,
            vec![Mutation::SetMetadata {
                value: Value::from("archived"),
            }],
        );
        assert_eq!(case.state().metadata, Value::from("archived"));
    }
}

#[test]
fn validation_is_sequential_within_a_batch() {
    let mut case = new_case();
    // Add then update the same token: valid.
    commit(
        &mut case,
        vec![
            Mutation::EnterScope {
                id: sid("s1"),
                parent: ScopeId::root(),
            },
            Mutation::add_token(tid("t1"), 0, sid("s1"), Value::Null),
            status_update("t1", TokenStatus::Complete),
        ],
    );
    // Remove then re-add: valid.
    commit(
        &mut case,
        vec![
            Mutation::RemoveToken { id: tid("t1") },
            Mutation::add_token(tid("t1"), 5, ScopeId::root(), Value::Null),
        ],
    );
    assert_eq!(case.state().tokens[&tid("t1")].ip, 5);
    // Add twice: the second is invalid; exit then use the scope: invalid.
    let reasons = reject(
        &mut case,
        vec![
            Mutation::add_token(tid("t2"), 0, ScopeId::root(), Value::Null),
            Mutation::add_token(tid("t2"), 0, ScopeId::root(), Value::Null),
            Mutation::ExitScope { id: sid("s1") },
            Mutation::add_token(tid("t3"), 0, sid("s1"), Value::Null),
        ],
    );
    assert_eq!(
        reasons,
        [
            (1, Reason::TokenExists { id: "t2".into() }),
            (3, Reason::ScopeNotFound { id: "s1".into() }),
        ]
    );
}

#[test]
fn failed_commit_keeps_version_state_and_buffer() {
    let mut case = nested_case();
    let version = case.state().version;
    let hash = case.last_event_hash();
    case.buffer(Mutation::set_key("fine", 1))
        .buffer(Mutation::RemoveToken { id: tid("ghost") });
    assert!(case.prepare_commit(meta(9)).is_err());
    assert_eq!(
        (
            case.state().version,
            case.last_event_hash(),
            case.buffered()
        ),
        (version, hash, 2)
    );
    assert!(!case.state().ctx.contains_key("fine"));
    // Fix by rolling back and buffering the valid part only.
    case.rollback();
    case.buffer(Mutation::set_key("fine", 1));
    let prepared = case.prepare_commit(meta(9)).unwrap();
    case.complete(prepared).unwrap();
    assert_eq!(case.state().version, version + 1);
}

#[test]
fn a_closure_that_panics_leaves_the_case_as_it_was() {
    let mut case = nested_case();
    let before = case.state().clone();
    case.buffer(Mutation::set_key("fine", 1))
        .buffer(Mutation::IncrementStepCount)
        .update_ctx(|_| panic!("a closure of the caller's fails"));
    let prepared = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        case.prepare_commit(meta(9))
    }));
    assert!(prepared.is_err(), "the panic reaches the caller");
    assert_eq!(case.state(), &before, "what was tried before it is undone");
    assert_eq!(case.buffered(), 3);
}

#[test]
fn limits_are_clear_errors() {
    let mut case = new_case().with_limits(crate::Limits {
        batch_mutations_max: 2,
        event_size_max_bytes: 300,
        ..crate::Limits::default()
    });
    for _ in 0..3 {
        case.buffer(Mutation::IncrementStepCount);
    }
    let error = case.prepare_commit(meta(1)).unwrap_err();
    assert_eq!(error, PrepareError::TooManyMutations { count: 3, limit: 2 });
    case.rollback();
    case.buffer(Mutation::set_key("blob", "x".repeat(400)));
    match case.prepare_commit(meta(1)) {
        Err(PrepareError::TooLarge { size, limit: 300 }) => assert!(size > 400),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert!(error.to_string().contains("limit of 2"));
    let mut writer = meta(1);
    writer.writer = String::new();
    case.rollback();
    assert!(matches!(
        case.prepare_commit(writer),
        Err(PrepareError::InvalidWriter(_))
    ));
}

#[test]
fn versions_timestamps_and_chain_advance_per_commit() {
    let mut case = new_case();
    let mut payloads = Vec::new();
    for at in [10, 20, 30] {
        case.buffer(Mutation::IncrementStepCount);
        let prepared = case.prepare_commit(meta(at)).unwrap();
        let expected_prev = case.last_event_hash();
        assert_eq!(prepared.event().prev_event_hash, expected_prev);
        let state_hash = prepared.event().state_hash;
        payloads.push(prepared.payload().to_vec());
        case.complete(prepared).unwrap();
        assert_eq!(state_hash, case.state().hash());
    }
    let state = case.state();
    assert_eq!(
        (state.version, state.created_at_ms, state.last_commit_at_ms),
        (3, 10, 30)
    );
    assert_eq!(case.last_event_hash(), crate::Hash::of(&payloads[2]));
}

#[test]
fn complete_refuses_a_stale_prepared_commit() {
    let mut case = new_case();
    case.buffer(Mutation::IncrementStepCount);
    let first = case.prepare_commit(meta(1)).unwrap();
    let stale = case.prepare_commit(meta(2)).unwrap();
    case.complete(first).unwrap();
    let before = case.state().clone();
    assert_eq!(case.complete(stale).unwrap_err().current, 1);
    assert_eq!(case.state(), &before);
}

#[test]
fn update_ctx_closure_resolves_to_an_equivalent_patch() {
    let mut case = new_case();
    commit(
        &mut case,
        vec![
            Mutation::set_key("count", 1),
            Mutation::set_key("draft", true),
            Mutation::set_key("same", 0),
        ],
    );
    case.buffer(Mutation::set_key("count", 5));
    case.update_ctx(|ctx| {
        // Sees the earlier mutation of the same batch.
        let Some(Value::Integer(count)) = ctx.get("count").cloned() else {
            panic!("count")
        };
        ctx.insert("count".into(), Value::Integer(count + 1));
        ctx.insert("added".into(), Value::from("yes"));
        ctx.remove("draft");
    });
    let prepared = case.prepare_commit(meta(50)).unwrap();
    let Mutation::PatchCtx { set, remove } = &prepared.event().mutations[1] else {
        panic!("closure did not resolve to patch_ctx")
    };
    let set_keys: Vec<&String> = set.keys().collect();
    assert_eq!(
        set_keys,
        ["added", "count"],
        "unchanged keys are not in the patch"
    );
    assert_eq!(set["count"], Value::from(6));
    assert_eq!(remove, &["draft".to_owned()]);

    // Replayed without the closure, the event data gives the same state.
    let mut replay = Case::from_parts(case.state().clone(), case.last_event_hash());
    let payload = prepared.payload().to_vec();
    case.complete(prepared).unwrap();
    replay.apply_payload(&payload).unwrap();
    assert_eq!(replay.state(), case.state());
    assert_eq!(case.state().ctx["count"], Value::from(6));
}

#[test]
fn update_token_closure_resolves_to_changed_fields() {
    let mut case = new_case();
    commit(
        &mut case,
        vec![Mutation::add_token(tid("t1"), 1, ScopeId::root(), "v")],
    );
    case.update_token(tid("t1"), |token| {
        token.ip += 1;
        token.status = TokenStatus::Complete;
    });
    case.update_token(tid("missing"), |token| token.ip = 0);
    case.update_token(tid("t1"), |token| token.id = TokenId::new("other").unwrap());
    let error = case.prepare_commit(meta(1)).unwrap_err();
    let PrepareError::Invalid(errors) = error else {
        panic!("{error:?}")
    };
    assert_eq!(errors.0.len(), 2);
    assert_eq!(
        errors.0[0].reason,
        Reason::TokenNotFound {
            id: "missing".into()
        }
    );
    assert!(matches!(errors.0[1].reason, Reason::TokenIdChanged { .. }));

    case.rollback();
    case.update_token(tid("t1"), |token| {
        token.ip += 1;
        token.status = TokenStatus::Complete;
    });
    let prepared = case.prepare_commit(meta(1)).unwrap();
    let mut expected = update("t1");
    expected.ip = Some(2);
    expected.status = Some(TokenStatus::Complete);
    assert_eq!(
        prepared.event().mutations,
        [Mutation::UpdateToken(expected)]
    );
}

#[test]
fn validation_errors_serialize_machine_readably() {
    let mut case = new_case();
    case.buffer(Mutation::RemoveToken { id: tid("ghost") });
    let PrepareError::Invalid(errors) = case.prepare_commit(meta(1)).unwrap_err() else {
        panic!("not a validation error")
    };
    let json = serde_json::to_value(&errors).unwrap();
    assert_eq!(
        json,
        serde_json::json!([{"index": 0, "kind": "remove_token", "code": "token_not_found", "id": "ghost"}])
    );
    assert_eq!(
        errors.to_string(),
        "1 invalid mutation(s): mutation 0 (remove_token): token \"ghost\" does not exist"
    );
}

/// Three committed payloads of one case, and the case that wrote them.
fn history() -> (Vec<Vec<u8>>, Case) {
    let mut case = new_case();
    let mut payloads = Vec::new();
    for batch in [
        vec![Mutation::set_key("a", 1)],
        vec![Mutation::add_token(
            tid("t1"),
            0,
            ScopeId::root(),
            Value::Null,
        )],
        vec![Mutation::IncrementStepCount],
    ] {
        for mutation in batch {
            case.buffer(mutation);
        }
        let prepared = case.prepare_commit(meta(7)).unwrap();
        payloads.push(prepared.payload().to_vec());
        case.complete(prepared).unwrap();
    }
    (payloads, case)
}

#[test]
fn fold_detects_dropped_reordered_forged_and_foreign_events() {
    use crate::{Event, FoldError, Hash};
    let (payloads, writer) = history();
    // Every history is folded twice, by the copying `apply_payload` and by the in-place
    // `Case::fold`: both reach the same state or stop with the same error.
    let fold = |order: &[&Vec<u8>]| {
        let mut case = new_case();
        let mut in_place = Ok(new_case());
        for payload in order {
            let step = case.apply_payload(payload).map(|_| ());
            in_place = in_place.and_then(|folded| folded.fold(payload).map(|(folded, _)| folded));
            assert_eq!(step.as_ref().err(), in_place.as_ref().err());
            step?;
        }
        let in_place = in_place.unwrap();
        assert_eq!(
            (in_place.state(), in_place.last_event_hash()),
            (case.state(), case.last_event_hash())
        );
        Ok::<Case, FoldError>(case)
    };
    assert_eq!(
        fold(&payloads.iter().collect::<Vec<_>>()).unwrap().state(),
        writer.state()
    );

    // Dropped: version 3 right after version 1.
    let dropped = fold(&[&payloads[0], &payloads[2]]).unwrap_err();
    assert_eq!(
        dropped,
        FoldError::VersionGap {
            expected: 2,
            found: 3
        }
    );

    // Altered: same version, another prev_event_hash.
    let mut forged = Event::decode(&payloads[1]).unwrap();
    forged.prev_event_hash = Hash::of(b"forged");
    let forged = forged.encode();
    assert!(matches!(
        fold(&[&payloads[0], &forged]),
        Err(FoldError::BrokenChain { .. })
    ));

    // Altered mutations with the original state hash.
    let mut altered = Event::decode(&payloads[2]).unwrap();
    altered.mutations.push(Mutation::IncrementStepCount);
    let altered = altered.encode();
    let error = fold(&[&payloads[0], &payloads[1], &altered]).unwrap_err();
    assert!(matches!(error, FoldError::StateHashMismatch { .. }));

    // An event whose mutations do not apply.
    let mut invalid = Event::decode(&payloads[1]).unwrap();
    invalid.mutations = vec![Mutation::RemoveToken { id: tid("ghost") }];
    let invalid = invalid.encode();
    assert!(matches!(
        fold(&[&payloads[0], &invalid]),
        Err(FoldError::Invalid(_))
    ));

    // Another case's event.
    let mut foreign = Event::decode(&payloads[0]).unwrap();
    foreign.case_id = CaseId::new("other").unwrap();
    assert!(matches!(
        fold(&[&foreign.encode()]),
        Err(FoldError::WrongCase { .. })
    ));

    // Garbage.
    assert!(matches!(
        fold(&[&b"garbage".to_vec()]),
        Err(FoldError::Decode(_))
    ));

    // A failed fold leaves the case as it was.
    let mut case = new_case();
    case.apply_payload(&payloads[0]).unwrap();
    let before = case.state().clone();
    assert!(case.apply_payload(&payloads[2]).is_err());
    assert_eq!(case.state(), &before);
}

#[test]
fn a_tentative_commit_writes_the_prepared_event_and_applies_it_once() {
    let fill = |case: &mut Case| {
        case.buffer(Mutation::set_key("n", 1))
            .update_ctx(|ctx| {
                if let Some(Value::Integer(n)) = ctx.get_mut("n") {
                    *n += 1;
                }
            })
            .buffer(Mutation::add_token(
                tid("t1"),
                0,
                ScopeId::root(),
                Value::Null,
            ))
            .update_token(tid("t1"), |token| token.ip = 3);
    };
    let (mut prepared_case, mut tried) = (new_case(), new_case());
    fill(&mut prepared_case);
    fill(&mut tried);
    let meta = meta(1000);
    let prepared = prepared_case.prepare_commit(meta.clone()).unwrap();

    // Dropped: the case and its buffer are as they were.
    let tentative = tried.try_commit(meta.clone()).unwrap();
    assert_eq!(
        tentative.state().version,
        1,
        "the batch is applied on trial"
    );
    assert_eq!(tentative.payload(), prepared.payload());
    drop(tentative);
    assert_eq!(tried.state(), prepared_case.state());
    assert_eq!(tried.buffered(), 4);

    // Kept: the state the prepared event leaves, the closures resolved once.
    let tentative = tried.try_commit(meta).unwrap();
    assert_eq!(tentative.payload(), prepared.payload());
    assert_eq!(tentative.event_hash(), prepared.event_hash());
    tentative.keep();
    prepared_case.complete(prepared).unwrap();
    assert_eq!(tried.state(), prepared_case.state());
    assert_eq!(tried.state().ctx.get("n"), Some(&Value::Integer(2)));
    assert_eq!(tried.state().tokens[&tid("t1")].ip, 3);
    assert_eq!(tried.last_event_hash(), prepared_case.last_event_hash());
    assert_eq!(tried.buffered(), 0);
}

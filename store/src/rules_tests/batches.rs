//! Batches: sequential validation, every error reported, nothing changed on failure, a
//! finished case, limits, versions and closures.

use crate::error::Reason;
use crate::{Case, CaseStatus, Mutation, PrepareError, ScopeId, TokenId, TokenStatus, Value};

use super::*;

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
    assert_eq!(case.state().version, version.next());
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

/// A commit that would leave a state over the limit is refused with its size, and leaves the
/// case and its buffer as they were; one that stays under it goes through.
#[test]
fn a_state_over_its_limit_is_refused_at_commit() {
    let mut case = new_case().with_limits(crate::Limits {
        state_size_max_bytes: 1000,
        ..crate::Limits::default()
    });
    case.buffer(Mutation::set_key("small", "x".repeat(300)));
    let prepared = case.prepare_commit(meta(1)).unwrap();
    case.complete(prepared).unwrap();
    let before = case.state().clone();
    case.buffer(Mutation::set_key("large", "y".repeat(800)));
    match case.prepare_commit(meta(2)) {
        Err(error @ PrepareError::StateTooLarge { size, limit: 1000 }) => {
            assert!(size > 1100, "{size}");
            assert!(
                error.to_string().contains("state_size_max_bytes"),
                "{error}"
            );
        }
        other => panic!("expected StateTooLarge, got {other:?}"),
    }
    assert_eq!(case.state(), &before);
    assert_eq!(case.buffered(), 1);
    // Removing a key makes room again.
    case.rollback();
    case.buffer(Mutation::PatchCtx {
        set: crate::Map::new(),
        remove: vec!["small".into()],
    });
    case.buffer(Mutation::set_key("large", "y".repeat(800)));
    case.prepare_commit(meta(2)).unwrap();
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
        (
            state.version.get(),
            state.created_at_ms,
            state.last_commit_at_ms
        ),
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

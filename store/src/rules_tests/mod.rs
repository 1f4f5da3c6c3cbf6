//! Guards the mutation rules of the specification: every kind valid and each invalid path
//! (`mutations`), sequential validation within a batch, all errors reported, nothing changed
//! on failure, terminal case status, limits and closures (`batches`), and folding stored
//! history (`history`).

mod batches;
mod history;
mod mutations;

use crate::error::Reason;
use crate::{
    Case, CaseId, CommitId, CommitMeta, Mutation, PrepareError, ScopeId, TokenId, TokenStatus,
    TokenUpdate, Value,
};

pub(super) fn tid(id: &str) -> TokenId {
    TokenId::new(id).unwrap()
}

pub(super) fn sid(id: &str) -> ScopeId {
    ScopeId::new(id).unwrap()
}

pub(super) fn meta(at: u64) -> CommitMeta {
    CommitMeta {
        commit_id: CommitId::generate(),
        committed_at_ms: at,
        writer: "test".into(),
    }
}

pub(super) fn new_case() -> Case {
    Case::new(CaseId::new("case").unwrap())
}

/// Commits `mutations`, which must be valid.
pub(super) fn commit(case: &mut Case, mutations: Vec<Mutation>) {
    for mutation in mutations {
        case.buffer(mutation);
    }
    let prepared = case
        .prepare_commit(meta(1000 + case.state().version.get()))
        .unwrap();
    case.complete(prepared).unwrap();
}

/// Tries `mutations`, which must be invalid: returns the reasons by index and checks that the
/// case and its buffer were left as they were.
pub(super) fn reject(case: &mut Case, mutations: Vec<Mutation>) -> Vec<(usize, Reason)> {
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

pub(super) fn update(id: &str) -> TokenUpdate {
    TokenUpdate::new(tid(id))
}

pub(super) fn status_update(id: &str, status: TokenStatus) -> Mutation {
    let mut update = update(id);
    update.status = Some(status);
    Mutation::UpdateToken(update)
}

/// root → s1 → s2 → s3, a token active in each of s1..s3 and one in root.
pub(super) fn nested_case() -> Case {
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

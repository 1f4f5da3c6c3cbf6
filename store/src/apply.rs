//! Apply: the effect of a valid mutation. It cannot fail: a mutation reaches it only after
//! [`crate::validate::check`] accepted it against this very state, so a broken precondition here
//! is a bug and stops the process with an `assert!`.

use crate::id::ScopeId;
use crate::mutation::{Mutation, TokenUpdate};
use crate::state::{CaseState, CaseStatus, Scope, ScopeStatus, Token, TokenStatus};

/// Applies one mutation that `check` accepted against `state`.
///
/// # Panics
/// When the mutation's preconditions do not hold (a bug in the caller).
pub fn apply(state: &mut CaseState, mutation: &Mutation, committed_at_ms: u64) {
    match mutation {
        Mutation::SetCtx { ctx } => {
            let map = ctx.as_map().expect("set_ctx was validated to hold a map");
            state.ctx = map.clone();
        }
        Mutation::PatchCtx { set, remove } => {
            for key in remove {
                state.ctx.remove(key);
            }
            for (key, value) in set {
                state.ctx.insert(key.clone(), value.clone());
            }
        }
        Mutation::AddToken {
            id,
            ip,
            scope,
            value,
        } => {
            let token = Token {
                id: id.clone(),
                ip: *ip,
                scope: scope.clone(),
                status: TokenStatus::Active,
                value: value.clone(),
            };
            let previous = state.tokens.insert(id.clone(), token);
            assert!(previous.is_none(), "add_token {id}: validated as unused");
        }
        Mutation::RemoveToken { id } => {
            let removed = state.tokens.remove(id);
            assert!(
                removed.is_some(),
                "remove_token {id}: validated as existing"
            );
        }
        Mutation::UpdateToken(update) => apply_token_update(state, update),
        Mutation::EnterScope { id, parent } => {
            let scope = Scope {
                entered_at_ms: committed_at_ms,
                id: id.clone(),
                parent: parent.clone(),
                status: ScopeStatus::Active,
            };
            let previous = state.scopes.insert(id.clone(), scope);
            assert!(previous.is_none(), "enter_scope {id}: validated as unused");
        }
        Mutation::ExitScope { id } => {
            assert!(!id.is_root(), "exit_scope: validated as not root");
            let removed = state.scopes.remove(id);
            assert!(removed.is_some(), "exit_scope {id}: validated as existing");
            // The scope's finished tokens go with it, so no token refers to a missing scope.
            state.tokens.retain(|_, token| {
                assert!(
                    &token.scope != id || token.status != TokenStatus::Active,
                    "exit_scope {id}: validated to have no active tokens"
                );
                &token.scope != id
            });
        }
        Mutation::CancelScope { id } => cancel_scope(state, id),
        Mutation::IncrementStepCount => state.step_count += 1,
        Mutation::SetMetadata { value } => state.metadata = value.clone(),
        Mutation::SetCaseStatus { status } => {
            assert!(
                state.status == CaseStatus::Running && *status != CaseStatus::Running,
                "set_case_status: validated as running → finished"
            );
            state.status = *status;
        }
    }
}

fn apply_token_update(state: &mut CaseState, update: &TokenUpdate) {
    let token = state
        .tokens
        .get_mut(&update.id)
        .expect("update_token: validated as existing");
    if let Some(ip) = update.ip {
        token.ip = ip;
    }
    if let Some(scope) = &update.scope {
        token.scope = scope.clone();
    }
    if let Some(value) = &update.value {
        token.value = value.clone();
    }
    if let Some(status) = update.status {
        assert_eq!(
            token.status,
            TokenStatus::Active,
            "update_token: validated status change"
        );
        token.status = status;
    }
}

/// Cancels the scope, every descendant scope, and the Active tokens of all of them.
fn cancel_scope(state: &mut CaseState, id: &ScopeId) {
    let cancelled = state.scope_and_descendants(id);
    for scope_id in &cancelled {
        let scope = state
            .scopes
            .get_mut(scope_id)
            .expect("cancel_scope: descendants exist");
        scope.status = ScopeStatus::Cancelled;
    }
    for token in state.tokens.values_mut() {
        if token.status == TokenStatus::Active && cancelled.contains(&token.scope) {
            token.status = TokenStatus::Cancelled;
        }
    }
}

/// The bookkeeping of one commit, after its mutations were applied: version + 1 and the
/// commit's timestamps (from the event, never the local clock, so replay is deterministic).
pub fn apply_commit(state: &mut CaseState, committed_at_ms: u64) {
    state.version += 1;
    if state.version == 1 {
        state.created_at_ms = committed_at_ms;
    }
    state.last_commit_at_ms = committed_at_ms;
}

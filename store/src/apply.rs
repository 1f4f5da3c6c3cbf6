//! Apply: the effect of a valid mutation. It cannot fail: a mutation reaches it only after
//! [`crate::validate::check`] accepted it against this very state, so a broken precondition here
//! is a bug and stops the process with an `assert!`.
//!
//! Apply can keep a journal of what it changed (the old values it replaced), so that a batch
//! can be tried on the state itself and undone instead of applied to a copy: the cost of a
//! commit then follows the size of its mutations, not the size of the case.

use std::mem;

use crate::id::{ScopeId, TokenId};
use crate::mutation::{Mutation, TokenUpdate};
use crate::position::Version;
use crate::state::{CaseState, CaseStatus, Scope, ScopeStatus, Token, TokenStatus};
use crate::value::{Map, Value};

/// Applies one mutation that `check` accepted against `state`.
///
/// # Panics
/// When the mutation's preconditions do not hold (a bug in the caller).
pub(crate) fn apply(state: &mut CaseState, mutation: &Mutation, committed_at_ms: u64) {
    apply_logged(state, mutation, committed_at_ms, &mut ());
}

/// The bookkeeping of one commit, after its mutations were applied: version + 1 and the
/// commit's timestamps (from the event, never the local clock, so replay is deterministic).
pub(crate) fn apply_commit(state: &mut CaseState, committed_at_ms: u64) {
    apply_commit_logged(state, committed_at_ms, &mut ());
}

/// One change undone: the value a part of the state had before a mutation changed it.
#[derive(Debug)]
pub(crate) enum Undo {
    /// The whole ctx (before `set_ctx`).
    Ctx(Map),
    /// A ctx key: its old value, or `None` when it was absent.
    CtxKey(String, Option<Value>),
    /// A token: its old value, or `None` when it was absent.
    Token(TokenId, Option<Token>),
    /// Fields of a token, with their old values.
    TokenFields(TokenUpdate),
    /// A scope: its old value, or `None` when it was absent.
    Scope(ScopeId, Option<Scope>),
    /// A scope's old status.
    ScopeStatus(ScopeId, ScopeStatus),
    /// The old step count.
    StepCount(u64),
    /// The old metadata.
    Metadata(Value),
    /// The old case status.
    Status(CaseStatus),
    /// The old bookkeeping: version, `created_at_ms`, `last_commit_at_ms`.
    Commit(Version, u64, u64),
}

/// Where apply records what it changed. `()` records nothing and costs nothing.
pub(crate) trait Journal {
    /// Records one change; `undo` is called only by a journal that keeps it.
    fn record(&mut self, undo: impl FnOnce() -> Undo);
}

impl Journal for () {
    #[inline]
    fn record(&mut self, _undo: impl FnOnce() -> Undo) {}
}

impl Journal for Vec<Undo> {
    fn record(&mut self, undo: impl FnOnce() -> Undo) {
        self.push(undo());
    }
}

/// A state that mutations are tried on in place, and that is put back as it was when the
/// trial is dropped, whether it ends in an error, a panic, or a result taken from the tried
/// state (a hash, an event). [`Trial::keep`] keeps the changes instead.
pub(crate) struct Trial<'a> {
    state: &'a mut CaseState,
    journal: &'a mut Vec<Undo>,
}

impl<'a> Trial<'a> {
    /// A trial on `state`, recording into `journal` (empty; kept by the caller so that its
    /// room is reused from one trial to the next).
    pub(crate) fn new(state: &'a mut CaseState, journal: &'a mut Vec<Undo>) -> Self {
        debug_assert!(journal.is_empty(), "a trial starts with an empty journal");
        Trial { state, journal }
    }

    /// The tried state.
    pub(crate) fn state(&self) -> &CaseState {
        self.state
    }

    /// Applies the commit's bookkeeping.
    pub(crate) fn apply_commit(&mut self, committed_at_ms: u64) {
        apply_commit_logged(self.state, committed_at_ms, self.journal);
    }

    /// The tried state and the journal its changes go to.
    pub(crate) fn parts(&mut self) -> (&mut CaseState, &mut Vec<Undo>) {
        (self.state, self.journal)
    }

    /// Keeps the changes.
    pub(crate) fn keep(self) {
        self.journal.clear();
    }

    /// Leaves the changes and their journal in place, for the caller to undo later with
    /// [`undo`] or to keep with [`forget`].
    pub(crate) fn hold(self) {
        std::mem::forget(self);
    }
}

/// Journal entries whose room a case keeps between trials; a larger journal (a batch that
/// cancelled a scope of many tokens) is given back.
const JOURNAL_ROOM_KEPT: usize = 64;

impl Drop for Trial<'_> {
    fn drop(&mut self) {
        undo(self.state, self.journal);
    }
}

/// Puts back every change `journal` recorded on `state`, newest first, and empties it.
pub(crate) fn undo(state: &mut CaseState, journal: &mut Vec<Undo>) {
    for undo in journal.drain(..).rev() {
        revert(state, undo);
    }
    forget(journal);
}

/// Keeps the changes `journal` recorded: empties it, keeping its room unless it grew large.
pub(crate) fn forget(journal: &mut Vec<Undo>) {
    journal.clear();
    if journal.capacity() > JOURNAL_ROOM_KEPT {
        *journal = Vec::new();
    }
}

/// Puts back one change.
fn revert(state: &mut CaseState, undo: Undo) {
    match undo {
        Undo::Ctx(ctx) => state.ctx = ctx,
        Undo::CtxKey(key, Some(value)) => {
            state.ctx.insert(key, value);
        }
        Undo::CtxKey(key, None) => {
            state.ctx.remove(&key);
        }
        Undo::Token(id, Some(token)) => {
            state.tokens.insert(id, token);
        }
        Undo::Token(id, None) => {
            state.tokens.remove(&id);
        }
        Undo::TokenFields(old) => {
            let token = state
                .tokens
                .get_mut(&old.id)
                .expect("a changed token exists until its change is undone");
            if let Some(ip) = old.ip {
                token.ip = ip;
            }
            if let Some(scope) = old.scope {
                token.scope = scope;
            }
            if let Some(value) = old.value {
                token.value = value;
            }
            if let Some(status) = old.status {
                token.status = status;
            }
        }
        Undo::Scope(id, Some(scope)) => {
            state.scopes.insert(id, scope);
        }
        Undo::Scope(id, None) => {
            state.scopes.remove(&id);
        }
        Undo::ScopeStatus(id, status) => {
            state
                .scopes
                .get_mut(&id)
                .expect("a changed scope exists until its change is undone")
                .status = status;
        }
        Undo::StepCount(count) => state.step_count = count,
        Undo::Metadata(value) => state.metadata = value,
        Undo::Status(status) => state.status = status,
        Undo::Commit(version, created_at_ms, last_commit_at_ms) => {
            state.version = version;
            state.created_at_ms = created_at_ms;
            state.last_commit_at_ms = last_commit_at_ms;
        }
    }
}

/// [`apply`], recording what it changes in `journal`.
pub(crate) fn apply_logged(
    state: &mut CaseState,
    mutation: &Mutation,
    committed_at_ms: u64,
    journal: &mut impl Journal,
) {
    match mutation {
        Mutation::SetCtx { ctx } => {
            let map = ctx.as_map().expect("set_ctx was validated to hold a map");
            let old = mem::replace(&mut state.ctx, map.clone());
            journal.record(|| Undo::Ctx(old));
        }
        Mutation::PatchCtx { set, remove } => patch_ctx(&mut state.ctx, set, remove, journal),
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
            journal.record(|| Undo::Token(id.clone(), None));
        }
        Mutation::RemoveToken { id } => {
            let removed = state.tokens.remove(id);
            assert!(
                removed.is_some(),
                "remove_token {id}: validated as existing"
            );
            journal.record(|| Undo::Token(id.clone(), removed));
        }
        Mutation::UpdateToken(update) => apply_token_update(state, update, journal),
        Mutation::EnterScope { id, parent } => {
            let scope = Scope {
                entered_at_ms: committed_at_ms,
                id: id.clone(),
                parent: parent.clone(),
                status: ScopeStatus::Active,
            };
            let previous = state.scopes.insert(id.clone(), scope);
            assert!(previous.is_none(), "enter_scope {id}: validated as unused");
            journal.record(|| Undo::Scope(id.clone(), None));
        }
        Mutation::ExitScope { id } => exit_scope(state, id, journal),
        Mutation::CancelScope { id } => cancel_scope(state, id, journal),
        Mutation::IncrementStepCount => {
            journal.record(|| Undo::StepCount(state.step_count));
            state.step_count += 1;
        }
        Mutation::SetMetadata { value } => {
            let old = mem::replace(&mut state.metadata, value.clone());
            journal.record(|| Undo::Metadata(old));
        }
        Mutation::SetCaseStatus { status } => {
            assert!(
                state.status == CaseStatus::Running && *status != CaseStatus::Running,
                "set_case_status: validated as running → finished"
            );
            journal.record(|| Undo::Status(state.status));
            state.status = *status;
        }
    }
}

fn patch_ctx(ctx: &mut Map, set: &Map, remove: &[String], journal: &mut impl Journal) {
    for key in remove {
        if let Some(old) = ctx.remove(key) {
            journal.record(|| Undo::CtxKey(key.clone(), Some(old)));
        }
    }
    for (key, value) in set {
        // Replacing in place keeps the key the map holds, instead of a new copy of it.
        let old = if let Some(slot) = ctx.get_mut(key) {
            Some(mem::replace(slot, value.clone()))
        } else {
            ctx.insert(key.clone(), value.clone());
            None
        };
        journal.record(|| Undo::CtxKey(key.clone(), old));
    }
}

fn apply_token_update(state: &mut CaseState, update: &TokenUpdate, journal: &mut impl Journal) {
    let token = state
        .tokens
        .get_mut(&update.id)
        .expect("update_token: validated as existing");
    let ip = update.ip.map(|ip| mem::replace(&mut token.ip, ip));
    let scope = (update.scope.as_ref()).map(|scope| mem::replace(&mut token.scope, scope.clone()));
    let value = (update.value.as_ref()).map(|value| mem::replace(&mut token.value, value.clone()));
    let status = update.status.map(|status| {
        assert_eq!(
            token.status,
            TokenStatus::Active,
            "update_token: validated status change"
        );
        mem::replace(&mut token.status, status)
    });
    journal.record(|| {
        Undo::TokenFields(TokenUpdate {
            id: update.id.clone(),
            ip,
            scope,
            value,
            status,
        })
    });
}

fn exit_scope(state: &mut CaseState, id: &ScopeId, journal: &mut impl Journal) {
    assert!(!id.is_root(), "exit_scope: validated as not root");
    let removed = state.scopes.remove(id);
    assert!(removed.is_some(), "exit_scope {id}: validated as existing");
    journal.record(|| Undo::Scope(id.clone(), removed));
    // The scope's finished tokens go with it, so no token refers to a missing scope.
    let leaving: Vec<TokenId> = (state.tokens.values())
        .filter(|token| &token.scope == id)
        .map(|token| token.id.clone())
        .collect();
    for token_id in leaving {
        let token = state.tokens.remove(&token_id);
        assert!(
            token
                .as_ref()
                .is_some_and(|t| t.status != TokenStatus::Active),
            "exit_scope {id}: validated to have no active tokens"
        );
        journal.record(|| Undo::Token(token_id, token));
    }
}

/// Cancels the scope, every descendant scope, and the Active tokens of all of them.
fn cancel_scope(state: &mut CaseState, id: &ScopeId, journal: &mut impl Journal) {
    let cancelled = state.scope_and_descendants(id);
    for scope_id in &cancelled {
        let scope = state
            .scopes
            .get_mut(scope_id)
            .expect("cancel_scope: descendants exist");
        let old = mem::replace(&mut scope.status, ScopeStatus::Cancelled);
        journal.record(|| Undo::ScopeStatus(scope_id.clone(), old));
    }
    for token in state.tokens.values_mut() {
        if token.status == TokenStatus::Active && cancelled.contains(&token.scope) {
            token.status = TokenStatus::Cancelled;
            journal.record(|| {
                let mut old = TokenUpdate::new(token.id.clone());
                old.status = Some(TokenStatus::Active);
                Undo::TokenFields(old)
            });
        }
    }
}

/// [`apply_commit`], recording what it changes in `journal`.
pub(crate) fn apply_commit_logged(
    state: &mut CaseState,
    committed_at_ms: u64,
    journal: &mut impl Journal,
) {
    journal.record(|| Undo::Commit(state.version, state.created_at_ms, state.last_commit_at_ms));
    state.version = state.version.next();
    if state.version == 1 {
        state.created_at_ms = committed_at_ms;
    }
    state.last_commit_at_ms = committed_at_ms;
}

//! Validation: whether a mutation may be applied to a state, and why not.
//!
//! A batch is validated **sequentially**: each mutation is checked against the state as the
//! earlier mutations of the same batch leave it, and every error of the batch is collected.
//! [`apply_batch`] does both in one pass.

use std::borrow::Cow;

use crate::apply::{Journal, apply_logged};
use crate::error::{Reason, ValidationError, ValidationErrors};
use crate::id::{ScopeId, TokenId};
use crate::limits::Limits;
use crate::mutation::{Mutation, TokenUpdate};
use crate::state::{CaseState, CaseStatus, ScopeStatus, TokenStatus};
use crate::value::Value;

/// Checks one mutation against `state`.
///
/// # Errors
/// The [`Reason`] it cannot be applied.
pub(crate) fn check(state: &CaseState, mutation: &Mutation, limits: &Limits) -> Result<(), Reason> {
    if state.status != CaseStatus::Running && !matches!(mutation, Mutation::SetMetadata { .. }) {
        return Err(Reason::CaseNotRunning {
            status: state.status.as_str(),
        });
    }
    match mutation {
        Mutation::SetCtx { ctx } => {
            let map = ctx.as_map().ok_or(Reason::CtxNotMap {
                found: ctx.type_name(),
            })?;
            map.keys().try_for_each(|key| check_key(key, limits))?;
            check_depth(ctx, limits)
        }
        Mutation::PatchCtx { set, remove } => {
            for (key, value) in set {
                check_key(key, limits)?;
                check_depth(value, limits)?;
            }
            for key in remove {
                check_key(key, limits)?;
                if set.contains_key(key) {
                    return Err(Reason::KeySetAndRemoved { key: key.clone() });
                }
            }
            Ok(())
        }
        Mutation::AddToken {
            id, scope, value, ..
        } => {
            if state.tokens.contains_key(id) {
                return Err(Reason::TokenExists { id: id.to_string() });
            }
            check_active_scope(state, scope)?;
            check_depth(value, limits)
        }
        Mutation::RemoveToken { id } => existing_token(state, id).map(|_| ()),
        Mutation::UpdateToken(update) => check_token_update(state, update, limits),
        Mutation::EnterScope { id, parent } => {
            if state.scopes.contains_key(id) {
                return Err(Reason::ScopeExists { id: id.to_string() });
            }
            check_active_scope(state, parent)
        }
        Mutation::ExitScope { id } => check_exit_scope(state, id),
        Mutation::CancelScope { id } => existing_scope(state, id),
        Mutation::IncrementStepCount | Mutation::SetMetadata { .. } => {
            if let Mutation::SetMetadata { value } = mutation {
                check_depth(value, limits)?;
            }
            Ok(())
        }
        Mutation::SetCaseStatus { status } => {
            if *status == CaseStatus::Running {
                return Err(Reason::CaseStatusChange {
                    from: state.status.as_str(),
                    to: status.as_str(),
                });
            }
            Ok(())
        }
    }
}

fn check_key(key: &str, limits: &Limits) -> Result<(), Reason> {
    if key.is_empty() {
        return Err(Reason::KeyEmpty);
    }
    if key.len() > limits.key_length_max_bytes {
        return Err(Reason::KeyTooLong {
            key: key.chars().take(64).collect(),
            length: key.len(),
            limit: limits.key_length_max_bytes,
        });
    }
    Ok(())
}

fn check_depth(value: &Value, limits: &Limits) -> Result<(), Reason> {
    fn depth(value: &Value, level: usize, limit: usize) -> usize {
        if level > limit {
            return level;
        }
        match value {
            Value::Array(values) => values
                .iter()
                .map(|v| depth(v, level + 1, limit))
                .max()
                .unwrap_or(level + 1),
            Value::Map(map) => map
                .values()
                .map(|v| depth(v, level + 1, limit))
                .max()
                .unwrap_or(level + 1),
            _ => level,
        }
    }
    if limits.value_depth_max == usize::MAX {
        return Ok(());
    }
    let found = depth(value, 0, limits.value_depth_max);
    if found > limits.value_depth_max {
        return Err(Reason::ValueTooDeep {
            depth: found,
            limit: limits.value_depth_max,
        });
    }
    Ok(())
}

fn existing_token<'a>(
    state: &'a CaseState,
    id: &TokenId,
) -> Result<&'a crate::state::Token, Reason> {
    state
        .tokens
        .get(id)
        .ok_or_else(|| Reason::TokenNotFound { id: id.to_string() })
}

fn existing_scope(state: &CaseState, id: &ScopeId) -> Result<(), Reason> {
    if state.scopes.contains_key(id) {
        Ok(())
    } else {
        Err(Reason::ScopeNotFound { id: id.to_string() })
    }
}

fn check_active_scope(state: &CaseState, id: &ScopeId) -> Result<(), Reason> {
    match state.scopes.get(id) {
        None => Err(Reason::ScopeNotFound { id: id.to_string() }),
        Some(scope) if scope.status != ScopeStatus::Active => {
            Err(Reason::ScopeCancelled { id: id.to_string() })
        }
        Some(_) => Ok(()),
    }
}

fn check_token_update(
    state: &CaseState,
    update: &TokenUpdate,
    limits: &Limits,
) -> Result<(), Reason> {
    let token = existing_token(state, &update.id)?;
    if let Some(scope) = &update.scope {
        check_active_scope(state, scope)?;
    }
    if let Some(to) = update.status {
        let allowed = token.status == TokenStatus::Active
            && matches!(to, TokenStatus::Complete | TokenStatus::Cancelled);
        if !allowed {
            return Err(Reason::TokenStatusChange {
                id: update.id.to_string(),
                from: token.status.as_str(),
                to: to.as_str(),
            });
        }
    }
    if let Some(value) = &update.value {
        check_depth(value, limits)?;
    }
    Ok(())
}

fn check_exit_scope(state: &CaseState, id: &ScopeId) -> Result<(), Reason> {
    if id.is_root() {
        return Err(Reason::ScopeIsRoot);
    }
    existing_scope(state, id)?;
    if let Some(child) = state.child_scopes(id).next() {
        return Err(Reason::ScopeHasChildren {
            id: id.to_string(),
            child: child.to_string(),
        });
    }
    if let Some(token) = state
        .scope_tokens(id)
        .find(|token| token.status == TokenStatus::Active)
    {
        return Err(Reason::ScopeHasActiveTokens {
            id: id.to_string(),
            token: token.id.to_string(),
        });
    }
    Ok(())
}

/// One entry of a batch: a mutation, or something that resolves to one against the state the
/// earlier entries leave (a closure of [`crate::Case::update_ctx`]).
pub(crate) trait BatchEntry {
    /// The `op` the entry is or resolves to, for its error.
    fn kind(&self) -> &'static str;

    /// The mutation, resolved against `state`.
    fn resolve(&self, state: &CaseState) -> Result<Cow<'_, Mutation>, Reason>;
}

impl BatchEntry for Mutation {
    fn kind(&self) -> &'static str {
        Mutation::kind(self)
    }

    fn resolve(&self, _: &CaseState) -> Result<Cow<'_, Mutation>, Reason> {
        Ok(Cow::Borrowed(self))
    }
}

/// The one batch loop: resolves, checks and applies each entry in order, each against the state
/// the earlier valid ones leave, recording what it changes in `journal`; hands each mutation an
/// entry resolved to (rather than was) to `resolved`. On `Err` the state holds a partial result
/// that the caller undoes from the journal or discards.
///
/// The commit's bookkeeping (version, timestamps) is not touched here.
///
/// # Errors
/// Every invalid entry, by its index.
pub(crate) fn apply_batch_logged<E: BatchEntry>(
    state: &mut CaseState,
    entries: &[E],
    committed_at_ms: u64,
    limits: &Limits,
    journal: &mut impl Journal,
    mut resolved: impl FnMut(Mutation),
) -> Result<(), ValidationErrors> {
    let mut errors = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        let step = entry.resolve(state).and_then(|mutation| {
            check(state, &mutation, limits)?;
            Ok(mutation)
        });
        match step {
            Ok(mutation) => {
                apply_logged(state, &mutation, committed_at_ms, journal);
                if let Cow::Owned(mutation) = mutation {
                    resolved(mutation);
                }
            }
            Err(reason) => errors.push(ValidationError {
                index,
                kind: entry.kind(),
                reason,
            }),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ValidationErrors(errors))
    }
}

/// Validates `mutations` sequentially against `state` without changing it (on a copy).
///
/// # Errors
/// Every invalid mutation, each checked against the state the earlier valid ones leave.
pub fn validate(
    state: &CaseState,
    mutations: &[Mutation],
    limits: &Limits,
) -> Result<(), ValidationErrors> {
    apply_batch_logged(&mut state.clone(), mutations, 0, limits, &mut (), |_| {})
}

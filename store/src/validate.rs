//! Validation: whether a mutation may be applied to a state, and why not.
//!
//! A batch is validated **sequentially**: each mutation is checked against the state as the
//! earlier mutations of the same batch leave it, and every error of the batch is collected.
//! [`apply_batch`] does both in one pass.

use serde::Serialize;

use std::borrow::Cow;

use crate::apply::{Journal, apply_logged};
use crate::error::{ValidationError, ValidationErrors};
use crate::id::{ScopeId, TokenId};
use crate::limits::Limits;
use crate::mutation::{Mutation, TokenUpdate};
use crate::state::{CaseState, CaseStatus, ScopeStatus, TokenStatus};
use crate::value::Value;

/// Why one mutation cannot be applied: machine-readable (its serde form is tagged by `code`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "code", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Reason {
    /// The case is Done, Failed or Cancelled: only `set_metadata` is accepted.
    #[error("the case is {status}; a finished case accepts only set_metadata")]
    CaseNotRunning {
        /// The case's status.
        status: &'static str,
    },
    /// `set_ctx` was given something other than a map.
    #[error("ctx must be a map, found {found}")]
    CtxNotMap {
        /// The type found.
        found: &'static str,
    },
    /// A ctx key is empty.
    #[error("a ctx key is empty")]
    KeyEmpty,
    /// A ctx key is too long.
    #[error("ctx key {key:?} is {length} bytes, over the limit of {limit}")]
    KeyTooLong {
        /// The key (shortened to 64 characters).
        key: String,
        /// Its length in bytes.
        length: usize,
        /// The limit.
        limit: usize,
    },
    /// `patch_ctx` both sets and removes a key.
    #[error("ctx key {key:?} is both set and removed")]
    KeySetAndRemoved {
        /// The key.
        key: String,
    },
    /// A value nests arrays and maps too deeply.
    #[error("a value nests {depth} levels deep, over the limit of {limit}")]
    ValueTooDeep {
        /// The depth found (at least).
        depth: usize,
        /// The limit.
        limit: usize,
    },
    /// `add_token` with an id already in use.
    #[error("token {id:?} already exists")]
    TokenExists {
        /// The token id.
        id: String,
    },
    /// The token does not exist.
    #[error("token {id:?} does not exist")]
    TokenNotFound {
        /// The token id.
        id: String,
    },
    /// A status change other than Active → Complete/Cancelled.
    #[error("token {id:?} cannot move from {from} to {to}; only active → complete/cancelled")]
    TokenStatusChange {
        /// The token id.
        id: String,
        /// Its status.
        from: &'static str,
        /// The status asked for.
        to: &'static str,
    },
    /// An `update_token` closure changed the token's id.
    #[error("the update_token closure for {id:?} changed the token's id to {new_id:?}")]
    TokenIdChanged {
        /// The token id.
        id: String,
        /// The id the closure set.
        new_id: String,
    },
    /// `enter_scope` with an id already in use.
    #[error("scope {id:?} already exists")]
    ScopeExists {
        /// The scope id.
        id: String,
    },
    /// The scope does not exist.
    #[error("scope {id:?} does not exist")]
    ScopeNotFound {
        /// The scope id.
        id: String,
    },
    /// The scope is Cancelled, so it takes no new tokens or child scopes.
    #[error("scope {id:?} is cancelled")]
    ScopeCancelled {
        /// The scope id.
        id: String,
    },
    /// `exit_scope` on the root scope.
    #[error("the root scope cannot be exited")]
    ScopeIsRoot,
    /// `exit_scope` on a scope that still has child scopes.
    #[error("scope {id:?} still has child scope {child:?}; exit or cancel it first")]
    ScopeHasChildren {
        /// The scope id.
        id: String,
        /// One of its child scopes.
        child: String,
    },
    /// `exit_scope` on a scope that still has an Active token.
    #[error("scope {id:?} still has active token {token:?}")]
    ScopeHasActiveTokens {
        /// The scope id.
        id: String,
        /// One of its Active tokens.
        token: String,
    },
    /// `set_case_status` other than Running → Done/Failed/Cancelled.
    #[error(
        "the case status cannot move from {from} to {to}; only running → done/failed/cancelled"
    )]
    CaseStatusChange {
        /// The case's status.
        from: &'static str,
        /// The status asked for.
        to: &'static str,
    },
}

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

//! [`CaseState`]: the state of one case, its canonical CBOR encoding, its hash and invariants.
//!
//! The canonical encoding is what `state_hash` covers, so every field order here is part of the
//! public contract: structs are encoded as CBOR maps whose keys are declared in sorted
//! (bytewise) order, and every map is a `BTreeMap`, so keys are always sorted and equal states
//! always give equal bytes, whatever order their entries were inserted in.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::error::InvariantError;
use crate::id::{CaseId, ScopeId, TokenId};
use crate::position::Version;
use crate::value::{Map, Value};

/// The lifecycle status of a case. Only `Running` cases accept mutations other than
/// `set_metadata`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaseStatus {
    /// The case is running.
    Running,
    /// The case finished successfully.
    Done,
    /// The case failed.
    Failed,
    /// The case was cancelled.
    Cancelled,
}

impl CaseStatus {
    /// The lower-case name used in JSON and CBOR.
    pub fn as_str(self) -> &'static str {
        match self {
            CaseStatus::Running => "running",
            CaseStatus::Done => "done",
            CaseStatus::Failed => "failed",
            CaseStatus::Cancelled => "cancelled",
        }
    }
}

/// The status of a token. It moves only from `Active` to `Complete` or `Cancelled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenStatus {
    /// The token is running.
    Active,
    /// The token finished.
    Complete,
    /// The token was cancelled (directly or by its scope).
    Cancelled,
}

impl TokenStatus {
    /// The lower-case name used in JSON and CBOR.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenStatus::Active => "active",
            TokenStatus::Complete => "complete",
            TokenStatus::Cancelled => "cancelled",
        }
    }
}

/// The status of a cancel scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScopeStatus {
    /// The scope accepts new tokens and child scopes.
    Active,
    /// The scope was cancelled, with all its descendants and their tokens.
    Cancelled,
}

impl ScopeStatus {
    /// The lower-case name used in JSON and CBOR.
    pub fn as_str(self) -> &'static str {
        match self {
            ScopeStatus::Active => "active",
            ScopeStatus::Cancelled => "cancelled",
        }
    }
}

/// A logical thread of execution inside a case. Fields are in canonical (sorted) order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Token {
    /// The token's id (equal to its key in [`CaseState::tokens`]).
    pub id: TokenId,
    /// The instruction pointer.
    pub ip: u64,
    /// The scope the token runs in; it always exists.
    pub scope: ScopeId,
    /// The token's status.
    pub status: TokenStatus,
    /// The token's value.
    pub value: Value,
}

/// A cancel scope. Fields are in canonical (sorted) order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    /// When the scope was entered: the `committed_at_ms` of the commit that entered it.
    pub entered_at_ms: u64,
    /// The scope's id (equal to its key in [`CaseState::scopes`]).
    pub id: ScopeId,
    /// The enclosing scope; the root scope is its own parent.
    pub parent: ScopeId,
    /// The scope's status.
    pub status: ScopeStatus,
}

/// The state of one case. Fields are in canonical (sorted) order: see the module docs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseState {
    /// The case's id.
    pub case_id: CaseId,
    /// `committed_at_ms` of the case's first commit (0 before it).
    pub created_at_ms: u64,
    /// The case's data.
    pub ctx: Map,
    /// `committed_at_ms` of the case's latest commit (0 before the first).
    pub last_commit_at_ms: u64,
    /// A user value, replaced whole by `set_metadata`.
    pub metadata: Value,
    /// The case's scopes, the root scope included.
    pub scopes: BTreeMap<ScopeId, Scope>,
    /// The case's status.
    pub status: CaseStatus,
    /// How many `increment_step_count` mutations the case has had.
    pub step_count: u64,
    /// The case's tokens.
    pub tokens: BTreeMap<TokenId, Token>,
    /// The number of commits the case has had (0 before the first).
    pub version: Version,
}

impl CaseState {
    /// The state of a case before its first commit: empty ctx, the root scope, `Running`,
    /// version 0.
    pub fn new(case_id: CaseId) -> Self {
        let root = Scope {
            entered_at_ms: 0,
            id: ScopeId::root(),
            parent: ScopeId::root(),
            status: ScopeStatus::Active,
        };
        CaseState {
            case_id,
            created_at_ms: 0,
            ctx: Map::new(),
            last_commit_at_ms: 0,
            metadata: Value::Null,
            scopes: BTreeMap::from([(ScopeId::root(), root)]),
            status: CaseStatus::Running,
            step_count: 0,
            tokens: BTreeMap::new(),
            version: Version::ZERO,
        }
    }

    /// The ids of the scope's direct child scopes (the root is not its own child).
    pub fn child_scopes<'a>(&'a self, id: &'a ScopeId) -> impl Iterator<Item = &'a ScopeId> + 'a {
        self.scopes
            .values()
            .filter(move |scope| &scope.parent == id && !scope.id.is_root())
            .map(|scope| &scope.id)
    }

    /// The tokens whose scope is `id`.
    pub fn scope_tokens<'a>(&'a self, id: &'a ScopeId) -> impl Iterator<Item = &'a Token> + 'a {
        self.tokens.values().filter(move |token| &token.scope == id)
    }

    /// The scope and all its descendant scopes.
    pub fn scope_and_descendants(&self, id: &ScopeId) -> BTreeSet<ScopeId> {
        let mut children: BTreeMap<&ScopeId, Vec<&ScopeId>> = BTreeMap::new();
        for scope in self.scopes.values().filter(|scope| !scope.id.is_root()) {
            children.entry(&scope.parent).or_default().push(&scope.id);
        }
        let mut found = BTreeSet::from([id.clone()]);
        let mut pending = vec![id];
        while let Some(next) = pending.pop() {
            for child in children.get(next).into_iter().flatten() {
                if found.insert((*child).clone()) {
                    pending.push(child);
                }
            }
        }
        found
    }

    /// Checks the invariants that every state produced by `apply` keeps: keys equal ids, the
    /// root scope exists, every scope's parent chain reaches the root, every token's scope
    /// exists, and nothing Active sits inside something Cancelled.
    ///
    /// # Errors
    /// [`InvariantError`], naming the first broken invariant.
    pub fn check_invariants(&self) -> Result<(), InvariantError> {
        self.first_broken_invariant().map_err(InvariantError)
    }

    fn first_broken_invariant(&self) -> Result<(), String> {
        let root = self
            .scopes
            .get(&ScopeId::root())
            .ok_or("the root scope is missing")?;
        if !root.parent.is_root() {
            return Err(format!(
                "the root scope's parent is {:?}, not root",
                root.parent.as_str()
            ));
        }
        for (key, scope) in &self.scopes {
            if key != &scope.id {
                return Err(format!(
                    "scope {key:?} is stored under another id {:?}",
                    scope.id
                ));
            }
            self.check_scope_chain(scope)?;
        }
        for (key, token) in &self.tokens {
            if key != &token.id {
                return Err(format!(
                    "token {key:?} is stored under another id {:?}",
                    token.id
                ));
            }
            let scope = self.scopes.get(&token.scope).ok_or_else(|| {
                format!(
                    "token {:?} is in scope {:?}, which does not exist",
                    key, token.scope
                )
            })?;
            if token.status == TokenStatus::Active && scope.status != ScopeStatus::Active {
                return Err(format!(
                    "token {key:?} is active in cancelled scope {:?}",
                    scope.id
                ));
            }
        }
        Ok(())
    }

    fn check_scope_chain(&self, scope: &Scope) -> Result<(), String> {
        let mut current = scope;
        for _ in 0..=self.scopes.len() {
            if current.id.is_root() {
                return Ok(());
            }
            let parent = self.scopes.get(&current.parent).ok_or_else(|| {
                format!(
                    "scope {:?} has parent {:?}, which does not exist",
                    current.id, current.parent
                )
            })?;
            if current.status == ScopeStatus::Active && parent.status != ScopeStatus::Active {
                return Err(format!(
                    "scope {:?} is active inside cancelled scope {:?}",
                    current.id, parent.id
                ));
            }
            current = parent;
        }
        Err(format!("scope {:?} has a cycle in its parents", scope.id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CaseState {
        let mut state = CaseState::new(CaseId::new("c1").unwrap());
        state.ctx.insert("zeta".into(), Value::from(1));
        state.ctx.insert("alpha".into(), Value::from("x"));
        let scope = ScopeId::new("s1").unwrap();
        state.scopes.insert(
            scope.clone(),
            Scope {
                entered_at_ms: 5,
                id: scope.clone(),
                parent: ScopeId::root(),
                status: ScopeStatus::Active,
            },
        );
        let token = TokenId::new("t1").unwrap();
        state.tokens.insert(
            token.clone(),
            Token {
                id: token,
                ip: 3,
                scope,
                status: TokenStatus::Active,
                value: Value::Null,
            },
        );
        state
    }

    /// Every map in the canonical encoding has text keys in strictly increasing bytewise order.
    fn assert_sorted(value: &ciborium::Value) {
        match value {
            ciborium::Value::Map(entries) => {
                let keys: Vec<&str> = entries
                    .iter()
                    .map(|(key, _)| key.as_text().expect("text key"))
                    .collect();
                assert!(
                    keys.windows(2)
                        .all(|pair| pair[0].as_bytes() < pair[1].as_bytes()),
                    "{keys:?}"
                );
                for (_, value) in entries {
                    assert_sorted(value);
                }
            }
            ciborium::Value::Array(values) => values.iter().for_each(assert_sorted),
            _ => {}
        }
    }

    #[test]
    fn canonical_encoding_has_sorted_keys_everywhere() {
        let generic: ciborium::Value =
            ciborium::from_reader(sample().canonical_bytes().as_slice()).unwrap();
        assert_sorted(&generic);
    }

    #[test]
    fn inconsistent_states_are_named() {
        let mut state = sample();
        state
            .tokens
            .values_mut()
            .for_each(|token| token.scope = ScopeId::new("gone").unwrap());
        let error = state.check_invariants().unwrap_err();
        assert!(error.to_string().contains("does not exist"), "{error}");

        let mut cyclic = sample();
        let s2 = ScopeId::new("s2").unwrap();
        cyclic
            .scopes
            .get_mut(&ScopeId::new("s1").unwrap())
            .unwrap()
            .parent = s2.clone();
        cyclic.scopes.insert(
            s2.clone(),
            Scope {
                entered_at_ms: 0,
                id: s2,
                parent: ScopeId::new("s1").unwrap(),
                status: ScopeStatus::Active,
            },
        );
        assert!(
            cyclic
                .check_invariants()
                .unwrap_err()
                .to_string()
                .contains("cycle")
        );
    }
}

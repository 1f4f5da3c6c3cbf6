//! Randomised guards of the commit path. Each test takes its seed from `WFSTATE_SEED` (or a
//! random one) and prints it, so a failure can be replayed with `WFSTATE_SEED=<seed>`.
//!
//! - Random batches are applied exactly as a plain reference model does it, or rejected at the
//!   very indexes the model rejects, with the case untouched.
//! - Values, mutations and events round-trip through CBOR (and JSON where it can).
//! - The state hash does not depend on the order entries were inserted in.
//! - Folding the same events twice gives identical bytes, equal to the writer's state.
//! - The direct encoders and reader agree with ciborium and serde byte for byte (`codec`).

mod codec;
mod commits;

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};

use crate::{
    Case, CaseId, CaseState, CaseStatus, CommitId, CommitMeta, Mutation, Position, PrepareError,
    Receipt, ScopeId, TokenId, TokenStatus, TokenUpdate, Value,
};

pub(super) fn runner(name: &str, cases: u32) -> TestRunner {
    let seed = std::env::var("WFSTATE_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(|| {
            u64::from(std::process::id())
                ^ std::time::UNIX_EPOCH
                    .elapsed()
                    .map_or(0, |d| d.as_secs())
                    .rotate_left(17)
        });
    eprintln!("{name}: WFSTATE_SEED={seed}");
    TestRunner::new(Config {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        ..Config::default()
    })
}

// ---------------------------------------------------------------- generators

pub(super) fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1.0e9f64..1.0e9).prop_map(Value::Float),
        "[a-z]{0,6}".prop_map(Value::from),
        prop::collection::vec(any::<u8>(), 0..4).prop_map(Value::Bytes),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-c]{1,2}", inner, 0..4).prop_map(Value::Map),
        ]
    })
}

pub(super) fn key() -> impl Strategy<Value = String> {
    prop_oneof![8 => "[a-d]", 1 => Just(String::new())]
}

pub(super) fn token_id() -> impl Strategy<Value = TokenId> {
    (0..5u8).prop_map(|n| TokenId::new(format!("t{n}")).unwrap())
}

pub(super) fn scope_id() -> impl Strategy<Value = ScopeId> {
    prop_oneof![1 => Just(ScopeId::root()), 4 => (0..4u8).prop_map(|n| ScopeId::new(format!("s{n}")).unwrap())]
}

pub(super) fn token_status() -> impl Strategy<Value = TokenStatus> {
    prop_oneof![
        Just(TokenStatus::Active),
        Just(TokenStatus::Complete),
        Just(TokenStatus::Cancelled)
    ]
}

pub(super) fn case_status() -> impl Strategy<Value = CaseStatus> {
    prop_oneof![
        Just(CaseStatus::Running),
        Just(CaseStatus::Done),
        Just(CaseStatus::Failed),
        Just(CaseStatus::Cancelled)
    ]
}

pub(super) fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        1 => prop_oneof![
            prop::collection::btree_map("[a-d]", value(), 0..3).prop_map(Value::Map),
            value(),
        ].prop_map(|ctx| Mutation::SetCtx { ctx }),
        3 => (prop::collection::btree_map(key(), value(), 0..3), prop::collection::vec(key(), 0..2))
            .prop_map(|(set, remove)| Mutation::PatchCtx { set, remove }),
        4 => (token_id(), any::<u8>(), scope_id(), value())
            .prop_map(|(id, ip, scope, value)| Mutation::add_token(id, ip.into(), scope, value)),
        1 => token_id().prop_map(|id| Mutation::RemoveToken { id }),
        3 => (token_id(), proptest::option::of(any::<u8>()), proptest::option::of(scope_id()),
              proptest::option::of(value()), proptest::option::of(token_status()))
            .prop_map(|(id, ip, scope, value, status)| Mutation::UpdateToken(TokenUpdate {
                id, ip: ip.map(u64::from), scope, value, status,
            })),
        3 => (scope_id(), scope_id()).prop_map(|(id, parent)| Mutation::EnterScope { id, parent }),
        2 => scope_id().prop_map(|id| Mutation::ExitScope { id }),
        1 => scope_id().prop_map(|id| Mutation::CancelScope { id }),
        2 => Just(Mutation::IncrementStepCount),
        1 => value().prop_map(|value| Mutation::SetMetadata { value }),
        1 => case_status().prop_map(|status| Mutation::SetCaseStatus { status }),
    ]
}

pub(super) fn batches() -> impl Strategy<Value = Vec<Vec<Mutation>>> {
    prop::collection::vec(prop::collection::vec(mutation(), 1..8), 1..8)
}

// ---------------------------------------------------------------- the reference model

/// The rules written as plainly as possible, on plain vectors, independent of `validate` and
/// `apply`.
#[derive(Debug, Clone, PartialEq)]
struct Model {
    ctx: BTreeMap<String, Value>,
    /// (id, ip, scope, status, value)
    tokens: Vec<(String, u64, String, TokenStatus, Value)>,
    /// (id, parent, cancelled, `entered_at`)
    scopes: Vec<(String, String, bool, u64)>,
    status: CaseStatus,
    steps: u64,
    metadata: Value,
}

impl Model {
    fn new() -> Model {
        Model {
            ctx: BTreeMap::new(),
            tokens: Vec::new(),
            scopes: vec![("root".into(), "root".into(), false, 0)],
            status: CaseStatus::Running,
            steps: 0,
            metadata: Value::Null,
        }
    }

    fn scope(&self, id: &str) -> Option<&(String, String, bool, u64)> {
        self.scopes.iter().find(|scope| scope.0 == id)
    }

    fn active_scope(&self, id: &str) -> bool {
        self.scope(id).is_some_and(|scope| !scope.2)
    }

    fn token(&self, id: &str) -> Option<usize> {
        self.tokens.iter().position(|token| token.0 == id)
    }

    fn is_within(&self, scope: &str, ancestor: &str) -> bool {
        let mut current = scope.to_owned();
        loop {
            if current == ancestor {
                return true;
            }
            if current == "root" {
                return false;
            }
            current.clone_from(&self.scope(&current).unwrap().1);
        }
    }

    /// Applies one mutation if it is valid; says whether it was.
    #[expect(
        clippy::too_many_lines,
        reason = "one flat match mirrors the rule table"
    )]
    fn step(&mut self, mutation: &Mutation, at: u64) -> bool {
        if self.status != CaseStatus::Running && !matches!(mutation, Mutation::SetMetadata { .. }) {
            return false;
        }
        let key_ok = |key: &String| !key.is_empty();
        match mutation {
            Mutation::SetCtx {
                ctx: Value::Map(map),
            } if map.keys().all(key_ok) => {
                self.ctx = map.clone();
            }
            Mutation::PatchCtx { set, remove }
                if set.keys().all(key_ok)
                    && remove
                        .iter()
                        .all(|key| key_ok(key) && !set.contains_key(key)) =>
            {
                for key in remove {
                    self.ctx.remove(key);
                }
                self.ctx.extend(set.clone());
            }
            Mutation::AddToken {
                id,
                ip,
                scope,
                value,
            } if self.token(id.as_str()).is_none() && self.active_scope(scope.as_str()) => {
                self.tokens.push((
                    id.to_string(),
                    *ip,
                    scope.to_string(),
                    TokenStatus::Active,
                    value.clone(),
                ));
            }
            Mutation::RemoveToken { id } if self.token(id.as_str()).is_some() => {
                self.tokens.retain(|token| token.0 != id.as_str());
            }
            Mutation::UpdateToken(update) => {
                let Some(at) = self.token(update.id.as_str()) else {
                    return false;
                };
                if update
                    .scope
                    .as_ref()
                    .is_some_and(|scope| !self.active_scope(scope.as_str()))
                {
                    return false;
                }
                let from = self.tokens[at].3;
                if update
                    .status
                    .is_some_and(|to| from != TokenStatus::Active || to == TokenStatus::Active)
                {
                    return false;
                }
                let token = &mut self.tokens[at];
                if let Some(ip) = update.ip {
                    token.1 = ip;
                }
                if let Some(scope) = &update.scope {
                    token.2 = scope.to_string();
                }
                if let Some(value) = &update.value {
                    token.4 = value.clone();
                }
                if let Some(status) = update.status {
                    token.3 = status;
                }
            }
            Mutation::EnterScope { id, parent }
                if self.scope(id.as_str()).is_none() && self.active_scope(parent.as_str()) =>
            {
                self.scopes
                    .push((id.to_string(), parent.to_string(), false, at));
            }
            Mutation::ExitScope { id } => {
                let id = id.as_str();
                let has_child = self
                    .scopes
                    .iter()
                    .any(|scope| scope.1 == id && scope.0 != "root");
                let has_active = self
                    .tokens
                    .iter()
                    .any(|t| t.2 == id && t.3 == TokenStatus::Active);
                if id == "root" || self.scope(id).is_none() || has_child || has_active {
                    return false;
                }
                self.scopes.retain(|scope| scope.0 != id);
                self.tokens.retain(|token| token.2 != id);
            }
            Mutation::CancelScope { id } if self.scope(id.as_str()).is_some() => {
                let inside: Vec<String> = self
                    .scopes
                    .iter()
                    .map(|scope| scope.0.clone())
                    .filter(|scope| self.is_within(scope, id.as_str()))
                    .collect();
                for scope in &mut self.scopes {
                    if inside.contains(&scope.0) {
                        scope.2 = true;
                    }
                }
                for token in &mut self.tokens {
                    if inside.contains(&token.2) && token.3 == TokenStatus::Active {
                        token.3 = TokenStatus::Cancelled;
                    }
                }
            }
            Mutation::IncrementStepCount => self.steps += 1,
            Mutation::SetMetadata { value } => self.metadata = value.clone(),
            Mutation::SetCaseStatus { status } if *status != CaseStatus::Running => {
                self.status = *status;
            }
            _ => return false,
        }
        true
    }

    fn of(state: &CaseState) -> Model {
        let mut scopes: Vec<_> = state
            .scopes
            .values()
            .map(|s| {
                (
                    s.id.to_string(),
                    s.parent.to_string(),
                    s.status == crate::ScopeStatus::Cancelled,
                    s.entered_at_ms,
                )
            })
            .collect();
        let mut tokens: Vec<_> = state
            .tokens
            .values()
            .map(|t| {
                (
                    t.id.to_string(),
                    t.ip,
                    t.scope.to_string(),
                    t.status,
                    t.value.clone(),
                )
            })
            .collect();
        scopes.sort_by(|a, b| a.0.cmp(&b.0));
        tokens.sort_by(|a, b| a.0.cmp(&b.0));
        Model {
            ctx: state.ctx.clone(),
            tokens,
            scopes,
            status: state.status,
            steps: state.step_count,
            metadata: state.metadata.clone(),
        }
    }

    fn sorted(mut self) -> Model {
        self.scopes.sort_by(|a, b| a.0.cmp(&b.0));
        self.tokens.sort_by(|a, b| a.0.cmp(&b.0));
        self
    }
}

pub(super) fn meta(at: u64) -> CommitMeta {
    CommitMeta {
        commit_id: CommitId::generate(),
        committed_at_ms: at,
        writer: "prop".into(),
    }
}

/// Runs `batches` against a case and the model, checking they agree; returns the payloads of
/// the accepted commits and the final case. A second case takes the same batches through
/// [`Case::try_commit`] (dropped once, then kept) and must stay equal to the first.
pub(super) fn run_against_model(
    batches: &[Vec<Mutation>],
) -> Result<(Vec<Vec<u8>>, Case), TestCaseError> {
    let mut case = Case::new(CaseId::new("prop").unwrap());
    let mut tried = Case::new(CaseId::new("prop").unwrap());
    let mut model = Model::new();
    let mut payloads = Vec::new();
    for (n, batch) in batches.iter().enumerate() {
        let at = 1000 + n as u64;
        let mut next = model.clone();
        let rejected: Vec<usize> = (0..batch.len())
            .filter(|&i| !next.step(&batch[i], at))
            .collect();
        for mutation in batch {
            case.buffer(mutation.clone());
            tried.buffer(mutation.clone());
        }
        let before = case.state().clone();
        let meta = meta(at);
        match case.prepare_commit(meta.clone()) {
            Ok(prepared) => {
                prop_assert!(
                    rejected.is_empty(),
                    "accepted a batch the model rejects at {rejected:?}"
                );
                prop_assert_eq!(case.state(), &before, "prepare leaves the case unchanged");
                let undone = tried.try_commit(meta.clone()).unwrap().into_prepared();
                prop_assert_eq!(undone.event(), prepared.event());
                prop_assert_eq!(undone.payload(), prepared.payload());
                prop_assert_eq!(tried.state(), &before, "a dropped tentative is undone");
                prop_assert_eq!(tried.buffered(), batch.len());
                let tentative = tried.try_commit(meta).unwrap();
                prop_assert_eq!(tentative.payload(), prepared.payload());
                prop_assert_eq!(
                    tentative.receipt(Position::new(7)),
                    Receipt::new(prepared.event(), prepared.event_hash(), Position::new(7))
                );
                tentative.keep();
                payloads.push(prepared.payload().to_vec());
                case.complete(prepared).unwrap();
                prop_assert_eq!(tried.state(), case.state(), "keep applies the batch once");
                prop_assert_eq!(tried.last_event_hash(), case.last_event_hash());
                prop_assert_eq!(tried.buffered(), 0);
                prop_assert_eq!(Model::of(case.state()), next.clone().sorted());
                prop_assert_eq!(case.state().check_invariants(), Ok(()));
                model = next;
            }
            Err(PrepareError::Invalid(errors)) => {
                let indexes: Vec<usize> = errors.0.iter().map(|error| error.index).collect();
                prop_assert_eq!(indexes, rejected);
                prop_assert_eq!(case.state(), &before);
                prop_assert_eq!(case.buffered(), batch.len());
                let refused = tried.try_commit(meta).map(|_| ()).unwrap_err();
                prop_assert_eq!(refused, PrepareError::Invalid(errors));
                prop_assert_eq!(tried.state(), &before);
                case.rollback();
                tried.rollback();
            }
            Err(other) => return Err(TestCaseError::fail(format!("unexpected {other}"))),
        }
    }
    Ok((payloads, case))
}

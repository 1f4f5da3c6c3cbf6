//! The errors of the store, and [`Code`]: the machine-readable names of what can be wrong
//! with stored data, shared by fold errors, audit problems and quarantine records.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::hash::Hash;
pub use crate::hash::HashError;
use crate::id::CaseId;
pub use crate::id::IdError;
use crate::position::Version;

/// What is wrong with a stored event or view, for machines: audit problems, quarantine records
/// and fold errors carry one. Its text form (serde, [`Code::as_str`]) is `snake_case` and is
/// part of the JSON and CBOR the store writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Code {
    /// The payload is not CBOR of an event's shape.
    Undecodable,
    /// The event's schema version is unknown.
    UnknownSchema,
    /// The event decodes but cannot be (a missing field, version 0, a broken first link).
    InvalidEvent,
    /// The event names another case than the one it is stored under.
    WrongCase,
    /// The event's version does not follow the case's.
    VersionGap,
    /// The event's `prev_event_hash` is not the hash of the case's previous event.
    BrokenChain,
    /// The event's mutations do not validate against the case's state.
    InvalidMutations,
    /// Applying the event gives another state than the one its writer committed.
    StateHashMismatch,
    /// The event is stored under a subject or key that names no valid case id.
    InvalidCaseId,
    /// The case's newest event is not the head the auditor expected (a cut history).
    HeadMismatch,
    /// A commit id stored a second time in the case (a retry stored after the log forgot the
    /// id, such as after JetStream's duplicate window).
    DuplicateCommitId,
    /// The case's state is larger than the view store takes: the projector halts the case.
    StateTooLarge,
    /// A checkpoint that is not a signed note of a checkpoint.
    CheckpointMalformed,
    /// A checkpoint signed by no key the verifier trusts.
    CheckpointKeyUnknown,
    /// A checkpoint whose signature by a trusted key does not verify.
    CheckpointSignatureInvalid,
    /// A checkpoint whose tree does not extend the one before it (no consistency proof).
    CheckpointInconsistent,
    /// The log's events up to a checkpoint's size make another root: history was rewritten.
    HistoryRewritten,
    /// The log holds fewer events than a checkpoint counted: its newest events were cut.
    LogCut,
    /// An inclusion proof that does not lead to its checkpoint's root.
    InclusionProofInvalid,
}

impl Code {
    /// Every code, in declaration order.
    pub const ALL: [Code; 19] = [
        Code::Undecodable,
        Code::UnknownSchema,
        Code::InvalidEvent,
        Code::WrongCase,
        Code::VersionGap,
        Code::BrokenChain,
        Code::InvalidMutations,
        Code::StateHashMismatch,
        Code::InvalidCaseId,
        Code::HeadMismatch,
        Code::DuplicateCommitId,
        Code::StateTooLarge,
        Code::CheckpointMalformed,
        Code::CheckpointKeyUnknown,
        Code::CheckpointSignatureInvalid,
        Code::CheckpointInconsistent,
        Code::HistoryRewritten,
        Code::LogCut,
        Code::InclusionProofInvalid,
    ];

    /// The code's text form, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Undecodable => "undecodable",
            Code::UnknownSchema => "unknown_schema",
            Code::InvalidEvent => "invalid_event",
            Code::WrongCase => "wrong_case",
            Code::VersionGap => "version_gap",
            Code::BrokenChain => "broken_chain",
            Code::InvalidMutations => "invalid_mutations",
            Code::StateHashMismatch => "state_hash_mismatch",
            Code::InvalidCaseId => "invalid_case_id",
            Code::HeadMismatch => "head_mismatch",
            Code::DuplicateCommitId => "duplicate_commit_id",
            Code::StateTooLarge => "state_too_large",
            Code::CheckpointMalformed => "checkpoint_malformed",
            Code::CheckpointKeyUnknown => "checkpoint_key_unknown",
            Code::CheckpointSignatureInvalid => "checkpoint_signature_invalid",
            Code::CheckpointInconsistent => "checkpoint_inconsistent",
            Code::HistoryRewritten => "history_rewritten",
            Code::LogCut => "log_cut",
            Code::InclusionProofInvalid => "inclusion_proof_invalid",
        }
    }
}

impl std::str::FromStr for Code {
    type Err = UnknownCode;

    fn from_str(text: &str) -> Result<Code, UnknownCode> {
        Code::ALL
            .into_iter()
            .find(|code| code.as_str() == text)
            .ok_or_else(|| UnknownCode(text.to_owned()))
    }
}

/// A text that is no [`Code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a code this store knows")]
pub struct UnknownCode(String);

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why bytes are not a usable event. Decoding never panics on any input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Not CBOR of the event's shape (garbage, truncation, wrong types, an invalid id).
    #[error("not a valid event: {0}")]
    Malformed(String),
    /// Written by a schema version this build does not know.
    #[error("unknown event schema version {found}; this build reads versions 1 to {supported}")]
    UnknownSchema {
        /// The version found.
        found: u64,
        /// The newest version this build reads.
        supported: u64,
    },
    /// A required field is missing.
    #[error("the event has no {0:?} field")]
    MissingField(&'static str),
    /// Well-formed, but its contents cannot be: version 0, a broken first link, and so on.
    #[error("the event is impossible: {0}")]
    Impossible(String),
}

/// A state breaks an invariant that every state `apply` produces keeps: a stored view that
/// was not written by this store, or was altered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the case state is inconsistent: {0}")]
pub struct InvariantError(pub(crate) String);

/// Why a buffered batch cannot become an event. The case is unchanged and the buffer kept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PrepareError {
    /// One or more mutations are invalid; every error is listed.
    #[error(transparent)]
    Invalid(#[from] ValidationErrors),
    /// The batch holds more mutations than allowed.
    #[error("the batch holds {count} mutations, over the limit of {limit}; split it")]
    TooManyMutations {
        /// Mutations in the batch.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// The encoded event is larger than allowed.
    #[error("the event is {size} bytes, over the limit of {limit}; split the batch")]
    TooLarge {
        /// The encoded size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// The writer id is empty or too long.
    #[error("invalid writer id: {0}")]
    InvalidWriter(String),
    /// The state the batch would leave is larger than allowed.
    #[error(
        "the case state would be {size} bytes, over the limit of {limit}; keep less in the \
         case (ctx, tokens, metadata), or raise Limits::state_size_max_bytes up to what the \
         view store takes"
    )]
    StateTooLarge {
        /// The encoded size of the state the batch would leave, in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
}

/// Why an event cannot be folded into a case. The case is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FoldError {
    /// The payload is not a valid event.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The event belongs to another case.
    #[error("the event is for case {found}, not {expected}")]
    WrongCase {
        /// This case.
        expected: CaseId,
        /// The event's case.
        found: CaseId,
    },
    /// The event's version does not follow the case's.
    #[error("the event has version {found}; the case expects version {expected}")]
    VersionGap {
        /// The version that should come next.
        expected: Version,
        /// The event's version.
        found: Version,
    },
    /// `prev_event_hash` does not match the previous event: altered, dropped, reordered or
    /// forged history.
    #[error("broken chain: prev_event_hash is {found}, the previous event hashes to {expected}")]
    BrokenChain {
        /// The hash of the case's previous event.
        expected: Hash,
        /// The event's `prev_event_hash`.
        found: Hash,
    },
    /// The event's mutations do not validate against the case's state.
    #[error("the event does not apply: {0}")]
    Invalid(ValidationErrors),
    /// Applying the event gives a state other than the one the writer committed.
    #[error("state hash mismatch: the event says {expected}, replay gives {actual}")]
    StateHashMismatch {
        /// The event's `state_hash`.
        expected: Hash,
        /// The hash of the folded state.
        actual: Hash,
    },
}

impl FoldError {
    /// The machine-readable code of the error (quarantine and audit reports carry it).
    pub fn code(&self) -> Code {
        match self {
            FoldError::Decode(DecodeError::Malformed(_)) => Code::Undecodable,
            FoldError::Decode(DecodeError::UnknownSchema { .. }) => Code::UnknownSchema,
            FoldError::Decode(_) => Code::InvalidEvent,
            FoldError::WrongCase { .. } => Code::WrongCase,
            FoldError::VersionGap { .. } => Code::VersionGap,
            FoldError::BrokenChain { .. } => Code::BrokenChain,
            FoldError::Invalid(_) => Code::InvalidMutations,
            FoldError::StateHashMismatch { .. } => Code::StateHashMismatch,
        }
    }
}

/// [`crate::Case::complete`] was given a commit prepared against another state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the prepared commit (version {prepared}) does not follow the case (version {current})")]
pub struct StaleCommit {
    /// The prepared commit's version.
    pub prepared: Version,
    /// The case's version.
    pub current: Version,
}

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

/// One invalid mutation of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ValidationError {
    /// The mutation's index in the batch (0-based).
    pub index: usize,
    /// The mutation's `op`.
    pub kind: &'static str,
    /// Why it is invalid.
    #[serde(flatten)]
    pub reason: Reason,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "mutation {} ({}): {}",
            self.index, self.kind, self.reason
        )
    }
}

impl std::error::Error for ValidationError {}

/// Every error of an invalid batch, in mutation order (never empty).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ValidationErrors(pub Vec<ValidationError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} invalid mutation(s): ", self.0.len())?;
        for (n, error) in self.0.iter().enumerate() {
            if n > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text form is what serde writes: reports and records written before and after
    /// agree.
    #[test]
    fn each_code_serializes_as_its_text() {
        for code in Code::ALL {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("{:?}", code.as_str()));
            assert_eq!(serde_json::from_str::<Code>(&json).unwrap(), code);
            assert_eq!(code.as_str().parse::<Code>().unwrap(), code);
        }
    }
}

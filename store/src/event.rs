//! [`Event`]: the CBOR record of one commit (encoded and decoded in [`crate::codec`]).
//!
//! The payload is a public contract read by auditors in other languages: a CBOR map with the
//! text keys below, schema version 1. `prev_event_hash` is the SHA-256 of the exact payload
//! bytes of the case's previous event, so each case's events form a hash chain that anyone can
//! verify from the stored bytes without re-encoding.

use serde::Serialize;

use crate::error::DecodeError;
use crate::hash::Hash;
use crate::id::{CaseId, CommitId};
use crate::mutation::Mutation;
use crate::position::Version;

/// The event schema version this build writes.
pub const SCHEMA_VERSION: u64 = 1;

/// One commit, as stored in the log. Field order is the encoding's key order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Always [`SCHEMA_VERSION`] once decoded (older versions are upcast).
    pub schema: u64,
    /// The commit's idempotency key, equal to the `Nats-Msg-Id` header.
    pub commit_id: CommitId,
    /// The case the commit changed.
    pub case_id: CaseId,
    /// 1 for the case's first commit, then +1 each.
    pub version: Version,
    /// The resolved mutations, in order.
    pub mutations: Vec<Mutation>,
    /// The writer's clock, ms since the Unix epoch.
    pub committed_at_ms: u64,
    /// The writer's id.
    pub writer: String,
    /// SHA-256 of the canonical state after this commit.
    pub state_hash: Hash,
    /// SHA-256 of the case's previous event payload ([`Hash::ZERO`] for version 1).
    pub prev_event_hash: Hash,
}

impl Event {
    /// The checks every event passes on both sides of the codec.
    pub(crate) fn check(&self) -> Result<(), DecodeError> {
        if self.version == Version::ZERO {
            return Err(DecodeError::Impossible(
                "version 0; versions start at 1".into(),
            ));
        }
        if (self.version == 1) != (self.prev_event_hash == Hash::ZERO) {
            return Err(DecodeError::Impossible(format!(
                "version {} with prev_event_hash {}; only version 1 links to the zero hash",
                self.version, self.prev_event_hash
            )));
        }
        if self.writer.is_empty() {
            return Err(DecodeError::Impossible("the writer id is empty".into()));
        }
        Ok(())
    }
}

//! [`Receipt`]: what a commit returns and what auditors read.

use serde::Serialize;

use crate::event::Event;
use crate::hash::Hash;
use crate::id::{CaseId, CommitId};
use crate::position::{Position, Version};

/// The proof of one commit: its ids, its position in the log and its hashes. Auditors rebuild
/// receipts from the stored events and check that each links to the one before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Receipt {
    /// The commit's idempotency key.
    pub commit_id: CommitId,
    /// The case.
    pub case_id: CaseId,
    /// The case's version after the commit.
    pub version: Version,
    /// The event's position (sequence number) in the log.
    pub position: Position,
    /// How many mutations the commit held.
    pub mutation_count: usize,
    /// SHA-256 of the event's payload.
    #[serde(serialize_with = "hex_hash")]
    pub event_hash: Hash,
    /// SHA-256 of the case's previous event payload.
    #[serde(serialize_with = "hex_hash")]
    pub prev_event_hash: Hash,
    /// SHA-256 of the state after the commit.
    #[serde(serialize_with = "hex_hash")]
    pub state_hash: Hash,
    /// The writer's clock, ms since the Unix epoch.
    pub committed_at_ms: u64,
}

fn hex_hash<S: serde::Serializer>(hash: &Hash, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&hash.to_hex())
}

impl Receipt {
    /// The receipt of `event`, stored at `position`, whose payload hashes to `event_hash`.
    pub fn new(event: &Event, event_hash: Hash, position: Position) -> Self {
        Receipt {
            commit_id: event.commit_id,
            case_id: event.case_id.clone(),
            version: event.version,
            position,
            mutation_count: event.mutations.len(),
            event_hash,
            prev_event_hash: event.prev_event_hash,
            state_hash: event.state_hash,
            committed_at_ms: event.committed_at_ms,
        }
    }
}

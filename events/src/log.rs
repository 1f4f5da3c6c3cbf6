//! [`EventLog`]: the one interface every event log backend implements.
//!
//! Backends are thin: they append with an idempotency key and an expected position, and read
//! events back. The commit protocol that resolves retries and unknown outcomes lives once, in
//! [`crate::client`], on top of this trait.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use futures::Stream;
use wfstate_store::{CaseId, CommitId, Position};

use crate::error::LogError;

/// One event as stored in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// The event's position (stream sequence).
    pub position: Position,
    /// The case the event was stored under (its subject or key), as the log knows it.
    pub case_id: String,
    /// The idempotency key it was stored with (`Nats-Msg-Id`), if any.
    pub commit_id: Option<CommitId>,
    /// The exact payload bytes.
    pub payload: Bytes,
}

impl StoredEvent {
    /// The event a message of a JetStream stream carries: its case named by its subject
    /// (`<subject_prefix>.<case id>`, `<subject_prefix>.<partition>.<case id>` in a
    /// partitioned stream, or the whole subject if it has another form), its commit id by its
    /// `Nats-Msg-Id` text (none when that is not a commit id).
    pub fn from_message(
        subject_prefix: &str,
        position: Position,
        subject: &str,
        message_id: Option<&str>,
        payload: Bytes,
    ) -> StoredEvent {
        // A case id has no dot: a rest with one holds a partition first.
        let case_id = subject
            .strip_prefix(subject_prefix)
            .and_then(|rest| rest.strip_prefix('.'))
            .map_or(subject, |rest| {
                rest.split_once('.').map_or(rest, |(_, id)| id)
            })
            .to_owned();
        StoredEvent {
            position,
            case_id,
            commit_id: message_id.and_then(|id| id.parse().ok()),
            payload,
        }
    }
}

/// The log's answer to an append: the protocol's normal outcomes, as values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum AppendOutcome {
    /// The event is stored at `position` (for a multi-event append: its last event's).
    Appended {
        /// Where the event is stored.
        position: Position,
    },
    /// The log already had an event with this commit id, stored by an earlier attempt (for a
    /// multi-event append: one of its commit ids), and stored nothing now. `position` is
    /// where that event is, when the log says.
    Duplicate {
        /// The stored event's position, when known.
        position: Option<Position>,
    },
    /// The case's last event is not at the expected position; nothing was stored. `actual`
    /// is the case's last position when the log reports it (on a replicated stream the
    /// server may not know it yet): read the case to tell another writer's event from an
    /// earlier attempt of this one.
    Conflict {
        /// The case's last position, when known.
        actual: Option<Position>,
    },
}

impl AppendOutcome {
    /// Where the event with this commit id is stored, when the log said: the position of an
    /// append or of the duplicate it found; `None` for a conflict.
    pub fn stored_at(&self) -> Option<Position> {
        match *self {
            AppendOutcome::Appended { position } => Some(position),
            AppendOutcome::Duplicate { position } => position,
            AppendOutcome::Conflict { .. } => None,
        }
    }
}

/// A stream of events, in position order.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<StoredEvent, LogError>> + Send>>;

/// An append-only, durable log of case events.
///
/// Positions are the log's own sequence numbers: they increase, but a case's positions are
/// not contiguous (other cases' events sit between them).
pub trait EventLog: Send + Sync + 'static {
    /// Appends `payload` as the next event of `case_id`, if the case's last event is at
    /// `expected_position` (0: the case has no events). `commit_id` makes a retry of the same
    /// append land at most once.
    fn append(
        &self,
        case_id: &CaseId,
        commit_id: CommitId,
        expected_position: Position,
        payload: Bytes,
    ) -> impl Future<Output = Result<AppendOutcome, LogError>> + Send;

    /// Appends `events` (commit ids and payloads) as the case's next events in one round
    /// trip, all of them, contiguously, or none, if the case's last event is at
    /// `expected_position`. [`AppendOutcome::Appended`] carries the position of the last one;
    /// an append holding a commit id the log already has stores nothing
    /// ([`AppendOutcome::Duplicate`]): read the case to see whether it landed.
    fn append_many(
        &self,
        case_id: &CaseId,
        events: &[(CommitId, Bytes)],
        expected_position: Position,
    ) -> impl Future<Output = Result<AppendOutcome, LogError>> + Send;

    /// The case's last event, if it has any.
    fn last_event(
        &self,
        case_id: &CaseId,
    ) -> impl Future<Output = Result<Option<StoredEvent>, LogError>> + Send;

    /// The case's first event after `position`, if any.
    fn event_after(
        &self,
        case_id: &CaseId,
        position: Position,
    ) -> impl Future<Output = Result<Option<StoredEvent>, LogError>> + Send;

    /// The event at `position`, if there is one. Like [`EventLog::last_event`] and
    /// [`EventLog::event_after`], it sees every event acknowledged before it was called (on
    /// JetStream it asks the stream's leader): the client decides commits' outcomes with it.
    fn event_at(
        &self,
        position: Position,
    ) -> impl Future<Output = Result<Option<StoredEvent>, LogError>> + Send;

    /// The case's events after `position`, in order, up to its last event when called.
    fn history(
        &self,
        case_id: &CaseId,
        after_position: Position,
    ) -> impl Future<Output = Result<EventStream, LogError>> + Send;

    /// Every event after `position`, in order, waiting for new ones as they are appended.
    fn follow(
        &self,
        after_position: Position,
    ) -> impl Future<Output = Result<EventStream, LogError>> + Send;

    /// The position of the log's last event (0 when empty).
    fn last_position(&self) -> impl Future<Output = Result<Position, LogError>> + Send;

    /// The largest payload the log accepts, in bytes.
    fn payload_size_max(&self) -> usize;
}

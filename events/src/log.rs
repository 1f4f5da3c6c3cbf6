//! [`EventLog`]: the one interface every event log backend implements.
//!
//! Backends are thin: they append with an idempotency key and an expected position, and read
//! events back. The commit protocol that resolves retries and unknown outcomes lives once, in
//! [`crate::client`], on top of this trait.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use futures::Stream;
use wfstate_store::{CaseId, CommitId};

/// One event as stored in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// The event's position (stream sequence).
    pub position: u64,
    /// The case the event was stored under (its subject or key), as the log knows it.
    pub case_id: String,
    /// The idempotency key it was stored with (`Nats-Msg-Id`), if any.
    pub commit_id: Option<CommitId>,
    /// The exact payload bytes.
    pub payload: Bytes,
}

/// A successful append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Where the event is stored.
    pub position: u64,
    /// The log already had an event with this commit id (stored by an earlier attempt).
    pub duplicate: bool,
}

/// A stream of events, in position order.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<StoredEvent, LogError>> + Send>>;

/// What can go wrong in a backend.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// The case's last event is not at the expected position. `actual` is the case's last
    /// position when the log reports it.
    #[error("conflict: expected the case's last event at position {expected}, found {actual:?}")]
    Conflict {
        /// The position the append expected.
        expected: u64,
        /// The case's last position, when known.
        actual: Option<u64>,
    },
    /// The log answered with a conflict that may be transient (a leader change): the same
    /// append can be resolved by reading the case.
    #[error("the log reported a possibly transient sequence conflict: {0}")]
    TransientConflict(String),
    /// The log cannot be reached or did not answer in time; the outcome of a write is unknown.
    #[error("the event log is unavailable: {0}")]
    Unavailable(String),
    /// The event is larger than the log accepts.
    #[error("the event is {size} bytes, over the log's limit of {limit}")]
    TooLarge {
        /// The payload size.
        size: usize,
        /// The log's limit.
        limit: usize,
    },
    /// The credentials in use may not do this.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The log or its stream is configured in a way this store refuses.
    #[error("unusable event log configuration: {0}")]
    Config(String),
    /// Anything else the log reported.
    #[error("event log error: {0}")]
    Other(String),
}

impl LogError {
    /// Refuses a payload over `limit` bytes, before anything is sent.
    ///
    /// # Errors
    /// [`LogError::TooLarge`] with the size and the limit.
    pub fn check_size(payload: &[u8], limit: usize) -> Result<(), LogError> {
        if payload.len() > limit {
            return Err(LogError::TooLarge {
                size: payload.len(),
                limit,
            });
        }
        Ok(())
    }

    /// Whether the same request may succeed if sent again.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            LogError::Unavailable(_) | LogError::TransientConflict(_)
        )
    }
}

/// An append-only, durable log of case events.
///
/// Positions are the log's own sequence numbers: they increase, but a case's positions are
/// not contiguous (other cases' events sit between them).
pub trait EventLog: Send + Sync + 'static {
    /// Appends `payload` as the next event of `case`, if the case's last event is at
    /// `expected_position` (0: the case has no events). `commit_id` makes a retry of the same
    /// append land at most once.
    fn append(
        &self,
        case: &CaseId,
        commit_id: CommitId,
        expected_position: u64,
        payload: Bytes,
    ) -> impl Future<Output = Result<Appended, LogError>> + Send;

    /// Appends `events` (commit ids and payloads) as the case's next events, all of them,
    /// contiguously, or none, if the case's last event is at `expected_position`; returns the
    /// position of the last one. A batch holding a commit id the log already has is refused
    /// whole ([`LogError::TransientConflict`]): read the case to see whether it landed.
    fn append_batch(
        &self,
        case: &CaseId,
        events: &[(CommitId, Bytes)],
        expected_position: u64,
    ) -> impl Future<Output = Result<u64, LogError>> + Send;

    /// The case's last event, if it has any.
    fn last_event(
        &self,
        case: &CaseId,
    ) -> impl Future<Output = Result<Option<StoredEvent>, LogError>> + Send;

    /// The case's first event after `position`, if any.
    fn event_after(
        &self,
        case: &CaseId,
        position: u64,
    ) -> impl Future<Output = Result<Option<StoredEvent>, LogError>> + Send;

    /// The event at `position`, if there is one.
    fn event_at(
        &self,
        position: u64,
    ) -> impl Future<Output = Result<Option<StoredEvent>, LogError>> + Send;

    /// The case's events after `position`, in order, up to its last event when called.
    fn history(
        &self,
        case: &CaseId,
        after_position: u64,
    ) -> impl Future<Output = Result<EventStream, LogError>> + Send;

    /// Every event after `position`, in order, waiting for new ones as they are appended.
    fn follow(
        &self,
        after_position: u64,
    ) -> impl Future<Output = Result<EventStream, LogError>> + Send;

    /// The position of the log's last event (0 when empty).
    fn last_position(&self) -> impl Future<Output = Result<u64, LogError>> + Send;

    /// The largest payload the log accepts, in bytes.
    fn payload_size_max(&self) -> usize;
}

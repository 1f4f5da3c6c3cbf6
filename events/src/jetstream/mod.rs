//! The JetStream backend: one stream (`WFSTATE`), one subject per case
//! (`wfstate.case.<case id>`), the commit id as `Nats-Msg-Id` and the expected position as
//! `Nats-Expected-Last-Subject-Sequence`.
//!
//! At start-up it checks the server version (2.12 or newer: older servers lack fixes to
//! expected-sequence checks and dedup that the commit protocol relies on) and the stream's
//! configuration, and refuses a stream whose limits could silently drop case events. Every
//! answer of the server is classified by its error code ([`codes`]), never by its text.

mod append;
mod batch;
mod codes;
mod config;
mod connect;
mod pull;
mod read;
mod stream;

use async_nats::jetstream;
use bytes::Bytes;
use wfstate_store::{CaseId, CommitId, Position};

pub use batch::DirectEntry;
pub(crate) use codes::nats_failure;
pub use config::{Auth, JetStreamConfig, Tls, partition_of};

use crate::error::LogError;
use crate::log::{AppendOutcome, EventLog, EventStream, StoredEvent};

/// The oldest server version the store accepts.
pub const SERVER_VERSION_MIN: (u64, u64, u64) = (2, 12, 0);

/// How many events of a case's history are read with single direct gets before batches are.
const DIRECT_READS: usize = 16;

/// The most events one batched direct get asks for.
const DIRECT_BATCH: usize = 1024;

/// Room left in `max_payload` for the headers the store adds.
const HEADER_ROOM_BYTES: usize = 512;

/// The JetStream event log.
#[derive(Clone)]
pub struct JetStreamLog {
    client: async_nats::Client,
    context: jetstream::Context,
    stream: jetstream::stream::Stream,
    subject_prefix: String,
    /// The stream's partitions, if its subjects are partitioned.
    partitions: Option<u32>,
    payload_size_max: usize,
    /// The longest wait for one request.
    request_timeout: std::time::Duration,
    /// Whether the server refused this connection a consumer: long histories are then read
    /// in batched direct gets.
    consumers_refused: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The replicas asked for (or chosen): the stream has at least as many.
    replicas: usize,
    urls: String,
    violations: connect::Violations,
}

impl std::fmt::Debug for JetStreamLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamLog")
            .field("urls", &self.urls)
            .field("subject_prefix", &self.subject_prefix)
            .finish_non_exhaustive()
    }
}

impl JetStreamLog {
    /// The server URLs this log connected to.
    pub fn urls(&self) -> &str {
        &self.urls
    }

    /// The JetStream context of the connection: the one way from the store to the async-nats
    /// API, for what the store does not offer itself (the projector's consumer and buckets,
    /// benchmarks, tests). Writing to the stream through it bypasses every check of the commit
    /// protocol.
    pub fn context(&self) -> &jetstream::Context {
        &self.context
    }

    /// The name of the stream holding the events (open it through [`JetStreamLog::context`]).
    pub fn stream_name(&self) -> &str {
        &self.stream.cached_info().config.name
    }

    /// How many replicas the stream was asked to have (it has at least as many); the
    /// projector's buckets get as many.
    pub fn replicas(&self) -> usize {
        self.replicas
    }

    /// Case subjects are `<subject_prefix>.<case id>`.
    pub fn subject_prefix(&self) -> &str {
        &self.subject_prefix
    }

    /// How many partitions the stream stores its cases' events in
    /// (`<subject_prefix>.<partition>.<case id>`), if it is partitioned.
    pub fn partitions(&self) -> Option<u32> {
        self.partitions
    }

    /// The subject a case's events are stored under: its [`JetStreamLog::subject`], with its
    /// partition in a partitioned stream.
    pub fn stored_subject(&self, case_id: &CaseId) -> String {
        match self.partitions {
            Some(count) => format!(
                "{}.{}.{}",
                self.subject_prefix,
                partition_of(case_id.as_str(), count),
                case_id
            ),
            None => self.subject(case_id),
        }
    }

    /// The subjects every case's events are stored under (a filter; empty: the whole
    /// stream).
    pub fn stored_subjects(&self) -> String {
        let published = format!("{}.*", self.subject_prefix);
        match self.partitions {
            // The server reads a filter that is not the stream's own subjects message by
            // message, about four times slower: when the stream holds only case events, the
            // whole stream is asked for instead.
            Some(_) if self.stream.cached_info().config.subjects == [published.as_str()] => {
                String::new()
            }
            Some(_) => format!("{}.*.*", self.subject_prefix),
            None => published,
        }
    }

    /// The subjects the events of partition `index` of `count` are stored under (a filter),
    /// when the stream is partitioned in `count`: then the server delivers a partition's
    /// events alone.
    pub fn partition_subjects(&self, index: u32, count: u32) -> Option<String> {
        (self.partitions == Some(count)).then(|| format!("{}.{index}.*", self.subject_prefix))
    }

    /// The subject a case's events are published to.
    pub fn subject(&self, case_id: &CaseId) -> String {
        // Once per commit: plain appends, without the formatting machinery.
        let mut subject =
            String::with_capacity(self.subject_prefix.len() + 1 + case_id.as_str().len());
        subject.push_str(&self.subject_prefix);
        subject.push('.');
        subject.push_str(case_id.as_str());
        subject
    }
}

impl EventLog for JetStreamLog {
    async fn append(
        &self,
        case_id: &CaseId,
        commit_id: CommitId,
        expected_position: Position,
        payload: Bytes,
    ) -> Result<AppendOutcome, LogError> {
        self.append_one(case_id, commit_id, expected_position, payload)
            .await
    }

    async fn append_many(
        &self,
        case_id: &CaseId,
        events: &[(CommitId, Bytes)],
        expected_position: Position,
    ) -> Result<AppendOutcome, LogError> {
        self.append_batch(case_id, events, expected_position).await
    }

    async fn last_event(&self, case_id: &CaseId) -> Result<Option<StoredEvent>, LogError> {
        self.last_of(case_id).await
    }

    async fn event_after(
        &self,
        case_id: &CaseId,
        position: Position,
    ) -> Result<Option<StoredEvent>, LogError> {
        self.next_event(case_id, position).await
    }

    async fn event_at(&self, position: Position) -> Result<Option<StoredEvent>, LogError> {
        // Read from the leader: the client reads an event at a position to decide a commit's
        // outcome, which a replica behind would answer "not found".
        self.leader_get(self.stream.get_raw_message(position.get()))
            .await
    }

    async fn history(
        &self,
        case_id: &CaseId,
        after_position: Position,
    ) -> Result<EventStream, LogError> {
        self.read_history(case_id, after_position).await
    }

    async fn follow(&self, after_position: Position) -> Result<EventStream, LogError> {
        self.read_all(after_position).await
    }

    async fn last_position(&self) -> Result<Position, LogError> {
        self.stream_last_position().await
    }

    fn payload_size_max(&self) -> usize {
        self.payload_size_max
    }
}

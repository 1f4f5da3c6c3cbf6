//! The backends the suite runs on, and helpers every check shares.

use std::time::Duration;

use bytes::Bytes;
use wfstate_events::{
    EmbeddedConfig, EmbeddedLog, EventLog, JetStreamConfig, JetStreamLog, MemoryLog, Workspace,
};
use wfstate_projector::{EmbeddedProjector, JetStreamProjector, Projector, ProjectorConfig};
use wfstate_store::{CaseId, CommitId, CommitMeta, Position};
use wfstate_tests::NatsServer;

/// A backend of the log.
pub trait Fixture {
    type Log: EventLog + Clone;
    fn log(&self) -> Self::Log;
}

/// A backend with a projector of its own.
pub trait ProjectorFixture: Fixture {
    type Projector: Projector;
    async fn projector(&self) -> Self::Projector;
    /// Writes `bytes` as the case's view, around the projector (an operator, a bug).
    async fn put_view(&self, case_id: &str, bytes: &[u8]);
    /// Deletes the case's view, around the projector.
    async fn delete_view(&self, case_id: &str);
}

pub struct JetStream {
    _server: NatsServer,
    log: JetStreamLog,
}

impl JetStream {
    pub async fn start() -> Self {
        JetStream::start_with(None).await
    }

    async fn start_with(partitions: Option<u32>) -> Self {
        let server = NatsServer::start().await;
        let mut config = JetStreamConfig::new(server.url());
        config.partitions = partitions;
        let log = JetStreamLog::connect(&config).await.unwrap();
        assert_eq!(log.partitions(), partitions);
        JetStream {
            _server: server,
            log,
        }
    }
}

/// JetStream with a stream of four partitions: the server stores each case's events under
/// its partition's subjects.
pub struct Partitioned(JetStream);

impl Partitioned {
    pub async fn start() -> Self {
        Partitioned(JetStream::start_with(Some(4)).await)
    }
}

impl Fixture for Partitioned {
    type Log = JetStreamLog;
    fn log(&self) -> JetStreamLog {
        self.0.log()
    }
}

impl ProjectorFixture for Partitioned {
    type Projector = JetStreamProjector;
    async fn projector(&self) -> JetStreamProjector {
        self.0.projector().await
    }

    async fn put_view(&self, case_id: &str, bytes: &[u8]) {
        self.0.put_view(case_id, bytes).await;
    }

    async fn delete_view(&self, case_id: &str) {
        self.0.delete_view(case_id).await;
    }
}

impl Fixture for JetStream {
    type Log = JetStreamLog;
    fn log(&self) -> JetStreamLog {
        self.log.clone()
    }
}

impl ProjectorFixture for JetStream {
    type Projector = JetStreamProjector;
    async fn projector(&self) -> JetStreamProjector {
        let mut config = ProjectorConfig::default();
        config.batch = 32;
        config.fetch_wait = Duration::from_millis(100);
        JetStreamProjector::open(&self.log, config).await.unwrap()
    }

    async fn put_view(&self, case_id: &str, bytes: &[u8]) {
        let bytes = bytes::Bytes::copy_from_slice(bytes);
        self.views().await.put(case_id, bytes).await.unwrap();
    }

    async fn delete_view(&self, case_id: &str) {
        self.views().await.delete(case_id).await.unwrap();
    }
}

impl JetStream {
    async fn views(&self) -> async_nats::jetstream::kv::Store {
        let bucket = ProjectorConfig::default().views_bucket;
        self.log.context().get_key_value(bucket).await.unwrap()
    }
}

pub struct Embedded {
    _dir: tempfile::TempDir,
    log: EmbeddedLog,
}

impl Embedded {
    #[expect(
        clippy::unused_async,
        reason = "the conformance macro awaits every fixture's start"
    )]
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = EmbeddedLog::open(&EmbeddedConfig::new(dir.path())).unwrap();
        Embedded { _dir: dir, log }
    }
}

impl Fixture for Embedded {
    type Log = EmbeddedLog;
    fn log(&self) -> EmbeddedLog {
        self.log.clone()
    }
}

impl ProjectorFixture for Embedded {
    type Projector = EmbeddedProjector;
    async fn projector(&self) -> EmbeddedProjector {
        EmbeddedProjector::open(&self.log, "test", 32).unwrap()
    }

    async fn put_view(&self, case_id: &str, bytes: &[u8]) {
        self.sql(
            "INSERT OR REPLACE INTO views (case_id, position, view) VALUES (?1, 0, ?2)",
            rusqlite::params![case_id, bytes],
        );
    }

    async fn delete_view(&self, case_id: &str) {
        self.sql(
            "DELETE FROM views WHERE case_id = ?1",
            rusqlite::params![case_id],
        );
    }
}

impl Embedded {
    fn sql(&self, statement: &str, params: impl rusqlite::Params) {
        let connection = rusqlite::Connection::open(self.log.path()).unwrap();
        connection.busy_timeout(Duration::from_secs(10)).unwrap();
        connection.execute(statement, params).unwrap();
    }
}

/// The in-memory log.
pub struct Memory {
    log: MemoryLog,
}

impl Memory {
    #[expect(
        clippy::unused_async,
        reason = "the conformance macro awaits every fixture's start"
    )]
    pub async fn start() -> Self {
        Memory {
            log: MemoryLog::new(),
        }
    }
}

impl Fixture for Memory {
    type Log = MemoryLog;
    fn log(&self) -> MemoryLog {
        self.log.clone()
    }
}

/// A workspace over `log` whose retries pause for a millisecond, for scripted faults.
pub fn patient<L: EventLog>(log: L) -> Workspace<L> {
    Workspace::new(log).with_retry(
        wfstate_events::RetryPolicy::default()
            .with_backoff(Duration::from_millis(1), Duration::from_millis(5)),
    )
}

/// A workspace over `log` that gives up after 50 ms of failed attempts, for scripted faults
/// that outlast the deadline.
pub fn hasty<L: EventLog>(log: L) -> Workspace<L> {
    Workspace::new(log).with_retry(
        wfstate_events::RetryPolicy::default()
            .with_deadline(Duration::from_millis(50))
            .with_backoff(Duration::from_millis(1), Duration::from_millis(5)),
    )
}

pub fn case(id: &str) -> CaseId {
    CaseId::new(id).unwrap()
}

pub fn meta() -> CommitMeta {
    CommitMeta {
        commit_id: CommitId::generate(),
        committed_at_ms: 1_700_000_000_000,
        writer: "w".into(),
    }
}

/// Appends raw bytes as the case's next event, around the commit client.
pub async fn inject<L: EventLog>(log: &L, case_id: &str, payload: &[u8]) -> Position {
    let id = case(case_id);
    let last = log
        .last_event(&id)
        .await
        .unwrap()
        .map_or(Position::ZERO, |event| event.position);
    log.append(
        &id,
        CommitId::generate(),
        last,
        Bytes::copy_from_slice(payload),
    )
    .await
    .unwrap()
    .stored_at()
    .unwrap()
}

//! Guards the JetStream commit path against a real nats-server: receipts, replay to the
//! writer's state, dedup, racing writers, lost acknowledgements, invalid ids and oversized
//! events (`commits`); a stopped and a restarted server (`outages`); stream checks,
//! credentials (user and password, token, nkey, creds file) and TLS with client certificates
//! (`access`); multi-event appends (`many`); replicas on a three-node cluster (`cluster`).
#![expect(
    clippy::unwrap_used,
    reason = "test helpers stop the test at the first setup error"
)]

mod access;
mod cluster;
mod commits;
mod many;
mod outages;

use std::time::Duration;

use futures::TryStreamExt;
use wfstate_events::{EventLog, JetStreamConfig, JetStreamLog, RetryPolicy, Workspace};
use wfstate_store::{CaseId, CommitId, CommitMeta, Event, Hash, Position};
use wfstate_tests::NatsServer;

pub(crate) async fn connect(
    server: &NatsServer,
    tune: impl FnOnce(&mut JetStreamConfig),
) -> JetStreamLog {
    let mut config = JetStreamConfig::new(server.url());
    tune(&mut config);
    JetStreamLog::connect(&config)
        .await
        .expect("connect to the test server")
}

pub(crate) async fn workspace(server: &NatsServer) -> Workspace<JetStreamLog> {
    Workspace::new(connect(server, |_| {}).await).with_writer("test-writer")
}

pub(crate) async fn message_count(log: &JetStreamLog) -> u64 {
    let mut stream = log
        .context()
        .get_stream("WFSTATE")
        .await
        .expect("the stream");
    stream.info().await.expect("stream info").state.messages
}

/// An error and every cause behind it, in words.
pub(crate) fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        text = format!("{text}: {cause}");
        next = cause.source();
    }
    text
}

pub(crate) fn case(id: &str) -> CaseId {
    CaseId::new(id).unwrap()
}

pub(crate) fn meta() -> CommitMeta {
    CommitMeta {
        commit_id: CommitId::generate(),
        committed_at_ms: 1_700_000_000_000,
        writer: "w".into(),
    }
}

/// Reads a case's stored payloads and checks they form one gap-free chain.
pub(crate) async fn assert_chain(log: &JetStreamLog, case_id: &CaseId) -> Vec<Event> {
    let stored: Vec<_> = log
        .history(case_id, Position::ZERO)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let mut previous = Hash::ZERO;
    let mut events = Vec::new();
    for (n, stored) in stored.iter().enumerate() {
        let event = Event::decode(&stored.payload).unwrap();
        assert_eq!(event.version.get(), n as u64 + 1, "versions are contiguous");
        assert_eq!(
            event.prev_event_hash, previous,
            "version {} links to its predecessor",
            event.version
        );
        assert_eq!(
            stored.commit_id,
            Some(event.commit_id),
            "Nats-Msg-Id is the commit id"
        );
        previous = Hash::of(&stored.payload);
        events.push(event);
    }
    events
}

pub(crate) fn quick_retry() -> RetryPolicy {
    RetryPolicy::default().with_deadline(Duration::from_secs(2))
}

/// A workspace over `server` that waits 500 ms per request and retries for 2 s: for tests
/// that stop the server under a commit.
pub(crate) async fn impatient(server: &NatsServer) -> Workspace<JetStreamLog> {
    let log = connect(server, |config| {
        config.request_timeout = Duration::from_millis(500);
    })
    .await;
    Workspace::new(log).with_retry(quick_retry())
}

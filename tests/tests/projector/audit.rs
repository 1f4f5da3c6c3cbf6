//! Audit: truncation against an expected head, read-only credentials, following the log.

use std::time::Duration;

use wfstate_events::{EventLog, JetStreamConfig, JetStreamLog, Workspace};
use wfstate_projector::{
    JetStreamProjector, Projector, ViewSource, audit_all, audit_case, audit_follow, replay,
};
use wfstate_store::{CommitId, Event, Hash, Mutation, Version};
use wfstate_tests::NatsServer;

use crate::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_detects_truncation_against_an_expected_head_and_replay_resumes_from_views() {
    let server = NatsServer::start().await;
    let log = connect(server.url()).await;
    let workspace = Workspace::new(log.clone());
    let (mut handle, _) = workspace.create(case("long"), []).await.unwrap();
    let mut receipts = Vec::new();
    for _ in 0..20 {
        handle.buffer(Mutation::IncrementStepCount);
        receipts.push(workspace.commit(&mut handle).await.unwrap());
    }
    let mut seen = Vec::new();
    let clean = audit_case(&log, &case("long"), Some(receipts[19].event_hash), |r| {
        seen.push(r.clone());
    })
    .await
    .unwrap();
    assert!(clean.is_clean(), "{:?}", clean.problems);
    assert_eq!(seen.len(), 21);
    assert_eq!(
        seen[20], receipts[19],
        "audit rebuilds the writer's receipts"
    );
    // A writer holding a later receipt than the log's head: events are missing.
    let truncated = audit_case(&log, &case("long"), Some(Hash::of(b"a later head")), |_| {})
        .await
        .unwrap();
    assert_eq!(truncated.problems[0].code.as_str(), "head_mismatch");

    let mut projector = JetStreamProjector::open(&log, quick_projector())
        .await
        .unwrap();
    projector.catch_up().await.unwrap();
    let view = projector.view(&case("long")).await.unwrap().unwrap();
    for _ in 0..5 {
        handle.buffer(Mutation::IncrementStepCount);
        workspace.commit(&mut handle).await.unwrap();
    }
    let resumed = replay(&log, &case("long"), Some(&view)).await.unwrap();
    assert_eq!(resumed.events_folded, 5);
    assert_eq!(resumed.state, *handle.case().state());
    let scratch = replay(&log, &case("long"), None).await.unwrap();
    assert_eq!(
        (scratch.events_folded, scratch.state),
        (26, handle.case().state().clone())
    );
}

const AUTH_CONFIG: &str = r#"
accounts: {
  APP: {
    jetstream: enabled
    users: [
      { user: writer, password: wpass }
      { user: auditor, password: apass, permissions: {
          publish: {
            allow: [
              "$JS.API.INFO", "$JS.API.STREAM.INFO.WFSTATE",
              "$JS.API.CONSUMER.CREATE.WFSTATE", "$JS.API.CONSUMER.CREATE.WFSTATE.>",
              "$JS.API.CONSUMER.MSG.NEXT.WFSTATE.>", "$JS.API.CONSUMER.INFO.WFSTATE.>",
              "$JS.API.CONSUMER.DELETE.WFSTATE.>",
              "$JS.API.DIRECT.GET.WFSTATE", "$JS.API.DIRECT.GET.WFSTATE.>",
              "$JS.API.STREAM.MSG.GET.WFSTATE"
            ]
          }
          subscribe: { allow: ["_INBOX.>"] }
      } }
      { user: reader, password: rpass, permissions: {
          publish: {
            allow: [
              "$JS.API.INFO", "$JS.API.STREAM.INFO.WFSTATE",
              "$JS.API.DIRECT.GET.WFSTATE", "$JS.API.DIRECT.GET.WFSTATE.>",
              "$JS.API.STREAM.MSG.GET.WFSTATE"
            ]
          }
          subscribe: { allow: ["_INBOX.>"] }
      } }
    ]
  }
}
"#;

/// The configuration of a connection to `server` as `user`.
fn config_as(server: &NatsServer, user: &str, password: &str) -> JetStreamConfig {
    let mut config = JetStreamConfig::new(server.url());
    config.auth = wfstate_events::Auth::UserPassword {
        user: user.into(),
        password: password.into(),
    };
    config
}

/// A connection of `user`, which may not create the stream; a refused request is known
/// after a second.
async fn reader_as(server: &NatsServer, user: &str, password: &str) -> JetStreamLog {
    let mut config = config_as(server, user, password);
    config.create_stream = false;
    config.request_timeout = Duration::from_secs(1);
    JetStreamLog::connect(&config).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_auditor_verifies_every_chain_and_cannot_publish() {
    let server = NatsServer::start_with_config(AUTH_CONFIG);
    let writer = config_as(&server, "writer", "wpass");
    let workspace = Workspace::new(JetStreamLog::connect(&writer).await.unwrap());
    for n in 0..5 {
        let (mut handle, _) = workspace
            .create(case(&format!("a{n}")), [Mutation::set_key("n", n)])
            .await
            .unwrap();
        handle.buffer(Mutation::IncrementStepCount);
        workspace.commit(&mut handle).await.unwrap();
    }

    let auditor = reader_as(&server, "auditor", "apass").await;
    let report = audit_all(&auditor, |_| {}).await.unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!((report.cases, report.events), (5, 10));
    let one = audit_case(&auditor, &case("a3"), None, |_| {})
        .await
        .unwrap();
    assert_eq!((one.events, one.is_clean()), (2, true));

    assert_cannot_commit(&auditor).await;
    let count = workspace.log().last_position().await.unwrap();
    assert_eq!(count, 10, "nothing was stored");
}

/// A user who may read the stream and create no consumer replays and audits a case of 1,100
/// events (two batches past the single reads), and audits the whole stream: both are read in
/// batched direct gets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_without_consumer_rights_reads_a_long_history() {
    let server = NatsServer::start_with_config(AUTH_CONFIG);
    let writer = config_as(&server, "writer", "wpass");
    let workspace = Workspace::new(JetStreamLog::connect(&writer).await.unwrap());
    let (mut handle, _) = workspace
        .create(case("long"), [Mutation::set_key("n", 0)])
        .await
        .unwrap();
    for _ in 1..1100 {
        handle.buffer(Mutation::IncrementStepCount);
        workspace.commit(&mut handle).await.unwrap();
    }

    let reader = reader_as(&server, "reader", "rpass").await;
    let replayed = replay(&reader, &case("long"), None).await.unwrap();
    assert_eq!(replayed.events_folded, 1100);
    assert_eq!(&replayed.state, handle.case().state());
    let audited = audit_case(&reader, &case("long"), None, |_| {})
        .await
        .unwrap();
    assert_eq!((audited.events, audited.is_clean()), (1100, true));
    // The whole stream too, read in batches and followed until its last event.
    let all = audit_all(&reader, |_| {}).await.unwrap();
    assert!(all.is_clean(), "{:?}", all.problems);
    assert_eq!((all.cases, all.events), (1, 1100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_follow_reports_new_events_and_broken_links_as_they_arrive() {
    let server = NatsServer::start().await;
    let log = connect(server.url()).await;
    let workspace = Workspace::new(log.clone());
    let (mut handle, _) = workspace.create(case("watched"), []).await.unwrap();

    let (sender, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let problems = sender.clone();
    let follow_log = log.clone();
    let follower = tokio::spawn(async move {
        audit_follow(
            &follow_log,
            |receipt| sender.send(format!("receipt {}", receipt.version)).unwrap(),
            |problem| {
                problems
                    .send(format!(
                        "problem {} at {}",
                        problem.code,
                        problem.position.get()
                    ))
                    .unwrap();
            },
        )
        .await
    });
    handle.buffer(Mutation::IncrementStepCount);
    workspace.commit(&mut handle).await.unwrap();
    let mut forged = Event::decode(
        &log.last_event(&case("watched"))
            .await
            .unwrap()
            .unwrap()
            .payload,
    )
    .unwrap();
    forged.version = Version::new(3);
    forged.commit_id = CommitId::generate();
    let forged_at = publish_raw(&log, "watched", forged.encode()).await;

    let mut lines = Vec::new();
    while lines.len() < 4 {
        let line = tokio::time::timeout(Duration::from_secs(10), seen.recv())
            .await
            .unwrap()
            .unwrap();
        lines.push(line);
    }
    follower.abort();
    assert_eq!(
        lines,
        [
            "receipt 1",
            "receipt 2",
            "receipt 3",
            &format!("problem broken_chain at {forged_at}")
        ]
    );
}

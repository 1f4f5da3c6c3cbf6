//! A stopped and a restarted server: commits in doubt, resolved once; a reader lost under a
//! long history read.

use std::time::Duration;

use wfstate_events::{CommitErrorKind, JetStreamConfig, JetStreamLog, LogErrorKind, RetryPolicy};
use wfstate_store::{Mutation, Value};
use wfstate_tests::NatsServer;

use crate::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_leaves_the_commit_in_doubt_and_refuses_connections() {
    let mut server = NatsServer::start().await;
    let workspace = impatient(&server).await;
    let (mut handle, _) = workspace
        .create(case("down"), [Mutation::set_key("a", 1)])
        .await
        .unwrap();
    server.stop().await;

    // Bounds against a hang, not measurements: the deadline (2 s) and the connect timeout
    // (1 s) end these well before.
    let bound = Duration::from_mins(1);
    handle.buffer(Mutation::IncrementStepCount);
    let error = tokio::time::timeout(bound, workspace.commit(&mut handle))
        .await
        .expect("the retry deadline ends the commit")
        .unwrap_err();
    assert_eq!(error.kind(), CommitErrorKind::InDoubt, "{error}");
    assert_eq!(handle.case().state().version.get(), 1, "state unchanged");

    // A new connection to a stopped server fails too.
    let mut config = JetStreamConfig::new(server.url());
    config.connect_timeout = Duration::from_secs(1);
    let error = tokio::time::timeout(bound, JetStreamLog::connect(&config))
        .await
        .expect("the connect timeout ends the connection attempt")
        .unwrap_err();
    assert_eq!(error.kind(), LogErrorKind::Unavailable, "{error}");
    assert!(error.to_string().contains(server.url()), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_succeed_after_the_server_restarts() {
    let mut server = NatsServer::start().await;
    let workspace = impatient(&server).await;
    let (mut handle, _) = workspace
        .create(case("phoenix"), [Mutation::set_key("a", 1)])
        .await
        .unwrap();

    server.stop().await;
    handle.buffer(Mutation::IncrementStepCount);
    let in_doubt = workspace.commit(&mut handle).await.unwrap_err();
    assert_eq!(in_doubt.kind(), CommitErrorKind::InDoubt);
    server.restart().await;

    // The next commit re-sends the in-doubt event and resolves it, whether or not it landed.
    let workspace =
        workspace.with_retry(RetryPolicy::default().with_deadline(Duration::from_secs(20)));
    let receipt = workspace.commit(&mut handle).await.unwrap();
    assert_eq!(
        (receipt.version.get(), handle.case().state().step_count),
        (2, 1)
    );
    for _ in 0..3 {
        handle.buffer(Mutation::IncrementStepCount);
        workspace.commit(&mut handle).await.unwrap();
    }
    let events = assert_chain(workspace.log(), &case("phoenix")).await;
    assert_eq!(events.len(), 5);
    assert_eq!(
        workspace
            .load(&case("phoenix"))
            .await
            .unwrap()
            .case()
            .state()
            .step_count,
        4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transact_on_after_an_unknown_outcome_applies_the_change_once() {
    let mut server = NatsServer::start().await;
    let workspace = impatient(&server).await;
    let (mut handle, _) = workspace
        .create(case("once"), [Mutation::set_key("n", 0)])
        .await
        .unwrap();
    let increment = |case: &mut wfstate_events::Draft<'_>| {
        let Some(Value::Integer(n)) = case.state().ctx.get("n").cloned() else {
            panic!("n")
        };
        case.buffer(Mutation::set_key("n", Value::Integer(n + 1)));
    };

    server.stop().await;
    let unknown = workspace
        .transact_on(&mut handle, increment)
        .await
        .unwrap_err();
    assert_eq!(unknown.kind(), CommitErrorKind::InDoubt);
    server.restart().await;

    // The same call again resolves the in-doubt event instead of adding a second increment,
    // whether the client's buffered publish reached the server after the restart or not.
    let workspace =
        workspace.with_retry(RetryPolicy::default().with_deadline(Duration::from_secs(20)));
    workspace.transact_on(&mut handle, increment).await.unwrap();
    assert_eq!(handle.case().state().ctx["n"], Value::from(1));
    let stored = workspace.load(&case("once")).await.unwrap();
    assert_eq!(
        (
            stored.case().state().version.get(),
            stored.case().state().ctx["n"].clone()
        ),
        (2, Value::from(1))
    );
}

/// A long history is read through a consumer of the reader's own. Deleted under the reader
/// (as a server that lost it would), it is replaced from after the last event handed out: the
/// history arrives whole, in order, once; and the reader leaves no consumer behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_history_survives_its_reader_being_deleted() {
    let server = NatsServer::start().await;
    let workspace = workspace(&server).await;
    let id = case("long");
    let (mut handle, receipt) = workspace
        .create(id.clone(), [Mutation::set_key("n", 0)])
        .await
        .unwrap();
    let mut written = vec![receipt.position];
    for n in 1..3000_u64 {
        handle.buffer(Mutation::set_key("n", n));
        written.push(workspace.commit(&mut handle).await.unwrap().position);
    }
    let log = workspace.log();
    let mut stream = log.context().get_stream("WFSTATE").await.unwrap();

    let mut history = log.history(&id, Position::ZERO).await.unwrap();
    let mut read = Vec::new();
    while read.len() < 100 {
        read.push(history.try_next().await.unwrap().unwrap().position);
    }
    let readers: Vec<String> = stream.consumer_names().try_collect().await.unwrap();
    assert_eq!(readers.len(), 1, "one reader: {readers:?}");
    stream.delete_consumer(&readers[0]).await.unwrap();
    while let Some(event) = history.try_next().await.unwrap() {
        read.push(event.position);
    }
    assert_eq!(read, written);

    // Deleted in the background: bounded wait.
    let mut left = Vec::new();
    for _ in 0..50 {
        left = stream.consumer_names().try_collect().await.unwrap();
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(left.is_empty(), "readers left behind: {left:?}");
    assert_eq!(stream.info().await.unwrap().state.consumer_count, 0);
}

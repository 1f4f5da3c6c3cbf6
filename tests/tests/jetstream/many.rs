//! Several commits of one case in one atomic round trip.

use std::time::Duration;

use bytes::Bytes;
use wfstate_events::{AppendOutcome, CommitError, CommitErrorKind, EventLog, RetryPolicy};
use wfstate_store::{CommitId, Mutation, Position, TokenId};
use wfstate_tests::NatsServer;

use crate::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_case_commits_several_batches_in_one_atomic_round_trip() {
    let server = NatsServer::start().await;
    let workspace = workspace(&server).await;
    let (mut handle, _) = workspace
        .create(case("hot"), [Mutation::set_key("n", 0)])
        .await
        .unwrap();
    let batches: Vec<Vec<Mutation>> = (1..=10)
        .map(|n| vec![Mutation::set_key("n", n), Mutation::IncrementStepCount])
        .collect();
    let receipts = workspace.commit_many(&mut handle, batches).await.unwrap();

    // One event per batch, contiguous, each chained to the one before.
    let versions: Vec<u64> = receipts.iter().map(|r| r.version.get()).collect();
    assert_eq!(versions, (2..=11).collect::<Vec<_>>());
    for pair in receipts.windows(2) {
        assert_eq!(pair[1].prev_event_hash, pair[0].event_hash);
        assert_eq!(pair[1].position.get(), pair[0].position.get() + 1);
    }
    assert_eq!(assert_chain(workspace.log(), &case("hot")).await.len(), 11);
    assert_eq!(handle.case().state().step_count, 10);
    assert_eq!(handle.position(), receipts[9].position.get());
    let loaded = workspace.load(&case("hot")).await.unwrap();
    assert_eq!(loaded.case().state(), handle.case().state());
    // The handle goes on with ordinary commits.
    handle.buffer(Mutation::IncrementStepCount);
    assert_eq!(workspace.commit(&mut handle).await.unwrap().version, 12);
}

/// An atomic batch whose outcome is unknown stays in the handle, blocks other commits on it,
/// and is resolved by sending the very same events again: stored once, whether the earlier
/// attempt had landed or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_atomic_batch_in_doubt_is_resolved_and_never_applied_twice() {
    let mut server = NatsServer::start().await;
    let quick = impatient(&server).await;
    let patient = quick
        .clone()
        .with_retry(RetryPolicy::default().with_deadline(Duration::from_secs(20)));
    let (mut handle, _) = quick
        .create(case("doubt"), [Mutation::set_key("n", 0)])
        .await
        .unwrap();
    let batches = || vec![vec![Mutation::IncrementStepCount]; 3];

    // Sent while the server is down.
    server.stop().await;
    let error = quick.commit_many(&mut handle, batches()).await.unwrap_err();
    assert_eq!(error.kind(), CommitErrorKind::InDoubt, "{error}");
    assert_eq!(handle.in_doubt().len(), 3);
    assert_eq!(handle.case().state().version.get(), 1, "the state waits");
    // Nothing else is committed on the handle while the batch is in doubt.
    let refused = quick.commit_many(&mut handle, batches()).await.unwrap_err();
    assert!(refused.to_string().contains("in doubt"), "{refused}");
    handle.buffer(Mutation::IncrementStepCount);
    let refused = quick.commit(&mut handle).await.unwrap_err();
    assert!(refused.to_string().contains("in doubt"), "{refused}");
    handle.rollback();
    server.restart().await;
    let receipts = patient.commit_many(&mut handle, Vec::new()).await.unwrap();
    let versions: Vec<u64> = receipts.iter().map(|r| r.version.get()).collect();
    assert_eq!(versions, [2, 3, 4]);
    assert!(handle.in_doubt().is_empty());
    assert_eq!(assert_chain(patient.log(), &case("doubt")).await.len(), 4);

    // Again, and this time the earlier attempt had stored the batch (its answer lost): the
    // events sent again are refused whole, and the stored ones are recognised as ours.
    server.stop().await;
    let error = quick.commit_many(&mut handle, batches()).await.unwrap_err();
    assert_eq!(error.kind(), CommitErrorKind::InDoubt, "{error}");
    server.restart().await;
    let pending: Vec<(CommitId, Bytes)> = handle
        .in_doubt()
        .into_iter()
        .map(|(commit_id, payload)| (commit_id, Bytes::copy_from_slice(payload)))
        .collect();
    // (Refused if the client's buffered publish already stored it after the reconnect.)
    let _ = patient
        .log()
        .append_many(&case("doubt"), &pending, handle.position())
        .await;
    let receipts = patient.commit_many(&mut handle, Vec::new()).await.unwrap();
    let versions: Vec<u64> = receipts.iter().map(|r| r.version.get()).collect();
    assert_eq!(versions, [5, 6, 7]);
    let stored = assert_chain(patient.log(), &case("doubt")).await;
    assert_eq!(stored.len(), 7, "each event stored once");
    assert_eq!(handle.case().state().step_count, 6);
    let loaded = patient.load(&case("doubt")).await.unwrap();
    assert_eq!(loaded.case().state(), handle.case().state());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_atomic_batch_is_all_or_nothing() {
    let server = NatsServer::start().await;
    let workspace = workspace(&server).await;
    workspace
        .create(case("atom"), [Mutation::set_key("n", 0)])
        .await
        .unwrap();
    let mut stale = workspace.load(&case("atom")).await.unwrap();
    let mut fresh = workspace.load(&case("atom")).await.unwrap();
    workspace
        .commit_many(&mut fresh, vec![vec![Mutation::IncrementStepCount]; 3])
        .await
        .unwrap();
    let before = message_count(workspace.log()).await;

    // A stale expected position: the whole batch is refused, nothing of it stored.
    let error = workspace
        .commit_many(&mut stale, vec![vec![Mutation::IncrementStepCount]; 4])
        .await
        .unwrap_err();
    assert!(
        matches!(error, CommitError::Conflict { expected, .. } if expected == 1),
        "{error:?}"
    );
    assert_eq!(message_count(workspace.log()).await, before);
    assert_eq!(
        stale.case().state().version.get(),
        1,
        "the handle is unchanged"
    );

    // An invalid batch: nothing is sent.
    let invalid = vec![
        vec![Mutation::IncrementStepCount],
        vec![Mutation::RemoveToken {
            id: TokenId::new("ghost").unwrap(),
        }],
    ];
    let error = workspace
        .commit_many(&mut fresh, invalid)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), CommitErrorKind::Validation);
    assert_eq!(message_count(workspace.log()).await, before);

    // The same batch sent again (a retry after a lost acknowledgement) is refused whole.
    let events: Vec<(CommitId, Bytes)> = (0..3)
        .map(|n| (CommitId::generate(), Bytes::from(vec![n])))
        .collect();
    let position = workspace
        .log()
        .last_event(&case("raw-batch"))
        .await
        .unwrap()
        .map_or(Position::ZERO, |e| e.position);
    let first = workspace
        .log()
        .append_many(&case("raw-batch"), &events, position)
        .await
        .unwrap();
    assert!(matches!(first, AppendOutcome::Appended { .. }), "{first:?}");
    let again = workspace
        .log()
        .append_many(&case("raw-batch"), &events, position)
        .await
        .unwrap();
    assert!(
        matches!(
            again,
            AppendOutcome::Duplicate { .. } | AppendOutcome::Conflict { .. }
        ),
        "{again:?}"
    );
    assert_eq!(message_count(workspace.log()).await, before + 3);
}

/// An event the server refuses as over the stream's `max_msg_size` (err 10054), set after the
/// client connected so that its own check passes: the error is "too large" and says how large,
/// on the single and the multi-event path alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_over_the_streams_message_size_is_too_large_with_its_size() {
    let server = NatsServer::start().await;
    let workspace = workspace(&server).await;
    let (mut handle, _) = workspace
        .create(case("grown"), [Mutation::set_key("n", 0)])
        .await
        .unwrap();
    let log = workspace.log();
    let mut config = log
        .context()
        .get_stream(log.stream_name())
        .await
        .unwrap()
        .cached_info()
        .config
        .clone();
    config.max_message_size = 1024;
    log.context().update_stream(config).await.unwrap();
    let big = || Mutation::set_key("blob", "x".repeat(2000));

    let error = workspace
        .commit_many(&mut handle, vec![vec![big()], vec![big()]])
        .await
        .unwrap_err();
    assert_eq!(error.kind(), CommitErrorKind::TooLarge, "{error}");
    assert!(error.to_string().contains(" bytes"), "{error}");
    assert!(!error.to_string().contains(" 0 bytes"), "{error}");
    assert_eq!(
        error.log_error().and_then(wfstate_events::LogError::code),
        Some(10054)
    );

    handle.buffer(big());
    let error = workspace.commit(&mut handle).await.unwrap_err();
    assert_eq!(error.kind(), CommitErrorKind::TooLarge, "{error}");
    assert_eq!(
        error.log_error().and_then(wfstate_events::LogError::code),
        Some(10054)
    );
    assert_eq!(message_count(log).await, 1, "nothing stored");
}

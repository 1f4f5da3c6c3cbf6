//! What a handle does with a commit in doubt and with the commit ids it holds, on every
//! backend: a refresh settles the commit in doubt before it folds past it (a stale event sent
//! later would fork the case), a commit id the handle committed itself returns its first
//! receipt after the log forgot it, and a commit the handle holds is never reported failed
//! because a read of its event lagged.

use wfstate_events::{CommitErrorKind, EventLog, MemoryLog, Workspace};
use wfstate_store::{CommitMeta, Mutation, Position, Version};
use wfstate_tests::{Fault, FaultyLog, Script};

use crate::fixtures::{Fixture, case, hasty, meta, patient};

/// Every version of the case once, in order (a second event of one version does not fold),
/// and the case loads: no fork.
async fn assert_no_fork<L: EventLog + Clone>(log: &L, name: &str, versions: u64) {
    let loaded = Workspace::new(log.clone())
        .load(&case(name))
        .await
        .unwrap_or_else(|error| panic!("case {name} loads: {error}"));
    assert_eq!(loaded.state().version, Version::new(versions), "{name}");
    let last = log.last_event(&case(name)).await.unwrap().unwrap();
    assert_eq!(
        loaded.position(),
        last.position,
        "{name}: nothing after the last version"
    );
}

/// A commit ends in doubt without landing; another writer commits; `refresh` on the same
/// handle settles the commit in doubt (another writer's event is in its place: it never
/// landed) before folding, and the next commit stores the next version, once.
pub async fn a_refresh_settles_the_commit_in_doubt_before_folding_past_it(fixture: &impl Fixture) {
    // Every retry of the second append fails before anything is stored, until the deadline.
    let mut script = Script::new();
    for nth in 2..=200 {
        script = script.on(
            nth,
            Fault::FailBefore(wfstate_events::LogErrorKind::Unavailable),
        );
    }
    let log = FaultyLog::new(fixture.log(), script);
    let quick = hasty(log.clone());
    let (mut handle, _) = quick.create(case("fork"), []).await.unwrap();
    handle.buffer(Mutation::set_key("mine", 1));
    let error = quick.commit(&mut handle).await.unwrap_err();
    assert_eq!(error.kind(), CommitErrorKind::InDoubt, "{error}");
    assert_eq!(
        handle.buffered(),
        0,
        "the commit in doubt carries its mutations"
    );

    // Another writer, straight on the log, commits version 2.
    let other = patient(log.inner().clone());
    let mut theirs = other.load(&case("fork")).await.unwrap();
    theirs.buffer(Mutation::set_key("theirs", 2));
    other.commit(&mut theirs).await.unwrap();

    // Past the scripted faults, the refresh's resend meets the other writer's event.
    while log.appends() < 200 {
        let _ = log
            .append(
                &case("padding"),
                meta().commit_id,
                Position::ZERO,
                bytes::Bytes::new(),
            )
            .await;
    }
    let settled = quick.refresh(&mut handle).await.unwrap();
    assert!(settled.is_empty(), "the commit in doubt never landed");
    assert!(handle.in_doubt().is_empty(), "settled by the refresh");
    assert_eq!(handle.state().version.get(), 2);
    assert!(!handle.state().ctx.contains_key("mine"));

    handle.buffer(Mutation::set_key("mine", 3));
    let receipt = quick.commit(&mut handle).await.unwrap();
    assert_eq!(receipt.version.get(), 3);
    assert_no_fork(log.inner(), "fork", 3).await;
}

/// The same with the commit in doubt landed: the refresh returns its receipt and folds
/// what came after it.
pub async fn a_refresh_returns_the_receipt_of_a_commit_in_doubt_that_landed(
    fixture: &impl Fixture,
) {
    let mut script = Script::new().on(2, Fault::FailAfter(wfstate_events::LogErrorKind::TimedOut));
    for nth in 3..=200 {
        script = script.on(
            nth,
            Fault::FailBefore(wfstate_events::LogErrorKind::Unavailable),
        );
    }
    let log = FaultyLog::new(fixture.log(), script);
    let quick = hasty(log.clone());
    let (mut handle, _) = quick.create(case("landed"), []).await.unwrap();
    handle.buffer(Mutation::set_key("mine", 1));
    let error = quick.commit(&mut handle).await.unwrap_err();
    assert_eq!(error.kind(), CommitErrorKind::InDoubt, "{error}");
    let in_doubt = handle.in_doubt()[0].0;

    let other = patient(log.inner().clone());
    let mut theirs = other.load(&case("landed")).await.unwrap();
    theirs.buffer(Mutation::set_key("theirs", 3));
    other.commit(&mut theirs).await.unwrap();

    while log.appends() < 200 {
        let _ = log
            .append(
                &case("padding"),
                meta().commit_id,
                Position::ZERO,
                bytes::Bytes::new(),
            )
            .await;
    }
    let settled = quick.refresh(&mut handle).await.unwrap();
    assert_eq!(settled.len(), 1);
    assert_eq!(
        (settled[0].commit_id, settled[0].version.get()),
        (in_doubt, 2)
    );
    assert_eq!(
        handle.state().version.get(),
        3,
        "then the other writer's event"
    );
    assert_eq!(handle.known(in_doubt), Some(settled[0].position));
    assert_no_fork(log.inner(), "landed", 3).await;
}

/// A commit id the handle committed itself, sent again: its first receipt, and nothing
/// stored, whether the log remembers the id (every backend) or forgot it (a log past its
/// duplicate window).
pub async fn a_commit_id_the_handle_committed_returns_its_first_receipt(fixture: &impl Fixture) {
    commit_twice(fixture.log(), "twice").await;
}

/// [`a_commit_id_the_handle_committed_returns_its_first_receipt`] on a log that forgot every
/// commit id, as JetStream after its duplicate window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_id_sent_again_after_the_window_by_the_same_handle_is_not_stored_twice() {
    commit_twice(MemoryLog::new().with_dedup(false), "window").await;
}

async fn commit_twice<L: EventLog + Clone>(log: L, name: &str) {
    let workspace = patient(log.clone());
    let (mut handle, _) = workspace.create(case(name), []).await.unwrap();
    let meta = CommitMeta {
        committed_at_ms: 1,
        ..meta()
    };
    handle.buffer(Mutation::IncrementStepCount);
    let first = workspace
        .commit_with_meta(&mut handle, meta.clone())
        .await
        .unwrap();
    handle.buffer(Mutation::IncrementStepCount);
    let again = workspace
        .commit_with_meta(
            &mut handle,
            CommitMeta {
                committed_at_ms: 2,
                ..meta
            },
        )
        .await
        .unwrap();
    assert_eq!(again, first, "the first receipt");
    assert_eq!(handle.buffered(), 0, "the commit sent again is dropped");
    assert_eq!(handle.state().step_count, 1);
    assert_eq!(
        log.last_event(&case(name)).await.unwrap().unwrap().position,
        first.position
    );
    assert_no_fork(&log, name, 2).await;
}

/// A commit id the handle holds (a process that restarted and loaded the case), sent again
/// while the log's reads lag behind it (a replica that answers "not there"): read again until
/// the event is there, then its first receipt; past the deadline the receipt is in doubt, and
/// the next call gives it. Never "corrupted".
pub async fn a_commit_the_handle_holds_is_not_failed_by_a_read_that_lags(fixture: &impl Fixture) {
    let log = FaultyLog::new(fixture.log(), Script::new());
    let workspace = patient(log.clone());
    let (mut handle, _) = workspace.create(case("lagging"), []).await.unwrap();
    let meta = meta();
    handle.buffer(Mutation::IncrementStepCount);
    let first = workspace
        .commit_with_meta(&mut handle, meta.clone())
        .await
        .unwrap();
    // The process restarts: a new handle, loaded, holds the commit.
    let mut handle = workspace.load(&case("lagging")).await.unwrap();

    log.lagging_reads(3);
    handle.buffer(Mutation::IncrementStepCount);
    let again = workspace
        .commit_with_meta(&mut handle, meta.clone())
        .await
        .unwrap_or_else(|error| panic!("the first receipt, not {error}"));
    assert_eq!(again, first);

    let quick = hasty(log.clone());
    log.lagging_reads(u64::MAX);
    handle.buffer(Mutation::IncrementStepCount);
    let error = quick
        .commit_with_meta(&mut handle, meta.clone())
        .await
        .unwrap_err();
    assert_eq!(error.kind(), CommitErrorKind::InDoubt, "{error}");
    assert_eq!(handle.in_doubt()[0].0, meta.commit_id);
    log.lagging_reads(0);
    handle.buffer(Mutation::set_key("next", 1));
    let settled = quick.commit(&mut handle).await.unwrap();
    assert_eq!(settled, first, "the next call gives the receipt");
    assert_eq!(
        handle.buffered(),
        1,
        "what was buffered since waits for the next commit"
    );
    assert_no_fork(log.inner(), "lagging", 2).await;
}

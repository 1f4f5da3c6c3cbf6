//! The commit client's answers to faults of the log, injected by [`FaultyLog`] on a script:
//! a lost acknowledgement, a failure before anything was stored, a conflict that does not say
//! where the case is (10164), an earlier attempt still in process (10158), and a seeded mix of
//! them. Every commit ends stored exactly once, or in doubt and then resolved; none is lost or
//! doubled, and none sleeps past a server's window.

use bytes::Bytes;
use wfstate_events::{CommitErrorKind, EventLog, LogErrorKind};
use wfstate_store::{CommitMeta, Mutation, Position};
use wfstate_tests::{Fault, FaultyLog, Script};

use crate::fixtures::{Fixture, case, hasty, meta, patient};

/// Commits `count` increments to a new case through `log`; returns the handle.
async fn increments<L: EventLog + Clone>(
    log: &FaultyLog<L>,
    name: &str,
    count: u64,
) -> wfstate_events::CaseHandle {
    let workspace = patient(log.clone());
    let (mut handle, _) = workspace.create(case(name), []).await.unwrap();
    for _ in 0..count {
        handle.buffer(Mutation::IncrementStepCount);
        workspace.commit(&mut handle).await.unwrap();
    }
    handle
}

/// A conflict answer without the case's position (a replicated stream's 10164), twice in a
/// row: stored, the first read of the case finds the event ours; not stored, the case has
/// nothing after the expected position and the same append is sent again.
pub async fn a_conflict_without_a_position_is_resolved_by_reading_the_case(fixture: &impl Fixture) {
    for stored in [false, true] {
        let name = format!("leader-change-{stored}");
        let script = Script::new()
            .on(2, Fault::Conflict { stored })
            .on(3, Fault::Conflict { stored });
        let log = FaultyLog::new(fixture.log(), script);
        let handle = increments(&log, &name, 1).await;
        assert_eq!(handle.case().state().version.get(), 2, "stored: {stored}");
        let history = log.inner().last_event(&case(&name)).await.unwrap().unwrap();
        assert_eq!(history.position, handle.position(), "stored once");
        // Stored: the case was read after the first answer. Not stored: both answers came.
        let answers = if stored { 1 } else { 2 };
        assert_eq!(log.injected().len(), answers, "stored: {stored}");
        assert_eq!(handle.case().state().step_count, 1);
    }
}

/// A lost acknowledgement (stored, then a time-out), a failure before storing, an earlier
/// attempt in process (10158), a new leader not ready (10163), and a duplicate whose event
/// cannot be read yet: each is retried with the same commit id, and lands the commit once.
pub async fn a_lost_or_failed_append_is_retried_to_one_event(fixture: &impl Fixture) {
    let script = Script::new()
        .on(2, Fault::FailAfter(LogErrorKind::TimedOut))
        .on(4, Fault::FailBefore(LogErrorKind::Unavailable))
        .on(6, Fault::InProcess { stored: true })
        .on(8, Fault::InProcess { stored: false });
    let log = FaultyLog::new(fixture.log(), script);
    let handle = increments(&log, "lossy", 4).await;
    assert_eq!(handle.case().state().step_count, 4);
    assert_eq!(handle.case().state().version.get(), 5);
    assert_eq!(log.injected().len(), 4);
    let events = log.inner().last_position().await.unwrap();
    assert_eq!(events, handle.position(), "no event stored twice");
}

/// The log forgot the commit id (a retry after JetStream's duplicate window): the retry meets
/// a sequence conflict, and finds its own event right after the expected position. And when
/// an earlier attempt stored other bytes under the commit id, the stored event wins.
pub async fn a_commit_is_found_after_the_log_forgot_its_id(fixture: &impl Fixture) {
    let log = FaultyLog::new(
        fixture.log(),
        Script::new().on(2, Fault::Conflict { stored: true }),
    );
    let workspace = patient(log.clone());
    let (mut handle, _) = workspace.create(case("late"), []).await.unwrap();
    handle.buffer(Mutation::IncrementStepCount);
    let receipt = workspace.commit(&mut handle).await.unwrap();
    assert_eq!(receipt.version.get(), 2);
    assert_eq!(
        log.inner().last_position().await.unwrap(),
        receipt.position.get()
    );

    let first = CommitMeta {
        committed_at_ms: 1,
        ..meta()
    };
    handle.buffer(Mutation::set_key("b", 2));
    let prepared = wfstate_tests::prepare_next(&handle, [Mutation::set_key("b", 2)], first.clone());
    let stored = log
        .inner()
        .append(
            &case("late"),
            first.commit_id,
            handle.position(),
            Bytes::copy_from_slice(prepared.payload()),
        )
        .await
        .unwrap()
        .stored_at()
        .unwrap();
    let retry = CommitMeta {
        committed_at_ms: 2,
        ..first
    };
    let receipt = workspace
        .commit_with_meta(&mut handle, retry)
        .await
        .unwrap();
    assert_eq!((receipt.position, receipt.committed_at_ms), (stored, 1));
    assert_eq!(handle.case().buffered(), 0);
    let loaded = workspace.load(&case("late")).await.unwrap();
    assert_eq!(handle.case().state(), loaded.case().state());
}

/// A retry that keeps failing ends in doubt at the deadline, never as a failure; the next
/// commit of the handle resolves it, once.
pub async fn a_commit_in_doubt_is_resolved_by_the_next_commit(fixture: &impl Fixture) {
    let mut script = Script::new().on(2, Fault::FailAfter(LogErrorKind::TimedOut));
    for nth in 3..=40 {
        script = script.on(nth, Fault::FailBefore(LogErrorKind::Unavailable));
    }
    let log = FaultyLog::new(fixture.log(), script);
    let quick = hasty(log.clone());
    let (mut handle, _) = quick.create(case("doubt"), []).await.unwrap();
    handle.buffer(Mutation::IncrementStepCount);
    let error = quick.commit(&mut handle).await.unwrap_err();
    assert_eq!(error.kind(), CommitErrorKind::InDoubt, "{error}");
    assert_eq!(handle.in_doubt().len(), 1);
    let attempts = log.appends();
    assert!(attempts < 40, "the deadline ended the retries: {attempts}");
    // Past the scripted faults, the next commit sends the same event and finds it stored.
    while log.appends() < 40 {
        let _ = log
            .append(
                &case("padding"),
                meta().commit_id,
                Position::ZERO,
                Bytes::new(),
            )
            .await;
    }
    handle.buffer(Mutation::IncrementStepCount);
    let resolved = quick.commit(&mut handle).await.unwrap();
    assert_eq!(
        resolved.version.get(),
        2,
        "the commit in doubt, not the new one"
    );
    assert_eq!(
        handle.case().buffered(),
        1,
        "the new one waits in the buffer"
    );
    let next = quick.commit(&mut handle).await.unwrap();
    assert_eq!(
        (next.version.get(), handle.case().state().step_count),
        (3, 2)
    );
}

/// Many commits on a few cases under a seeded mix of faults: each commit lands once (a
/// commit in doubt is resolved by committing its handle again), and every case's history is
/// exactly its commits.
pub async fn a_seeded_mix_of_faults_loses_and_doubles_nothing(fixture: &impl Fixture) {
    let seed = std::env::var("WFSTATE_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or(20_261_202);
    eprintln!("fault script: WFSTATE_SEED={seed}");
    let log = FaultyLog::new(fixture.log(), Script::seeded(seed, 400, 25));
    let workspace = patient(log.clone());
    let mut handles = Vec::new();
    for n in 0..4 {
        let name = format!("mix{n}");
        let mut handle = workspace.new_case(case(&name));
        handle.buffer(Mutation::set_key("n", n));
        handles.push(handle);
    }
    let mut committed = [0u64; 4];
    for round in 0..40 {
        let handle = &mut handles[round % 4];
        if handle.case().buffered() == 0 {
            handle.buffer(Mutation::IncrementStepCount);
        }
        // A bounded number of tries: each either lands the commit or leaves it in doubt.
        for _ in 0..20 {
            match workspace.commit(handle).await {
                Ok(_) => break,
                Err(error) if error.kind() == CommitErrorKind::InDoubt => {}
                Err(error) => panic!("seed {seed}: {error}"),
            }
        }
        assert!(handle.in_doubt().is_empty(), "seed {seed}: still in doubt");
        committed[round % 4] += 1;
    }
    for (n, handle) in handles.iter().enumerate() {
        let loaded = workspace.load(&case(&format!("mix{n}"))).await.unwrap();
        assert_eq!(loaded.case().state(), handle.case().state(), "seed {seed}");
        assert_eq!(
            loaded.case().state().version.get(),
            committed[n],
            "seed {seed}"
        );
    }
    let injected = log.injected().len();
    eprintln!("faults injected: {injected}");
    // A quarter of the appends meet a fault: none in 40 commits is a broken script.
    assert!(injected > 0, "seed {seed}: the mix injected no fault");
}

/// The log forgot the commit id (as JetStream after its duplicate window): a process that
/// restarts and sends its commit again still stores nothing, because the case it loaded holds
/// the commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_sent_again_after_the_log_forgot_its_id_is_not_stored_twice() {
    let log = wfstate_events::MemoryLog::new().with_dedup(false);
    crate::commits::resend_after_restart(log, "forgotten", false).await;
}

/// A commit id stored twice in a case (a retry stored after the log forgot the id, by a
/// client that did not know the case held it) is reported by audit with its own code, and the
/// chain after it is still checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_reports_a_commit_id_stored_twice() {
    let log = wfstate_events::MemoryLog::new().with_dedup(false);
    let mut writer = wfstate_store::Case::new(case("twice"));
    let meta = meta();
    let mut last = Position::ZERO;
    for _ in 0..3 {
        writer.buffer(Mutation::IncrementStepCount);
        let prepared = writer.prepare_commit(meta.clone()).unwrap();
        last = log
            .append(
                writer.id(),
                meta.commit_id,
                last,
                Bytes::copy_from_slice(prepared.payload()),
            )
            .await
            .unwrap()
            .stored_at()
            .unwrap();
        writer.complete(prepared).unwrap();
    }
    let report = wfstate_projector::audit_case(&log, &case("twice"), None, |_| {})
        .await
        .unwrap();
    let codes: Vec<&str> = report.problems.iter().map(|p| p.code.as_str()).collect();
    assert_eq!(codes, ["duplicate_commit_id", "duplicate_commit_id"]);
    assert_eq!(report.events, 3);
}

/// A duplicate answer proves the commit landed: while its event cannot be read, the commit is
/// retried, and at the deadline it is in doubt, never failed.
pub async fn a_duplicate_that_cannot_be_read_is_in_doubt_not_failed(fixture: &impl Fixture) {
    let mut script = Script::new();
    for nth in 2..=400 {
        script = script.on(nth, Fault::UnreadableDuplicate);
    }
    let log = FaultyLog::new(fixture.log(), script);
    let quick = hasty(log.clone());
    let (mut handle, _) = quick.create(case("unread"), []).await.unwrap();
    handle.buffer(Mutation::IncrementStepCount);
    let error = quick.commit(&mut handle).await.unwrap_err();
    assert_eq!(error.kind(), CommitErrorKind::InDoubt, "{error}");
    assert!(log.appends() < 400, "the deadline ended the retries");
}

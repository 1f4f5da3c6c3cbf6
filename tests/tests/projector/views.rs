//! Views against replays: random commits, projector crashes, stale kept views, quarantine.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wfstate_events::{EventLog, Workspace};
use wfstate_projector::{
    JetStreamProjector, KvViews, Partition, Projector, ViewSource, audit_all, audit_case, replay,
    verify, verify_all,
};
use wfstate_store::{CaseId, CommitId, Event, Hash, Mutation, Version};
use wfstate_tests::{FaultyViews, NatsServer};

use crate::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[expect(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
async fn views_equal_replays_under_random_commits_and_projector_crashes() {
    let server = NatsServer::start().await;
    let log = connect(server.url()).await;
    let workspace = Workspace::new(log.clone());
    let cases: Vec<CaseId> = (0..50).map(|n| case(&format!("wf-{n}"))).collect();
    for id in &cases {
        workspace
            .create(id.clone(), [Mutation::set_key("created", true)])
            .await
            .unwrap();
    }
    let seed = seed();

    // The projector runs alongside the writers and is killed (its task aborted) three times.
    let writing = Arc::new(AtomicBool::new(true));
    let projector_log = log.clone();
    let projector_writing = Arc::clone(&writing);
    let projector = tokio::spawn(async move {
        let mut all_stats = Vec::new();
        for _ in 0..3 {
            let mut projector = JetStreamProjector::open(&projector_log, quick_projector())
                .await
                .unwrap();
            all_stats.push(projector.stats());
            let run = tokio::spawn(async move {
                loop {
                    projector.run_batch().await.unwrap();
                }
            });
            tokio::time::sleep(Duration::from_millis(300)).await;
            run.abort();
            let _ = run.await;
            if !projector_writing.load(Ordering::Relaxed) {
                break;
            }
        }
        all_stats
    });

    let writers: Vec<_> = (0..4u64)
        .map(|w| {
            let workspace = workspace.clone();
            let cases = cases.clone();
            tokio::spawn(async move {
                let mut rng = Rng(seed.wrapping_add(w * 7919) | 1);
                for n in 0..250 {
                    let id = &cases[usize::try_from(rng.below(50)).unwrap()];
                    let mut step_rng = Rng(rng.below(u64::MAX) | 1);
                    let token = w * 1000 + n;
                    workspace
                        .transact(id, |case| {
                            case.rollback();
                            random_step(case, &mut step_rng, token);
                        })
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    writing.store(false, Ordering::Relaxed);
    let mut stats = projector.await.unwrap();

    // A last projector catches up.
    let mut last = JetStreamProjector::open(&log, quick_projector())
        .await
        .unwrap();
    stats.push(last.stats());
    last.catch_up().await.unwrap();
    assert_eq!(last.lag().await.unwrap(), 0);

    let total = 50 + 1000;
    let applied: u64 = stats
        .iter()
        .map(|s| s.applied.load(Ordering::Relaxed))
        .sum();
    let quarantined: u64 = stats
        .iter()
        .map(|s| s.quarantined.load(Ordering::Relaxed))
        .sum();
    eprintln!(
        "applied {applied}, skipped {}, rebuilt {}",
        stats
            .iter()
            .map(|s| s.skipped.load(Ordering::Relaxed))
            .sum::<u64>(),
        stats
            .iter()
            .map(|s| s.rebuilt.load(Ordering::Relaxed))
            .sum::<u64>()
    );
    // Applying an event twice would break its view's chain (and quarantine it): none were.
    assert_eq!(quarantined, 0);
    assert!(applied <= total, "applied {applied} of {total} events");
    assert!(last.quarantined().await.unwrap().is_empty());

    let mismatches = verify(&log, &last, &cases).await.unwrap();
    assert!(mismatches.is_empty(), "{mismatches:?}");
    let mut events = 0;
    for id in &cases {
        let view = last.view(id).await.unwrap().unwrap();
        let replayed = replay(&log, id, None).await.unwrap();
        assert_eq!(view.state, replayed.state);
        assert_eq!(view.position.get(), replayed.position.get());
        events += view.state.version.get();
    }
    assert_eq!(events, total);
    assert_eq!(last.case_ids().await.unwrap().len(), 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_view_writes_and_ack_applies_nothing_twice() {
    let server = NatsServer::start().await;
    let log = connect(server.url()).await;
    let workspace = Workspace::new(log.clone());
    for n in 0..10 {
        let (mut handle, _) = workspace.create(case(&format!("c{n}")), []).await.unwrap();
        for _ in 0..9 {
            handle.buffer(Mutation::IncrementStepCount);
            workspace.commit(&mut handle).await.unwrap();
        }
    }
    let mut crashing = quick_projector();
    crashing.batch = 40;
    let views = FaultyViews::crash_after_write(KvViews::open(&log, &crashing).await.unwrap());
    let mut first = JetStreamProjector::with_store(&log, crashing, views.clone())
        .await
        .unwrap();
    assert!(first.run_batch().await.is_err());
    assert!(
        views.crashed() > 0,
        "the batch wrote views before it crashed"
    );
    drop(first);

    // The same durable consumer: the 40 unacknowledged events come back after ack_wait.
    let mut second = JetStreamProjector::open(&log, quick_projector())
        .await
        .unwrap();
    // What the crash left: every event of a stored view is in it already.
    let mut stored = 0;
    for n in 0..10 {
        if let Some(view) = second.view(&case(&format!("c{n}"))).await.unwrap() {
            stored += view.state.version.get();
        }
    }
    assert!(stored > 0 && stored <= 40, "{stored} events in views");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    second.catch_up().await.unwrap();
    let stats = second.stats();
    assert_eq!(stats.applied.load(Ordering::Relaxed), 100 - stored);
    assert_eq!(stats.skipped.load(Ordering::Relaxed), stored);
    let cases: Vec<CaseId> = (0..10).map(|n| case(&format!("c{n}"))).collect();
    assert!(verify(&log, &second, &cases).await.unwrap().is_empty());
}

/// A projector keeps the views it wrote for its next batch, and fetches that batch early.
/// When those events outlive the ack wait and another projector on the same consumer projects
/// them first, the kept view is stale: its write must be refused (compare-and-set), not
/// overwrite the other's, and nothing is applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_kept_view_is_refused_and_nothing_is_applied_twice() {
    let server = NatsServer::start().await;
    let log = connect(server.url()).await;
    let workspace = Workspace::new(log.clone());
    let (mut handle, _) = workspace.create(case("shared"), []).await.unwrap();
    for _ in 0..7 {
        handle.buffer(Mutation::IncrementStepCount);
        workspace.commit(&mut handle).await.unwrap();
    }
    let mut config = quick_projector();
    config.batch = 4;
    let mut first = JetStreamProjector::open(&log, config.clone())
        .await
        .unwrap();
    let mut second = JetStreamProjector::open(&log, config).await.unwrap();
    // Events 1-4, and (a full batch) the early fetch of 5-8, which `first` now holds.
    assert_eq!(first.run_batch().await.unwrap(), 4);
    // 5-8 outlive the ack wait and go to `second`, which projects them.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(second.run_batch().await.unwrap(), 4);
    assert_eq!(
        second
            .view(&case("shared"))
            .await
            .unwrap()
            .unwrap()
            .position,
        8
    );
    // `first` folds its early 5-8 onto its kept view at 4: the write is refused.
    let refused = first.run_batch().await.unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("writing the view of case shared")
            && refused.to_string().contains("another projector"),
        "{refused}"
    );
    first.catch_up().await.unwrap();
    second.catch_up().await.unwrap();

    let view = first.view(&case("shared")).await.unwrap().unwrap();
    let replayed = replay(&log, &case("shared"), None).await.unwrap();
    assert_eq!(view.quarantine, None);
    assert_eq!(
        (view.state, view.position.get()),
        (replayed.state, replayed.position.get())
    );
    let applied: u64 = [first.stats(), second.stats()]
        .iter()
        .map(|stats| stats.applied.load(Ordering::Relaxed))
        .sum();
    assert_eq!(applied, 8);
    assert!(first.quarantined().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[expect(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
async fn bad_events_are_quarantined_and_other_cases_go_on() {
    let server = NatsServer::start().await;
    let log = connect(server.url()).await;
    let workspace = Workspace::new(log.clone());
    let mut handles = Vec::new();
    for id in ["garbage", "truncated", "future", "forged", "healthy"] {
        let (mut handle, _) = workspace
            .create(case(id), [Mutation::set_key("a", 1)])
            .await
            .unwrap();
        handle.buffer(Mutation::IncrementStepCount);
        workspace.commit(&mut handle).await.unwrap();
        handles.push(handle);
    }
    let good = log
        .last_event(&case("truncated"))
        .await
        .unwrap()
        .unwrap()
        .payload;

    let garbage = publish_raw(&log, "garbage", b"\xff\x00 definitely not cbor".to_vec()).await;
    let truncated = publish_raw(&log, "truncated", good[..good.len() / 2].to_vec()).await;
    let mut future = Event::decode(&good).unwrap();
    future.schema = 2;
    future.version = Version::new(3);
    let future = publish_raw(&log, "future", future.encode()).await;
    let mut forged = Event::decode(
        &log.last_event(&case("forged"))
            .await
            .unwrap()
            .unwrap()
            .payload,
    )
    .unwrap();
    forged.case_id = case("forged");
    forged.version = Version::new(3);
    forged.prev_event_hash = Hash::of(b"not the previous event");
    forged.commit_id = CommitId::generate();
    let forged = publish_raw(&log, "forged", forged.encode()).await;

    let mut projector = JetStreamProjector::open(&log, quick_projector())
        .await
        .unwrap();
    projector.catch_up().await.unwrap();
    let records = projector.quarantined().await.unwrap();
    let found: Vec<(u64, &str, &str)> = records
        .iter()
        .map(|r| (r.position.get(), r.case_id.as_str(), r.code.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            (garbage, "garbage", "undecodable"),
            (truncated, "truncated", "undecodable"),
            (future, "future", "unknown_schema"),
            (forged, "forged", "broken_chain"),
        ]
    );
    for (id, position) in [
        ("garbage", garbage),
        ("truncated", truncated),
        ("future", future),
        ("forged", forged),
    ] {
        let view = projector.view(&case(id)).await.unwrap().unwrap();
        let quarantine = view.quarantine.expect("marked");
        assert_eq!(quarantine.position.get(), position, "{id}");
        assert_eq!(
            view.state.version.get(),
            2,
            "{id} keeps its last good state"
        );
    }

    // The healthy case keeps being projected.
    let healthy = &mut handles[4];
    healthy.buffer(Mutation::set_key("later", true));
    workspace.commit(healthy).await.unwrap();
    projector.catch_up().await.unwrap();
    let view = projector.view(&case("healthy")).await.unwrap().unwrap();
    assert!(view.is_healthy());
    assert_eq!(view.state, *healthy.case().state());

    // verify and audit report the bad cases, at the right positions.
    let all: Vec<CaseId> = ["garbage", "truncated", "future", "forged", "healthy"]
        .map(case)
        .to_vec();
    let mismatches = verify(&log, &projector, &all).await.unwrap();
    let bad: Vec<&str> = mismatches.iter().map(|m| m.case_id.as_str()).collect();
    assert_eq!(bad, ["garbage", "truncated", "future", "forged"]);
    let report = audit_case(&log, &case("forged"), None, |_| {})
        .await
        .unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert_eq!(
        (
            report.problems[0].position.get(),
            report.problems[0].code.as_str()
        ),
        (forged, "broken_chain")
    );
    let report = audit_all(&log, |_| {}).await.unwrap();
    let codes: Vec<(u64, &str)> = report
        .problems
        .iter()
        .map(|p| (p.position.get(), p.code.as_str()))
        .collect();
    assert_eq!(
        codes,
        [
            (garbage, "undecodable"),
            (truncated, "undecodable"),
            (future, "unknown_schema"),
            (forged, "broken_chain")
        ]
    );
    assert_eq!(report.cases, 5);
}

/// A batch holds at most `batch_bytes` of events, and at least one however large; with one
/// view read or write in flight (`kv_in_flight` 1) every case is still projected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_bounded_by_their_bytes() {
    let server = NatsServer::start().await;
    let log = connect(server.url()).await;
    let workspace = Workspace::new(log.clone());
    let mut handles = Vec::new();
    for n in 0..6 {
        let (mut handle, _) = workspace
            .create(
                case(&format!("b{n}")),
                [Mutation::set_key("pad", "x".repeat(400))],
            )
            .await
            .unwrap();
        handle.buffer(Mutation::IncrementStepCount);
        workspace.commit(&mut handle).await.unwrap();
        handles.push(handle);
    }
    // ~500-byte events: at most 4 in 2000 bytes; with 100 bytes, each comes on its own.
    for (bytes, most) in [(2000, 4), (100, 1)] {
        let mut config = quick_projector();
        config.batch_bytes = bytes;
        config.kv_in_flight = 1;
        config.name = format!("bytes-{bytes}");
        config.views_bucket = format!("VIEWS_{bytes}");
        config.quarantine_bucket = format!("Q_{bytes}");
        let mut projector = JetStreamProjector::open(&log, config).await.unwrap();
        let mut sizes = Vec::new();
        for _ in 0..100 {
            let count = projector.run_batch().await.unwrap();
            if count == 0 && projector.lag().await.unwrap() == 0 {
                break;
            }
            sizes.push(count);
        }
        assert_eq!(sizes.iter().sum::<usize>(), 12, "{sizes:?}");
        assert!(
            sizes.iter().all(|&size| size <= most),
            "no batch over {bytes} bytes but a single event: {sizes:?}"
        );
        for handle in &handles {
            let view = projector.view(handle.case().id()).await.unwrap().unwrap();
            assert_eq!(&view.state, handle.case().state());
        }
    }
}

/// Projectors of three partitions share the views: each folds only its partition's cases
/// (their events in order), and together they fold every event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projectors_of_partitions_fold_each_case_once() {
    let server = NatsServer::start().await;
    let log = connect(server.url()).await;
    let workspace = Workspace::new(log.clone());
    let mut handles = Vec::new();
    for n in 0..30 {
        let (handle, _) = workspace
            .create(case(&format!("part-{n}")), [Mutation::set_key("n", n)])
            .await
            .unwrap();
        handles.push(handle);
    }
    for _ in 0..4 {
        for handle in &mut handles {
            handle.buffer(Mutation::IncrementStepCount);
            workspace.commit(handle).await.unwrap();
        }
    }
    let mut projectors = Vec::new();
    for index in 0..3 {
        let mut config = quick_projector();
        config.partition = Some(Partition::new(index, 3).unwrap());
        projectors.push(JetStreamProjector::open(&log, config).await.unwrap());
    }
    // Interleaved, as processes would run.
    for _ in 0..3 {
        for projector in &mut projectors {
            projector.catch_up().await.unwrap();
        }
    }
    for (index, projector) in (0_u32..).zip(&projectors) {
        let own = handles
            .iter()
            .filter(|h| Partition::index_of(h.case().id().as_str(), 3) == index)
            .count() as u64;
        assert!(own > 0, "every partition holds cases here");
        let applied = projector.stats().applied.load(Ordering::Relaxed);
        assert_eq!(
            applied,
            own * 5,
            "partition {index} folds only its own cases"
        );
    }
    let verified = verify_all(&log, &projectors[0]).await.unwrap();
    assert_eq!(verified.cases, 30);
    assert!(verified.mismatches.is_empty(), "{verified:?}");
}

//! Guards the projector, replay and audit against a real nats-server: views equal replays
//! under concurrent random commits and projector crashes; bad events published around the
//! store are quarantined with their position and reason while other cases go on; audit finds
//! broken chains and works with read-only credentials.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers stop the test at the first setup error"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use wfstate_events::{
    CommitErrorKind, EventLog, JetStreamConfig, JetStreamLog, RetryPolicy, Workspace,
};
use wfstate_projector::{
    JetStreamProjector, Projector, ProjectorConfig, ViewSource, audit_all, audit_case,
    audit_follow, replay, verify,
};
use wfstate_store::{
    CaseId, CommitId, Event, Hash, Mutation, ScopeId, TokenId, TokenStatus, Value, Version,
};
use wfstate_tests::NatsServer;

fn case(id: &str) -> CaseId {
    CaseId::new(id).unwrap()
}

async fn connect(url: &str) -> JetStreamLog {
    JetStreamLog::connect(&JetStreamConfig::new(url))
        .await
        .unwrap()
}

fn quick_projector() -> ProjectorConfig {
    let mut config = ProjectorConfig::default();
    config.batch = 64;
    config.ack_wait = Duration::from_secs(1);
    config.fetch_wait = Duration::from_millis(100);
    config
}

/// A small deterministic generator, so a failing run can be repeated from its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn seed() -> u64 {
    let seed = std::env::var("WFSTATE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::UNIX_EPOCH
                .elapsed()
                .map_or(1, |d| u64::from(d.subsec_nanos()) ^ d.as_secs())
                | 1
        });
    eprintln!("WFSTATE_SEED={seed}");
    seed
}

/// Buffers a random, valid step of a workflow on `case`.
fn random_step(case: &mut wfstate_store::Case, rng: &mut Rng, n: u64) {
    let state = case.state().clone();
    case.buffer(Mutation::set_key(
        format!("k{}", rng.below(8)),
        Value::from(rng.below(1000)),
    ));
    match rng.below(4) {
        0 => {
            case.buffer(Mutation::add_token(
                TokenId::new(format!("t{n}")).unwrap(),
                0,
                ScopeId::root(),
                Value::Null,
            ));
        }
        1 => {
            let active = state
                .tokens
                .values()
                .find(|token| token.status == TokenStatus::Active);
            if let Some(token) = active {
                let id = token.id.clone();
                case.update_token(id, |token| {
                    token.ip += 1;
                    token.status = TokenStatus::Complete;
                });
            }
        }
        _ => {
            case.buffer(Mutation::IncrementStepCount);
        }
    }
}

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
        "applied {applied}, skipped {}, deferred {}",
        stats
            .iter()
            .map(|s| s.skipped.load(Ordering::Relaxed))
            .sum::<u64>(),
        stats
            .iter()
            .map(|s| s.deferred.load(Ordering::Relaxed))
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
            handle.case_mut().buffer(Mutation::IncrementStepCount);
            workspace.commit(&mut handle).await.unwrap();
        }
    }
    let mut crashing = quick_projector();
    crashing.batch = 40;
    let mut first = JetStreamProjector::open(&log, crashing).await.unwrap();
    first.stop_before_ack();
    assert!(first.run_batch().await.is_err());
    let first_applied = first.stats().applied.load(Ordering::Relaxed);
    assert_eq!(first_applied, 40);
    drop(first);

    // The same durable consumer: the 40 unacknowledged events come back after ack_wait.
    let mut second = JetStreamProjector::open(&log, quick_projector())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    second.catch_up().await.unwrap();
    let stats = second.stats();
    assert_eq!(stats.applied.load(Ordering::Relaxed), 100 - first_applied);
    assert_eq!(stats.skipped.load(Ordering::Relaxed), first_applied);
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
        handle.case_mut().buffer(Mutation::IncrementStepCount);
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

/// Publishes raw bytes to a case subject, around the store.
async fn publish_raw(log: &JetStreamLog, case_id: &str, payload: Vec<u8>) -> u64 {
    log.context()
        .publish(format!("wfstate.case.{case_id}"), Bytes::from(payload))
        .await
        .unwrap()
        .await
        .unwrap()
        .sequence
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
        handle.case_mut().buffer(Mutation::IncrementStepCount);
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
    healthy.case_mut().buffer(Mutation::set_key("later", true));
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_detects_truncation_against_an_expected_head_and_replay_resumes_from_views() {
    let server = NatsServer::start().await;
    let log = connect(server.url()).await;
    let workspace = Workspace::new(log.clone());
    let (mut handle, _) = workspace.create(case("long"), []).await.unwrap();
    let mut receipts = Vec::new();
    for _ in 0..20 {
        handle.case_mut().buffer(Mutation::IncrementStepCount);
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
        handle.case_mut().buffer(Mutation::IncrementStepCount);
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
              "$JS.API.DIRECT.GET.WFSTATE", "$JS.API.DIRECT.GET.WFSTATE.>"
            ]
          }
          subscribe: { allow: ["_INBOX.>"] }
      } }
    ]
  }
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_auditor_verifies_every_chain_and_cannot_publish() {
    let server = NatsServer::start_with_config(AUTH_CONFIG);
    let mut writer_config = JetStreamConfig::new(server.url());
    writer_config.auth = wfstate_events::Auth::UserPassword {
        user: "writer".into(),
        password: "wpass".into(),
    };
    let workspace = Workspace::new(JetStreamLog::connect(&writer_config).await.unwrap());
    for n in 0..5 {
        let (mut handle, _) = workspace
            .create(case(&format!("a{n}")), [Mutation::set_key("n", n)])
            .await
            .unwrap();
        handle.case_mut().buffer(Mutation::IncrementStepCount);
        workspace.commit(&mut handle).await.unwrap();
    }

    let mut auditor_config = JetStreamConfig::new(server.url());
    auditor_config.auth = wfstate_events::Auth::UserPassword {
        user: "auditor".into(),
        password: "apass".into(),
    };
    auditor_config.create_stream = false;
    auditor_config.request_timeout = Duration::from_secs(1);
    let auditor = JetStreamLog::connect(&auditor_config).await.unwrap();
    let report = audit_all(&auditor, |_| {}).await.unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!((report.cases, report.events), (5, 10));
    let one = audit_case(&auditor, &case("a3"), None, |_| {})
        .await
        .unwrap();
    assert_eq!((one.events, one.is_clean()), (2, true));

    let refused = Workspace::new(auditor)
        .with_retry(RetryPolicy::default().with_deadline(Duration::from_secs(3)))
        .create(case("intruder"), [Mutation::set_key("x", 1)])
        .await
        .unwrap_err();
    assert_eq!(
        refused.kind(),
        CommitErrorKind::PermissionDenied,
        "{refused}"
    );
    let count = workspace.log().last_position().await.unwrap();
    assert_eq!(count, 10, "nothing was stored");
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
    handle.case_mut().buffer(Mutation::IncrementStepCount);
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

//! Guards the embedded log's durability: a child process commits in a loop and is killed with
//! SIGKILL mid group commit, three times on the same file; the log then reopens with only whole
//! commits, every chain verifies, and every commit the child saw acknowledged is present.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers stop the test at the first setup error"
)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use wfstate_events::{EmbeddedConfig, EmbeddedLog, EventLog};
use wfstate_projector::audit_all;
use wfstate_store::{CaseId, Event, Hash, Position};

/// Runs the writer until it has printed `acks` receipts (or 20 s passed), kills it, and
/// returns every receipt it printed.
fn run_and_kill(dir: &std::path::Path, acks: usize) -> Vec<(String, u64, String)> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_crash_writer"))
        .arg(dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut receipts = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while receipts.len() < acks && Instant::now() < deadline {
        let Some(line) = lines.next() else { break };
        receipts.push(line.unwrap());
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // What the child printed before it died was acknowledged too.
    receipts.extend(lines.map_while(Result::ok));
    receipts
        .into_iter()
        .map(|line| {
            let parts: Vec<&str> = line.split(' ').collect();
            (
                parts[0].to_owned(),
                parts[1].parse().unwrap(),
                parts[2].to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_writer_leaves_only_whole_commits_and_every_acknowledged_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut acknowledged = Vec::new();
    for round in 1..=3 {
        let receipts = run_and_kill(dir.path(), 600 * round);
        assert!(
            !receipts.is_empty(),
            "round {round}: the writer acknowledged nothing"
        );
        acknowledged.extend(receipts);
    }

    let log = EmbeddedLog::open(&EmbeddedConfig::new(dir.path())).unwrap();
    let report = audit_all(&log, |_| {}).await.unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!(report.cases, 16);

    let mut stored: HashMap<(String, u64), String> = HashMap::new();
    for n in 0..16 {
        let id = CaseId::new(format!("crash-{n}")).unwrap();
        let events: Vec<_> = log
            .history(&id, Position::ZERO)
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        for event in events {
            let version = Event::decode(&event.payload).unwrap().version;
            stored.insert(
                (id.to_string(), version.get()),
                Hash::of(&event.payload).to_hex(),
            );
        }
    }
    for (case, version, hash) in &acknowledged {
        assert_eq!(
            stored.get(&(case.clone(), *version)),
            Some(hash),
            "acknowledged {case} v{version} is missing"
        );
    }
    eprintln!(
        "{} acknowledged commits, {} stored",
        acknowledged.len(),
        stored.len()
    );
}

//! Shell workers: twenty processes committing to one case at once. With `--retry` every one
//! lands; without it the losers exit 3 with versions and nothing committed.

use std::path::Path;

use serde_json::Value;
use wfstate_tests::NatsServer;

use crate::{Output, wfstate};

const STEP: &str = r#"[{"op": "increment_step_count"}]"#;
const WORKERS: usize = 20;

/// Runs `commit CASE ARGS` in `WORKERS` processes at once.
fn race(dir: &Path, nats: Option<&str>, args: &[&str]) -> Vec<Output> {
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..WORKERS)
            .map(|_| {
                scope.spawn(|| {
                    let mut all = vec!["commit", "shared"];
                    all.extend_from_slice(args);
                    wfstate(dir, nats, &all, STEP)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| worker.join().unwrap())
            .collect()
    })
}

fn step_count(dir: &Path, nats: Option<&str>) -> u64 {
    let shown = wfstate(dir, nats, &["--json", "show", "shared", "--replay"], "");
    assert_eq!(shown.code, 0, "{}", shown.stderr);
    let state: Value = serde_json::from_str(&shown.stdout).unwrap();
    state["step_count"].as_u64().unwrap()
}

fn shell_workers(dir: &Path, nats: Option<&str>) {
    let created = wfstate(dir, nats, &["create", "--id", "shared"], "");
    assert_eq!(created.code, 0, "{}", created.stderr);

    let retried = race(dir, nats, &["--retry", "100"]);
    for output in &retried {
        assert_eq!(output.code, 0, "{}", output.stderr);
    }
    assert_eq!(step_count(dir, nats), WORKERS as u64);

    // Without --retry, each loser says so in versions, and that nothing was committed.
    let raced = race(dir, nats, &[]);
    let won = raced.iter().filter(|output| output.code == 0).count();
    for output in raced.iter().filter(|output| output.code != 0) {
        assert_eq!(output.code, 3, "{}", output.stderr);
        assert!(
            output
                .stderr
                .contains("when read, another writer committed first")
                && output.stderr.contains("nothing was committed")
                && output.stderr.contains("--retry N"),
            "{}",
            output.stderr
        );
    }
    assert!(won >= 1);
    assert_eq!(step_count(dir, nats), (WORKERS + won) as u64);

    // --expect-version: only onto the version named.
    let version = 1 + WORKERS + won;
    let stale = wfstate(
        dir,
        nats,
        &["commit", "shared", "--expect-version", "1"],
        STEP,
    );
    assert_eq!(stale.code, 3, "{}", stale.stderr);
    assert!(
        stale
            .stderr
            .contains(&format!("is at version {version}, not 1")),
        "{}",
        stale.stderr
    );
    let expected = version.to_string();
    let fresh = wfstate(
        dir,
        nats,
        &["commit", "shared", "--expect-version", &expected],
        STEP,
    );
    assert_eq!(fresh.code, 0, "{}", fresh.stderr);
}

#[test]
fn embedded_shell_workers_retry_or_lose_in_versions() {
    let dir = tempfile::tempdir().unwrap();
    shell_workers(dir.path(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_shell_workers_retry_or_lose_in_versions() {
    let server = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = server.url().to_owned();
    tokio::task::spawn_blocking(move || shell_workers(dir.path(), Some(&url)))
        .await
        .unwrap();
}

//! Looking around a store: read commands create nothing, a missing case names the store it was
//! looked for in, and a followed case shows that case only.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;
use wfstate_tests::NatsServer;

use crate::wfstate;

/// A `wfstate` process that keeps printing (`--follow`): its lines arrive on a channel, and
/// it is stopped (by its own handle) when dropped, also when the test fails.
pub struct Follower {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Follower {
    pub fn start(dir: &Path, nats: Option<&str>, args: &[&str]) -> Follower {
        let mut child = crate::command(dir, nats, args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        Follower { child, lines }
    }

    /// The next line, waiting at most 30 s for it.
    pub fn line(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(30))
            .expect("the follower printed a line within 30 s")
    }

    /// The next line as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.line()).unwrap()
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const STEP: &str = r#"[{"op": "increment_step_count"}]"#;

fn read_commands_create_nothing(dir: &Path) {
    let empty = dir.join("empty");
    for args in [
        &["show", "c1"][..],
        &["verify", "c1"],
        &["history", "c1"],
        &["audit"],
        &["replay", "c1"],
        &["export", "/dev/null"],
        &["list"],
    ] {
        let output = wfstate(&empty, None, args, "");
        assert_eq!(output.code, 2, "{args:?}: {}", output.stderr);
        assert!(
            output.stderr.contains("no store here to read"),
            "{args:?}: {}",
            output.stderr
        );
        assert!(!empty.exists(), "{args:?} created {}", empty.display());
    }
}

fn missing_cases_name_the_store(dir: &Path, nats: Option<&str>, store: &str) {
    let created = wfstate(dir, nats, &["create", "--id", "present"], "");
    assert_eq!(created.code, 0, "{}", created.stderr);
    for args in [
        &["show", "absent"][..],
        &["show", "absent", "--replay"],
        &["replay", "absent"],
        &["history", "absent"],
        &["audit", "absent"],
        &["verify", "absent"],
        &["verify", "present", "absent"],
    ] {
        let output = wfstate(dir, nats, args, "");
        assert_eq!(output.code, 2, "{args:?}: {}", output.stderr);
        assert!(
            output.stderr.contains("case absent not found in ")
                && output.stderr.contains(store)
                && !output.stderr.contains("MISMATCH"),
            "{args:?}: {}",
            output.stderr
        );
    }
}

fn a_followed_case_shows_only_its_events(dir: &Path, nats: Option<&str>) {
    for case in ["f1", "f2"] {
        assert_eq!(wfstate(dir, nats, &["create", "--id", case], "").code, 0);
    }
    let follower = Follower::start(dir, nats, &["--json", "audit", "f1", "--follow"]);
    assert_eq!(follower.json()["case_id"], "f1");
    for case in ["f2", "f2", "f1"] {
        let committed = wfstate(dir, nats, &["commit", case], STEP);
        assert_eq!(committed.code, 0, "{}", committed.stderr);
    }
    let next = follower.json();
    assert_eq!(
        (&next["case_id"], &next["version"]),
        (&"f1".into(), &2.into())
    );
}

/// The case ids `list ARGS --json` prints, in order.
fn listed(dir: &Path, nats: Option<&str>, args: &[&str]) -> Vec<String> {
    let mut all = vec!["--json", "list"];
    all.extend_from_slice(args);
    let output = wfstate(dir, nats, &all, "");
    assert_eq!(output.code, 0, "{args:?}: {}", output.stderr);
    output
        .stdout
        .lines()
        .map(|line| {
            let row: Value = serde_json::from_str(line).unwrap();
            row["case_id"].as_str().unwrap().to_owned()
        })
        .collect()
}

fn cases_are_listed_and_found(dir: &Path, nats: Option<&str>) {
    let run = |args: &[&str], stdin: &str| {
        let output = wfstate(dir, nats, args, stdin);
        assert_eq!(output.code, 0, "{args:?}: {}", output.stderr);
    };
    run(
        &[
            "create",
            "--id",
            "l-eu",
            "--ctx",
            r#"{"region": "eu", "n": 1}"#,
        ],
        "",
    );
    run(
        &[
            "create",
            "--id",
            "l-us",
            "--ctx",
            r#"{"region": "us", "n": 2}"#,
        ],
        "",
    );
    run(
        &[
            "create",
            "--id",
            "l-nested",
            "--ctx",
            r#"{"order": {"region": "eu"}}"#,
        ],
        "",
    );
    run(
        &["commit", "l-us"],
        r#"[{"op": "set_metadata", "value": {"team": "blue"}}, {"op": "set_case_status", "status": "done"}]"#,
    );
    // The newest commit first.
    assert_eq!(listed(dir, nats, &[])[..3], ["l-us", "l-nested", "l-eu"]);
    assert_eq!(listed(dir, nats, &["--limit", "1"]), ["l-us"]);
    assert_eq!(listed(dir, nats, &["--status", "done"]), ["l-us"]);
    assert_eq!(listed(dir, nats, &["--where", "ctx.region=eu"]), ["l-eu"]);
    assert_eq!(listed(dir, nats, &["--where", "ctx.n=2"]), ["l-us"]);
    assert_eq!(
        listed(dir, nats, &["--where", "ctx.order.region=eu"]),
        ["l-nested"]
    );
    assert_eq!(listed(dir, nats, &["--where", "meta.team=blue"]), ["l-us"]);
    assert!(listed(dir, nats, &["--where", "meta.team=red"]).is_empty());
    assert!(listed(dir, nats, &["--where", "ctx.region=eu", "--status", "done"]).is_empty());
    assert!(listed(dir, nats, &["--updated-since", "2999-01-01"]).is_empty());
    assert_eq!(
        listed(dir, nats, &["--updated-since", "1h"]).len(),
        listed(dir, nats, &["--limit", "0"]).len()
    );
    let table = wfstate(dir, nats, &["list", "--status", "done"], "");
    assert!(table.stdout.starts_with("CASE "), "{}", table.stdout);
    assert!(
        table.stdout.contains("l-us") && table.stdout.contains(" done "),
        "{}",
        table.stdout
    );
    for (args, words) in [
        (&["list", "--status", "finished"][..], "is not a status"),
        (
            &["list", "--where", "region=eu"],
            "names neither ctx.KEY nor meta.KEY",
        ),
        (&["list", "--where", "ctx.region"], "has no '='"),
        (&["list", "--updated-since", "yesterday"], "is not a time"),
    ] {
        let output = wfstate(dir, nats, args, "");
        assert_eq!(output.code, 2, "{args:?}: {}", output.stderr);
        assert!(output.stderr.contains(words), "{args:?}: {}", output.stderr);
    }
}

#[test]
fn embedded_reads_create_nothing_name_the_store_and_list() {
    let dir = tempfile::tempdir().unwrap();
    read_commands_create_nothing(dir.path());
    let data = dir.path().join("data");
    missing_cases_name_the_store(&data, None, "the embedded store ");
    a_followed_case_shows_only_its_events(&data, None);
    cases_are_listed_and_found(&data, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_missing_cases_name_the_stream_and_list() {
    let server = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = server.url().to_owned();
    tokio::task::spawn_blocking(move || {
        let store = format!("the stream WFSTATE at {url}");
        missing_cases_name_the_store(dir.path(), Some(&url), &store);
        a_followed_case_shows_only_its_events(dir.path(), Some(&url));
        cases_are_listed_and_found(dir.path(), Some(&url));
    })
    .await
    .unwrap();
}

//! Going back in time: `history` as a table and as JSON lines with their hashes, with
//! `--since`, `--limit` and `--follow`; `show --at-version` and `--at-time`; `diff`.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use wfstate_tests::NatsServer;

use crate::looking::Follower;
use crate::wfstate;

/// The case's four commits: scopes, tokens, ctx and metadata change in each.
const COMMITS: [&str; 3] = [
    r#"[{"op": "enter_scope", "id": "s1", "parent": "root"},
        {"op": "add_token", "id": "t1", "ip": 0, "scope": "s1", "value": null},
        {"op": "patch_ctx", "set": {"b": 2}, "remove": ["note"]}]"#,
    r#"[{"op": "add_token", "id": "t2", "ip": 0, "scope": "root", "value": "v"},
        {"op": "update_token", "id": "t1", "ip": 3}]"#,
    r#"[{"op": "update_token", "id": "t1", "status": "complete"},
        {"op": "set_metadata", "value": {"team": "blue"}},
        {"op": "set_case_status", "status": "done"}]"#,
];

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn json_of(dir: &Path, nats: Option<&str>, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let output = wfstate(dir, nats, &all, "");
    assert_eq!(output.code, 0, "{args:?}: {}", output.stderr);
    serde_json::from_str(&output.stdout).unwrap()
}

#[expect(clippy::too_many_lines, reason = "one case's past, read top to bottom")]
fn the_past_of_a_case(dir: &Path, nats: Option<&str>) {
    let run = |args: &[&str], stdin: &str| {
        let output = wfstate(dir, nats, args, stdin);
        assert_eq!(output.code, 0, "{args:?}: {}", output.stderr);
        output
    };
    run(
        &["create", "--id", "p1", "--ctx", r#"{"a": 1, "note": "x"}"#],
        "",
    );
    for commit in COMMITS {
        // Commits a few milliseconds apart, so that each has a time of its own.
        std::thread::sleep(Duration::from_millis(20));
        run(&["commit", "p1"], commit);
    }

    // History: a table with a header, and JSON lines chained by their hashes.
    let table = run(&["history", "p1"], "").stdout;
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 5, "{table}");
    assert!(rows[0].starts_with("VERSION  POSITION  TIME"), "{table}");
    assert!(
        rows[2]
            .contains("enter_scope(s1 in root) add_token(t1 in s1) patch_ctx(set b; remove note)"),
        "{table}"
    );
    assert!(rows[4].contains("update_token(t1: complete)"), "{table}");
    let lines = json_lines(&run(&["--json", "history", "p1"], "").stdout);
    assert_eq!(lines.len(), 4);
    for (index, line) in lines.iter().enumerate() {
        assert_eq!(line["case_id"], "p1");
        assert_eq!(line["version"], index + 1);
        for key in [
            "position",
            "commit_id",
            "committed_at",
            "writer",
            "state_hash",
        ] {
            assert!(!line[key].is_null(), "{key}: {line}");
        }
        if index > 0 {
            assert_eq!(line["prev_event_hash"], lines[index - 1]["event_hash"]);
        }
    }
    let limited = json_lines(&run(&["--json", "history", "p1", "--limit", "2"], "").stdout);
    assert_eq!(limited, lines[..2]);
    let since = lines[2]["committed_at"].as_str().unwrap();
    let recent = json_lines(&run(&["--json", "history", "p1", "--since", since], "").stdout);
    assert_eq!(recent, lines[2..]);
    assert!(
        run(&["history", "p1", "--since", "2999-01-01"], "")
            .stdout
            .is_empty()
    );

    // audit and verify end with a summary in JSON too.
    let audited = json_lines(&run(&["--json", "audit", "p1"], "").stdout);
    assert_eq!(
        audited.last().unwrap()["audited"],
        json!({"events": 4, "cases": 1, "problems": 0, "clean": true})
    );
    assert_eq!(audited[0]["case_id"], "p1");
    let verified = json_of(dir, nats, &["verify", "p1"]);
    assert_eq!(
        verified["cases"],
        json!([{"case_id": "p1", "ok": true, "mismatch": null}])
    );

    // The case at a version and at an instant.
    let at_two = json_of(dir, nats, &["show", "p1", "--at-version", "2"]);
    assert_eq!(at_two["version"], 2);
    assert_eq!(at_two["ctx"], json!({"a": 1, "b": 2}));
    assert_eq!(at_two["position"], lines[1]["position"]);
    let then = json_of(dir, nats, &["show", "p1", "--at-time", since]);
    assert_eq!(then["version"], 3);
    assert_eq!(then["state_hash"], lines[2]["state_hash"]);

    // Diffs.
    let first = json_of(dir, nats, &["diff", "p1", "1", "2"]);
    assert_eq!(first["ctx"]["set"], json!({"b": {"to": 2}}));
    assert_eq!(first["ctx"]["removed"], json!(["note"]));
    assert_eq!(first["tokens"]["added"][0]["id"], "t1");
    assert_eq!(first["scopes"]["entered"][0]["id"], "s1");
    let second = json_of(dir, nats, &["diff", "p1", "2", "3"]);
    assert_eq!(
        second["tokens"]["moved"],
        json!([{"id": "t1", "scope": {"from": "s1", "to": "s1"}, "ip": {"from": 0, "to": 3}}])
    );
    assert_eq!(second["tokens"]["added"][0]["id"], "t2");
    assert!(second["status"].is_null());
    let third = json_of(dir, nats, &["diff", "p1", "3", "4"]);
    assert_eq!(
        third["tokens"]["finished"],
        json!([{"id": "t1", "status": "complete"}])
    );
    assert_eq!(third["status"], json!({"from": "running", "to": "done"}));
    assert_eq!(third["metadata"]["to"], json!({"team": "blue"}));
    let backwards = json_of(dir, nats, &["diff", "p1", "2", "1"]);
    assert_eq!(backwards["ctx"]["removed"], json!(["b"]));
    let text = run(&["diff", "p1", "1", "2"], "").stdout;
    assert!(
        text.contains("ctx.b: set to 2") && text.contains("ctx.note: removed"),
        "{text}"
    );
    let text = run(&["diff", "p1", "3", "4"], "").stdout;
    assert!(
        text.contains("token t1 finished: complete")
            && text.contains("status: \"running\" -> \"done\""),
        "{text}"
    );
    assert!(
        run(&["diff", "p1", "2", "2"], "")
            .stdout
            .contains("no change")
    );

    for (args, words) in [
        (
            &["show", "p1", "--at-version", "9"][..],
            "has 4 version(s): version 9 is past its last",
        ),
        (&["show", "p1", "--at-time", "2000-01-01"], "was created at"),
        (&["show", "p1", "--at-time", "noon"], "is not a time"),
        (&["diff", "p1", "1", "9"], "version 9 is past its last"),
        (&["diff", "nobody", "1", "2"], "case nobody not found in "),
        (
            &["history", "p1", "--limit", "0"],
            "--limit must be at least 1",
        ),
    ] {
        let output = wfstate(dir, nats, args, "");
        assert_eq!(output.code, 2, "{args:?}: {}", output.stderr);
        assert!(output.stderr.contains(words), "{args:?}: {}", output.stderr);
    }

    // Following: the case's new events, not another case's.
    run(&["create", "--id", "p2"], "");
    let follower = Follower::start(dir, nats, &["--json", "history", "p1", "--follow"]);
    for _ in 0..4 {
        follower.json();
    }
    run(&["commit", "p2"], r#"[{"op": "increment_step_count"}]"#);
    run(
        &["commit", "p1"],
        r#"[{"op": "set_metadata", "value": null}]"#,
    );
    let next = follower.json();
    assert_eq!(
        (&next["case_id"], &next["version"]),
        (&json!("p1"), &json!(5))
    );
}

#[test]
fn embedded_history_time_travel_and_diffs() {
    let dir = tempfile::tempdir().unwrap();
    the_past_of_a_case(dir.path(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_history_time_travel_and_diffs() {
    let server = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = server.url().to_owned();
    tokio::task::spawn_blocking(move || the_past_of_a_case(dir.path(), Some(&url)))
        .await
        .unwrap();
}

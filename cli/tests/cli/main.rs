//! Runs the `wfstate` binary as a process, on the embedded log and on a real nats-server:
//! every command's success path, every error path with its exit code and one-line message,
//! and the demo at small sizes. No panic or stack trace may reach a user.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers stop the test at the first setup error"
)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;
use wfstate_tests::NatsServer;

mod again;
mod checkpoints;
mod console;
mod format;
mod looking;
mod messages;
mod past;
mod pipes;
mod progress;
mod readers;
mod share;
mod transfer;
mod workers;

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

/// `wfstate ARGS` with its data dir (and NATS URL, through the environment).
fn command(dir: &Path, nats: Option<&str>, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wfstate"));
    command
        .args(args)
        .env("WFSTATE_DATA_DIR", dir)
        .env_remove("WFSTATE_NATS_URL");
    if let Some(url) = nats {
        command.env("WFSTATE_NATS_URL", url);
    }
    command
}

/// Runs `wfstate ARGS` with its data dir (and NATS URL, through the environment).
fn wfstate(dir: &Path, nats: Option<&str>, args: &[&str], stdin: &str) -> Output {
    let mut child = command(dir, nats, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let result = Output {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    assert!(
        !result.stderr.contains("panicked") && !result.stderr.contains("RUST_BACKTRACE"),
        "{}",
        result.stderr
    );
    result
}

const STEP: &str = r#"[
  {"op": "enter_scope", "id": "fulfil", "parent": "root"},
  {"op": "add_token", "id": "pick", "ip": 0, "scope": "fulfil", "value": null},
  {"op": "patch_ctx", "set": {"paid": true}},
  {"op": "increment_step_count"}
]"#;

#[expect(clippy::too_many_lines, reason = "one walkthrough, read top to bottom")]
fn walkthrough(dir: &Path, nats: Option<&str>) {
    let run = |args: &[&str], stdin: &str| wfstate(dir, nats, args, stdin);
    let created = run(
        &["create", "--id", "order-42", "--ctx", r#"{"amount": 42}"#],
        "",
    );
    assert_eq!(
        (created.code, created.stdout.trim()),
        (0, "order-42"),
        "{}",
        created.stderr
    );

    let file = dir.join("step.json");
    std::fs::write(&file, STEP).unwrap();
    let committed = run(
        &[
            "--json",
            "commit",
            "order-42",
            "--file",
            file.to_str().unwrap(),
        ],
        "",
    );
    assert_eq!(committed.code, 0, "{}", committed.stderr);
    let receipt: Value = serde_json::from_str(&committed.stdout).unwrap();
    assert_eq!(
        (
            receipt["version"].as_u64(),
            receipt["mutation_count"].as_u64()
        ),
        (Some(2), Some(4))
    );
    let from_stdin = run(
        &["commit", "order-42"],
        r#"[{"op": "increment_step_count"}]"#,
    );
    assert!(
        from_stdin.stdout.starts_with("order-42 v3 position"),
        "{}",
        from_stdin.stdout
    );

    let shown = run(&["show", "order-42", "--json"], "");
    assert_eq!(shown.code, 0, "{}", shown.stderr);
    let state: Value = serde_json::from_str(&shown.stdout).unwrap();
    for key in [
        "case_id",
        "version",
        "position",
        "status",
        "step_count",
        "ctx",
        "metadata",
        "state_hash",
        "tokens",
        "scopes",
    ] {
        assert!(state.get(key).is_some(), "show --json lacks {key}: {state}");
    }
    assert_eq!(
        (
            state["version"].as_u64(),
            state["status"].as_str(),
            state["step_count"].as_u64()
        ),
        (Some(3), Some("running"), Some(2))
    );
    assert_eq!(state["ctx"]["paid"], Value::Bool(true));
    assert_eq!(state["tokens"][0]["id"], "pick");
    assert_eq!(state["tokens"][0]["status"], "active");
    assert!(
        state["scopes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["id"] == "fulfil" && s["status"] == "active")
    );

    let replayed = run(&["--json", "replay", "order-42"], "");
    let replayed: Value = serde_json::from_str(&replayed.stdout).unwrap();
    assert_eq!(replayed["state_hash"], state["state_hash"]);
    let strict = run(&["--json", "replay", "order-42", "--strict"], "");
    let strict: Value = serde_json::from_str(&strict.stdout).unwrap();
    assert_eq!(strict["state_hash"], state["state_hash"]);
    let human = run(&["show", "order-42"], "");
    assert!(
        human.stdout.contains("case order-42  version 3"),
        "{}",
        human.stdout
    );

    let history = run(&["history", "order-42"], "");
    assert_eq!(history.stdout.lines().count(), 4, "{}", history.stdout);
    assert!(
        history
            .stdout
            .lines()
            .nth(2)
            .unwrap()
            .contains("enter_scope(fulfil in root)")
    );

    let head = receipt["event_hash"].as_str().unwrap().to_owned();
    let audited = run(&["audit", "order-42"], "");
    assert_eq!(audited.code, 0, "{}", audited.stderr);
    assert_eq!(audited.stdout.lines().count(), 3);
    let stale_head = run(&["audit", "order-42", "--expect-head", &head], "");
    assert_eq!(
        stale_head.code, 1,
        "an older head means the log holds more or other events"
    );
    assert!(run(&["audit"], "").code == 0);

    let projected = run(&["project"], "");
    assert!(projected.stdout.contains("lag 0"), "{}", projected.stdout);
    let verified = run(&["verify", "--all"], "");
    assert_eq!(verified.code, 0, "{}", verified.stderr);
    assert!(
        verified
            .stdout
            .contains("verified 1 case(s): 0 mismatch(es)"),
        "{}",
        verified.stdout
    );
}

fn errors(dir: &Path, nats: Option<&str>) {
    let run = |args: &[&str], stdin: &str| wfstate(dir, nats, args, stdin);
    assert_eq!(run(&["create", "--id", "e1"], "").code, 0);

    let bad_json = run(
        &["commit", "e1"],
        "[\n {\"op\": \"increment_step_count\"},\n {\"op\" \"set_ctx\"}\n]",
    );
    assert_eq!(bad_json.code, 2);
    assert!(
        bad_json.stderr.contains("line 3 column"),
        "{}",
        bad_json.stderr
    );

    let invalid = run(
        &["commit", "e1"],
        r#"[{"op":"remove_token","id":"ghost"},{"op":"increment_step_count"},{"op":"exit_scope","id":"root"}]"#,
    );
    assert_eq!(invalid.code, 2);
    assert!(
        invalid.stderr.contains("mutation 0 (remove_token)")
            && invalid.stderr.contains("mutation 2 (exit_scope)"),
        "{}",
        invalid.stderr
    );
    assert_eq!(
        invalid.stderr.lines().count(),
        3,
        "a summary and one line per error: {}",
        invalid.stderr
    );

    let unknown = run(&["show", "nobody"], "");
    assert_eq!(unknown.code, 2);
    assert!(
        unknown.stderr.contains("case nobody not found"),
        "{}",
        unknown.stderr
    );
    assert_eq!(run(&["commit", "nobody"], "[]").code, 2);
    assert_eq!(run(&["history", "nobody"], "").code, 2);

    let bad_id = run(&["create", "--id", "a.b"], "");
    assert_eq!(bad_id.code, 2);
    assert!(bad_id.stderr.contains("'.'"), "{}", bad_id.stderr);
    assert_eq!(run(&["show", ">"], "").code, 2);

    let exists = run(&["create", "--id", "e1"], "");
    assert_eq!(exists.code, 3);
    assert!(
        exists.stderr.contains("already exists"),
        "{}",
        exists.stderr
    );

    let not_object = run(&["create", "--ctx", "[1]"], "");
    assert_eq!(not_object.code, 2);
    assert!(
        not_object.stderr.contains("JSON object"),
        "{}",
        not_object.stderr
    );
    // Every error is one "wfstate:" line (validation: one per error).
    for output in [&bad_json, &unknown, &bad_id, &exists] {
        assert_eq!(output.stderr.lines().count(), 1, "{}", output.stderr);
        assert!(output.stderr.starts_with("wfstate: "), "{}", output.stderr);
    }
}

/// How many cases `list` finds with `args` before it.
fn case_count(dir: &Path, nats: Option<&str>, args: &[&str]) -> usize {
    let mut all = args.to_vec();
    all.extend(["list", "--limit", "0", "--json"]);
    let listed = wfstate(dir, nats, &all, "");
    if listed.code == 2 && listed.stderr.contains("no store here to read") {
        return 0;
    }
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    listed.stdout.lines().count()
}

fn demo(dir: &Path, nats: Option<&str>) {
    let before = case_count(dir, nats, &[]);
    let demo = wfstate(
        dir,
        nats,
        &[
            "--json",
            "demo",
            "--cases",
            "12",
            "--workers",
            "3",
            "--steps",
            "2",
            "--racers",
            "2",
        ],
        "",
    );
    assert_eq!(demo.code, 0, "{}", demo.stderr);
    let summary: Value = serde_json::from_str(&demo.stdout).unwrap();
    assert_eq!(summary["all_verified"], Value::Bool(true), "{summary}");
    assert_eq!(summary["cases"].as_u64(), Some(12));
    assert!(summary["commits"].as_u64().unwrap() >= 12 * 6, "{summary}");
    // On a server the demo keeps to a stream of its own, and says so.
    if nats.is_some() {
        assert_eq!(case_count(dir, nats, &[]), before);
        assert_eq!(case_count(dir, nats, &["--stream", "WFSTATE_DEMO"]), 12);
        assert!(
            summary["store"]
                .as_str()
                .unwrap()
                .contains("the stream WFSTATE_DEMO"),
            "{summary}"
        );
        assert!(
            demo.stderr.contains("--into-main-stream"),
            "{}",
            demo.stderr
        );
    } else {
        assert_eq!(case_count(dir, nats, &[]), before + 12);
    }
}

#[test]
fn embedded_walkthrough_errors_and_demo() {
    let dir = tempfile::tempdir().unwrap();
    walkthrough(dir.path(), None);
    errors(&dir.path().join("errors"), None);
    demo(&dir.path().join("demo"), None);
    // Export from the embedded store (outside its data directory), import into a fresh one.
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("export.cbor");
    let exported = wfstate(dir.path(), None, &["export", file.to_str().unwrap()], "");
    assert_eq!(exported.code, 0, "{}", exported.stderr);
    let fresh = dir.path().join("fresh");
    let imported = wfstate(&fresh, None, &["import", file.to_str().unwrap()], "");
    assert_eq!(imported.code, 0, "{}", imported.stderr);
    assert_eq!(wfstate(&fresh, None, &["verify", "order-42"], "").code, 0);
    // Run again, the import finds every event there and writes nothing.
    let again = wfstate(&fresh, None, &["import", file.to_str().unwrap()], "");
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(again.stdout.contains("(0 appended, "), "{}", again.stdout);
    // Into a store holding another history of one of the file's cases, it is refused.
    let other = dir.path().join("other");
    let created = wfstate(&other, None, &["create", "--id", "order-42"], "");
    assert_eq!(created.code, 0, "{}", created.stderr);
    let refused = wfstate(&other, None, &["import", file.to_str().unwrap()], "");
    assert_eq!(refused.code, 3, "{}", refused.stdout);
    assert!(refused.stderr.contains("order-42"), "{}", refused.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_walkthrough_errors_and_demo() {
    let server = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = server.url().to_owned();
    tokio::task::spawn_blocking(move || {
        walkthrough(dir.path(), Some(&url));
        errors(dir.path(), Some(&url));
        demo(dir.path(), Some(&url));
    })
    .await
    .unwrap();

    // A forged event published around the store: audit and verify exit 1.
    let client = async_nats::connect(server.url()).await.unwrap();
    let context = async_nats::jetstream::new(client);
    context
        .publish(
            "wfstate.case.order-42",
            bytes::Bytes::from_static(b"\xffgarbage"),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = server.url().to_owned();
    let (audit, verify) = tokio::task::spawn_blocking(move || {
        (
            wfstate(dir.path(), Some(&url), &["audit"], ""),
            wfstate(dir.path(), Some(&url), &["verify", "order-42"], ""),
        )
    })
    .await
    .unwrap();
    assert_eq!(audit.code, 1, "{}", audit.stderr);
    assert!(audit.stderr.contains("undecodable"), "{}", audit.stderr);
    assert_eq!(verify.code, 1, "{}", verify.stderr);
}

#[test]
fn an_unreachable_server_is_exit_4_with_its_url() {
    let dir = tempfile::tempdir().unwrap();
    let url = "nats://127.0.0.1:1";
    let output = wfstate(dir.path(), Some(url), &["--timeout", "2", "create"], "");
    assert_eq!(output.code, 4);
    assert!(output.stderr.contains(url), "{}", output.stderr);
    assert_eq!(output.stderr.lines().count(), 1, "{}", output.stderr);
}

/// What the user must fix is exit 2, with the path named; only "try again later" is exit 4.
#[test]
fn a_bad_data_file_or_directory_is_exit_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage");
    std::fs::create_dir(&garbage).unwrap();
    std::fs::write(garbage.join("wfstate.sqlite3"), vec![0x5a; 8192]).unwrap();
    let output = wfstate(&garbage, None, &["show", "c1"], "");
    assert_eq!(output.code, 2, "{}", output.stderr);
    assert!(
        output.stderr.contains("wfstate.sqlite3"),
        "{}",
        output.stderr
    );

    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let output = wfstate(&file, None, &["show", "c1"], "");
    assert_eq!(output.code, 2, "{}", output.stderr);
    assert!(output.stderr.contains("a-file"), "{}", output.stderr);

    let output = wfstate(dir.path(), Some("http://127.0.0.1:1"), &["show", "c1"], "");
    assert_eq!(output.code, 2, "{}", output.stderr);
    assert_eq!(output.stderr.lines().count(), 1, "{}", output.stderr);
}

/// `project` lists a halted case with its held events; `project --retry` folds a case again,
/// exit 0 when it is healthy and 1 when it halts again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_halted_case_is_listed_and_retried() {
    use wfstate_events::{EmbeddedConfig, EmbeddedLog, EventLog as _};
    use wfstate_store::{CaseId, CommitId};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    let run = move |args: &'static [&'static str]| {
        let path = path.clone();
        tokio::task::spawn_blocking(move || wfstate(&path, None, args, ""))
    };
    for case in ["ok", "bad"] {
        let created = wfstate(dir.path(), None, &["create", "--id", case], "");
        assert_eq!(created.code, 0, "{}", created.stderr);
    }
    // An event no reader can apply, appended around the store (a writer of another format),
    // then one more: held behind it.
    let log = EmbeddedLog::open(&EmbeddedConfig::new(dir.path())).unwrap();
    let bad = CaseId::new("bad").unwrap();
    let mut last = log.last_event(&bad).await.unwrap().unwrap().position;
    for garbage in [&b"\x00garbage"[..], b"\x00more"] {
        let appended = log
            .append(
                &bad,
                CommitId::generate(),
                last,
                bytes::Bytes::from_static(garbage),
            )
            .await
            .unwrap();
        last = appended.stored_at().unwrap();
    }
    drop(log);

    let projected = run(&["project"]).await.unwrap();
    assert_eq!(projected.code, 0, "{}", projected.stderr);
    assert!(
        projected
            .stdout
            .contains("halted case bad at position 3 (undecodable), 1 later event(s) held"),
        "{}",
        projected.stdout
    );
    let json = run(&["--json", "project"]).await.unwrap();
    let report: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(report["halted"][0]["case"], "bad", "{report}");
    assert_eq!(report["halted"][0]["held"], 1, "{report}");

    let again = run(&["project", "--retry", "bad"]).await.unwrap();
    assert_eq!(again.code, 1, "it halts again: {}", again.stdout);
    assert!(
        again.stdout.contains("halted case bad at position 3"),
        "{}",
        again.stdout
    );
    let healthy = run(&["project", "--retry", "ok"]).await.unwrap();
    assert_eq!(healthy.code, 0, "{}", healthy.stderr);
    assert!(
        healthy
            .stdout
            .contains("case ok folded again: healthy at version 1"),
        "{}",
        healthy.stdout
    );
    let none = run(&["project", "--retry", "nosuch"]).await.unwrap();
    assert_eq!(none.code, 2, "{}", none.stderr);
    assert!(
        none.stderr.contains("nosuch has no events"),
        "{}",
        none.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_reports_every_phase_and_cleans_up() {
    let server = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = server.url().to_owned();
    let args = [
        "--json",
        "bench",
        "--cases",
        "4",
        "--commits",
        "3",
        "--sequential",
        "5",
        "--hot-batch",
        "5",
        "--replay-events",
        "40",
    ];
    let output = tokio::task::spawn_blocking(move || wfstate(dir.path(), Some(&url), &args, ""))
        .await
        .unwrap();
    assert_eq!(output.code, 0, "{}", output.stderr);
    let report: Value = serde_json::from_str(&output.stdout).unwrap();
    for phase in ["many_cases", "one_case", "replay"] {
        for side in ["wfstate", "raw"] {
            assert!(
                report[phase][side]["per_second"].as_f64().unwrap() > 0.0,
                "{report}"
            );
        }
        assert!(report[phase]["ratio"].as_f64().is_some(), "{report}");
    }
    assert_eq!(
        report["many_cases"]["wfstate"]["operations"].as_u64(),
        Some(12)
    );
    assert!(report["many_cases"]["wfstate"]["p99_ms"].as_f64().is_some());
    // Every figure carries the client CPU per operation (0 when a run is shorter than a tick).
    assert!(
        report["many_cases"]["wfstate"]["client_cpu_us_per_op"]
            .as_f64()
            .is_some_and(|cpu| cpu >= 0.0),
        "{report}"
    );
    assert_eq!(report["replay"]["wfstate"]["operations"].as_u64(), Some(40));
    assert!(report["projector"]["ratio_to_1"].as_f64().is_some());
    // One atomic round trip of 5 batches.
    assert_eq!(
        report["hot_case"]["wfstate"]["operations"].as_u64(),
        Some(5)
    );
    assert!(report["embedded_commits"]["ratio_to_1"].as_f64().is_some());

    // Its streams are gone.
    let client = async_nats::connect(server.url()).await.unwrap();
    let context = async_nats::jetstream::new(client);
    let names: Vec<String> = futures::StreamExt::collect::<Vec<_>>(context.stream_names())
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert!(
        names.iter().all(|name| !name.contains("BENCH")),
        "{names:?}"
    );
}

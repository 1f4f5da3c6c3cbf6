//! Running a command again is safe: `commit` and `create` with `--commit-id` store a commit
//! at most once and print its first receipt however often and late they run, on the embedded
//! store and on a server; a change that landed is status 5 when its output cannot be written,
//! never "nothing was done"; and `export` and `import` refuse the store's own files.

use std::path::Path;
use std::process::{Command, Stdio};

use wfstate_tests::NatsServer;

use crate::wfstate;

const STEP: &str = r#"[{"op": "increment_step_count"}]"#;

/// How many events `case` has, by its history.
fn events(data: &Path, nats: Option<&str>, case: &str) -> usize {
    let history = wfstate(data, nats, &["--json", "history", case], "");
    assert_eq!(history.code, 0, "{}", history.stderr);
    history.stdout.lines().count()
}

fn commit_ids_make_commands_safe_to_run_again(data: &Path, nats: Option<&str>) {
    // create without --id: the case is named after its commit, so the same command finds it.
    let first = "0190f5a4-6b6e-7c1d-8e4f-000000000001";
    let created = wfstate(data, nats, &["create", "--commit-id", first], "");
    assert_eq!(
        (created.code, created.stdout.trim()),
        (0, first),
        "{}",
        created.stderr
    );
    let again = wfstate(data, nats, &["create", "--commit-id", first], "");
    assert_eq!(
        (again.code, again.stdout.trim()),
        (0, first),
        "{}",
        again.stderr
    );
    assert_eq!(events(data, nats, first), 1);

    let named = "0190f5a4-6b6e-7c1d-8e4f-000000000002";
    for _ in 0..2 {
        let created = wfstate(
            data,
            nats,
            &["create", "--id", "again", "--commit-id", named],
            "",
        );
        assert_eq!(
            (created.code, created.stdout.trim()),
            (0, "again"),
            "{}",
            created.stderr
        );
    }
    let other = wfstate(data, nats, &["create", "--id", "again"], "");
    assert_eq!(other.code, 3, "another commit's create: {}", other.stderr);

    let commit = "0190f5a4-6b6e-7c1d-8e4f-000000000003";
    let receipt = wfstate(
        data,
        nats,
        &["commit", "again", "--commit-id", commit],
        STEP,
    );
    assert_eq!(receipt.code, 0, "{}", receipt.stderr);
    assert!(
        receipt.stdout.starts_with("again v2 "),
        "{}",
        receipt.stdout
    );
    // Again, and again with a version it no longer is at: the first receipt, nothing stored.
    for args in [
        &["commit", "again", "--commit-id", commit][..],
        &[
            "commit",
            "again",
            "--commit-id",
            commit,
            "--expect-version",
            "1",
        ],
        &["commit", "again", "--commit-id", commit, "--retry", "3"],
    ] {
        let repeated = wfstate(data, nats, args, STEP);
        assert_eq!(repeated.code, 0, "{args:?}: {}", repeated.stderr);
        assert_eq!(repeated.stdout, receipt.stdout, "{args:?}");
        assert!(
            repeated.stderr.contains("stored before"),
            "{}",
            repeated.stderr
        );
    }
    assert_eq!(events(data, nats, "again"), 2);

    // One commit id is one commit: another case's is refused, nothing stored.
    let created = wfstate(data, nats, &["create", "--id", "elsewhere"], "");
    assert_eq!(created.code, 0, "{}", created.stderr);
    let taken = wfstate(
        data,
        nats,
        &["commit", "elsewhere", "--commit-id", commit],
        STEP,
    );
    assert_eq!(taken.code, 2, "{}", taken.stderr);
    assert!(
        taken.stderr.contains("already stored for another case"),
        "{}",
        taken.stderr
    );
    assert_eq!(events(data, nats, "elsewhere"), 1);

    let malformed = wfstate(data, nats, &["commit", "again", "--commit-id", "x1"], STEP);
    assert_eq!(malformed.code, 2, "{}", malformed.stderr);
    assert!(
        malformed.stderr.contains("give a UUID"),
        "{}",
        malformed.stderr
    );
}

#[test]
fn embedded_commit_ids_make_commit_and_create_safe_to_run_again() {
    let dir = tempfile::tempdir().unwrap();
    commit_ids_make_commands_safe_to_run_again(&dir.path().join("data"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_commit_ids_make_commit_and_create_safe_to_run_again() {
    let server = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = server.url().to_owned();
    let data = dir.path().join("unused");
    tokio::task::spawn_blocking(move || {
        commit_ids_make_commands_safe_to_run_again(&data, Some(&url));
    })
    .await
    .unwrap();
}

/// `wfstate ARGS` with stdout into `/dev/full`: the exit code and stderr.
fn into_full_disk(data: &Path, args: &[&str], stdin: &str) -> (i32, String) {
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_wfstate"))
        .args(args)
        .env("WFSTATE_DATA_DIR", data)
        .env_remove("WFSTATE_NATS_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::from(full))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), stdin.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    (output.status.code().unwrap_or(-1), stderr)
}

/// A commit or a create that landed, whose output cannot be written: status 5, saying what is
/// stored; a script that runs it again with its commit id stores nothing more.
#[test]
fn a_change_that_landed_is_done_when_its_output_cannot_be_written() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (code, stderr) = into_full_disk(&data, &["create", "--id", "c1"], "");
    assert_eq!(code, 5, "{stderr}");
    assert!(stderr.contains("done: case c1 is created"), "{stderr}");
    assert_eq!(events(&data, None, "c1"), 1);

    let id = "0190f5a4-6b6e-7c1d-8e4f-0000000000aa";
    let (code, stderr) = into_full_disk(&data, &["commit", "c1", "--commit-id", id], STEP);
    assert_eq!(code, 5, "{stderr}");
    assert!(
        stderr.contains(&format!("done: commit {id} is stored as version 2")),
        "{stderr}"
    );
    let again = wfstate(&data, None, &["commit", "c1", "--commit-id", id], STEP);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(again.stdout.starts_with("c1 v2 "), "{}", again.stdout);
    assert_eq!(events(&data, None, "c1"), 2);
}

/// An export onto the store it reads (its file, a hard or symbolic link to it, anything in
/// its data directory) and an import of the store's own file are refused, and the store is
/// as it was.
#[test]
fn export_and_import_refuse_the_store_itself() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let created = wfstate(&data, None, &["create", "--id", "kept"], "");
    assert_eq!(created.code, 0, "{}", created.stderr);
    let store = data.join("wfstate.sqlite3");
    let hard = dir.path().join("hard-link.sqlite3");
    std::fs::hard_link(&store, &hard).unwrap();
    let linked_dir = dir.path().join("linked");
    std::os::unix::fs::symlink(&data, &linked_dir).unwrap();
    let wal = data.join("wfstate.sqlite3-wal");
    let targets = [
        store.clone(),
        hard.clone(),
        data.join("backup.cbor"),
        linked_dir.join("../data/backup.cbor"),
        linked_dir.join("wfstate.sqlite3"),
        linked_dir.join("new.cbor"),
        wal,
    ];
    for target in &targets {
        let target = target.to_str().unwrap();
        let refused = wfstate(&data, None, &["export", target, "--force"], "");
        assert_eq!(refused.code, 2, "{target}: {}", refused.stderr);
        assert!(
            refused.stderr.contains("the export would overwrite it"),
            "{}",
            refused.stderr
        );
    }
    for source in [&store, &hard, &linked_dir.join("wfstate.sqlite3")] {
        let source = source.to_str().unwrap();
        let refused = wfstate(&data, None, &["import", source], "");
        assert_eq!(refused.code, 2, "{source}: {}", refused.stderr);
        assert!(
            refused.stderr.contains("this store's own file"),
            "{}",
            refused.stderr
        );
    }
    let shown = wfstate(&data, None, &["show", "kept"], "");
    assert_eq!(shown.code, 0, "the store is as it was: {}", shown.stderr);
    assert!(!data.join("backup.cbor").exists());
    // Outside the data directory, an export is written as ever.
    let outside = dir.path().join("backup.cbor");
    let written = wfstate(&data, None, &["export", outside.to_str().unwrap()], "");
    assert_eq!(written.code, 0, "{}", written.stderr);
}

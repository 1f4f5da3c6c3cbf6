//! A reader that closed the pipe (`wfstate history CASE | head -1`) ends every printing
//! command quietly with status 141, as a process stopped by SIGPIPE; a full disk is a
//! message. A command whose change is stored (a commit, a case, an import, a checkpoint, the
//! views, an export file) ends with status 5 instead, saying what it stored: never a status
//! that says nothing was done. Never a panic.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::wfstate;

/// Runs `wfstate ARGS` on `data` with its stdout going to `stdout`; returns the exit code and
/// stderr.
fn run_into(data: &Path, args: &[&str], stdout: Stdio) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_wfstate"))
        .args(args)
        .env("WFSTATE_DATA_DIR", data)
        .env_remove("WFSTATE_NATS_URL")
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.code().unwrap_or(-1), stderr)
}

/// A pipe whose reader is already gone: the first write to it fails.
fn closed_pipe() -> Stdio {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    Stdio::from(writer)
}

#[test]
fn a_closed_pipe_ends_every_printing_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let demo = wfstate(&data, None, &["demo", "--cases", "3"], "");
    assert_eq!(demo.code, 0, "{}", demo.stderr);
    let created = wfstate(&data, None, &["create", "--id", "c1"], "");
    assert_eq!(created.code, 0, "{}", created.stderr);
    let key = dir.path().join("log.key");
    let key = key.to_str().unwrap();
    let made = wfstate(
        &data,
        None,
        &["checkpoint", "--new-key", "k", "--key", key],
        "",
    );
    assert_eq!(made.code, 0, "{}", made.stderr);
    let signed = wfstate(&data, None, &["checkpoint", "--key", key], "");
    assert_eq!(signed.code, 0, "{}", signed.stderr);
    let export = dir.path().join("export.cbor");
    let export = export.to_str().unwrap();
    let step = dir.path().join("step.json");
    std::fs::write(&step, r#"[{"op": "increment_step_count"}]"#).unwrap();
    let step = step.to_str().unwrap();
    let reads: [&[&str]; 17] = [
        &["history", "c1"],
        &["history", "c1", "--since", "1h"],
        &["list"],
        &["--json", "list"],
        &["diff", "c1", "0", "1"],
        &["show", "c1", "--at-version", "1"],
        &["export", "-"],
        &["--json", "history", "c1"],
        &["audit"],
        &["--json", "audit"],
        &["audit", "c1"],
        &["show", "c1"],
        &["--json", "show", "c1", "--replay"],
        &["replay", "c1"],
        &["verify", "--all"],
        &["checkpoint", "--public-key", "--key", key],
        &["receipt", "c1", "--version", "1"],
    ];
    for args in reads.into_iter().chain([&["bench"][..]]) {
        let (code, stderr) = run_into(&data, args, closed_pipe());
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(code, 141, "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?} said: {stderr}");
    }
    let changes: [&[&str]; 6] = [
        &["project"],
        &["checkpoint", "--key", key],
        &["export", export],
        &["create", "--id", "c2"],
        &["commit", "c2", "--file", step],
        &["demo", "--cases", "2"],
    ];
    for args in changes {
        let (code, stderr) = run_into(&data, args, closed_pipe());
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(code, 5, "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("wfstate: done: "),
            "{args:?} said: {stderr}"
        );
    }
    let history = crate::wfstate(&data, None, &["history", "c2"], "");
    assert_eq!(
        history.stdout.lines().count(),
        3,
        "c2 created and committed once each"
    );
    // A full disk is a message, with the status of a full disk elsewhere.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let (code, stderr) = run_into(&data, &["history", "c1"], Stdio::from(full));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("cannot write the output"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

//! A reader that closed the pipe (`wfstate history CASE | head -1`) ends every printing
//! command quietly with status 141, as a process stopped by SIGPIPE; a full disk is a
//! message. Neither is ever a panic.

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
    let export = dir.path().join("export.cbor");
    let export = export.to_str().unwrap();
    let commands: [&[&str]; 23] = [
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
        &["project"],
        &["checkpoint", "--key", key],
        &["checkpoint", "--public-key", "--key", key],
        &["receipt", "c1", "--version", "1"],
        &["export", export],
        &["create", "--id", "c2"],
        &["demo", "--cases", "2"],
        &["bench"],
    ];
    for args in commands {
        let (code, stderr) = run_into(&data, args, closed_pipe());
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(code, 141, "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?} said: {stderr}");
    }
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

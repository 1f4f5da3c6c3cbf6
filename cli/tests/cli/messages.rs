//! What a new user reads: configuration mistakes as exit 2 with what to do, and help that
//! teaches.

use wfstate_tests::NatsServer;

use crate::wfstate;

/// Each configuration mistake a new user makes is exit 2, in one line that names the thing
/// and what to do; none is "try again later".
#[test]
fn configuration_mistakes_are_exit_2_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start_without_jetstream();
    let url = server.url();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let file = file.to_str().unwrap();
    let cases: [(Option<&str>, &[&str], &str); 8] = [
        (
            Some("foo://127.0.0.1:4222"),
            &["show", "c1"],
            "use nats://HOST:PORT",
        ),
        (
            Some(url),
            &["--creds", "/nonexistent/x.creds", "show", "c1"],
            "check the path given with --creds",
        ),
        (
            Some(url),
            &["--tls-cert", file, "show", "c1"],
            "needs both its certificate and its key",
        ),
        (
            Some(url),
            &["--user", "u", "show", "c1"],
            "--user and --password go together",
        ),
        (
            Some(url),
            &["--timeout", "1", "create"],
            "start nats-server with -js",
        ),
        (
            None,
            &["--timeout", "0", "show", "c1"],
            "is not a wait above 0",
        ),
        (None, &["--data-dir", file, "create"], "a-file"),
        (None, &["--data-dir", file, "show", "c1"], "a-file"),
    ];
    for (nats, args, words) in cases {
        let output = wfstate(dir.path(), nats, args, "");
        assert_eq!(output.code, 2, "{args:?}: {}", output.stderr);
        assert!(output.stderr.contains(words), "{args:?}: {}", output.stderr);
    }
    // A fraction of a second is a wait; an empty URL is no URL (the embedded store).
    let output = wfstate(
        dir.path(),
        None,
        &["--timeout", "0.5", "create", "--id", "c1"],
        "",
    );
    assert_eq!(output.code, 0, "{}", output.stderr);
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_wfstate"));
    let shown = command
        .args(["show", "c1"])
        .env("WFSTATE_DATA_DIR", dir.path())
        .env("WFSTATE_NATS_URL", "")
        .output()
        .unwrap();
    assert!(
        shown.status.success(),
        "{}",
        String::from_utf8_lossy(&shown.stderr)
    );
}

/// Every command's help has an example and the connection options under their own heading;
/// the top-level help has the exit codes; commit's has the mutation ops.
#[test]
fn help_teaches() {
    let dir = tempfile::tempdir().unwrap();
    let top = wfstate(dir.path(), None, &["--help"], "");
    assert!(top.stdout.contains("Exit codes:"), "{}", top.stdout);
    assert!(top.stdout.contains("141"), "{}", top.stdout);
    for command in [
        "create",
        "commit",
        "show",
        "diff",
        "list",
        "history",
        "audit",
        "checkpoint",
        "receipt",
        "project",
        "replay",
        "verify",
        "export",
        "import",
        "bench",
        "demo",
    ] {
        let help = wfstate(dir.path(), None, &[command, "--help"], "");
        assert_eq!(help.code, 0, "{command}: {}", help.stderr);
        assert!(
            help.stdout.contains("Example"),
            "{command} --help has no example: {}",
            help.stdout
        );
        let heading = help
            .stdout
            .find("Store and connection")
            .unwrap_or_else(|| panic!("{command}: {}", help.stdout));
        assert!(
            help.stdout[heading..].contains("--nats <")
                && !help.stdout[..heading].contains("--nats <"),
            "{command}: {}",
            help.stdout
        );
    }
    let commit = wfstate(dir.path(), None, &["commit", "--help"], "");
    for op in [
        "set_ctx",
        "patch_ctx",
        "add_token",
        "set_case_status",
        "--retry",
    ] {
        assert!(commit.stdout.contains(op), "{op}: {}", commit.stdout);
    }
    assert!(!dir.path().join("wfstate-data").exists());
}

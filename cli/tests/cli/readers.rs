//! Commands that only read (history, replay, audit, show --replay, and verify where it may not
//! write) open the embedded file to read only: they create no store where there is none, and
//! a user who may only read the data directory can run them on a store closed cleanly. On
//! JetStream, each role of the README's table runs its commands with exactly its rights.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::wfstate;

/// Runs `wfstate ARGS` on `dir`'s store as the unprivileged user 65534 when this test runs as
/// root (which may write anything), else as this user with the directory made read-only.
fn as_reader(dir: &Path, args: &[&str]) -> (i32, String) {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|id| String::from_utf8_lossy(&id.stdout).trim() == "0");
    let mut command = if root {
        let mut command = Command::new("setpriv");
        command
            .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_wfstate"));
        command
    } else {
        Command::new(env!("CARGO_BIN_EXE_wfstate"))
    };
    let output = command
        .args(args)
        .env("WFSTATE_DATA_DIR", dir)
        .env_remove("WFSTATE_NATS_URL")
        .output()
        .unwrap_or_else(|error| panic!("running a reader (setpriv when root): {error}"));
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.code().unwrap_or(-1), stderr)
}

#[test]
fn readers_open_the_store_to_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let missing = wfstate(&data, None, &["history", "nope"], "");
    assert_eq!(missing.code, 2, "{}", missing.stderr);
    assert!(
        missing.stderr.contains("no store here to read"),
        "{}",
        missing.stderr
    );
    assert!(!data.exists(), "a reader created the store");

    let created = wfstate(&data, None, &["create", "--id", "order-1"], "");
    assert_eq!(created.code, 0, "{}", created.stderr);
    let projected = wfstate(&data, None, &["project"], "");
    assert_eq!(projected.code, 0, "{}", projected.stderr);
    // A process that ends with its writer's connection open leaves the write-ahead log
    // beside the file, which a reader without write access cannot share (see the README):
    // the store is closed cleanly here first, by opening and closing it.
    drop(wfstate_events::EmbeddedLog::open(&wfstate_events::EmbeddedConfig::new(&data)).unwrap());
    let wal = data.join("wfstate.sqlite3-wal");
    for _ in 0..200 {
        if !wal.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        !wal.exists(),
        "the write-ahead log is still there after 10 s"
    );
    for (path, mode) in [(dir.path(), 0o755), (data.as_path(), 0o555)] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    for file in std::fs::read_dir(&data).unwrap() {
        let file = file.unwrap().path();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o444)).unwrap();
    }
    for args in [
        &["history", "order-1"][..],
        &["replay", "order-1"],
        &["audit"],
        &["audit", "order-1"],
        &["show", "order-1", "--replay"],
        &["verify", "--all"],
        &["verify", "order-1"],
        &["show", "order-1"],
    ] {
        let (code, stderr) = as_reader(&data, args);
        assert_eq!(code, 0, "{args:?}: {stderr}");
    }
    // Verify brings the views up to date where it may write; here it says it reads them as
    // they are.
    let (_, stderr) = as_reader(&data, &["verify", "--all"]);
    assert!(stderr.contains("as the projector left them"), "{stderr}");
    // A commit is refused with a clear reason, whatever opens the file.
    let (code, stderr) = as_reader(&data, &["create", "--id", "order-2"]);
    assert_ne!(code, 0, "{stderr}");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Runs `wfstate ARGS` against `url` as `user` (password `password`).
fn as_role(url: &str, user: &str, password: &str, args: &[&str]) -> crate::Output {
    let dir = tempfile::tempdir().unwrap();
    let mut all = vec!["--user", user, "--password", password, "--timeout", "1"];
    all.extend_from_slice(args);
    wfstate(dir.path(), Some(url), &all, "")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_runs_its_commands_with_its_rights() {
    let server = wfstate_tests::NatsServer::start_with_config(wfstate_tests::ROLES_CONFIG);
    let url = server.url().to_owned();
    tokio::task::spawn_blocking(move || {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("export.cbor");
        let file = file.to_str().unwrap();
        let steps: [(&str, &str, &[&str], i32); 13] = [
            ("operator", "opass", &["project"], 0),
            ("writer", "wpass", &["create", "--id", "c1"], 0),
            ("writer", "wpass", &["create", "--id", "c2"], 0),
            ("projector", "ppass", &["project"], 0),
            ("auditor", "apass", &["audit"], 0),
            ("auditor", "apass", &["history", "c1"], 0),
            ("auditor", "apass", &["replay", "c1"], 0),
            ("auditor", "apass", &["show", "c1", "--replay"], 0),
            ("auditor", "apass", &["show", "c1"], 0),
            ("auditor", "apass", &["export", file], 0),
            ("auditor", "apass", &["verify", "--all"], 0),
            ("auditor", "apass", &["verify", "c2"], 0),
            // Refused: the store says whose rights are missing, as bad configuration.
            ("auditor", "apass", &["create", "--id", "c3"], 2),
        ];
        for (user, password, args, expected) in steps {
            let output = as_role(&url, user, password, args);
            assert_eq!(output.code, expected, "{user} {args:?}: {}", output.stderr);
        }
        // The operator signs checkpoints; the auditor checks them and proves a receipt.
        let key = dir.path().join("log.key");
        let key = key.to_str().unwrap();
        let made = as_role(
            &url,
            "operator",
            "opass",
            &["checkpoint", "--new-key", "log", "--key", key],
        );
        assert_eq!(made.code, 0, "{}", made.stderr);
        let trusted = made.stdout.trim().to_owned();
        let signed = as_role(&url, "operator", "opass", &["checkpoint", "--key", key]);
        assert_eq!(signed.code, 0, "{}", signed.stderr);
        for args in [
            &["audit", "--consistency", "--trust", &trusted][..],
            &["receipt", "c2", "--version", "1"],
        ] {
            let output = as_role(&url, "auditor", "apass", args);
            assert_eq!(output.code, 0, "auditor {args:?}: {}", output.stderr);
        }
        let verified = as_role(&url, "auditor", "apass", &["verify", "--all"]);
        assert!(
            verified
                .stdout
                .contains("verified 2 case(s): 0 mismatch(es)"),
            "{}",
            verified.stdout
        );
        // The console with the auditor's rights: the views as the projector left them, and
        // a receipt with its proof.
        let (_console, address) = crate::console::serve(
            dir.path(),
            Some(&url),
            &["--user", "auditor", "--password", "apass", "--timeout", "1"],
        );
        for path in [
            "/api/cases",
            "/api/cases/c1",
            "/api/cases/c2/receipts/1",
            "/api/cases/c1/audit",
        ] {
            let (status, body) = crate::console::get(&address, path, None);
            assert_eq!(status, 200, "auditor {path}: {body}");
        }
        let (_, listed) = crate::console::get(&address, "/api/cases", None);
        assert_eq!(listed["matched"], 2, "{listed}");
        let (_, projector) = crate::console::get(&address, "/api/projector", None);
        assert!(projector["lag"].is_null(), "{projector}");
    })
    .await
    .unwrap();
}

//! Commands that only read (history, replay, audit, show --replay) open the embedded file to
//! read only: they create no store where there is none, and a user who may only read the data
//! directory can run them on a store closed cleanly.

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
    ] {
        let (code, stderr) = as_reader(&data, args);
        assert_eq!(code, 0, "{args:?}: {stderr}");
    }
    // A commit is refused with a clear reason, whatever opens the file.
    let (code, stderr) = as_reader(&data, &["create", "--id", "order-2"]);
    assert_ne!(code, 0, "{stderr}");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
}

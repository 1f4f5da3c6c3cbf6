//! Export files that cannot be cut silently: a trailer, a temporary file renamed once whole,
//! no overwrite without `--force`, and `-` for stdout and stdin.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::wfstate;

/// Runs `sh -c SCRIPT` with `wfstate` as `$WFSTATE` and the data dir set; returns the exit
/// code and stderr.
fn shell(data: &Path, script: &str) -> (i32, String) {
    let output = Command::new("sh")
        .args(["-c", script])
        .env("WFSTATE", env!("CARGO_BIN_EXE_wfstate"))
        .env("WFSTATE_DATA_DIR", data)
        .env_remove("WFSTATE_NATS_URL")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    (output.status.code().unwrap_or(-1), stderr)
}

#[test]
fn exports_are_whole_or_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let demo = wfstate(&data, None, &["demo", "--cases", "60"], "");
    assert_eq!(demo.code, 0, "{}", demo.stderr);
    let file = dir.path().join("export.cbor");
    let path = file.to_str().unwrap();
    assert_eq!(wfstate(&data, None, &["export", path], "").code, 0);
    let bytes = std::fs::read(&file).unwrap();

    // An existing file is kept, unless --force.
    std::fs::write(&file, b"keep me").unwrap();
    let refused = wfstate(&data, None, &["export", path], "");
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(refused.stderr.contains("--force"), "{}", refused.stderr);
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
    assert_eq!(
        wfstate(&data, None, &["export", path, "--force"], "").code,
        0
    );
    assert_eq!(std::fs::read(&file).unwrap().len(), bytes.len());

    // Past the file size limit: an error that says what to do, and no file at all.
    let limited = dir.path().join("limited.cbor");
    let script = format!(
        "ulimit -f 160; exec \"$WFSTATE\" export {}",
        limited.display()
    );
    let (code, stderr) = shell(&data, &script);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("raise the file size limit"), "{stderr}");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains("limited"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");

    // Cut at the last record boundary (the trailer gone): refused, and no store created.
    let trailer = bytes
        .windows(8)
        .rposition(|window| window == b"gtrailer")
        .unwrap();
    let cut = dir.path().join("cut.cbor");
    std::fs::write(&cut, &bytes[..trailer - 1]).unwrap();
    let fresh = dir.path().join("fresh");
    let imported = wfstate(&fresh, None, &["import", cut.to_str().unwrap()], "");
    assert_eq!(imported.code, 2, "{}", imported.stderr);
    assert!(
        imported
            .stderr
            .contains("ends without its trailer: it was cut"),
        "{}",
        imported.stderr
    );
    assert!(
        !fresh.exists(),
        "a refused import created {}",
        fresh.display()
    );

    // A file that is no export at all: a sentence, no Rust values, and no store.
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "hello, not CBOR\n").unwrap();
    let imported = wfstate(&fresh, None, &["import", text.to_str().unwrap()], "");
    assert_eq!(imported.code, 2, "{}", imported.stderr);
    assert!(
        imported.stderr.contains("not a wfstate export")
            && !imported.stderr.contains("Syntax(")
            && !imported.stderr.contains("Io("),
        "{}",
        imported.stderr
    );
    assert!(!fresh.exists());

    // `-`: stdout into stdin, through a pipe.
    let script = format!(
        "\"$WFSTATE\" export - | \"$WFSTATE\" --data-dir {} import -",
        fresh.display()
    );
    let (code, stderr) = shell(&data, &script);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("to stdout"), "{stderr}");
    let verified = wfstate(&fresh, None, &["verify", "--all"], "");
    assert_eq!(verified.code, 0, "{}", verified.stderr);
    assert!(
        verified.stdout.contains("verified 60 case(s)"),
        "{}",
        verified.stdout
    );
    assert!(
        !dir.path().join("-").exists(),
        "`-` is stdout, not a file named -"
    );
}

//! Progress bars on a terminal for the commands that can take long, and nothing when the
//! output is piped or JSON. The terminal is a pseudo-terminal made by `script` (util-linux).

use std::path::Path;
use std::process::Command;

use crate::wfstate;

/// Runs `wfstate ARGS` on a pseudo-terminal; returns what the terminal showed.
fn on_a_terminal(data: &Path, args: &str) -> String {
    let command = format!("{} {args}", env!("CARGO_BIN_EXE_wfstate"));
    let output = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("WFSTATE_DATA_DIR", data)
        .env_remove("WFSTATE_NATS_URL")
        .output()
        .expect("`script` (util-linux) runs a command on a pseudo-terminal");
    assert!(output.status.success(), "{args}: {output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn long_commands_show_progress_on_a_terminal_only() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let demo = wfstate(&data, None, &["demo", "--cases", "50"], "");
    assert_eq!(demo.code, 0, "{}", demo.stderr);
    let case = wfstate(&data, None, &["--json", "list", "--limit", "1"], "");
    let case: serde_json::Value = serde_json::from_str(&case.stdout).unwrap();
    let case = case["case_id"].as_str().unwrap().to_owned();
    let file = dir.path().join("export.cbor");
    let file = file.to_str().unwrap();
    let fresh = dir.path().join("fresh");
    let import = format!("--data-dir {} import {file}", fresh.display());
    for (args, bar) in [
        (format!("export {file}"), "exporting ["),
        ("audit".to_owned(), "auditing ["),
        ("verify --all".to_owned(), "verifying ["),
        (format!("replay {case}"), "replaying ["),
        (import, "importing ["),
    ] {
        let shown = on_a_terminal(&data, &args);
        assert!(shown.contains(bar), "{args}: {shown}");
        assert!(shown.contains(" events"), "{args}: {shown}");
    }
    // --json on a terminal, and stderr on a pipe: no bar.
    let shown = on_a_terminal(&data, &format!("--json export {file} --force"));
    assert!(!shown.contains("exporting ["), "{shown}");
    let piped = wfstate(&data, None, &["export", file, "--force"], "");
    assert_eq!(piped.code, 0, "{}", piped.stderr);
    assert!(!piped.stderr.contains("exporting"), "{}", piped.stderr);
}

//! The fault suite's short version, run by `cargo test`: three runs of 20 s with eight
//! workers on a three-node cluster. The seed is new each time and printed
//! (`WFSTATE_SEED=...` takes it back); `docs/reliability.md` has the long runs.

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

#[test]
fn three_short_runs_under_faults_pass_every_check() {
    let seed = std::env::var("WFSTATE_SEED")
        .ok()
        .and_then(|seed| seed.parse::<u64>().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |since| since.as_secs() % 1_000_000)
        });
    println!("fault suite seed: WFSTATE_SEED={seed}");
    let out = records_dir();
    let status = Command::new(env!("CARGO_BIN_EXE_wfstate-chaos"))
        .args(["--runs", "3", "--seconds", "20", "--workers", "8"])
        .args(["--seed", &seed.to_string()])
        .arg("--out")
        .arg(&out)
        .status()
        .expect("run the fault suite");
    assert!(
        status.success(),
        "the fault suite failed with WFSTATE_SEED={seed}; its records are in {}",
        out.display()
    );
    let _ = std::fs::remove_dir_all(&out);
}

/// A directory of the target dir for the runs' records, kept when the suite fails.
fn records_dir() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("chaos-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create the records directory");
    dir
}

//! The log's signed tree on the embedded store: keys, checkpoints, a receipt proven in one and
//! checked by the Python verifier, and each tampering named by its own code: a forged proof,
//! a checkpoint signed by another key, a history rewritten after a checkpoint, a cut of the
//! newest events.

use std::path::Path;

use crate::format::python;
use crate::{Output, wfstate};

fn run(data: &Path, args: &[&str]) -> Output {
    wfstate(data, None, args, "")
}

fn ok(data: &Path, args: &[&str]) -> Output {
    let output = run(data, args);
    assert_eq!(
        output.code, 0,
        "{args:?}: {}{}",
        output.stdout, output.stderr
    );
    output
}

/// A copy of the store in `data`, changed by `sql`.
fn tampered(data: &Path, into: &Path, sql: &str) {
    std::fs::create_dir_all(into).unwrap();
    for file in std::fs::read_dir(data).unwrap() {
        let file = file.unwrap().path();
        std::fs::copy(&file, into.join(file.file_name().unwrap())).unwrap();
    }
    let connection = rusqlite::Connection::open(into.join("wfstate.sqlite3")).unwrap();
    connection.execute_batch(sql).unwrap();
}

/// `audit --consistency` trusting `key` fails (exit 1) with `code`.
fn audit_reports(data: &Path, key: &str, code: &str) {
    let audit = run(data, &["audit", "--consistency", "--trust", key]);
    assert_eq!(audit.code, 1, "{}{}", audit.stdout, audit.stderr);
    assert!(
        audit.stdout.contains(&format!("({code})")),
        "{}",
        audit.stdout
    );
}

#[test]
fn receipts_are_proven_in_signed_checkpoints_and_tampering_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(&data, &["demo", "--cases", "10"]);
    let key = dir.path().join("log.key");
    let key = key.to_str().unwrap();

    let missing = run(&data, &["checkpoint"]);
    assert_eq!(missing.code, 2, "{}", missing.stderr);
    assert!(missing.stderr.contains("--new-key"), "{}", missing.stderr);
    let trusted = ok(
        &data,
        &["checkpoint", "--new-key", "test-log", "--key", key],
    );
    let trusted = trusted.stdout.trim().to_owned();
    assert!(trusted.starts_with("test-log+"), "{trusted}");
    let again = run(
        &data,
        &["checkpoint", "--new-key", "test-log", "--key", key],
    );
    assert_eq!(
        again.code, 2,
        "a key file is never overwritten: {}",
        again.stderr
    );
    assert_eq!(
        ok(&data, &["checkpoint", "--public-key", "--key", key])
            .stdout
            .trim(),
        trusted
    );

    ok(&data, &["checkpoint", "--key", key]);
    ok(&data, &["create", "--id", "late"]);
    let note = ok(&data, &["checkpoint", "--key", key]).stdout;
    assert!(note.contains("\n\n\u{2014} test-log "), "{note}");
    let audit = ok(&data, &["audit", "--consistency", "--trust", &trusted]);
    assert!(audit.stdout.contains("2 checkpoint(s)"), "{}", audit.stdout);

    // The receipt of the newest event, proven, checked offline.
    let proven = ok(&data, &["receipt", "late", "--version", "1", "--json"]).stdout;
    let file = dir.path().join("receipt.json");
    std::fs::write(&file, &proven).unwrap();
    let file = file.to_str().unwrap();
    let checked = python("verify_receipt.py", &["receipt", file, &trusted]);
    assert_eq!(checked.code, 0, "{}{}", checked.stdout, checked.stderr);

    // A forged proof: one hash of it changed.
    let mut forged: serde_json::Value = serde_json::from_str(&proven).unwrap();
    let first = forged["inclusion_proof"][0].as_str().unwrap().to_owned();
    let changed = format!(
        "{}{}",
        if first.starts_with('0') { "1" } else { "0" },
        &first[1..]
    );
    forged["inclusion_proof"][0] = changed.into();
    let forged_file = dir.path().join("forged.json");
    std::fs::write(&forged_file, forged.to_string()).unwrap();
    let checked = python(
        "verify_receipt.py",
        &["receipt", forged_file.to_str().unwrap(), &trusted],
    );
    assert_eq!(checked.code, 1, "{}{}", checked.stdout, checked.stderr);
    assert!(
        checked.stdout.contains("inclusion_proof_invalid"),
        "{}",
        checked.stdout
    );

    // A checkpoint signed by another key than the one trusted.
    let other = dir.path().join("other.key");
    let other = ok(
        &data,
        &[
            "checkpoint",
            "--new-key",
            "test-log",
            "--key",
            other.to_str().unwrap(),
        ],
    );
    let other = other.stdout.trim().to_owned();
    let checked = python("verify_receipt.py", &["receipt", file, &other]);
    assert_eq!(checked.code, 1, "{}{}", checked.stdout, checked.stderr);
    assert!(
        checked.stdout.contains("checkpoint_key_unknown"),
        "{}",
        checked.stdout
    );
    audit_reports(&data, &other, "checkpoint_key_unknown");

    // A history rewritten after the checkpoints: one event's bytes replaced.
    let rewritten = dir.path().join("rewritten");
    tampered(
        &data,
        &rewritten,
        "UPDATE events SET payload = (SELECT payload FROM events WHERE position = 2) \
         WHERE position = 3",
    );
    audit_reports(&rewritten, &trusted, "history_rewritten");

    // The newest events cut.
    let cut = dir.path().join("cut");
    tampered(
        &data,
        &cut,
        "DELETE FROM events WHERE position > (SELECT MAX(position) - 3 FROM events)",
    );
    audit_reports(&cut, &trusted, "log_cut");
}

#[test]
fn the_projector_signs_a_checkpoint_when_one_is_due() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(&data, &["demo", "--cases", "5"]);
    let key = dir.path().join("log.key");
    let key = key.to_str().unwrap();
    let trusted = ok(
        &data,
        &["checkpoint", "--new-key", "test-log", "--key", key],
    );
    let trusted = trusted.stdout.trim().to_owned();
    let project = |every: &str| {
        let args = [
            "project",
            "--checkpoint-key",
            key,
            "--checkpoint-every",
            every,
        ];
        ok(
            &data,
            &[&args[..], &["--checkpoint-seconds", "3600"]].concat(),
        )
        .stdout
    };
    // None yet: the first is due.
    assert!(project("1000000").contains("signed a checkpoint of "));
    // Nothing new; then one event, short of both thresholds.
    assert!(!project("1000000").contains("signed"));
    ok(&data, &["create", "--id", "one-more"]);
    assert!(!project("1000000").contains("signed"));
    assert!(project("1").contains("signed a checkpoint of "));
    let audit = ok(&data, &["audit", "--consistency", "--trust", &trusted]);
    assert!(audit.stdout.contains("2 checkpoint(s)"), "{}", audit.stdout);
}

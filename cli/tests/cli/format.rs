//! The second verifier, `tools/verify_events.py` (Python, cbor2 and hashlib, written from
//! `docs/event-format.md`), checks the golden vectors and an export of the demo's cases, and
//! reports a changed state hash, a cut file and a changed vector. The Merkle proofs' verifier,
//! `tools/verify_receipt.py` (RFC 9162's iterative algorithms), checks the Merkle vectors.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Output, wfstate};

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs the Python verifier on `what` (`vectors` or `export`) and `file`.
fn python_verify(what: &str, file: &Path) -> Output {
    python("verify_events.py", &[what, file.to_str().unwrap()])
}

/// Runs the Python tool `script` (in `tools/`) with `args`.
pub(crate) fn python(script: &str, args: &[&str]) -> Output {
    let output = Command::new("python3")
        .arg(repository().join("tools").join(script))
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("this test needs python3 with cbor2: {error}"));
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        !stderr.contains("No module named"),
        "this test needs the verifiers' packages: pip install cbor2==6.3.0 cryptography==48.0.0 \
         ({stderr})"
    );
    Output {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr,
    }
}

#[test]
fn the_python_verifier_checks_the_vectors_and_an_export() {
    let vectors = repository().join("store/tests/vectors/events.json");
    let checked = python_verify("vectors", &vectors);
    assert_eq!(checked.code, 0, "{}{}", checked.stdout, checked.stderr);
    assert!(
        checked.stdout.contains("7 vector cases, 18 events"),
        "{}",
        checked.stdout
    );

    let dir = tempfile::tempdir().unwrap();
    let demo = wfstate(dir.path(), None, &["demo", "--cases", "20"], "");
    assert_eq!(demo.code, 0, "{}", demo.stderr);
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("export.cbor");
    let export = wfstate(dir.path(), None, &["export", file.to_str().unwrap()], "");
    assert_eq!(export.code, 0, "{}", export.stderr);
    let checked = python_verify("export", &file);
    assert_eq!(checked.code, 0, "{}{}", checked.stdout, checked.stderr);
    assert!(checked.stdout.contains("20 cases"), "{}", checked.stdout);

    // One bit of the first event's state hash changed: its case no longer verifies.
    let bytes = std::fs::read(&file).unwrap();
    let at = bytes
        .windows(12)
        .position(|window| window == b"state_hash\x58\x20")
        .expect("an event in the export")
        + 12;
    let mut changed = bytes.clone();
    changed[at] ^= 1;
    let tampered = dir.path().join("tampered.cbor");
    std::fs::write(&tampered, &changed).unwrap();
    let checked = python_verify("export", &tampered);
    assert_eq!(checked.code, 1, "{}{}", checked.stdout, checked.stderr);
    assert!(
        checked.stdout.contains("state hash mismatch"),
        "{}",
        checked.stdout
    );

    // Cut inside its last record.
    let cut = dir.path().join("cut.cbor");
    std::fs::write(&cut, &bytes[..bytes.len() - 5]).unwrap();
    let checked = python_verify("export", &cut);
    assert_eq!(checked.code, 1, "{}{}", checked.stdout, checked.stderr);
    assert!(checked.stdout.contains("cut inside"), "{}", checked.stdout);

    // Cut at a record boundary, its trailer gone: every record still verifies, and the cut
    // is found all the same.
    let trailer = bytes
        .windows(8)
        .rposition(|window| window == b"gtrailer")
        .expect("an export ends with its trailer");
    std::fs::write(&cut, &bytes[..trailer - 1]).unwrap();
    let checked = python_verify("export", &cut);
    assert_eq!(checked.code, 1, "{}{}", checked.stdout, checked.stderr);
    assert!(checked.stdout.contains("it was cut"), "{}", checked.stdout);

    // A vector whose final state was changed by one hex digit.
    let text = std::fs::read_to_string(&vectors).unwrap();
    let at = text.find("\"state\": \"").unwrap() + 10;
    let digit = if &text[at..=at] == "a" { "b" } else { "a" };
    let changed = format!("{}{digit}{}", &text[..at], &text[at + 1..]);
    let changed_vectors = dir.path().join("vectors.json");
    std::fs::write(&changed_vectors, changed).unwrap();
    let checked = python_verify("vectors", &changed_vectors);
    assert_eq!(checked.code, 1, "{}{}", checked.stdout, checked.stderr);
}

#[test]
fn the_python_verifier_checks_the_merkle_vectors() {
    let vectors = repository().join("store/tests/vectors/merkle.json");
    let checked = python("verify_receipt.py", &["merkle", vectors.to_str().unwrap()]);
    assert_eq!(checked.code, 0, "{}{}", checked.stdout, checked.stderr);
    assert!(
        checked
            .stdout
            .contains("9 roots, 36 inclusion and 36 consistency proofs"),
        "{}",
        checked.stdout
    );
    // One hash of one proof changed: that proof fails, and only that one.
    let text = std::fs::read_to_string(&vectors).unwrap();
    let hash = "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e";
    let at = text.find(hash).expect("a proof holding the hash");
    let mut changed = text.clone();
    changed.replace_range(at..=at, "6");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("merkle.json");
    std::fs::write(&file, changed).unwrap();
    let checked = python("verify_receipt.py", &["merkle", file.to_str().unwrap()]);
    assert_eq!(checked.code, 1, "{}{}", checked.stdout, checked.stderr);
    assert!(
        checked.stdout.contains("1 problem(s)"),
        "{}",
        checked.stdout
    );
}

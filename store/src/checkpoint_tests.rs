//! Checkpoints and keys against the signed-note format's published test vector, and every
//! way a note can fail to check.

use super::*;

/// The signed-note format's published test key and note.
const SIGNER: &str =
    "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
const VERIFIER: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                    then you don't know what your problem is.\n";
const SIGNED: &str = "If you think cryptography is the answer to your problem,\n\
                      then you don't know what your problem is.\n\
                      \n\
                      \u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

fn checkpoint() -> Checkpoint {
    Checkpoint {
        origin: "wfstate/test".into(),
        size: 1_048_576,
        root: Hash::of(b"root"),
        time_ms: 1_764_921_600_000,
    }
}

fn key(name: &str, byte: u8) -> SignerKey {
    SignerKey::new(name, [byte; 32]).unwrap()
}

#[test]
fn keys_and_signatures_are_the_signed_note_formats() {
    let signer = SignerKey::parse(SIGNER).unwrap();
    assert_eq!(signer.encode(), SIGNER);
    assert_eq!(signer.verifier().encode(), VERIFIER);
    assert_eq!(VerifierKey::parse(VERIFIER).unwrap(), signer.verifier());
    assert_eq!(signer.sign_text(TEXT), SIGNED);
    let trusted = [VerifierKey::parse(VERIFIER).unwrap()];
    assert_eq!(verified_text(SIGNED, &trusted).unwrap(), TEXT);
}

#[test]
fn a_signed_checkpoint_opens_with_its_key() {
    let signer = key("wfstate-test", 7);
    let note = signer.sign(&checkpoint());
    assert!(note.starts_with("wfstate/test\n1048576\n"), "{note}");
    assert!(
        note.contains("\ntime 1764921600000\n\n\u{2014} wfstate-test "),
        "{note}"
    );
    assert_eq!(open(&note, &[signer.verifier()]).unwrap(), checkpoint());
    // Among other trusted keys too.
    let others = [key("other", 1).verifier(), signer.verifier()];
    assert_eq!(open(&note, &others).unwrap(), checkpoint());
    let parsed = SignerKey::parse(&signer.encode()).unwrap();
    assert_eq!(parsed.sign(&checkpoint()), note);
}

#[test]
fn a_checkpoint_signed_by_another_key_is_reported_as_such() {
    let note = key("wfstate-test", 7).sign(&checkpoint());
    let error = open(&note, &[key("wfstate-test-2027", 9).verifier()]).unwrap_err();
    assert_eq!(error.code, Code::CheckpointKeyUnknown, "{error}");
    assert!(error.detail.contains("wfstate-test+"), "{error}");
    // Another key under the same name: its id differs, so it is not the trusted key either.
    let error = open(&note, &[key("wfstate-test", 9).verifier()]).unwrap_err();
    assert_eq!(error.code, Code::CheckpointKeyUnknown, "{error}");
}

#[test]
fn a_changed_checkpoint_fails_its_signature() {
    let signer = key("wfstate-test", 7);
    let note = signer.sign(&checkpoint());
    for (from, to) in [
        ("1048576", "1048577"),
        ("time 1", "time 2"),
        ("wfstate/test", "wfstate/tesT"),
    ] {
        let changed = note.replacen(from, to, 1);
        let error = open(&changed, &[signer.verifier()]).unwrap_err();
        assert_eq!(
            error.code,
            Code::CheckpointSignatureInvalid,
            "{from}: {error}"
        );
    }
    // A signature of the same key id over other text (a bit flipped in it).
    let line_start = note.find('\u{2014}').unwrap();
    let signature_at = note[line_start..].rfind(' ').unwrap() + line_start + 10;
    let mut bytes = note.clone().into_bytes();
    bytes[signature_at] = if bytes[signature_at] == b'A' {
        b'B'
    } else {
        b'A'
    };
    let changed = String::from_utf8(bytes).unwrap();
    let error = open(&changed, &[signer.verifier()]).unwrap_err();
    assert!(
        matches!(
            error.code,
            Code::CheckpointSignatureInvalid | Code::CheckpointMalformed
        ),
        "{error}"
    );
}

#[test]
fn malformed_notes_and_keys_say_what_is_wrong() {
    let signer = key("wfstate-test", 7);
    let note = signer.sign(&checkpoint());
    let trusted = [signer.verifier()];
    let cases = [
        String::new(),
        note.replace("\n\n", "\n"),
        note.trim_end().to_owned(),
        note.replace("\u{2014} ", "- "),
        "x".repeat(NOTE_LENGTH_MAX + 1),
    ];
    for bad in &cases {
        let error = open(bad, &trusted).unwrap_err();
        assert_eq!(error.code, Code::CheckpointMalformed, "{bad:?}: {error}");
    }
    for body in [
        "wfstate/test\n1048576\nAAAA\ntime 1\n",
        "wfstate/test\n01\nAAAA\ntime 1\n",
        "wfstate/test\n-1\nAAAA\ntime 1\n",
        "wfstate/test\n1\n",
        "\n1\nAAAA\ntime 1\n",
        "wfstate/test\n1\nX8go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZIo=\nwhen 1\n",
    ] {
        let error = Checkpoint::parse_body(body).unwrap_err();
        assert_eq!(error.code, Code::CheckpointMalformed, "{body:?}");
    }
    for bad in [
        "",
        "name",
        "PRIVATE+KEY+x+00000000+AA==",
        "x y+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ] {
        assert!(SignerKey::parse(bad).is_err(), "{bad}");
        assert!(VerifierKey::parse(bad).is_err(), "{bad}");
    }
    // The right key with a wrong id.
    let wrong_id = VERIFIER.replace("c74f20a3", "c74f20a4");
    assert!(VerifierKey::parse(&wrong_id).is_err());
    assert!(SignerKey::new("has space", [1; 32]).is_err());
    assert!(SignerKey::new("has+plus", [1; 32]).is_err());
}

#[test]
fn the_body_round_trips() {
    let body = checkpoint().body();
    assert_eq!(Checkpoint::parse_body(&body).unwrap(), checkpoint());
}

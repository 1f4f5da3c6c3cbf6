//! Signed checkpoints of the log's Merkle tree ([`crate::merkle`]): a C2SP `tlog-checkpoint`
//! (origin, tree size, root hash, and a `time` extension line) in a C2SP `signed-note`, signed
//! with Ed25519. Both are open formats: a verifier that trusts nothing in wfstate checks them
//! with the public key alone (`tools/verify_receipt.py`, or any signed-note library).
//!
//! ```text
//! wfstate/orders                                   origin: which log
//! 1048576                                          tree size: events in log order
//! 5dnaeahGWamtVZy3Ad7Zoqudgjqt... (base64)        root hash
//! time 1764921600000                               when it was signed, Unix ms
//!
//! — orders-2026 Ad3kYx... (base64: key id, 4 bytes; Ed25519 signature, 64 bytes)
//! ```
//!
//! Keys are written as signed-note keys: `NAME+KEYID+BASE64` to verify,
//! `PRIVATE+KEY+NAME+KEYID+BASE64` to sign, where KEYID is the first 4 bytes of
//! `SHA-256(NAME || "\n" || 0x01 || public key)` in hex and BASE64 encodes `0x01` (Ed25519)
//! and the 32-byte public key or seed.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::error::Code;
use crate::hash::Hash;

/// The algorithm byte of an Ed25519 signed-note key.
const ED25519: u8 = 0x01;

/// What starts a signature line.
const SIGNATURE_PREFIX: &str = "\u{2014} ";

/// The longest signed note read; a checkpoint is about 200 bytes.
pub const NOTE_LENGTH_MAX: usize = 4096;

/// A checkpoint: the tree of the log's first `size` events has root `root`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Which log (unique per log; the same for all its checkpoints).
    pub origin: String,
    /// Events in the tree, in log order.
    pub size: u64,
    /// The tree's root hash.
    pub root: Hash,
    /// When it was signed, Unix milliseconds.
    pub time_ms: u64,
}

/// A checkpoint, a key or a note that does not check, with its [`Code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct CheckpointError {
    /// What kind of failure it is.
    pub code: Code,
    /// What is wrong, in words.
    pub detail: String,
}

impl CheckpointError {
    fn malformed(detail: impl Into<String>) -> CheckpointError {
        CheckpointError {
            code: Code::CheckpointMalformed,
            detail: detail.into(),
        }
    }
}

impl Checkpoint {
    /// The checkpoint as the text a note signs.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\ntime {}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.root.0),
            self.time_ms
        )
    }

    /// Reads a checkpoint's text, strictly: the four lines [`Checkpoint::body`] writes.
    ///
    /// # Errors
    /// [`Code::CheckpointMalformed`], saying which line.
    pub fn parse_body(text: &str) -> Result<Checkpoint, CheckpointError> {
        let Some(lines) = text.strip_suffix('\n') else {
            return Err(CheckpointError::malformed(
                "a checkpoint ends with a newline",
            ));
        };
        let lines: Vec<&str> = lines.split('\n').collect();
        let [origin, size, root, time] = lines[..] else {
            return Err(CheckpointError::malformed(format!(
                "a checkpoint has 4 lines (origin, size, root, time), this one {}",
                lines.len()
            )));
        };
        if origin.is_empty() || origin.chars().any(char::is_control) {
            return Err(CheckpointError::malformed(
                "the origin line is empty or not text",
            ));
        }
        let size = decimal(size)
            .ok_or_else(|| CheckpointError::malformed(format!("size {size:?} is no number")))?;
        let root = STANDARD
            .decode(root)
            .ok()
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .ok_or_else(|| {
                CheckpointError::malformed(format!("root {root:?} is not 32 bytes in base64"))
            })?;
        let time_ms = time
            .strip_prefix("time ")
            .and_then(decimal)
            .ok_or_else(|| CheckpointError::malformed(format!("{time:?} is no time line")))?;
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root: Hash(root),
            time_ms,
        })
    }
}

/// A decimal number without sign or leading zero.
fn decimal(text: &str) -> Option<u64> {
    let canonical = !text.is_empty()
        && text.bytes().all(|byte| byte.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    canonical.then(|| text.parse().ok()).flatten()
}

/// A key's name: non-empty, no space, no `+`.
fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('+') && !name.chars().any(char::is_whitespace)
}

/// The signed-note key id of an Ed25519 key.
fn key_id(name: &str, public: &VerifyingKey) -> u32 {
    let mut hasher = Sha256::new();
    hasher.update(name.as_bytes());
    hasher.update(b"\n");
    hasher.update([ED25519]);
    hasher.update(public.as_bytes());
    let digest = hasher.finalize();
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// A key that signs checkpoints.
#[derive(Clone)]
pub struct SignerKey {
    name: String,
    key: SigningKey,
}

impl std::fmt::Debug for SignerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignerKey")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl SignerKey {
    /// The key of `seed` (32 random bytes) named `name`.
    ///
    /// # Errors
    /// [`Code::CheckpointMalformed`] for a name with a space or a `+`, or empty.
    pub fn new(name: &str, seed: [u8; 32]) -> Result<SignerKey, CheckpointError> {
        if !valid_name(name) {
            return Err(CheckpointError::malformed(format!(
                "key name {name:?}: a name is not empty and has no space or '+'"
            )));
        }
        Ok(SignerKey {
            name: name.to_owned(),
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// Reads a key written by [`SignerKey::encode`].
    ///
    /// # Errors
    /// [`Code::CheckpointMalformed`], saying what is wrong.
    pub fn parse(text: &str) -> Result<SignerKey, CheckpointError> {
        let bad = || {
            CheckpointError::malformed(
                "not a signing key (PRIVATE+KEY+NAME+KEYID+BASE64, as `wfstate checkpoint \
                 --new-key` writes)",
            )
        };
        let rest = text.trim().strip_prefix("PRIVATE+KEY+").ok_or_else(bad)?;
        let (name, id, key) = key_parts(rest).ok_or_else(bad)?;
        let seed: [u8; 32] = key.try_into().map_err(|_| bad())?;
        let signer = SignerKey::new(name, seed)?;
        if key_id(name, &signer.key.verifying_key()) != id {
            return Err(CheckpointError::malformed(
                "the signing key's id does not match its key",
            ));
        }
        Ok(signer)
    }

    /// The key as `PRIVATE+KEY+NAME+KEYID+BASE64`: keep it secret.
    pub fn encode(&self) -> String {
        let mut bytes = vec![ED25519];
        bytes.extend_from_slice(self.key.as_bytes());
        format!(
            "PRIVATE+KEY+{}+{:08x}+{}",
            self.name,
            key_id(&self.name, &self.key.verifying_key()),
            STANDARD.encode(bytes)
        )
    }

    /// The key that verifies what this one signs.
    pub fn verifier(&self) -> VerifierKey {
        let key = self.key.verifying_key();
        VerifierKey {
            name: self.name.clone(),
            id: key_id(&self.name, &key),
            key,
        }
    }

    /// `checkpoint` as a signed note.
    pub fn sign(&self, checkpoint: &Checkpoint) -> String {
        self.sign_text(&checkpoint.body())
    }

    /// `text` (ending with a newline) as a signed note.
    fn sign_text(&self, text: &str) -> String {
        let signature = self.key.sign(text.as_bytes());
        let mut signed = self.verifier().id.to_be_bytes().to_vec();
        signed.extend_from_slice(&signature.to_bytes());
        format!(
            "{text}\n{SIGNATURE_PREFIX}{} {}\n",
            self.name,
            STANDARD.encode(signed)
        )
    }
}

/// A public key trusted to sign checkpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    id: u32,
    key: VerifyingKey,
}

impl VerifierKey {
    /// Reads a key written by [`VerifierKey::encode`] (`NAME+KEYID+BASE64`).
    ///
    /// # Errors
    /// [`Code::CheckpointMalformed`], saying what is wrong.
    pub fn parse(text: &str) -> Result<VerifierKey, CheckpointError> {
        let bad = |what: &str| {
            CheckpointError::malformed(format!(
                "not a verifier key ({what}; expected NAME+KEYID+BASE64, as `wfstate \
                 checkpoint --public-key` prints)"
            ))
        };
        let (name, id, key) = key_parts(text.trim()).ok_or_else(|| bad("its parts"))?;
        let bytes: [u8; 32] = key.try_into().map_err(|_| bad("its length"))?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| bad("not an Ed25519 key"))?;
        if key_id(name, &key) != id {
            return Err(bad("the key id does not match the key"));
        }
        Ok(VerifierKey {
            name: name.to_owned(),
            id,
            key,
        })
    }

    /// The key as `NAME+KEYID+BASE64`: give it to whoever verifies.
    pub fn encode(&self) -> String {
        let mut bytes = vec![ED25519];
        bytes.extend_from_slice(self.key.as_bytes());
        format!("{}+{:08x}+{}", self.name, self.id, STANDARD.encode(bytes))
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// `NAME+KEYID+BASE64` with an Ed25519 key: the name, the id and the key's 32 bytes.
fn key_parts(text: &str) -> Option<(&str, u32, Vec<u8>)> {
    let mut parts = text.splitn(3, '+');
    let (name, id, key) = (parts.next()?, parts.next()?, parts.next()?);
    if !valid_name(name) || id.len() != 8 {
        return None;
    }
    let id = u32::from_str_radix(id, 16).ok()?;
    let bytes = STANDARD.decode(key).ok()?;
    let (&algorithm, key) = bytes.split_first()?;
    (algorithm == ED25519).then(|| (name, id, key.to_vec()))
}

/// Reads a signed checkpoint and checks its signature by one of `trusted`.
///
/// # Errors
/// [`Code::CheckpointMalformed`] for a note that is not a signed checkpoint;
/// [`Code::CheckpointKeyUnknown`] when no signature is by a trusted key;
/// [`Code::CheckpointSignatureInvalid`] when a trusted key's signature does not verify.
pub fn open(note: &str, trusted: &[VerifierKey]) -> Result<Checkpoint, CheckpointError> {
    Checkpoint::parse_body(verified_text(note, trusted)?)
}

/// The text of a signed note whose signature by one of `trusted` verifies.
fn verified_text<'a>(note: &'a str, trusted: &[VerifierKey]) -> Result<&'a str, CheckpointError> {
    if note.len() > NOTE_LENGTH_MAX {
        return Err(CheckpointError::malformed(format!(
            "a signed note of {} bytes (at most {NOTE_LENGTH_MAX})",
            note.len()
        )));
    }
    // The text ends at the last blank line; signature lines follow.
    let Some(split) = note.rfind("\n\n") else {
        return Err(CheckpointError::malformed(
            "no signature after the note's text",
        ));
    };
    let (text, signatures) = (&note[..=split], &note[split + 2..]);
    let Some(signatures) = signatures.strip_suffix('\n') else {
        return Err(CheckpointError::malformed(
            "a signed note ends with a newline",
        ));
    };
    let mut signers = Vec::new();
    for line in signatures.split('\n') {
        let (name, signed) = line
            .strip_prefix(SIGNATURE_PREFIX)
            .and_then(|line| line.split_once(' '))
            .ok_or_else(|| CheckpointError::malformed(format!("{line:?} is no signature line")))?;
        let signed = STANDARD
            .decode(signed)
            .ok()
            .filter(|signed| signed.len() == 4 + 64)
            .ok_or_else(|| {
                CheckpointError::malformed(format!(
                    "the signature of {name:?} is not base64 of 68 bytes"
                ))
            })?;
        let id = u32::from_be_bytes([signed[0], signed[1], signed[2], signed[3]]);
        signers.push(format!("{name}+{id:08x}"));
        let Some(key) = trusted.iter().find(|key| key.name == name && key.id == id) else {
            continue;
        };
        let signature = Signature::from_slice(&signed[4..]).map_err(|_| {
            CheckpointError::malformed(format!("the signature of {name:?} is no Ed25519 signature"))
        })?;
        return match key.key.verify_strict(text.as_bytes(), &signature) {
            Ok(()) => Ok(text),
            Err(_) => Err(CheckpointError {
                code: Code::CheckpointSignatureInvalid,
                detail: format!(
                    "the signature of {} does not verify: the note was changed or signed by \
                     another key of the same name",
                    key.encode()
                ),
            }),
        };
    }
    Err(CheckpointError {
        code: Code::CheckpointKeyUnknown,
        detail: format!(
            "signed by {} and by no key trusted here ({})",
            signers.join(", "),
            trusted
                .iter()
                .map(|key| format!("{}+{:08x}", key.name, key.id))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })
}

#[cfg(test)]
#[path = "checkpoint_tests.rs"]
mod tests;

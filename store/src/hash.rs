//! [`struct@Hash`]: a SHA-256 digest, encoded in CBOR as a 32-byte byte string.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// A SHA-256 digest: state hashes, event hashes and chain links.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// 32 zero bytes: the `prev_event_hash` of a case's first event.
    pub const ZERO: Hash = Hash([0; 32]);

    /// SHA-256 of `bytes`.
    pub fn of(bytes: &[u8]) -> Hash {
        Hash(Sha256::digest(bytes).into())
    }

    /// The digest as lower-case hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex digits.
    ///
    /// # Errors
    /// When `text` is not exactly 64 hex digits.
    pub fn from_hex(text: &str) -> Result<Hash, HashError> {
        let mut bytes = [0; 32];
        hex::decode_to_slice(text, &mut bytes).map_err(|error| HashError::new(text, error))?;
        Ok(Hash(bytes))
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.to_hex())
    }
}

impl Serialize for Hash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Hash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct HashVisitor;
        impl Visitor<'_> for HashVisitor {
            type Value = Hash;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a 32-byte byte string")
            }
            fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<Hash, E> {
                let bytes: [u8; 32] = bytes.try_into().map_err(|_| {
                    E::custom(format!("a hash must be 32 bytes, found {}", bytes.len()))
                })?;
                Ok(Hash(bytes))
            }
        }
        deserializer.deserialize_bytes(HashVisitor)
    }
}

/// A text that is not a hash: 64 hex digits are expected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid hash {text:?}: expected 64 hex digits")]
pub struct HashError {
    text: String,
    #[source]
    source: hex::FromHexError,
}

impl HashError {
    pub(crate) fn new(text: &str, source: hex::FromHexError) -> Self {
        HashError {
            text: text.to_owned(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digest_and_hex_round_trip() {
        let hash = Hash::of(b"abc");
        assert_eq!(
            hash.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(Hash::from_hex(&hash.to_hex()), Ok(hash));
        assert!(Hash::from_hex("abc").is_err());
    }

    #[test]
    fn cbor_is_a_byte_string_of_32() {
        let mut bytes = Vec::new();
        ciborium::into_writer(&Hash::ZERO, &mut bytes).unwrap();
        assert_eq!(bytes[..2], [0x58, 32]);
        let short: Result<Hash, _> = ciborium::from_reader(&[0x41, 0x00][..]);
        assert!(short.unwrap_err().to_string().contains("32 bytes"));
    }
}

//! Identifiers: case, token and scope ids (validated strings) and commit ids (UUID v7).
//!
//! A case id becomes one token of a NATS subject (`wfstate.case.<id>`), so an unchecked `*`,
//! `>` or `.` would read or write other cases. Every id is checked when it is made, before any
//! subject or key can be built from it.

use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;
use std::sync::Arc;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest id, in characters.
pub const ID_LENGTH_MAX: usize = 64;

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The id is the empty string.
    #[error(
        "invalid {what}: the id is empty; use 1 to {ID_LENGTH_MAX} characters of [A-Za-z0-9_-]"
    )]
    Empty {
        /// Which kind of id.
        what: &'static str,
    },
    /// The id is longer than [`ID_LENGTH_MAX`].
    #[error("invalid {what}: {length} characters is longer than the limit of {ID_LENGTH_MAX}")]
    TooLong {
        /// Which kind of id.
        what: &'static str,
        /// Its length in characters.
        length: usize,
    },
    /// The id holds a character outside `[A-Za-z0-9_-]`.
    #[error(
        "invalid {what} {id:?}: character {character:?} at index {index} is not allowed; \
         use only [A-Za-z0-9_-]"
    )]
    BadCharacter {
        /// Which kind of id.
        what: &'static str,
        /// The rejected id (as given).
        id: String,
        /// The first offending character.
        character: char,
        /// Its index, in characters.
        index: usize,
    },
    /// A commit id that is not a hyphenated UUID.
    #[error("invalid commit id {id:?}: expected a hyphenated UUID")]
    NotUuid {
        /// The rejected text.
        id: String,
    },
}

fn check_id(what: &'static str, id: &str) -> Result<(), IdError> {
    if id.is_empty() {
        return Err(IdError::Empty { what });
    }
    for (index, character) in id.chars().enumerate() {
        if index >= ID_LENGTH_MAX {
            return Err(IdError::TooLong {
                what,
                length: id.chars().count(),
            });
        }
        if !(character.is_ascii_alphanumeric() || character == '_' || character == '-') {
            return Err(IdError::BadCharacter {
                what,
                id: id.to_owned(),
                character,
                index,
            });
        }
    }
    Ok(())
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        ///
        /// Shared text: a copy of the id (as every copy of a case state makes) does not
        /// allocate.
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Checks `id` and wraps it.
            ///
            /// # Errors
            /// [`IdError`] naming the problem: empty, too long, or the offending character.
            pub fn new(id: impl Into<String>) -> Result<Self, IdError> {
                let id = id.into();
                check_id($what, &id)?;
                Ok(Self(id.into()))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(id: &str) -> Result<Self, IdError> {
                Self::new(id)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(id: String) -> Result<Self, IdError> {
                Self::new(id)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = IdError;
            fn try_from(id: &str) -> Result<Self, IdError> {
                Self::new(id)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0.to_string()
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_str(IdVisitor::<$name>::new($what))
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

string_id!(
    /// Names one case (workflow instance). New ids default to a UUID v7 ([`CaseId::generate`]).
    CaseId,
    "case id"
);
string_id!(
    /// Names one token (logical thread of execution) inside a case.
    TokenId,
    "token id"
);
string_id!(
    /// Names one cancel scope inside a case; [`ScopeId::root`] always exists.
    ScopeId,
    "scope id"
);

impl CaseId {
    /// A new, time-ordered case id (UUID v7, hyphenated).
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().hyphenated().to_string().into())
    }
}

impl ScopeId {
    /// The name of the implicit root scope.
    pub const ROOT: &'static str = "root";

    /// The implicit root scope, which every case has.
    pub fn root() -> Self {
        Self(Self::ROOT.into())
    }

    /// Whether this is the root scope.
    pub fn is_root(&self) -> bool {
        &*self.0 == Self::ROOT
    }
}

/// The permanent idempotency key of one commit: a UUID v7 chosen by the writer before the first
/// attempt and kept for every retry. It is the JetStream `Nats-Msg-Id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CommitId(uuid::Uuid);

impl Serialize for CommitId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.encode(&mut [0; CommitId::TEXT_LENGTH]))
    }
}

impl<'de> Deserialize<'de> for CommitId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(IdVisitor::<CommitId>::new("commit id"))
    }
}

/// Reads an id from text, checked like `FromStr` (without an owned copy first).
struct IdVisitor<T> {
    what: &'static str,
    id: PhantomData<T>,
}

impl<T> IdVisitor<T> {
    fn new(what: &'static str) -> Self {
        IdVisitor {
            what,
            id: PhantomData,
        }
    }
}

impl<T: FromStr<Err = IdError>> Visitor<'_> for IdVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a {} (text)", self.what)
    }

    fn visit_str<E: de::Error>(self, id: &str) -> Result<T, E> {
        id.parse().map_err(E::custom)
    }
}

impl CommitId {
    /// A new commit id (UUID v7).
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7())
    }

    /// The UUID inside.
    pub fn as_uuid(&self) -> uuid::Uuid {
        self.0
    }

    /// The length of the text form.
    pub const TEXT_LENGTH: usize = uuid::fmt::Hyphenated::LENGTH;

    /// The text form (hyphenated, lower case: the payload's `commit_id`, the `Nats-Msg-Id`
    /// header), written into `buffer` instead of a new string.
    pub fn encode<'b>(&self, buffer: &'b mut [u8; CommitId::TEXT_LENGTH]) -> &'b str {
        self.0.hyphenated().encode_lower(buffer)
    }
}

impl From<uuid::Uuid> for CommitId {
    fn from(uuid: uuid::Uuid) -> Self {
        Self(uuid)
    }
}

impl fmt::Display for CommitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl FromStr for CommitId {
    type Err = IdError;
    fn from_str(id: &str) -> Result<Self, IdError> {
        // Only the hyphenated form: the id is compared as text with `Nats-Msg-Id` headers.
        if id.len() != CommitId::TEXT_LENGTH {
            return Err(IdError::NotUuid { id: id.to_owned() });
        }
        uuid::Uuid::try_parse(id)
            .map(Self)
            .map_err(|_| IdError::NotUuid { id: id.to_owned() })
    }
}

impl TryFrom<String> for CommitId {
    type Error = IdError;
    fn try_from(id: String) -> Result<Self, IdError> {
        id.parse()
    }
}

impl From<CommitId> for String {
    fn from(id: CommitId) -> String {
        id.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_allowed_alphabet() {
        for id in ["a", "A-z_09", "order-42", &"x".repeat(64)] {
            assert_eq!(CaseId::new(id).map(|c| c.to_string()), Ok(id.to_owned()));
        }
    }

    #[test]
    fn rejects_subject_wildcards_and_names_the_character() {
        let cases = [
            ("a.b", '.', 1),
            ("*", '*', 0),
            (">", '>', 0),
            ("a b", ' ', 1),
            ("$JS", '$', 0),
            ("caf\u{e9}", '\u{e9}', 3),
            ("tab\t", '\t', 3),
        ];
        for (id, bad, at) in cases {
            match CaseId::new(id) {
                Err(IdError::BadCharacter {
                    character, index, ..
                }) => {
                    assert_eq!((character, index), (bad, at), "{id:?}");
                }
                other => panic!("{id:?} gave {other:?}"),
            }
            let message = CaseId::new(id).map(|_| ()).unwrap_err().to_string();
            assert!(message.contains(&format!("{bad:?}")), "{message}");
        }
    }

    #[test]
    fn rejects_empty_and_too_long() {
        assert_eq!(TokenId::new(""), Err(IdError::Empty { what: "token id" }));
        assert_eq!(
            ScopeId::new("y".repeat(65)),
            Err(IdError::TooLong {
                what: "scope id",
                length: 65
            })
        );
    }

    #[test]
    fn generated_ids_are_valid_and_time_ordered() {
        let first = CaseId::generate();
        let second = CaseId::generate();
        assert!(CaseId::new(first.as_str()).is_ok());
        assert!(first < second, "{first} then {second}");
        let commit = CommitId::generate();
        assert_eq!(commit.as_uuid().get_version_num(), 7);
        assert_eq!(commit.to_string().parse::<CommitId>(), Ok(commit));
    }

    #[test]
    fn commit_id_must_be_hyphenated_uuid() {
        assert!("not-a-uuid".parse::<CommitId>().is_err());
        assert!(
            "0190f0b4c7a47c3b9f1e2a3b4c5d6e7f"
                .parse::<CommitId>()
                .is_err()
        );
    }

    #[test]
    fn serde_validates_ids() {
        let parsed: Result<CaseId, _> = serde_json::from_str("\"a>b\"");
        assert!(parsed.is_err());
        let parsed: CaseId = serde_json::from_str("\"ok\"").unwrap();
        assert_eq!(parsed.as_str(), "ok");
        let error = serde_json::from_str::<ScopeId>("\"a b\"").unwrap_err();
        assert!(error.to_string().contains("' '"), "{error}");
        assert!(serde_json::from_str::<TokenId>("7").is_err());
    }

    #[test]
    fn ids_are_cbor_text_both_ways() {
        let commit = CommitId::generate();
        let ids = (CaseId::new("c-1").unwrap(), ScopeId::root(), commit);
        let mut bytes = Vec::new();
        ciborium::into_writer(&ids, &mut bytes).unwrap();
        let generic: ciborium::Value = ciborium::from_reader(bytes.as_slice()).unwrap();
        let texts: Vec<&str> = generic
            .as_array()
            .unwrap()
            .iter()
            .map(|value| value.as_text().unwrap())
            .collect();
        assert_eq!(texts, ["c-1", "root", commit.to_string().as_str()]);
        let back: (CaseId, ScopeId, CommitId) = ciborium::from_reader(bytes.as_slice()).unwrap();
        assert_eq!(back, ids);
        let mut not_hyphenated = Vec::new();
        ciborium::into_writer(&commit.as_uuid().simple().to_string(), &mut not_hyphenated).unwrap();
        assert!(ciborium::from_reader::<CommitId, _>(not_hyphenated.as_slice()).is_err());
    }
}

//! [`Event`]: the CBOR record of one commit, its encoding and its checked decoding.
//!
//! The payload is a public contract read by auditors in other languages: a CBOR map with the
//! text keys below, schema version 1. `prev_event_hash` is the SHA-256 of the exact payload
//! bytes of the case's previous event, so each case's events form a hash chain that anyone can
//! verify from the stored bytes without re-encoding.

use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::DecodeError;
use crate::hash::Hash;
use crate::id::{CaseId, CommitId};
use crate::mutation::{Mutation, put};

/// The event schema version this build writes.
pub const SCHEMA_VERSION: u64 = 1;

/// One commit, as stored in the log. Field order is the encoding's key order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Always [`SCHEMA_VERSION`] once decoded (older versions are upcast).
    pub schema: u64,
    /// The commit's idempotency key, equal to the `Nats-Msg-Id` header.
    pub commit_id: CommitId,
    /// The case the commit changed.
    pub case_id: CaseId,
    /// 1 for the case's first commit, then +1 each.
    pub version: u64,
    /// The resolved mutations, in order.
    pub mutations: Vec<Mutation>,
    /// The writer's clock, ms since the Unix epoch.
    pub committed_at_ms: u64,
    /// The writer's id.
    pub writer: String,
    /// SHA-256 of the canonical state after this commit.
    pub state_hash: Hash,
    /// SHA-256 of the case's previous event payload ([`Hash::ZERO`] for version 1).
    pub prev_event_hash: Hash,
}

/// The wire form: every field optional, so that the schema is checked before anything else
/// and a missing field is named. Unknown keys are ignored.
#[derive(Default)]
pub(crate) struct WireEvent {
    pub(crate) schema: Option<u64>,
    pub(crate) commit_id: Option<CommitId>,
    pub(crate) case_id: Option<CaseId>,
    pub(crate) version: Option<u64>,
    pub(crate) mutations: Option<Vec<Mutation>>,
    pub(crate) committed_at_ms: Option<u64>,
    pub(crate) writer: Option<String>,
    pub(crate) state_hash: Option<Hash>,
    pub(crate) prev_event_hash: Option<Hash>,
}

// Written out rather than derived: the derived form reads every field as an `Option`, and
// ciborium reads each `Option` by looking at the value's header twice. Events are decoded
// once per event on every replay, so that shows.
impl<'de> Deserialize<'de> for WireEvent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(field_identifier, rename_all = "snake_case")]
        enum Field {
            Schema,
            CommitId,
            CaseId,
            Version,
            Mutations,
            CommittedAtMs,
            Writer,
            StateHash,
            PrevEventHash,
            #[serde(other)]
            Unknown,
        }
        struct WireVisitor;
        impl<'de> Visitor<'de> for WireVisitor {
            type Value = WireEvent;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an event: a map with text keys")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<WireEvent, A::Error> {
                let mut wire = WireEvent::default();
                while let Some(key) = map.next_key::<Field>()? {
                    match key {
                        Field::Schema => put(&mut wire.schema, map.next_value()?, "schema")?,
                        Field::CommitId => {
                            put(&mut wire.commit_id, map.next_value()?, "commit_id")?;
                        }
                        Field::CaseId => put(&mut wire.case_id, map.next_value()?, "case_id")?,
                        Field::Version => put(&mut wire.version, map.next_value()?, "version")?,
                        Field::Mutations => {
                            put(&mut wire.mutations, map.next_value()?, "mutations")?;
                        }
                        Field::CommittedAtMs => put(
                            &mut wire.committed_at_ms,
                            map.next_value()?,
                            "committed_at_ms",
                        )?,
                        Field::Writer => put(&mut wire.writer, map.next_value()?, "writer")?,
                        Field::StateHash => {
                            put(&mut wire.state_hash, map.next_value()?, "state_hash")?;
                        }
                        Field::PrevEventHash => put(
                            &mut wire.prev_event_hash,
                            map.next_value()?,
                            "prev_event_hash",
                        )?,
                        Field::Unknown => {
                            map.next_value::<de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(wire)
            }
        }
        deserializer.deserialize_map(WireVisitor)
    }
}

#[derive(Deserialize)]
struct SchemaOnly {
    schema: Option<u64>,
}

/// The event's fields through serde and ciborium, which accept every valid CBOR form and
/// name what is wrong with an invalid one.
fn wire_by_serde(bytes: &[u8]) -> Result<WireEvent, DecodeError> {
    // Text up to the scratch's size is read through it, longer text in chunks: ids, keys and
    // short values fit, and a smaller scratch is cheaper to set up than ciborium's default of
    // 4 KiB.
    let mut scratch = [0_u8; 256];
    ciborium::de::from_reader_with_buffer(bytes, &mut scratch).map_err(|error| {
        // A newer schema may not fit the current shape: name its version rather than the
        // first field that failed to decode.
        if let Ok(SchemaOnly {
            schema: Some(found),
        }) = ciborium::from_reader(bytes)
            && found != SCHEMA_VERSION
        {
            return DecodeError::UnknownSchema { found };
        }
        DecodeError::Malformed(error.to_string())
    })
}

fn required<T>(field: Option<T>, name: &'static str) -> Result<T, DecodeError> {
    field.ok_or(DecodeError::MissingField(name))
}

impl Event {
    /// The event's CBOR payload.
    ///
    /// # Panics
    /// Never: every event has a CBOR encoding and writing to a `Vec` cannot fail.
    pub fn encode(&self) -> Vec<u8> {
        // Room for the fixed fields (about 200 bytes) and a few mutations, so that most events
        // are written without growing the buffer.
        let mut bytes = Vec::with_capacity(512);
        crate::canonical::write_event(self, &mut bytes);
        bytes
    }

    /// Decodes and checks a payload. This is the one place older schema versions would be
    /// upcast to the current one.
    ///
    /// # Errors
    /// [`DecodeError`] naming what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
        // The form writers write is read directly; anything else, and every error, goes
        // through serde.
        let wire = match crate::reader::read_event(bytes) {
            Some(wire) => wire,
            None => wire_by_serde(bytes)?,
        };
        Event::from_wire(wire)
    }

    /// [`Event::decode`] through serde only: the reference the direct reader is held to.
    #[cfg(test)]
    pub(crate) fn decode_by_serde(bytes: &[u8]) -> Result<Event, DecodeError> {
        Event::from_wire(wire_by_serde(bytes)?)
    }

    fn from_wire(wire: WireEvent) -> Result<Event, DecodeError> {
        let schema = required(wire.schema, "schema")?;
        if schema != SCHEMA_VERSION {
            return Err(DecodeError::UnknownSchema { found: schema });
        }
        let event = Event {
            schema,
            commit_id: required(wire.commit_id, "commit_id")?,
            case_id: required(wire.case_id, "case_id")?,
            version: required(wire.version, "version")?,
            mutations: required(wire.mutations, "mutations")?,
            committed_at_ms: required(wire.committed_at_ms, "committed_at_ms")?,
            writer: required(wire.writer, "writer")?,
            state_hash: required(wire.state_hash, "state_hash")?,
            prev_event_hash: required(wire.prev_event_hash, "prev_event_hash")?,
        };
        event.check()?;
        Ok(event)
    }

    /// The checks every event passes on both sides of the codec.
    fn check(&self) -> Result<(), DecodeError> {
        if self.version == 0 {
            return Err(DecodeError::Impossible(
                "version 0; versions start at 1".into(),
            ));
        }
        if (self.version == 1) != (self.prev_event_hash == Hash::ZERO) {
            return Err(DecodeError::Impossible(format!(
                "version {} with prev_event_hash {}; only version 1 links to the zero hash",
                self.version, self.prev_event_hash
            )));
        }
        if self.writer.is_empty() {
            return Err(DecodeError::Impossible("the writer id is empty".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Value;

    fn sample(version: u64) -> Event {
        Event {
            schema: SCHEMA_VERSION,
            commit_id: CommitId::generate(),
            case_id: CaseId::new("case-1").unwrap(),
            version,
            mutations: vec![Mutation::set_key("k", 1), Mutation::IncrementStepCount],
            committed_at_ms: 1_700_000_000_000,
            writer: "host/1".into(),
            state_hash: Hash::of(b"state"),
            prev_event_hash: if version == 1 {
                Hash::ZERO
            } else {
                Hash::of(b"prev")
            },
        }
    }

    #[test]
    fn round_trips() {
        for version in [1, 2, 77] {
            let event = sample(version);
            assert_eq!(Event::decode(&event.encode()), Ok(event));
        }
    }

    #[test]
    fn text_and_bytes_longer_than_the_scratch_round_trip() {
        let long_text = "é".repeat(3000);
        let mut event = sample(2);
        event.writer = "w".repeat(300);
        event
            .mutations
            .push(Mutation::set_key("text", long_text.as_str()));
        event.mutations.push(Mutation::SetMetadata {
            value: Value::Bytes(vec![7; 5000]),
        });
        assert_eq!(Event::decode(&event.encode()), Ok(event));
    }

    #[test]
    fn payload_keys_are_the_public_contract() {
        let generic: ciborium::Value =
            ciborium::from_reader(sample(2).encode().as_slice()).unwrap();
        let keys: Vec<&str> = generic
            .as_map()
            .unwrap()
            .iter()
            .map(|(key, _)| key.as_text().unwrap())
            .collect();
        assert_eq!(
            keys,
            [
                "schema",
                "commit_id",
                "case_id",
                "version",
                "mutations",
                "committed_at_ms",
                "writer",
                "state_hash",
                "prev_event_hash"
            ]
        );
        let map = generic.as_map().unwrap();
        assert!(map[1].1.is_text() && map[7].1.is_bytes() && map[8].1.is_bytes());
    }

    #[test]
    fn garbage_and_truncation_are_errors_not_panics() {
        let bytes = sample(3).encode();
        for cut in 0..bytes.len() {
            assert!(Event::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        for garbage in [&b"\xff\xff\xff"[..], b"hello", b"\xa0", b"\x80"] {
            assert!(Event::decode(garbage).is_err());
        }
    }

    #[test]
    fn names_unknown_schema_and_missing_fields() {
        #[derive(Serialize)]
        struct Partial {
            schema: u64,
            version: u64,
        }
        #[derive(Serialize)]
        struct Future {
            schema: u64,
            mutations: Vec<Value>,
        }
        let mut bytes = Vec::new();
        let future = Future {
            schema: 2,
            mutations: vec![Value::from("new-kind")],
        };
        ciborium::into_writer(&future, &mut bytes).unwrap();
        assert_eq!(
            Event::decode(&bytes),
            Err(DecodeError::UnknownSchema { found: 2 })
        );

        let mut bytes = Vec::new();
        ciborium::into_writer(
            &Partial {
                schema: 1,
                version: 1,
            },
            &mut bytes,
        )
        .unwrap();
        assert_eq!(
            Event::decode(&bytes),
            Err(DecodeError::MissingField("commit_id"))
        );
    }

    #[test]
    fn ignores_unknown_keys_and_refuses_repeated_ones() {
        type Entries = Vec<(ciborium::Value, ciborium::Value)>;
        let event = sample(2);
        let edited = |edit: &dyn Fn(&mut Entries)| {
            let mut generic: ciborium::Value =
                ciborium::from_reader(event.encode().as_slice()).unwrap();
            edit(generic.as_map_mut().unwrap());
            let mut bytes = Vec::new();
            ciborium::into_writer(&generic, &mut bytes).unwrap();
            Event::decode(&bytes)
        };
        let text = |key: &str| ciborium::Value::Text(key.into());
        let added = edited(&|entries| entries.push((text("added_later"), 1.into())));
        assert_eq!(added, Ok(event.clone()));
        let repeated = edited(&|entries| entries.push((text("version"), 5.into()))).unwrap_err();
        assert!(
            repeated.to_string().contains("duplicate field `version`"),
            "{repeated}"
        );
        let null = edited(&|entries| {
            for (key, value) in entries.iter_mut() {
                if *key == text("writer") {
                    *value = ciborium::Value::Null;
                }
            }
        });
        assert!(matches!(null, Err(DecodeError::Malformed(_))), "{null:?}");
    }

    #[test]
    fn impossible_contents_are_refused() {
        let mut zero = sample(1);
        zero.version = 0;
        assert!(matches!(
            Event::decode(&zero.encode()),
            Err(DecodeError::Impossible(_))
        ));
        let mut unlinked = sample(5);
        unlinked.prev_event_hash = Hash::ZERO;
        assert!(matches!(
            Event::decode(&unlinked.encode()),
            Err(DecodeError::Impossible(_))
        ));
        let mut bad_id = sample(1).encode();
        let at = bad_id.windows(6).position(|w| w == b"case-1").unwrap();
        bad_id[at + 4] = b'*';
        assert!(
            matches!(Event::decode(&bad_id), Err(DecodeError::Malformed(m)) if m.contains('*'))
        );
    }
}

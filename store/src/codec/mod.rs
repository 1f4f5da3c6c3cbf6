//! The wire format of the store, in one place: events and the canonical form of a state are
//! written by [`write`] (direct encoders, byte for byte what ciborium writes), read by [`read`]
//! (the form writers write) or by the serde [`reference`] (every other well-formed form, and
//! every error), and hashed here.

mod read;
mod reference;
mod write;

pub(crate) use write::{EventHead, state_hash_and_size, write_event_parts};

use crate::error::DecodeError;
use crate::event::{Event, SCHEMA_VERSION};
use crate::hash::Hash;
use crate::state::CaseState;
use reference::{WireEvent, required, wire_by_serde};

#[cfg(test)]
pub(crate) use read::read_event;

impl CaseState {
    /// The canonical CBOR encoding of the state (what [`CaseState::hash`] covers).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(256);
        write::write_state(self, &mut bytes);
        bytes
    }

    /// SHA-256 of the canonical encoding: the `state_hash` of events and receipts.
    pub fn hash(&self) -> Hash {
        write::state_hash(self)
    }
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
        write::write_event(self, &mut bytes);
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
        let wire = match read::read_event(bytes) {
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
            return Err(DecodeError::UnknownSchema {
                found: schema,
                supported: SCHEMA_VERSION,
            });
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
}

#[cfg(test)]
mod tests {
    use serde::Serialize;

    use super::*;
    use crate::id::{CaseId, CommitId};
    use crate::mutation::Mutation;
    use crate::position::Version;
    use crate::value::Value;

    fn sample(version: u64) -> Event {
        Event {
            schema: SCHEMA_VERSION,
            commit_id: CommitId::generate(),
            case_id: CaseId::new("case-1").unwrap(),
            version: Version::new(version),
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
            Err(DecodeError::UnknownSchema {
                found: 2,
                supported: SCHEMA_VERSION
            })
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
        zero.version = Version::ZERO;
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

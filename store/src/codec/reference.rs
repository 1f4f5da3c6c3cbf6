//! The serde reference of the event codec: every well-formed CBOR form of an event is read here
//! (indefinite lengths, unknown keys, tags, half-width floats), and every error named. The
//! direct reader ([`super::read`]) takes the form writers write and is held to this one.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use crate::error::DecodeError;
use crate::event::SCHEMA_VERSION;
use crate::hash::Hash;
use crate::id::{CaseId, CommitId};
use crate::mutation::{Mutation, put};
use crate::position::Version;

/// The wire form: every field optional, so that the schema is checked before anything else
/// and a missing field is named. Unknown keys are ignored.
#[derive(Default)]
pub(crate) struct WireEvent {
    pub(crate) schema: Option<u64>,
    pub(crate) commit_id: Option<CommitId>,
    pub(crate) case_id: Option<CaseId>,
    pub(crate) version: Option<Version>,
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
pub(crate) fn wire_by_serde(bytes: &[u8]) -> Result<WireEvent, DecodeError> {
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
            return DecodeError::UnknownSchema {
                found,
                supported: SCHEMA_VERSION,
            };
        }
        DecodeError::Malformed(error.to_string())
    })
}

pub(crate) fn required<T>(field: Option<T>, name: &'static str) -> Result<T, DecodeError> {
    field.ok_or(DecodeError::MissingField(name))
}

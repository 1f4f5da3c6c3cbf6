//! Events read back in the form [`super::write`] writes them, without serde.
//!
//! Every fold (projector, replay, audit, load) decodes its event first, and through serde
//! ciborium spends most of that time pulling and converting headers. This reader takes the
//! plain, definite-length form writers produce and answers `None` for anything else (an
//! unknown or repeated key, an indefinite length, a tag, a half-width float, a field of an
//! unexpected type, trailing bytes), which then goes to the serde decoder: that one stays the
//! reference, and the one that explains what is wrong. Where this reader answers, it builds
//! what the serde decoder builds, through the same checks (ids, mutation fields); a property
//! test holds the two to that on valid and damaged payloads.

use serde::Deserialize;
use serde::de::value::{Error as ValueError, StrDeserializer};

use super::reference::WireEvent;
use crate::hash::Hash;
use crate::mutation::{Fields, Mutation, Op};
use crate::position::Version;
use crate::value::{Map, Value};

const UNSIGNED: u8 = 0;
const NEGATIVE: u8 = 1;
const BYTES: u8 = 2;
const TEXT: u8 = 3;
const ARRAY: u8 = 4;
const MAP: u8 = 5;

/// Nesting deeper than this goes to the serde decoder, with its own limit.
const DEPTH_MAX: usize = 64;

/// The event's fields, or `None` when the payload is not in the plain form.
pub(crate) fn read_event(bytes: &[u8]) -> Option<WireEvent> {
    let mut reader = Reader { bytes };
    let mut wire = WireEvent::default();
    for _ in 0..reader.length(MAP)? {
        match reader.key()? {
            b"schema" => fill(&mut wire.schema, reader.unsigned()?)?,
            b"commit_id" => fill(&mut wire.commit_id, reader.text()?.parse().ok()?)?,
            b"case_id" => fill(&mut wire.case_id, reader.text()?.parse().ok()?)?,
            b"version" => fill(&mut wire.version, Version::new(reader.unsigned()?))?,
            b"mutations" => {
                let count = reader.length(ARRAY)?;
                let mut mutations = Vec::with_capacity(count.min(1024));
                for _ in 0..count {
                    mutations.push(reader.mutation()?);
                }
                fill(&mut wire.mutations, mutations)?;
            }
            b"committed_at_ms" => fill(&mut wire.committed_at_ms, reader.unsigned()?)?,
            b"writer" => fill(&mut wire.writer, reader.text()?.to_owned())?,
            b"state_hash" => fill(&mut wire.state_hash, reader.hash()?)?,
            b"prev_event_hash" => fill(&mut wire.prev_event_hash, reader.hash()?)?,
            _ => return None,
        }
    }
    reader.bytes.is_empty().then_some(wire)
}

/// Fills an empty slot; a repeated key is left to the serde decoder.
fn fill<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    slot.is_none().then(|| *slot = Some(value))
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Option<&'a [u8]> {
        let (taken, rest) = self.bytes.split_at_checked(count)?;
        self.bytes = rest;
        Some(taken)
    }

    /// The next header: its major type and argument (definite forms only).
    fn head(&mut self) -> Option<(u8, u64)> {
        let (&first, rest) = self.bytes.split_first()?;
        self.bytes = rest;
        let (major, additional) = (first >> 5, first & 0x1f);
        let argument = match additional {
            0..24 => u64::from(additional),
            24 => u64::from(self.take(1)?[0]),
            25 => u64::from(u16::from_be_bytes(self.take(2)?.try_into().ok()?)),
            26 => u64::from(u32::from_be_bytes(self.take(4)?.try_into().ok()?)),
            27 => u64::from_be_bytes(self.take(8)?.try_into().ok()?),
            _ => return None,
        };
        Some((major, argument))
    }

    /// The length of an item of the major type `expected`.
    fn length(&mut self, expected: u8) -> Option<usize> {
        match self.head()? {
            (major, length) if major == expected => usize::try_from(length).ok(),
            _ => None,
        }
    }

    fn unsigned(&mut self) -> Option<u64> {
        match self.head()? {
            (UNSIGNED, value) => Some(value),
            _ => None,
        }
    }

    /// The bytes of a text item: a map key, compared with the names this store writes (any
    /// other key, valid text or not, sends the payload to the serde decoder).
    fn key(&mut self) -> Option<&'a [u8]> {
        let length = self.length(TEXT)?;
        self.take(length)
    }

    fn text(&mut self) -> Option<&'a str> {
        let length = self.length(TEXT)?;
        std::str::from_utf8(self.take(length)?).ok()
    }

    fn hash(&mut self) -> Option<Hash> {
        let length = self.length(BYTES)?;
        Some(Hash(self.take(length)?.try_into().ok()?))
    }

    fn mutation(&mut self) -> Option<Mutation> {
        let mut fields = Fields::default();
        for _ in 0..self.length(MAP)? {
            match self.key()? {
                b"op" => {
                    let name = self.text()?;
                    let op = Op::deserialize(StrDeserializer::<ValueError>::new(name)).ok()?;
                    fill(&mut fields.op, op)?;
                }
                b"ctx" => fill(&mut fields.ctx, self.value(0)?)?,
                b"set" => fill(&mut fields.set, self.map(0)?)?,
                b"remove" => {
                    let count = self.length(ARRAY)?;
                    let mut keys = Vec::with_capacity(count.min(1024));
                    for _ in 0..count {
                        keys.push(self.text()?.to_owned());
                    }
                    fill(&mut fields.remove, keys)?;
                }
                b"id" => fill(&mut fields.id, self.text()?.to_owned())?,
                b"ip" => fill(&mut fields.ip, self.unsigned()?)?,
                b"scope" => fill(&mut fields.scope, self.text()?.to_owned())?,
                b"value" => fill(&mut fields.value, self.value(0)?)?,
                b"parent" => fill(&mut fields.parent, self.text()?.to_owned())?,
                b"status" => fill(&mut fields.status, self.text()?.to_owned())?,
                _ => return None,
            }
        }
        fields.build::<ValueError>().ok()
    }

    fn map(&mut self, depth: usize) -> Option<Map> {
        let mut map = Map::new();
        for _ in 0..self.length(MAP)? {
            let key = self.text()?.to_owned();
            let value = self.value(depth + 1)?;
            if map.insert(key, value).is_some() {
                return None;
            }
        }
        Some(map)
    }

    fn value(&mut self, depth: usize) -> Option<Value> {
        if depth > DEPTH_MAX {
            return None;
        }
        let &first = self.bytes.first()?;
        match first {
            0xf4 => self.simple(Value::Bool(false)),
            0xf5 => self.simple(Value::Bool(true)),
            0xf6 => self.simple(Value::Null),
            0xfa => {
                self.take(1)?;
                let float = f32::from_be_bytes(self.take(4)?.try_into().ok()?);
                Some(Value::Float(float.into()))
            }
            0xfb => {
                self.take(1)?;
                Some(Value::Float(f64::from_be_bytes(
                    self.take(8)?.try_into().ok()?,
                )))
            }
            _ => match first >> 5 {
                UNSIGNED => Some(Value::Integer(self.unsigned()?.into())),
                NEGATIVE => {
                    let (_, below) = self.head()?;
                    // -1 - n; a Value's integers end at i64::MIN, the serde decoder says so.
                    let integer = -1 - i128::from(below);
                    (integer >= i128::from(i64::MIN)).then_some(Value::Integer(integer))
                }
                BYTES => {
                    let length = self.length(BYTES)?;
                    Some(Value::Bytes(self.take(length)?.to_vec()))
                }
                TEXT => Some(Value::Text(self.text()?.to_owned())),
                ARRAY => {
                    let count = self.length(ARRAY)?;
                    let mut items = Vec::with_capacity(count.min(1024));
                    for _ in 0..count {
                        items.push(self.value(depth + 1)?);
                    }
                    Some(Value::Array(items))
                }
                MAP => Some(Value::Map(self.map(depth)?)),
                // Tags, half-width floats, undefined and other simple values.
                _ => None,
            },
        }
    }

    fn simple(&mut self, value: Value) -> Option<Value> {
        self.take(1)?;
        Some(value)
    }
}

//! [`Value`]: the data model of ctx entries, token values and metadata.
//!
//! It is the part of the CBOR data model that JSON can also carry, plus byte strings. Maps are
//! keyed by text and kept sorted, so equal values always encode to equal bytes: the state hash
//! must not depend on the order in which a worker inserted keys.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A map with text keys, in sorted key order.
pub type Map = BTreeMap<String, Value>;

/// A ctx entry, token value or metadata value.
///
/// Integers cover `i64::MIN ..= u64::MAX` (what JSON parsers and most CBOR decoders agree on).
/// Maps must have text keys.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Value {
    /// CBOR null / JSON null (CBOR undefined decodes to it too).
    #[default]
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer in `i64::MIN ..= u64::MAX`.
    Integer(i128),
    /// A floating-point number.
    Float(f64),
    /// UTF-8 text.
    Text(String),
    /// A byte string (CBOR only; JSON writes it as an array of numbers).
    Bytes(Vec<u8>),
    /// An array.
    Array(Vec<Value>),
    /// A map with text keys.
    Map(Map),
}

impl Value {
    /// The map inside, if this is a map.
    pub fn as_map(&self) -> Option<&Map> {
        match self {
            Value::Map(map) => Some(map),
            _ => None,
        }
    }

    /// A short name of the value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Integer(_) => "integer",
            Value::Float(_) => "float",
            Value::Text(_) => "text",
            Value::Bytes(_) => "bytes",
            Value::Array(_) => "array",
            Value::Map(_) => "map",
        }
    }
}

impl From<bool> for Value {
    fn from(value: bool) -> Self {
        Value::Bool(value)
    }
}

impl From<i64> for Value {
    fn from(value: i64) -> Self {
        Value::Integer(value.into())
    }
}

impl From<u64> for Value {
    fn from(value: u64) -> Self {
        Value::Integer(value.into())
    }
}

impl From<i32> for Value {
    fn from(value: i32) -> Self {
        Value::Integer(value.into())
    }
}

impl From<f64> for Value {
    fn from(value: f64) -> Self {
        Value::Float(value)
    }
}

impl From<&str> for Value {
    fn from(value: &str) -> Self {
        Value::Text(value.to_owned())
    }
}

impl From<String> for Value {
    fn from(value: String) -> Self {
        Value::Text(value)
    }
}

impl From<Map> for Value {
    fn from(value: Map) -> Self {
        Value::Map(value)
    }
}

impl From<Vec<Value>> for Value {
    fn from(value: Vec<Value>) -> Self {
        Value::Array(value)
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => serializer.serialize_unit(),
            Value::Bool(value) => serializer.serialize_bool(*value),
            Value::Integer(value) => {
                if let Ok(small) = i64::try_from(*value) {
                    serializer.serialize_i64(small)
                } else if let Ok(large) = u64::try_from(*value) {
                    serializer.serialize_u64(large)
                } else {
                    Err(serde::ser::Error::custom(format!(
                        "integer {value} is outside i64::MIN..=u64::MAX"
                    )))
                }
            }
            Value::Float(value) => serializer.serialize_f64(*value),
            Value::Text(value) => serializer.serialize_str(value),
            Value::Bytes(value) => serializer.serialize_bytes(value),
            Value::Array(values) => values.serialize(serializer),
            Value::Map(map) => map.serialize(serializer),
        }
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a value of the CBOR/JSON data model with text map keys")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::Integer(value.into()))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(Value::Integer(value.into()))
    }

    fn visit_i128<E: de::Error>(self, value: i128) -> Result<Value, E> {
        if value < i128::from(i64::MIN) || value > i128::from(u64::MAX) {
            return Err(E::custom(format!(
                "integer {value} is outside i64::MIN..=u64::MAX"
            )));
        }
        Ok(Value::Integer(value))
    }

    fn visit_u128<E: de::Error>(self, value: u128) -> Result<Value, E> {
        match u64::try_from(value) {
            Ok(value) => Ok(Value::Integer(value.into())),
            Err(_) => Err(E::custom(format!(
                "integer {value} is larger than u64::MAX"
            ))),
        }
    }

    fn visit_f64<E>(self, value: f64) -> Result<Value, E> {
        Ok(Value::Float(value))
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::Text(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::Text(value))
    }

    fn visit_bytes<E>(self, value: &[u8]) -> Result<Value, E> {
        Ok(Value::Bytes(value.to_vec()))
    }

    fn visit_byte_buf<E>(self, value: Vec<u8>) -> Result<Value, E> {
        Ok(Value::Bytes(value))
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        Value::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut values = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(value) = seq.next_element()? {
            values.push(value);
        }
        Ok(Value::Array(values))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<MapKey>()? {
            let value = access.next_value()?;
            if map.insert(key.0.clone(), value).is_some() {
                return Err(de::Error::custom(format!("duplicate map key {:?}", key.0)));
            }
        }
        Ok(Value::Map(map))
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

/// A map key: text only, with an error that says so.
struct MapKey(String);

impl<'de> Deserialize<'de> for MapKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = MapKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a text map key (maps must have text keys)")
            }
            fn visit_str<E>(self, value: &str) -> Result<MapKey, E> {
                Ok(MapKey(value.to_owned()))
            }
            fn visit_string<E>(self, value: String) -> Result<MapKey, E> {
                Ok(MapKey(value))
            }
        }
        deserializer.deserialize_any(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cbor(value: &Value) -> Vec<u8> {
        let mut bytes = Vec::new();
        ciborium::into_writer(value, &mut bytes).unwrap();
        bytes
    }

    #[test]
    fn json_round_trip() {
        let text = r#"{"a":[1,-2,18446744073709551615,1.5,"x",true,null],"b":{"c":{}}}"#;
        let value: Value = serde_json::from_str(text).unwrap();
        assert_eq!(serde_json::to_string(&value).unwrap(), text);
    }

    #[test]
    fn cbor_round_trip_with_bytes_and_extremes() {
        let mut map = Map::new();
        map.insert("bytes".into(), Value::Bytes(vec![0, 255]));
        map.insert("min".into(), Value::from(i64::MIN));
        map.insert("max".into(), Value::from(u64::MAX));
        map.insert("float".into(), Value::Float(-0.25));
        let value = Value::Map(map);
        let decoded: Value = ciborium::from_reader(cbor(&value).as_slice()).unwrap();
        assert_eq!(decoded, value);
    }

    #[test]
    fn encoding_does_not_depend_on_insertion_order() {
        let mut forward = Map::new();
        let mut backward = Map::new();
        for key in ["z", "a", "m", "aa"] {
            forward.insert(key.into(), Value::from(key));
        }
        for key in ["aa", "m", "a", "z"] {
            backward.insert(key.into(), Value::from(key));
        }
        assert_eq!(cbor(&Value::Map(forward)), cbor(&Value::Map(backward)));
    }

    #[test]
    fn rejects_non_text_keys_and_out_of_range_integers() {
        // {1: 2}
        let non_text_key: Result<Value, _> = ciborium::from_reader(&[0xa1, 0x01, 0x02][..]);
        assert!(non_text_key.unwrap_err().to_string().contains("text"));
        // -2^64 (CBOR negative integer 0x3b ffff ffff ffff ffff)
        let bytes = [0x3b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        let too_small: Result<Value, _> = ciborium::from_reader(&bytes[..]);
        assert!(too_small.is_err());
    }

    #[test]
    fn rejects_duplicate_keys() {
        // {"a": 1, "a": 2}
        let bytes = [0xa2, 0x61, b'a', 0x01, 0x61, b'a', 0x02];
        let duplicate: Result<Value, _> = ciborium::from_reader(&bytes[..]);
        assert!(duplicate.unwrap_err().to_string().contains("duplicate"));
    }
}

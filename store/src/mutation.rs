//! [`Mutation`]: one change to a case's state, as plain data.
//!
//! The serde form is the JSON form of commit files and the CBOR form inside events: a map
//! tagged by `op`. Unknown fields are refused, so a typo in a commit file is an error, not a
//! silently ignored change.

use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::id::{ScopeId, TokenId};
use crate::state::{CaseStatus, TokenStatus};
use crate::value::{Map, Value};

/// One change to a case's state. See the validation rules in [`crate::validate`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Mutation {
    /// Replaces the ctx. Valid when `ctx` is a map.
    SetCtx {
        /// The new ctx.
        ctx: Value,
    },
    /// Top-level merge into the ctx: sets the keys of `set`, removes the keys of `remove`.
    PatchCtx {
        /// Keys to set, with their new values.
        #[serde(default, skip_serializing_if = "Map::is_empty")]
        set: Map,
        /// Keys to remove (absent keys are ignored).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        remove: Vec<String>,
    },
    /// Adds an Active token.
    AddToken {
        /// An unused token id.
        id: TokenId,
        /// The starting instruction pointer.
        ip: u64,
        /// An existing, Active scope.
        scope: ScopeId,
        /// The token's value.
        #[serde(default)]
        value: Value,
    },
    /// Removes a token.
    RemoveToken {
        /// An existing token.
        id: TokenId,
    },
    /// Changes the given fields of a token.
    UpdateToken(TokenUpdate),
    /// Enters a new Active scope.
    EnterScope {
        /// An unused scope id.
        id: ScopeId,
        /// An existing, Active scope.
        parent: ScopeId,
    },
    /// Removes a scope that has no child scopes and no Active tokens, with its finished tokens.
    ExitScope {
        /// An existing scope other than root.
        id: ScopeId,
    },
    /// Cancels a scope, all its descendant scopes and their Active tokens.
    CancelScope {
        /// An existing scope.
        id: ScopeId,
    },
    /// Adds one to the step count.
    IncrementStepCount,
    /// Replaces the metadata.
    SetMetadata {
        /// The new metadata.
        value: Value,
    },
    /// Ends a Running case.
    SetCaseStatus {
        /// Done, Failed or Cancelled.
        status: CaseStatus,
    },
}

/// The fields of an `update_token` mutation: only the fields given change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenUpdate {
    /// The token to change.
    pub id: TokenId,
    /// A new instruction pointer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<u64>,
    /// A new scope (must exist and be Active).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<ScopeId>,
    /// A new value (`Some(Value::Null)` sets null; `None` leaves the value).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub value: Option<Value>,
    /// A new status (only Active → Complete or Cancelled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<TokenStatus>,
}

impl TokenUpdate {
    /// An update of token `id` that changes nothing yet.
    pub fn new(id: TokenId) -> Self {
        TokenUpdate {
            id,
            ip: None,
            scope: None,
            value: None,
            status: None,
        }
    }
}

/// The fields any mutation may carry, read in one pass whatever their order (the derived
/// decoder of an internally tagged enum buffers every mutation first, which doubled the cost
/// of decoding an event).
#[derive(Default)]
pub(crate) struct Fields {
    pub(crate) op: Option<Op>,
    pub(crate) ctx: Option<Value>,
    pub(crate) set: Option<Map>,
    pub(crate) remove: Option<Vec<String>>,
    pub(crate) id: Option<String>,
    pub(crate) ip: Option<u64>,
    pub(crate) scope: Option<String>,
    pub(crate) value: Option<Value>,
    pub(crate) parent: Option<String>,
    pub(crate) status: Option<String>,
}

/// A required field.
fn need<T, E: de::Error>(field: Option<T>, name: &'static str) -> Result<T, E> {
    field.ok_or_else(|| E::missing_field(name))
}
/// A validated id.
fn id<T: TryFrom<String, Error = crate::IdError>, E: de::Error>(text: String) -> Result<T, E> {
    T::try_from(text).map_err(E::custom)
}
/// A token status by name.
fn token_status<E: de::Error>(text: &str) -> Result<TokenStatus, E> {
    match text {
        "active" => Ok(TokenStatus::Active),
        "complete" => Ok(TokenStatus::Complete),
        "cancelled" => Ok(TokenStatus::Cancelled),
        other => Err(E::unknown_variant(
            other,
            &["active", "complete", "cancelled"],
        )),
    }
}

/// A mutation's field names, matched without allocating.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum Field {
    Op,
    Ctx,
    Set,
    Remove,
    Id,
    Ip,
    Scope,
    Value,
    Parent,
    Status,
}

/// The `op` tag.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Op {
    SetCtx,
    PatchCtx,
    AddToken,
    RemoveToken,
    UpdateToken,
    EnterScope,
    ExitScope,
    CancelScope,
    IncrementStepCount,
    SetMetadata,
    SetCaseStatus,
}

impl Fields {
    /// The field names present, for refusing those an op does not take.
    fn present(&self) -> impl Iterator<Item = &'static str> + '_ {
        [
            ("ctx", self.ctx.is_some()),
            ("set", self.set.is_some()),
            ("remove", self.remove.is_some()),
            ("id", self.id.is_some()),
            ("ip", self.ip.is_some()),
            ("scope", self.scope.is_some()),
            ("value", self.value.is_some()),
            ("parent", self.parent.is_some()),
            ("status", self.status.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, present)| present.then_some(name))
    }

    pub(crate) fn build<E: de::Error>(mut self) -> Result<Mutation, E> {
        let op = self.op.take().ok_or_else(|| E::missing_field("op"))?;
        let allowed: &[&str] = match op {
            Op::SetCtx => &["ctx"],
            Op::PatchCtx => &["set", "remove"],
            Op::AddToken => &["id", "ip", "scope", "value"],
            Op::RemoveToken | Op::ExitScope | Op::CancelScope => &["id"],
            Op::UpdateToken => &["id", "ip", "scope", "value", "status"],
            Op::EnterScope => &["id", "parent"],
            Op::IncrementStepCount => &[],
            Op::SetMetadata => &["value"],
            Op::SetCaseStatus => &["status"],
        };
        if let Some(field) = self.present().find(|field| !allowed.contains(field)) {
            return Err(E::custom(format!("unknown field `{field}` for op {op:?}")));
        }
        Ok(match op {
            Op::SetCtx => Mutation::SetCtx {
                ctx: need(self.ctx, "ctx")?,
            },
            Op::PatchCtx => Mutation::PatchCtx {
                set: self.set.unwrap_or_default(),
                remove: self.remove.unwrap_or_default(),
            },
            Op::AddToken => Mutation::AddToken {
                id: id(need(self.id, "id")?)?,
                ip: need(self.ip, "ip")?,
                scope: id(need(self.scope, "scope")?)?,
                value: self.value.unwrap_or_default(),
            },
            Op::RemoveToken => Mutation::RemoveToken {
                id: id(need(self.id, "id")?)?,
            },
            Op::UpdateToken => Mutation::UpdateToken(TokenUpdate {
                id: id(need(self.id, "id")?)?,
                ip: self.ip,
                scope: self.scope.map(id).transpose()?,
                value: self.value,
                status: self.status.as_deref().map(token_status).transpose()?,
            }),
            Op::EnterScope => Mutation::EnterScope {
                id: id(need(self.id, "id")?)?,
                parent: id(need(self.parent, "parent")?)?,
            },
            Op::ExitScope => Mutation::ExitScope {
                id: id(need(self.id, "id")?)?,
            },
            Op::CancelScope => Mutation::CancelScope {
                id: id(need(self.id, "id")?)?,
            },
            Op::IncrementStepCount => Mutation::IncrementStepCount,
            Op::SetMetadata => Mutation::SetMetadata {
                value: need(self.value, "value")?,
            },
            Op::SetCaseStatus => Mutation::SetCaseStatus {
                status: match need(self.status, "status")?.as_str() {
                    "running" => CaseStatus::Running,
                    "done" => CaseStatus::Done,
                    "failed" => CaseStatus::Failed,
                    "cancelled" => CaseStatus::Cancelled,
                    other => {
                        return Err(E::unknown_variant(
                            other,
                            &["running", "done", "failed", "cancelled"],
                        ));
                    }
                },
            },
        })
    }
}

impl<'de> Deserialize<'de> for Mutation {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MutationVisitor;
        impl<'de> Visitor<'de> for MutationVisitor {
            type Value = Mutation;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mutation: a map tagged by \"op\"")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Mutation, A::Error> {
                let mut fields = Fields::default();
                while let Some(key) = map.next_key::<Field>()? {
                    match key {
                        Field::Op => put(&mut fields.op, map.next_value()?, "op")?,
                        Field::Ctx => put(&mut fields.ctx, map.next_value()?, "ctx")?,
                        Field::Set => put(&mut fields.set, map.next_value()?, "set")?,
                        Field::Remove => put(&mut fields.remove, map.next_value()?, "remove")?,
                        Field::Id => put(&mut fields.id, map.next_value()?, "id")?,
                        Field::Ip => put(&mut fields.ip, map.next_value()?, "ip")?,
                        Field::Scope => put(&mut fields.scope, map.next_value()?, "scope")?,
                        Field::Value => put(&mut fields.value, map.next_value()?, "value")?,
                        Field::Parent => put(&mut fields.parent, map.next_value()?, "parent")?,
                        Field::Status => put(&mut fields.status, map.next_value()?, "status")?,
                    }
                }
                fields.build()
            }
        }
        deserializer.deserialize_map(MutationVisitor)
    }
}

/// Fills a field's slot while decoding a map, refusing a second value for it.
pub(crate) fn put<T, E: de::Error>(slot: &mut Option<T>, value: T, name: &str) -> Result<(), E> {
    if slot.replace(value).is_some() {
        return Err(E::custom(format!("duplicate field `{name}`")));
    }
    Ok(())
}

/// A field that is present is `Some`, even when its value is null.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

impl Mutation {
    /// The mutation's `op` name, as in JSON and CBOR.
    pub fn kind(&self) -> &'static str {
        match self {
            Mutation::SetCtx { .. } => "set_ctx",
            Mutation::PatchCtx { .. } => "patch_ctx",
            Mutation::AddToken { .. } => "add_token",
            Mutation::RemoveToken { .. } => "remove_token",
            Mutation::UpdateToken(_) => "update_token",
            Mutation::EnterScope { .. } => "enter_scope",
            Mutation::ExitScope { .. } => "exit_scope",
            Mutation::CancelScope { .. } => "cancel_scope",
            Mutation::IncrementStepCount => "increment_step_count",
            Mutation::SetMetadata { .. } => "set_metadata",
            Mutation::SetCaseStatus { .. } => "set_case_status",
        }
    }

    /// An `add_token` mutation.
    pub fn add_token(id: TokenId, ip: u64, scope: ScopeId, value: impl Into<Value>) -> Self {
        Mutation::AddToken {
            id,
            ip,
            scope,
            value: value.into(),
        }
    }

    /// A `patch_ctx` mutation that sets one key.
    pub fn set_key(key: impl Into<String>, value: impl Into<Value>) -> Self {
        // One insert: `Map::from([..])` would sort and bulk-build through a temporary Vec.
        let mut set = Map::new();
        set.insert(key.into(), value.into());
        Mutation::PatchCtx {
            set,
            remove: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC_EXAMPLE: &str = r#"[
      {"op": "set_ctx", "ctx": {"order": 42}},
      {"op": "patch_ctx", "set": {"paid": true}, "remove": ["draft"]},
      {"op": "enter_scope", "id": "s1", "parent": "root"},
      {"op": "add_token", "id": "t1", "ip": 0, "scope": "s1", "value": null},
      {"op": "update_token", "id": "t1", "ip": 7, "status": "complete"},
      {"op": "remove_token", "id": "t1"},
      {"op": "exit_scope", "id": "s1"},
      {"op": "cancel_scope", "id": "s2"},
      {"op": "increment_step_count"},
      {"op": "set_metadata", "value": {"owner": "billing"}},
      {"op": "set_case_status", "status": "done"}
    ]"#;

    #[test]
    fn parses_every_kind_of_the_json_form() {
        let mutations: Vec<Mutation> = serde_json::from_str(SPEC_EXAMPLE).unwrap();
        let kinds: Vec<&str> = mutations.iter().map(Mutation::kind).collect();
        assert_eq!(
            kinds,
            [
                "set_ctx",
                "patch_ctx",
                "enter_scope",
                "add_token",
                "update_token",
                "remove_token",
                "exit_scope",
                "cancel_scope",
                "increment_step_count",
                "set_metadata",
                "set_case_status"
            ]
        );
        let Mutation::UpdateToken(update) = &mutations[4] else {
            panic!("not update_token")
        };
        assert_eq!(update.ip, Some(7));
        assert_eq!(update.status, Some(TokenStatus::Complete));
        assert_eq!((update.scope.as_ref(), update.value.as_ref()), (None, None));
    }

    #[test]
    fn json_and_cbor_round_trip() {
        let mutations: Vec<Mutation> = serde_json::from_str(SPEC_EXAMPLE).unwrap();
        let json = serde_json::to_string(&mutations).unwrap();
        assert_eq!(
            serde_json::from_str::<Vec<Mutation>>(&json).unwrap(),
            mutations
        );
        let mut cbor = Vec::new();
        ciborium::into_writer(&mutations, &mut cbor).unwrap();
        assert_eq!(
            ciborium::from_reader::<Vec<Mutation>, _>(cbor.as_slice()).unwrap(),
            mutations
        );
    }

    #[test]
    fn update_token_distinguishes_null_value_from_absent() {
        let set_null: Mutation =
            serde_json::from_str(r#"{"op":"update_token","id":"t","value":null}"#).unwrap();
        let Mutation::UpdateToken(update) = set_null else {
            panic!()
        };
        assert_eq!(update.value, Some(Value::Null));
        let json = serde_json::to_string(&Mutation::UpdateToken(update)).unwrap();
        assert!(json.contains(r#""value":null"#), "{json}");
    }

    #[test]
    fn refuses_unknown_ops_fields_and_bad_ids() {
        for bad in [
            r#"{"op":"launch_rocket"}"#,
            r#"{"op":"remove_token","id":"t","extra":1}"#,
            r#"{"op":"update_token","id":"t","stauts":"complete"}"#,
            r#"{"op":"remove_token","id":"a.b"}"#,
            r#"{"op":"add_token","id":"t","ip":-1,"scope":"root"}"#,
            r#"{"op":"set_case_status","status":"paused"}"#,
            r#"{"id":"t"}"#,
            r#"{"op":"add_token","id":"t","ip":0,"scope":"root","parent":"root"}"#,
            r#"{"op":"remove_token","id":"t","id":"u"}"#,
            r#"{"op":"set_metadata"}"#,
            r#"{"op":"update_token","id":"t","status":"paused"}"#,
        ] {
            assert!(
                serde_json::from_str::<Mutation>(bad).is_err(),
                "{bad} parsed"
            );
        }
    }
}

//! [`Mutation`]: one change to a case's state, as plain data.
//!
//! The serde form is the JSON form of commit files and the CBOR form inside events: a map
//! tagged by `op`. Unknown fields are refused, so a typo in a commit file is an error, not a
//! silently ignored change.

use serde::{Deserialize, Deserializer, Serialize};

use crate::id::{ScopeId, TokenId};
use crate::state::{CaseStatus, TokenStatus};
use crate::value::{Map, Value};

/// One change to a case's state. See the validation rules in [`crate::validate`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
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
        Mutation::PatchCtx {
            set: Map::from([(key.into(), value.into())]),
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
        ] {
            assert!(
                serde_json::from_str::<Mutation>(bad).is_err(),
                "{bad} parsed"
            );
        }
    }
}

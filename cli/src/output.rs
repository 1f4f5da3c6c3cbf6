//! How states, receipts and events are printed: JSON for `--json`, lines for people.

use std::fmt::Write;

use serde_json::{Value as Json, json};
use wfstate_projector::Quarantine;
use wfstate_store::{CaseState, Position, Receipt, Value};

fn value_json(value: &Value) -> Json {
    serde_json::to_value(value).unwrap_or(Json::Null)
}

/// The state as the JSON object of `show --json` and `replay --json`.
pub fn state_json(state: &CaseState, position: Position, quarantine: Option<&Quarantine>) -> Json {
    let tokens: Vec<Json> = state
        .tokens
        .values()
        .map(|token| {
            json!({
                "id": token.id.as_str(),
                "ip": token.ip,
                "scope": token.scope.as_str(),
                "status": token.status.as_str(),
                "value": value_json(&token.value),
            })
        })
        .collect();
    let scopes: Vec<Json> = state
        .scopes
        .values()
        .map(|scope| {
            json!({
                "id": scope.id.as_str(),
                "parent": scope.parent.as_str(),
                "status": scope.status.as_str(),
                "entered_at_ms": scope.entered_at_ms,
            })
        })
        .collect();
    let mut object = json!({
        "case_id": state.case_id.as_str(),
        "version": state.version,
        "position": position,
        "status": state.status.as_str(),
        "step_count": state.step_count,
        "ctx": value_json(&Value::Map(state.ctx.clone())),
        "metadata": value_json(&state.metadata),
        "state_hash": state.hash().to_hex(),
        "tokens": tokens,
        "scopes": scopes,
        "created_at_ms": state.created_at_ms,
        "last_commit_at_ms": state.last_commit_at_ms,
    });
    if let (Some(quarantine), Some(map)) = (quarantine, object.as_object_mut()) {
        map.insert(
            "quarantine".into(),
            json!({"position": quarantine.position, "code": quarantine.code, "reason": quarantine.reason}),
        );
    }
    object
}

/// The state for people.
pub fn state_text(
    state: &CaseState,
    position: Position,
    quarantine: Option<&Quarantine>,
) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "case {}  version {}  position {}  status {}  steps {}",
        state.case_id,
        state.version,
        position,
        state.status.as_str(),
        state.step_count
    );
    let _ = writeln!(text, "state_hash {}", state.hash());
    if let Some(quarantine) = quarantine {
        let _ = writeln!(
            text,
            "QUARANTINED at position {} ({}): {}",
            quarantine.position, quarantine.code, quarantine.reason
        );
    }
    let _ = writeln!(text, "ctx {}", value_json(&Value::Map(state.ctx.clone())));
    let _ = writeln!(text, "metadata {}", value_json(&state.metadata));
    for scope in state.scopes.values() {
        let _ = writeln!(
            text,
            "scope {}  {}  parent {}",
            scope.id,
            scope.status.as_str(),
            scope.parent
        );
    }
    for token in state.tokens.values() {
        let _ = writeln!(
            text,
            "token {}  {}  ip {}  scope {}  value {}",
            token.id,
            token.status.as_str(),
            token.ip,
            token.scope,
            value_json(&token.value)
        );
    }
    text
}

/// A receipt as JSON.
pub fn receipt_json(receipt: &Receipt) -> Json {
    serde_json::to_value(receipt).unwrap_or(Json::Null)
}

/// A receipt on one line.
pub fn receipt_text(receipt: &Receipt) -> String {
    format!(
        "{} v{} position {} commit {} mutations {} event {} prev {} state {}",
        receipt.case_id,
        receipt.version,
        receipt.position,
        receipt.commit_id,
        receipt.mutation_count,
        receipt.event_hash,
        receipt.prev_event_hash,
        receipt.state_hash
    )
}

//! `diff CASE V1 V2`: what changed in a case between two versions: ctx keys set and removed,
//! tokens added, removed, moved and finished, scopes entered, exited and cancelled, and the
//! status, step count and metadata.

use serde_json::{Value as Json, json};
use wfstate_projector::Until;
use wfstate_store::{CaseId, CaseState, TokenStatus, Value, Version};

use crate::backend::Backend;
use crate::commands::print_json;
use crate::error::CliError;
use crate::stdout::out;

fn value_json(value: &Value) -> Json {
    serde_json::to_value(value).unwrap_or(Json::Null)
}

/// A case at version `version` (0: before its first event), rebuilt from its history.
pub async fn state_at<L: Backend>(
    log: &L,
    id: &CaseId,
    version: u64,
) -> Result<CaseState, CliError> {
    if version == 0 {
        return Ok(wfstate_store::Case::new(id.clone()).into_parts().0);
    }
    let replayed =
        crate::views::replayed_at(log, id, Until::Version(Version::new(version))).await?;
    Ok(replayed.state)
}

/// From one value to another.
fn change(from: Json, to: Json) -> Json {
    let mut object = serde_json::Map::new();
    object.insert("from".into(), from);
    object.insert("to".into(), to);
    Json::Object(object)
}

/// The changes from `old` to `new`, as the JSON object `diff --json` prints.
pub fn diff(old: &CaseState, new: &CaseState) -> Json {
    let mut ctx_set = serde_json::Map::new();
    for (key, value) in &new.ctx {
        match old.ctx.get(key) {
            Some(before) if before == value => {}
            Some(before) => {
                ctx_set.insert(key.clone(), change(value_json(before), value_json(value)));
            }
            // A key that was absent has no "from": not the same as one that held null.
            None => {
                ctx_set.insert(key.clone(), json!({"to": value_json(value)}));
            }
        }
    }
    let ctx_removed: Vec<&String> = old
        .ctx
        .keys()
        .filter(|key| !new.ctx.contains_key(*key))
        .collect();

    let (mut added, mut removed, mut moved, mut finished, mut revalued) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (id, token) in &new.tokens {
        let Some(before) = old.tokens.get(id) else {
            added.push(json!({"id": id.as_str(), "scope": token.scope.as_str(), "ip": token.ip}));
            continue;
        };
        if before.scope != token.scope || before.ip != token.ip {
            moved.push(json!({
                "id": id.as_str(),
                "scope": change(before.scope.as_str().into(), token.scope.as_str().into()),
                "ip": change(before.ip.into(), token.ip.into()),
            }));
        }
        if before.status == TokenStatus::Active && token.status != TokenStatus::Active {
            finished.push(json!({"id": id.as_str(), "status": token.status.as_str()}));
        }
        if before.value != token.value {
            revalued.push(json!({
                "id": id.as_str(),
                "value": change(value_json(&before.value), value_json(&token.value)),
            }));
        }
    }
    for id in old.tokens.keys().filter(|id| !new.tokens.contains_key(*id)) {
        removed.push(json!(id.as_str()));
    }

    let entered: Vec<Json> = new
        .scopes
        .values()
        .filter(|scope| !old.scopes.contains_key(&scope.id))
        .map(|scope| json!({"id": scope.id.as_str(), "parent": scope.parent.as_str()}))
        .collect();
    let exited: Vec<&str> = old
        .scopes
        .keys()
        .filter(|id| !new.scopes.contains_key(*id))
        .map(wfstate_store::ScopeId::as_str)
        .collect();
    let changed_scopes: Vec<Json> = new
        .scopes
        .values()
        .filter_map(|scope| {
            let before = old.scopes.get(&scope.id)?;
            (before.status != scope.status).then(|| {
                json!({
                    "id": scope.id.as_str(),
                    "status": change(before.status.as_str().into(), scope.status.as_str().into()),
                })
            })
        })
        .collect();

    let field = |differs: bool, from: Json, to: Json| {
        if differs {
            change(from, to)
        } else {
            Json::Null
        }
    };
    json!({
        "case_id": new.case_id.as_str(),
        "from_version": old.version,
        "to_version": new.version,
        "ctx": {"set": ctx_set, "removed": ctx_removed},
        "tokens": {
            "added": added, "removed": removed, "moved": moved, "finished": finished,
            "value_changed": revalued,
        },
        "scopes": {"entered": entered, "exited": exited, "status_changed": changed_scopes},
        "status": field(old.status != new.status, old.status.as_str().into(), new.status.as_str().into()),
        "step_count": field(old.step_count != new.step_count, old.step_count.into(), new.step_count.into()),
        "metadata": field(old.metadata != new.metadata, value_json(&old.metadata), value_json(&new.metadata)),
    })
}

fn items(value: &Json) -> &[Json] {
    value.as_array().map_or(&[], Vec::as_slice)
}

/// The changes for people, one a line; none: a line saying so.
pub fn diff_text(diff: &Json) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(set) = diff["ctx"]["set"].as_object() {
        for (key, change) in set {
            match change.get("from") {
                Some(from) => lines.push(format!("ctx.{key}: {from} -> {}", change["to"])),
                None => lines.push(format!("ctx.{key}: set to {}", change["to"])),
            }
        }
    }
    for key in items(&diff["ctx"]["removed"]) {
        lines.push(format!("ctx.{}: removed", key.as_str().unwrap_or_default()));
    }
    for field in ["status", "step_count", "metadata"] {
        let change = &diff[field];
        if !change.is_null() {
            lines.push(format!("{field}: {} -> {}", change["from"], change["to"]));
        }
    }
    let tokens = &diff["tokens"];
    for token in items(&tokens["added"]) {
        lines.push(format!(
            "token {} added in scope {} at ip {}",
            token["id"].as_str().unwrap_or_default(),
            token["scope"].as_str().unwrap_or_default(),
            token["ip"]
        ));
    }
    for token in items(&tokens["moved"]) {
        lines.push(format!(
            "token {} moved: scope {} -> {}, ip {} -> {}",
            token["id"].as_str().unwrap_or_default(),
            token["scope"]["from"].as_str().unwrap_or_default(),
            token["scope"]["to"].as_str().unwrap_or_default(),
            token["ip"]["from"],
            token["ip"]["to"]
        ));
    }
    for token in items(&tokens["finished"]) {
        lines.push(format!(
            "token {} finished: {}",
            token["id"].as_str().unwrap_or_default(),
            token["status"].as_str().unwrap_or_default()
        ));
    }
    for token in items(&tokens["value_changed"]) {
        lines.push(format!(
            "token {} value: {} -> {}",
            token["id"].as_str().unwrap_or_default(),
            token["value"]["from"],
            token["value"]["to"]
        ));
    }
    for token in items(&tokens["removed"]) {
        lines.push(format!(
            "token {} removed",
            token.as_str().unwrap_or_default()
        ));
    }
    let scopes = &diff["scopes"];
    for scope in items(&scopes["entered"]) {
        lines.push(format!(
            "scope {} entered in {}",
            scope["id"].as_str().unwrap_or_default(),
            scope["parent"].as_str().unwrap_or_default()
        ));
    }
    for scope in items(&scopes["status_changed"]) {
        lines.push(format!(
            "scope {}: {} -> {}",
            scope["id"].as_str().unwrap_or_default(),
            scope["status"]["from"].as_str().unwrap_or_default(),
            scope["status"]["to"].as_str().unwrap_or_default()
        ));
    }
    for scope in items(&scopes["exited"]) {
        lines.push(format!(
            "scope {} exited",
            scope.as_str().unwrap_or_default()
        ));
    }
    lines
}

/// What changed in `id` from version `from` to version `to` (either may be the larger; 0 is
/// the case before its first event), as `diff --json` prints it.
pub async fn between<L: Backend>(
    log: &L,
    id: &CaseId,
    from: u64,
    to: u64,
) -> Result<Json, CliError> {
    if from == 0 && to == 0 {
        return Err(CliError::bad_input(
            "give two versions, at least one above 0 (0 is the case before its first event)",
        ));
    }
    // The later version first: a case or version that is not there is reported as such.
    let (old, new) = if from <= to {
        let new = state_at(log, id, to).await?;
        (state_at(log, id, from).await?, new)
    } else {
        let old = state_at(log, id, from).await?;
        (old, state_at(log, id, to).await?)
    };
    Ok(diff(&old, &new))
}

pub async fn run<L: Backend>(
    log: &L,
    case: &str,
    from: u64,
    to: u64,
    json: bool,
) -> Result<u8, CliError> {
    let id = crate::commands::case_id(case)?;
    let diff = between(log, &id, from, to).await?;
    if json {
        print_json(&diff);
        return Ok(0);
    }
    out!("case {id}: version {from} -> {to}");
    let lines = diff_text(&diff);
    if lines.is_empty() {
        out!("no change");
    }
    for line in lines {
        out!("  {line}");
    }
    Ok(0)
}

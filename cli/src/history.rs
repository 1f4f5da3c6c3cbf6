//! `history`: a case's events as a table (version, time, writer, what changed), or one JSON
//! object a line with its hashes; `--since` and `--limit` pick events, `--follow` waits for
//! new ones.

use clap::Args;
use futures::TryStreamExt;
use serde_json::json;
use wfstate_events::StoredEvent;
use wfstate_store::{CaseId, Event, Hash, Mutation, Position};

use crate::backend::Backend;
use crate::commands::{case_id, print_json};
use crate::error::CliError;
use crate::stdout::out;
use crate::time::{format_ms, parse_instant};

/// Which events `history` shows.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The case.
    case: String,
    /// Only events committed at or after T: RFC 3339, a date, or a span back from now (2h).
    #[arg(long, value_name = "T")]
    since: Option<String>,
    /// At most N events, the first that match.
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Then keep printing the case's new events as they are committed (until interrupted).
    #[arg(long, conflicts_with = "limit")]
    follow: bool,
}

/// What a mutation changes, in a few words: `patch_ctx(set paid, amount; remove note)`.
pub fn summary(mutation: &Mutation) -> String {
    let kind = mutation.kind();
    match mutation {
        Mutation::SetCtx { .. } | Mutation::IncrementStepCount | Mutation::SetMetadata { .. } => {
            kind.to_owned()
        }
        Mutation::PatchCtx { set, remove } => {
            let mut parts = Vec::new();
            if !set.is_empty() {
                let keys: Vec<&str> = set.keys().map(String::as_str).collect();
                parts.push(format!("set {}", keys.join(", ")));
            }
            if !remove.is_empty() {
                parts.push(format!("remove {}", remove.join(", ")));
            }
            format!("{kind}({})", parts.join("; "))
        }
        Mutation::AddToken { id, scope, .. } => format!("{kind}({id} in {scope})"),
        Mutation::RemoveToken { id } => format!("{kind}({id})"),
        Mutation::ExitScope { id } | Mutation::CancelScope { id } => format!("{kind}({id})"),
        Mutation::UpdateToken(update) => {
            let mut changed = Vec::new();
            if let Some(ip) = update.ip {
                changed.push(format!("ip {ip}"));
            }
            if let Some(scope) = &update.scope {
                changed.push(format!("scope {scope}"));
            }
            if update.value.is_some() {
                changed.push("value".to_owned());
            }
            if let Some(status) = update.status {
                changed.push(status.as_str().to_owned());
            }
            format!("{kind}({}: {})", update.id, changed.join(", "))
        }
        Mutation::EnterScope { id, parent } => format!("{kind}({id} in {parent})"),
        Mutation::SetCaseStatus { status } => format!("{kind}({})", status.as_str()),
        // A mutation kind this version does not summarise is named.
        _ => kind.to_owned(),
    }
}

/// Prints events, a table (its header above the first row) or JSON lines.
struct Printer {
    json: bool,
    header_printed: bool,
}

impl Printer {
    fn print(&mut self, stored: &StoredEvent) {
        if !self.json && !self.header_printed {
            self.header_printed = true;
            out!(
                "{:>7}  {:>8}  {:<24}  {:<14}  MUTATIONS",
                "VERSION",
                "POSITION",
                "TIME",
                "WRITER"
            );
        }
        print(stored, self.json);
    }
}

/// One event as `history --json` prints it (and the console's API answers it): its case,
/// version, position, commit id, time, writer, mutations with a summary of each, and its
/// hashes.
pub fn event_json(stored: &StoredEvent) -> serde_json::Value {
    let event_hash = Hash::of(&stored.payload).to_hex();
    match Event::decode(&stored.payload) {
        Ok(event) => json!({
            "case_id": event.case_id.as_str(),
            "version": event.version,
            "position": stored.position,
            "commit_id": event.commit_id.to_string(),
            "committed_at_ms": event.committed_at_ms,
            "committed_at": format_ms(event.committed_at_ms),
            "writer": event.writer,
            "mutations": serde_json::to_value(&event.mutations).unwrap_or_default(),
            "summary": event.mutations.iter().map(summary).collect::<Vec<_>>(),
            "event_hash": event_hash,
            "prev_event_hash": event.prev_event_hash.to_hex(),
            "state_hash": event.state_hash.to_hex(),
        }),
        Err(error) => json!({
            "case_id": stored.case_id,
            "position": stored.position,
            "event_hash": event_hash,
            "error": error.to_string(),
        }),
    }
}

/// Prints one event, a table row or a JSON line.
fn print(stored: &StoredEvent, json: bool) {
    if json {
        print_json(&event_json(stored));
        return;
    }
    match Event::decode(&stored.payload) {
        Ok(event) => {
            let summaries: Vec<String> = event.mutations.iter().map(summary).collect();
            out!(
                "{:>7}  {:>8}  {}  {:<14}  {}",
                event.version.get(),
                stored.position,
                format_ms(event.committed_at_ms),
                event.writer,
                summaries.join(" ")
            );
        }
        Err(error) => out!("{:>7}  {:>8}  UNDECODABLE: {error}", "?", stored.position),
    }
}

/// Whether `stored` was committed at or after `since` (an undecodable event is shown).
fn since_ok(stored: &StoredEvent, since: Option<u64>) -> bool {
    since.is_none_or(|since| {
        Event::decode(&stored.payload).map_or(true, |event| event.committed_at_ms >= since)
    })
}

pub async fn history<L: Backend>(log: &L, args: &HistoryArgs, json: bool) -> Result<u8, CliError> {
    let id: CaseId = case_id(&args.case)?;
    let since = args
        .since
        .as_deref()
        .map(|text| parse_instant("--since", text))
        .transpose()?;
    if args.limit == Some(0) {
        return Err(CliError::bad_input("--limit must be at least 1"));
    }
    let limit = args.limit.unwrap_or(usize::MAX);
    let mut printer = Printer {
        json,
        header_printed: false,
    };
    let mut events = log.history(&id, Position::ZERO).await?;
    let (mut seen, mut shown, mut last) = (0_u64, 0_usize, Position::ZERO);
    while let Some(stored) = events.try_next().await? {
        seen += 1;
        last = stored.position;
        if shown < limit && since_ok(&stored, since) {
            printer.print(&stored);
            shown += 1;
        }
    }
    drop(events);
    if seen == 0 {
        return Err(CliError::case_not_found(&id));
    }
    if !args.follow {
        return Ok(0);
    }
    let mut events = log.follow(last).await?;
    while let Some(stored) = events.try_next().await? {
        if stored.case_id == id.as_str() {
            printer.print(&stored);
        }
    }
    Ok(0)
}

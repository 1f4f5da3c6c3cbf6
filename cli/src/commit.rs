//! `commit`: a batch of mutations from a file or stdin, for shell workers. `--retry N`
//! validates the same mutations again on the newest version after a lost race (what
//! `Workspace::transact` does); `--expect-version V` commits only onto version V;
//! `--commit-id ID` is the commit's idempotency key: run again with it, the command prints the
//! first receipt and stores nothing.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};

use clap::Args;
use wfstate_events::{CommitError, EventLog, RetryPolicy, Workspace};
use wfstate_store::{CaseId, CommitId, CommitMeta, Mutation, Receipt, Version};

use crate::backend::Backend;
use crate::commands::{case_id, print_receipt};
use crate::error::{CONFLICT, CliError};

/// `commit --help` after the options: examples and the mutation ops.
pub const HELP: &str = "\
Examples:
  wfstate commit order-42 --file step.json
  echo '[{\"op\": \"increment_step_count\"}]' | wfstate commit order-42 --retry 5
  wfstate commit order-42 --expect-version 7 --file step.json
  wfstate commit order-42 --commit-id \"$(uuidgen)\" --file step.json   # safe to run again

After exit 4 (the outcome is not known yet), run the same command again with the
--commit-id it printed: the commit is stored at most once, and its receipt printed.

Mutations (a JSON array of objects tagged by \"op\"):
  {\"op\": \"set_ctx\", \"ctx\": {...}}                       replace the ctx
  {\"op\": \"patch_ctx\", \"set\": {...}, \"remove\": [...]}    set and remove top-level ctx keys
  {\"op\": \"add_token\", \"id\": T, \"ip\": N, \"scope\": S, \"value\": V}
  {\"op\": \"update_token\", \"id\": T, \"ip\"?: N, \"scope\"?: S, \"value\"?: V,
   \"status\"?: \"complete\" | \"cancelled\"}             fields given change
  {\"op\": \"remove_token\", \"id\": T}
  {\"op\": \"enter_scope\", \"id\": S, \"parent\": P}
  {\"op\": \"exit_scope\", \"id\": S}
  {\"op\": \"cancel_scope\", \"id\": S}
  {\"op\": \"increment_step_count\"}
  {\"op\": \"set_metadata\", \"value\": V}
  {\"op\": \"set_case_status\", \"status\": \"done\" | \"failed\" | \"cancelled\"}";

/// What `commit` commits, and how.
#[derive(Debug, Args)]
pub struct CommitArgs {
    /// The case.
    case: String,
    /// A JSON array of mutations; `-` or absent: stdin.
    #[arg(long)]
    file: Option<PathBuf>,
    /// After a lost race with another writer, validate the same mutations again on the
    /// newest version and commit, up to N more times.
    #[arg(long, value_name = "N", conflicts_with = "expect_version")]
    retry: Option<u32>,
    /// Commit only if the case is at version V (it was read there); otherwise exit 3 with
    /// nothing committed.
    #[arg(long, value_name = "V")]
    expect_version: Option<u64>,
    /// The commit's id, a UUID the caller chose (its idempotency key): run again with the
    /// same id, on any store and however late, the command prints the first receipt and
    /// stores nothing. Default: a new one, printed when the outcome is not known.
    #[arg(long, value_name = "ID", value_parser = commit_id)]
    commit_id: Option<CommitId>,
}

/// A commit id given on the command line: a UUID.
pub fn commit_id(text: &str) -> Result<CommitId, String> {
    text.parse().map_err(|_| {
        format!(
            "{text:?} is not a commit id: give a UUID (`uuidgen` makes one), the same on every \
             run of the same commit"
        )
    })
}

/// The metadata of the command's commit: the caller's commit id, or a new one.
pub fn meta<L: EventLog>(workspace: &Workspace<L>, commit_id: Option<CommitId>) -> CommitMeta {
    let mut meta = workspace.meta();
    if let Some(commit_id) = commit_id {
        meta.commit_id = commit_id;
    }
    meta
}

/// Prints the receipt of a commit that is stored: a failure to print it now is status 5
/// (done, unwritten), never one that says nothing was done.
pub fn print_stored(receipt: &Receipt, json: bool) {
    crate::stdout::stored(format!(
        "commit {} is stored as version {} of case {}",
        receipt.commit_id, receipt.version, receipt.case_id
    ));
    print_receipt(receipt, json);
}

/// Reads mutations from a file (or stdin for `-` / none).
fn read_mutations(file: Option<&Path>) -> Result<Vec<Mutation>, CliError> {
    let (name, text) = match file {
        Some(path) if path != Path::new("-") => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| CliError::bad_input(format!("cannot read {}: {e}", path.display())))?;
            (path.display().to_string(), text)
        }
        _ => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                eprintln!(
                    "wfstate: reading the mutations (a JSON array) from stdin; end with Ctrl-D, \
                     or give --file FILE (`wfstate commit --help` lists the ops)"
                );
            }
            let mut text = String::new();
            stdin
                .lock()
                .read_to_string(&mut text)
                .map_err(|e| CliError::bad_input(format!("cannot read stdin: {e}")))?;
            ("stdin".to_owned(), text)
        }
    };
    let items: Vec<serde_json::Value> = serde_json::from_str(&text).map_err(|e| {
        CliError::bad_input(format!(
            "invalid mutations JSON in {name}: {e} (expected an array of objects tagged by \
             \"op\"; `wfstate commit --help` lists them)"
        ))
    })?;
    if items.is_empty() {
        return Err(CliError::bad_input(format!(
            "no mutations in {name}: give a JSON array of at least one mutation; nothing was \
             committed"
        )));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            let op = item
                .get("op")
                .and_then(serde_json::Value::as_str)
                .map(|op| format!(" ({op})"))
                .unwrap_or_default();
            serde_json::from_value(item).map_err(|e| {
                CliError::bad_input(format!(
                    "mutation {index}{op} in {name}: {e}; nothing was committed \
                     (`wfstate commit --help` lists the ops and their fields)"
                ))
            })
        })
        .collect()
}

/// A lost race, in versions, with what to do.
fn conflict(id: &CaseId, read: Version, now: Option<Version>, retry: bool) -> CliError {
    let now = now.map_or_else(
        || "another writer committed first".to_owned(),
        |now| format!("another writer committed first and it is now at version {now}"),
    );
    let hint = if retry {
        "every retry lost too; run it again later"
    } else {
        "run it again, or give --retry N to validate these mutations again on the newest version"
    };
    CliError::new(
        CONFLICT,
        format!(
            "conflict on case {id}: it was at version {read} when read, {now}; nothing was \
             committed; {hint}"
        ),
    )
}

pub async fn commit<L: Backend>(log: &L, args: &CommitArgs, json: bool) -> Result<u8, CliError> {
    let id = case_id(&args.case)?;
    let mutations = read_mutations(args.file.as_deref())?;
    let attempts = args.retry.unwrap_or(0).saturating_add(1);
    let workspace = Workspace::new(log.clone())
        .with_retry(RetryPolicy::default().with_transact_attempts(attempts));
    let meta = meta(&workspace, args.commit_id);
    let mut handle = workspace.load(&id).await?;
    let read = handle.state().version;
    // A commit id the case holds is a commit that landed: its receipt, whatever the version.
    let landed = handle.known(meta.commit_id).is_some();
    if let Some(expected) = args.expect_version
        && read.get() != expected
        && !landed
    {
        return Err(CliError::new(
            CONFLICT,
            format!(
                "case {id} is at version {read}, not {expected} (--expect-version); nothing \
                 was committed"
            ),
        ));
    }
    let result = workspace
        .transact_on_with_meta(&mut handle, meta, |case| {
            for mutation in &mutations {
                case.buffer(mutation.clone());
            }
        })
        .await;
    match result {
        Ok((receipt, attempts)) => {
            if landed {
                crate::stdout::say(format_args!(
                    "wfstate: commit {} was stored before, as version {}: nothing stored now",
                    receipt.commit_id, receipt.version
                ));
            } else if attempts > 1 {
                crate::stdout::say(format_args!(
                    "wfstate: committed on attempt {attempts}: validated again on version {}",
                    receipt.version.get() - 1
                ));
            }
            print_stored(&receipt, json);
            Ok(0)
        }
        Err(CommitError::Conflict { .. }) => {
            let now = workspace
                .load(&id)
                .await
                .ok()
                .map(|handle| handle.state().version);
            Err(conflict(&id, read, now, args.retry.is_some()))
        }
        Err(error) => Err(error.into()),
    }
}

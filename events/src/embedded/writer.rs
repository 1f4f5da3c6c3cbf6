//! The writer thread: every append waiting is taken into one transaction (group commit), and
//! each is answered once the transaction is durable.

use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};

use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{oneshot, watch};

use super::schema::{shared_sqlite_error, unsigned};
use wfstate_store::Position;

use crate::error::LogError;
use crate::log::AppendOutcome;

/// The most appends grouped into one transaction.
const GROUP_MAX: usize = 1024;

/// One append for the writer thread: a single event, or several events of one case (stored
/// together, contiguously, or not at all).
pub(crate) struct AppendRequest {
    pub case_id: String,
    pub expected: Position,
    /// Commit ids and payloads, in order.
    pub events: Vec<(String, Bytes)>,
    pub reply: oneshot::Sender<Result<AppendOutcome, LogError>>,
}

/// Takes every append waiting, commits them in one transaction, answers each once the
/// transaction is durable; ends when every sender is gone.
pub(crate) fn write_loop(
    mut connection: Connection,
    path: &Path,
    requests: &mpsc::Receiver<AppendRequest>,
    notify: &watch::Sender<u64>,
) {
    while let Ok(first) = requests.recv() {
        let mut group = vec![first];
        while group.len() < GROUP_MAX {
            match requests.try_recv() {
                Ok(request) => group.push(request),
                Err(_) => break,
            }
        }
        match append_group(&mut connection, &group) {
            Ok((outcomes, last)) => {
                if let Some(last) = last {
                    notify.send_replace(last);
                }
                for (request, outcome) in group.into_iter().zip(outcomes) {
                    let _ = request.reply.send(Ok(outcome));
                }
            }
            Err(error) => {
                // The transaction did not commit: nothing of the group is stored.
                let error = Arc::new(error);
                for request in group {
                    let what = format!("appending to case {}", request.case_id);
                    let _ = request
                        .reply
                        .send(Err(shared_sqlite_error(path, &what, &error)));
                }
            }
        }
    }
}

/// The outcome of each append of a group, and the position of the last event stored.
type GroupOutcome = (Vec<AppendOutcome>, Option<u64>);

fn append_group(
    connection: &mut Connection,
    group: &[AppendRequest],
) -> rusqlite::Result<GroupOutcome> {
    let transaction =
        connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut outcomes = Vec::with_capacity(group.len());
    let mut last = None;
    for request in group {
        let outcome = append_one(&transaction, request)?;
        if let AppendOutcome::Appended { position } = outcome {
            last = Some(position.get());
        }
        outcomes.push(outcome);
    }
    transaction.commit()?;
    Ok((outcomes, last))
}

fn append_one(
    transaction: &rusqlite::Transaction<'_>,
    request: &AppendRequest,
) -> rusqlite::Result<AppendOutcome> {
    let mut stored = Vec::new();
    for (commit_id, _) in &request.events {
        let existing: Option<i64> = transaction
            .prepare_cached("SELECT position FROM events WHERE commit_id = ?1")?
            .query_row([commit_id], |row| row.get(0))
            .optional()?;
        if let Some(position) = existing {
            stored.push(unsigned(position)?);
        }
    }
    if let Some(&position) = stored.first() {
        // As JetStream refuses an atomic batch holding commit ids it has, without saying
        // where: nothing of it is stored again, and the caller finds out by reading the case.
        let position = (request.events.len() == 1).then_some(Position::new(position));
        return Ok(AppendOutcome::Duplicate { position });
    }
    let last: Option<(i64, i64)> = transaction
        .prepare_cached(
            "SELECT position, version FROM events WHERE case_id = ?1 ORDER BY version DESC LIMIT 1",
        )?
        .query_row([&request.case_id], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    let (last_position, mut version) = last.unwrap_or((0, 0));
    let last_position = unsigned(last_position)?;
    if last_position != request.expected.get() {
        return Ok(AppendOutcome::Conflict {
            actual: Some(Position::new(last_position)),
        });
    }
    for (commit_id, payload) in &request.events {
        version += 1;
        transaction
            .prepare_cached(
                "INSERT INTO events (case_id, version, commit_id, payload) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![
                request.case_id,
                version,
                commit_id,
                payload.as_ref()
            ])?;
    }
    Ok(AppendOutcome::Appended {
        position: Position::new(unsigned(transaction.last_insert_rowid())?),
    })
}

/// Starts the writer thread on `connection`.
pub(crate) fn start(
    connection: Connection,
    path: PathBuf,
    notify: watch::Sender<u64>,
) -> std::io::Result<mpsc::Sender<AppendRequest>> {
    let (appends, requests) = mpsc::channel();
    std::thread::Builder::new()
        .name("wfstate-embedded-writer".into())
        .spawn(move || write_loop(connection, &path, &requests, &notify))?;
    Ok(appends)
}

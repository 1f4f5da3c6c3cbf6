//! The embedded backend: one SQLite file (WAL), the default when no NATS URL is given.
//!
//! Table `events`: `position` (integer primary key), `case_id`, `version` (the case's own
//! count, unique with `case_id`), `commit_id` (unique: a dedup that never expires),
//! `payload`. Appends go to one writer thread that groups every append waiting at the time
//! into one transaction (group commit): concurrency raises throughput instead of paying one
//! fsync per commit. The expected-position check runs inside that transaction. An append is
//! acknowledged only after its transaction committed, with `synchronous = FULL` by default.

mod schema;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{oneshot, watch};
use wfstate_store::{CaseId, CommitId, Position};

pub use schema::SQLITE_SCHEMA_VERSION;
pub(crate) use schema::storage_failure;
use schema::{open_read_only, open_writable, sqlite_error, unsigned};
use writer::AppendRequest;

use crate::error::{LogError, LogErrorKind};
use crate::log::{AppendOutcome, EventLog, EventStream, StoredEvent};

/// The file inside the data directory.
pub const DATABASE_FILE: &str = "wfstate.sqlite3";

/// Rows read per query when streaming.
const PAGE_ROWS: i64 = 512;

/// How the embedded log is opened. Start from [`EmbeddedConfig::new`] and set the fields that
/// differ.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EmbeddedConfig {
    /// The data directory (created if missing).
    pub data_dir: PathBuf,
    /// fsync every commit (`synchronous = FULL`). With `false`, `NORMAL`: a power loss may
    /// lose the newest acknowledged commits (never corrupt the file).
    pub fsync: bool,
    /// The largest payload accepted, in bytes.
    pub payload_size_max: usize,
    /// How often `follow` polls for events written by other processes.
    pub poll_interval: Duration,
    /// Open the file to read only: no directory or file is created, nothing is migrated, and
    /// appends are refused. For readers (audit, history, replay, export) run by a user who
    /// may only read the data directory.
    pub read_only: bool,
}

impl EmbeddedConfig {
    /// Defaults for `data_dir`: fsync on commit, 1 MiB payloads, 200 ms polling.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        EmbeddedConfig {
            data_dir: data_dir.into(),
            fsync: true,
            payload_size_max: 1024 * 1024,
            poll_interval: Duration::from_millis(200),
            read_only: false,
        }
    }
}

/// The embedded event log. Cheap to clone.
#[derive(Clone)]
pub struct EmbeddedLog {
    /// The writer thread's queue; `None` when opened read-only.
    appends: Option<mpsc::Sender<AppendRequest>>,
    /// The sender of `last_position` when no writer thread holds it (read-only).
    _unwritten: Option<Arc<watch::Sender<u64>>>,
    reader: Arc<Mutex<Connection>>,
    last_position: watch::Receiver<u64>,
    path: PathBuf,
    payload_size_max: usize,
    poll_interval: Duration,
}

impl std::fmt::Debug for EmbeddedLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedLog")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Makes the data directory, or says why it cannot be used.
fn create_data_dir(dir: &Path) -> Result<(), LogError> {
    std::fs::create_dir_all(dir).map_err(|error| {
        let (kind, hint) = match error.kind() {
            std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => (
                LogErrorKind::PermissionDenied,
                "this user may not create it; choose another --data-dir or give it access",
            ),
            std::io::ErrorKind::StorageFull => (LogErrorKind::NoSpace, "the disk is full"),
            _ => (
                LogErrorKind::Config,
                "it cannot be made a directory (is it, or a parent, a file?); choose another \
                 --data-dir",
            ),
        };
        LogError::new(kind, format!("data directory {}: {hint}", dir.display())).with_source(error)
    })
}

impl EmbeddedLog {
    /// Opens (or creates) the log in `config.data_dir` and starts its writer thread.
    ///
    /// # Errors
    /// [`LogErrorKind::Config`] or [`LogErrorKind::PermissionDenied`] when the directory or
    /// file cannot be made or opened, [`LogErrorKind::Corrupted`] for a file that is not a
    /// wfstate log, [`LogErrorKind::Config`] for a file written by a newer wfstate; each names
    /// the path and what to do.
    pub fn open(config: &EmbeddedConfig) -> Result<EmbeddedLog, LogError> {
        let path = config.data_dir.join(DATABASE_FILE);
        let reader = if config.read_only {
            open_read_only(&path)?
        } else {
            create_data_dir(&config.data_dir)?;
            open_writable(&path, config.fsync)?
        };
        let last = reader
            .query_row("SELECT COALESCE(MAX(position), 0) FROM events", [], |row| {
                unsigned(row.get(0)?)
            })
            .map_err(|e| sqlite_error(&path, "reading the last position", e))?;
        let (notify, last_position) = watch::channel(last);
        let (appends, unwritten) = if config.read_only {
            // Kept so that followers wait a poll interval for other processes' events,
            // rather than find the channel closed.
            (None, Some(Arc::new(notify)))
        } else {
            let writer = open_writable(&path, config.fsync)?;
            let appends = writer::start(writer, path.clone(), notify).map_err(|e| {
                LogError::new(
                    LogErrorKind::Unexpected,
                    format!("{}: cannot start the writer thread", path.display()),
                )
                .with_source(e)
            })?;
            (Some(appends), None)
        };
        Ok(EmbeddedLog {
            appends,
            _unwritten: unwritten,
            reader: Arc::new(Mutex::new(reader)),
            last_position,
            path,
            payload_size_max: config.payload_size_max,
            poll_interval: config.poll_interval,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A new connection to the file that may only read it, as a log opened with
    /// [`EmbeddedConfig::read_only`] reads: for readers of the other tables in it (the
    /// projector's views).
    ///
    /// # Errors
    /// As [`EmbeddedLog::open`] to read only.
    pub fn read_connection(&self) -> Result<Connection, LogError> {
        open_read_only(&self.path)
    }

    /// Runs a read on the reader connection, off the async threads.
    async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, LogError> {
        let reader = Arc::clone(&self.reader);
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            // A panic while the lock was held left no transaction open: reads keep none.
            let connection = reader
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            read(&connection).map_err(|e| sqlite_error(&path, "reading events", e))
        })
        .await
        .map_err(|e| {
            LogError::new(LogErrorKind::Unexpected, "the reading task failed").with_source(e)
        })?
    }

    /// Up to `limit` events after `after`, in position order, as stored now (no waiting):
    /// the projector's batches.
    ///
    /// # Errors
    /// [`LogError`] when the file cannot be read.
    pub async fn events_after(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, LogError> {
        let after = i64::try_from(after.get()).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |connection| all_after(connection, after, limit))
            .await
    }

    async fn page(&self, case: Option<String>, after: u64) -> Result<Vec<StoredEvent>, LogError> {
        self.read(move |connection| {
            let limit = PAGE_ROWS;
            let after = i64::try_from(after).unwrap_or(i64::MAX);
            if let Some(case) = &case {
                let from = version_at(connection, case, after)?;
                let mut statement = connection.prepare_cached(
                    "SELECT position, case_id, commit_id, payload FROM events
                     WHERE case_id = ?1 AND version > ?2 ORDER BY version LIMIT ?3",
                )?;
                statement
                    .query_map(params![case, from, limit], row_event)?
                    .collect()
            } else {
                all_after(connection, after, limit)
            }
        })
        .await
    }

    /// Streams events after `after` (of one case, or all), page by page; with `follow`, waits
    /// for new events instead of ending.
    fn stream(
        &self,
        case: Option<String>,
        after: u64,
        until: Option<u64>,
        follow: bool,
    ) -> EventStream {
        struct Cursor {
            log: EmbeddedLog,
            case: Option<String>,
            after: u64,
            buffered: std::collections::VecDeque<StoredEvent>,
        }
        let cursor = Cursor {
            log: self.clone(),
            case,
            after,
            buffered: std::collections::VecDeque::default(),
        };
        Box::pin(futures::stream::unfold(
            Some(cursor),
            move |cursor| async move {
                let mut cursor = cursor?;
                loop {
                    if let Some(event) = cursor.buffered.pop_front() {
                        if until.is_some_and(|until| event.position.get() > until) {
                            return None;
                        }
                        cursor.after = event.position.get();
                        return Some((Ok(event), Some(cursor)));
                    }
                    match cursor.log.page(cursor.case.clone(), cursor.after).await {
                        Err(error) => return Some((Err(error), None)),
                        Ok(page) if !page.is_empty() => cursor.buffered.extend(page),
                        Ok(_) if !follow => return None,
                        Ok(_) => {
                            let mut changed = cursor.log.last_position.clone();
                            // Woken by this process's writer, or by polling for other processes.
                            let _ =
                                tokio::time::timeout(cursor.log.poll_interval, changed.changed())
                                    .await;
                        }
                    }
                }
            },
        ))
    }
}

/// The version of the case's last event at or before `position` (0 if none).
///
/// A case's events are read by version, through the `(case_id, version)` index: within a case
/// versions rise with positions, and a second index by position would cost every append
/// another randomly placed page to write.
fn version_at(connection: &Connection, case: &str, position: i64) -> rusqlite::Result<i64> {
    if position <= 0 {
        return Ok(0);
    }
    // Usually `position` is one of the case's own events (a view's, or the last one read).
    let own: Option<i64> = connection
        .prepare_cached("SELECT version FROM events WHERE position = ?1 AND case_id = ?2")?
        .query_row(params![position, case], |row| row.get(0))
        .optional()?;
    if let Some(version) = own {
        return Ok(version);
    }
    connection
        .prepare_cached(
            "SELECT COALESCE(MAX(version), 0) FROM events WHERE case_id = ?1 AND position <= ?2",
        )?
        .query_row(params![case, position], |row| row.get(0))
}

/// Up to `limit` events of every case after `after`, in position order.
fn all_after(
    connection: &Connection,
    after: i64,
    limit: i64,
) -> rusqlite::Result<Vec<StoredEvent>> {
    connection
        .prepare_cached(
            "SELECT position, case_id, commit_id, payload FROM events
             WHERE position > ?1 ORDER BY position LIMIT ?2",
        )?
        .query_map(params![after, limit], row_event)?
        .collect()
}

fn row_event(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredEvent> {
    let commit_id: String = row.get(2)?;
    let payload: Vec<u8> = row.get(3)?;
    Ok(StoredEvent {
        position: Position::new(unsigned(row.get(0)?)?),
        case_id: row.get(1)?,
        commit_id: commit_id.parse().ok(),
        payload: Bytes::from(payload),
    })
}

impl EmbeddedLog {
    /// Hands one request to the writer thread and waits for its answer.
    async fn submit(
        &self,
        case_id: &CaseId,
        expected: Position,
        events: Vec<(String, Bytes)>,
    ) -> Result<AppendOutcome, LogError> {
        for (_, payload) in &events {
            LogError::check_size(payload, self.payload_size_max)?;
        }
        let (reply, answer) = oneshot::channel();
        let request = AppendRequest {
            case_id: case_id.to_string(),
            expected,
            events,
            reply,
        };
        let stopped = || {
            LogError::new(
                LogErrorKind::Unexpected,
                format!("{}: the writer thread has stopped", self.path.display()),
            )
        };
        let Some(appends) = &self.appends else {
            return Err(LogError::new(
                LogErrorKind::PermissionDenied,
                format!(
                    "{}: opened to read only; commit with a store opened to write",
                    self.path.display()
                ),
            ));
        };
        appends.send(request).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

impl EventLog for EmbeddedLog {
    async fn append(
        &self,
        case_id: &CaseId,
        commit_id: CommitId,
        expected_position: Position,
        payload: Bytes,
    ) -> Result<AppendOutcome, LogError> {
        self.submit(
            case_id,
            expected_position,
            vec![(commit_id.to_string(), payload)],
        )
        .await
    }

    async fn append_many(
        &self,
        case_id: &CaseId,
        events: &[(CommitId, Bytes)],
        expected_position: Position,
    ) -> Result<AppendOutcome, LogError> {
        assert!(!events.is_empty(), "the client sends no empty append");
        let events = events
            .iter()
            .map(|(commit_id, payload)| (commit_id.to_string(), payload.clone()))
            .collect();
        self.submit(case_id, expected_position, events).await
    }

    async fn last_event(&self, case_id: &CaseId) -> Result<Option<StoredEvent>, LogError> {
        let case_id = case_id.to_string();
        self.read(move |connection| {
            connection
                .prepare_cached(
                    "SELECT position, case_id, commit_id, payload FROM events
                     WHERE case_id = ?1 ORDER BY version DESC LIMIT 1",
                )?
                .query_row([case_id], row_event)
                .optional()
        })
        .await
    }

    async fn event_after(
        &self,
        case_id: &CaseId,
        position: Position,
    ) -> Result<Option<StoredEvent>, LogError> {
        let case_id = case_id.to_string();
        let after = i64::try_from(position.get()).unwrap_or(i64::MAX);
        self.read(move |connection| {
            let from = version_at(connection, &case_id, after)?;
            connection
                .prepare_cached(
                    "SELECT position, case_id, commit_id, payload FROM events
                     WHERE case_id = ?1 AND version > ?2 ORDER BY version LIMIT 1",
                )?
                .query_row(params![case_id, from], row_event)
                .optional()
        })
        .await
    }

    async fn event_at(&self, position: Position) -> Result<Option<StoredEvent>, LogError> {
        let position = i64::try_from(position.get()).unwrap_or(i64::MAX);
        self.read(move |connection| {
            connection
                .prepare_cached(
                    "SELECT position, case_id, commit_id, payload FROM events WHERE position = ?1",
                )?
                .query_row([position], row_event)
                .optional()
        })
        .await
    }

    async fn history(
        &self,
        case_id: &CaseId,
        after_position: Position,
    ) -> Result<EventStream, LogError> {
        let until = self.last_position().await?.get();
        Ok(self.stream(
            Some(case_id.to_string()),
            after_position.get(),
            Some(until),
            false,
        ))
    }

    async fn follow(&self, after_position: Position) -> Result<EventStream, LogError> {
        Ok(self.stream(None, after_position.get(), None, true))
    }

    async fn last_position(&self) -> Result<Position, LogError> {
        self.read(|connection| {
            connection.query_row("SELECT COALESCE(MAX(position), 0) FROM events", [], |row| {
                unsigned(row.get(0)?).map(Position::new)
            })
        })
        .await
    }

    fn payload_size_max(&self) -> usize {
        self.payload_size_max
    }
}

#[cfg(test)]
mod tests;

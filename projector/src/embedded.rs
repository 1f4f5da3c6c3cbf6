//! The projector on the embedded log: it reads events through the log in position order and
//! keeps views, quarantined events and its checkpoint in tables of the log's SQLite file. A
//! batch is one write transaction, from reading the checkpoint to writing it: two projectors
//! of the file, in one process or several, take turns.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use tokio::runtime::Handle;
use wfstate_events::{EmbeddedLog, LogError, LogErrorKind};
use wfstate_store::{CaseId, Code, Position};

use crate::engine::{Batch, Finished};
use crate::fold::QuarantineRecord;
use crate::history;
use crate::jetstream::ProjectorStats;
use crate::sqlite::SharedConnection;
use crate::view::View;
use crate::{Projector, ProjectorError, ViewSource};

/// The projector over an embedded log file.
pub struct EmbeddedProjector {
    log: EmbeddedLog,
    connection: SharedConnection,
    name: String,
    batch: usize,
    stats: Arc<ProjectorStats>,
}

impl std::fmt::Debug for EmbeddedProjector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedProjector")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

pub(crate) fn sql(what: &str) -> impl Fn(rusqlite::Error) -> ProjectorError + '_ {
    move |error| {
        let path = std::path::PathBuf::from(PROJECTOR_FILE);
        ProjectorError::Log(LogError::from_storage(&path, what, error))
    }
}

/// The largest view the file takes: SQLite's default largest value (1 GB), less room for the
/// row.
const VIEW_SIZE_MAX: usize = 1_000_000_000 - 4096;

/// How the projector's messages name the file it works on.
const PROJECTOR_FILE: &str = "the projector's log file";

impl EmbeddedProjector {
    /// Opens the projector named `name` on `log`'s file, creating its tables; `batch` is the
    /// most events one batch folds.
    ///
    /// # Errors
    /// [`ProjectorError::Log`] when the file cannot be opened.
    pub fn open(log: &EmbeddedLog, name: &str, batch: usize) -> Result<Self, ProjectorError> {
        let connection = Connection::open(log.path()).map_err(sql("opening the log file"))?;
        connection
            .busy_timeout(Duration::from_secs(10))
            .map_err(sql("busy timeout"))?;
        connection
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
                 CREATE TABLE IF NOT EXISTS quarantine (
                     position INTEGER PRIMARY KEY,
                     case_key TEXT NOT NULL,
                     code     TEXT NOT NULL,
                     reason   TEXT NOT NULL
                 );
                 CREATE TABLE IF NOT EXISTS checkpoints (
                     name     TEXT PRIMARY KEY,
                     position INTEGER NOT NULL
                 );",
            )
            .map_err(sql("creating the projector's tables"))?;
        connection
            .execute_batch(VIEWS_TABLE)
            .map_err(sql("creating the projector's tables"))?;
        Ok(EmbeddedProjector {
            log: log.clone(),
            connection: SharedConnection::new(connection),
            name: name.to_owned(),
            batch: batch.max(1),
            stats: Arc::default(),
        })
    }

    async fn with_connection<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> Result<T, ProjectorError> + Send + 'static,
    ) -> Result<T, ProjectorError> {
        self.connection.run(work).await
    }
}

fn checkpoint(connection: &Connection, name: &str) -> Result<Position, ProjectorError> {
    let position: Option<i64> = connection
        .query_row(
            "SELECT position FROM checkpoints WHERE name = ?1",
            [name],
            |row| row.get(0),
        )
        .optional()
        .map_err(sql("reading the checkpoint"))?;
    position.map_or(Ok(Position::ZERO), |position| {
        unsigned(position, "the checkpoint").map(Position::new)
    })
}

/// The views table: one row a case, its view as of `position`.
pub(crate) const VIEWS_TABLE: &str = "CREATE TABLE IF NOT EXISTS views (
                                          case_id  TEXT PRIMARY KEY,
                                          position INTEGER NOT NULL,
                                          view     BLOB NOT NULL
                                      );";

/// Every case with a view in the file.
pub(crate) fn view_ids(connection: &Connection) -> Result<Vec<CaseId>, ProjectorError> {
    let keys: Vec<String> = connection
        .prepare("SELECT case_id FROM views ORDER BY case_id")
        .and_then(|mut statement| statement.query_map([], |row| row.get(0))?.collect())
        .map_err(sql("listing views"))?;
    Ok(keys
        .into_iter()
        .filter_map(|key| CaseId::new(key).ok())
        .collect())
}

pub(crate) fn load_view(
    connection: &Connection,
    case: &str,
) -> Result<Option<View>, ProjectorError> {
    let bytes: Option<Vec<u8>> = connection
        .prepare_cached("SELECT view FROM views WHERE case_id = ?1")
        .and_then(|mut statement| statement.query_row([case], |row| row.get(0)).optional())
        .map_err(sql("reading a view"))?;
    bytes
        .map(|bytes| {
            View::decode(&bytes).map_err(|source| ProjectorError::BadView {
                case_id: case.to_owned(),
                source,
            })
        })
        .transpose()
}

/// A position read from the projector's tables: never negative in a file this store wrote.
fn unsigned(value: i64, what: &str) -> Result<u64, ProjectorError> {
    u64::try_from(value).map_err(|_| {
        ProjectorError::Log(LogError::new(
            LogErrorKind::Corrupted,
            format!(
                "{PROJECTOR_FILE}: {what} holds the position {value}, which this store never writes"
            ),
        ))
    })
}

/// A position read in a row: a negative one is corrupted data, not zero.
fn row_position(value: i64) -> rusqlite::Result<u64> {
    u64::try_from(value).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(0, value))
}

/// A code read in a row: one this store does not know is corrupted data.
fn row_code(text: &str) -> rusqlite::Result<Code> {
    text.parse().map_err(|error| {
        rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, Box::new(error))
    })
}

fn to_sql(value: Position) -> i64 {
    i64::try_from(value.get()).unwrap_or(i64::MAX)
}

fn record(transaction: &Connection, record: &QuarantineRecord) -> Result<(), ProjectorError> {
    tracing::warn!(position = record.position.get(), case = %record.case_id, code = %record.code, "quarantined an event: {}", record.reason);
    transaction
        .prepare_cached(
            "INSERT OR REPLACE INTO quarantine (position, case_key, code, reason)
             VALUES (?1, ?2, ?3, ?4)",
        )
        .and_then(|mut s| {
            s.execute(params![
                to_sql(record.position),
                record.case_id,
                record.code.as_str(),
                record.reason
            ])
        })
        .map_err(sql("recording a quarantined event"))?;
    Ok(())
}

/// Writes the batch's quarantined events and changed views; returns the events applied and
/// the views written.
fn write_batch(
    transaction: &Connection,
    finished: &Finished,
) -> Result<(u64, u64), ProjectorError> {
    for quarantined in &finished.records {
        record(transaction, quarantined)?;
    }
    let (mut applied, mut written) = (0, 0);
    for changed in &finished.changed {
        transaction
            .prepare_cached(
                "INSERT OR REPLACE INTO views (case_id, position, view) VALUES (?1, ?2, ?3)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    changed.key,
                    to_sql(changed.view.position),
                    changed.bytes
                ])
            })
            .map_err(sql("writing a view"))?;
        applied += changed.applied;
        written += 1;
    }
    Ok((applied, written))
}

/// One batch, in one write transaction: read the checkpoint, the events after it and their
/// views; fold; write views, quarantined events and the checkpoint.
fn project_batch(
    connection: &mut Connection,
    log: &EmbeddedLog,
    runtime: &Handle,
    name: &str,
    size: usize,
    stats: &ProjectorStats,
) -> Result<usize, ProjectorError> {
    let transaction = connection
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(sql("beginning a batch"))?;
    let after = checkpoint(&transaction, name)?;
    let events = runtime.block_on(log.events_after(after, size))?;
    let mut batch = Batch::default();
    for key in Batch::cases(&events) {
        let view = match load_view(&transaction, &key) {
            Ok(view) => view,
            // A view that does not decode would fail every batch holding its case: it is
            // rebuilt from the history and written over.
            Err(error @ ProjectorError::BadView { .. }) => {
                tracing::warn!(case = %key, "rebuilding a view: {error}");
                None
            }
            Err(error) => return Err(error),
        };
        batch.insert(key, view, None);
    }
    // Read in position order, a view is behind an event only when it was lost (a deleted
    // row, say): it is caught up from the case's history.
    let gaps = batch.fold(&events);
    runtime.block_on(history::fill(log, &mut batch, gaps))?;
    let finished = batch.finish(VIEW_SIZE_MAX);
    let (applied, written) = write_batch(&transaction, &finished)?;
    if let Some(last) = events.last() {
        transaction
            .execute(
                "INSERT OR REPLACE INTO checkpoints (name, position) VALUES (?1, ?2)",
                params![name, to_sql(last.position)],
            )
            .map_err(sql("writing the checkpoint"))?;
    }
    transaction.commit().map_err(sql("committing a batch"))?;
    stats.applied.fetch_add(applied, Ordering::Relaxed);
    stats
        .quarantined
        .fetch_add(finished.records.len() as u64, Ordering::Relaxed);
    stats.view_writes.fetch_add(written, Ordering::Relaxed);
    stats.count(finished.counts);
    Ok(events.len())
}

/// Folds `case_id`'s view again from its first event, replacing the view and the case's
/// quarantined events, in one write transaction.
fn retry_case(
    connection: &mut Connection,
    log: &EmbeddedLog,
    runtime: &Handle,
    case_id: &CaseId,
) -> Result<Option<View>, ProjectorError> {
    let transaction = connection
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(sql("beginning a retry"))?;
    let finished = runtime
        .block_on(history::refold(log, case_id, None))?
        .finish(VIEW_SIZE_MAX);
    transaction
        .execute(
            "DELETE FROM quarantine WHERE case_key = ?1",
            [case_id.as_str()],
        )
        .map_err(sql("clearing the case's quarantined events"))?;
    write_batch(&transaction, &finished)?;
    let view = load_view(&transaction, case_id.as_str())?;
    transaction.commit().map_err(sql("committing a retry"))?;
    Ok(view)
}

impl Projector for EmbeddedProjector {
    async fn run_batch(&mut self) -> Result<usize, ProjectorError> {
        let (name, batch, stats) = (self.name.clone(), self.batch, Arc::clone(&self.stats));
        let (log, runtime) = (self.log.clone(), Handle::current());
        self.with_connection(move |connection| {
            project_batch(connection, &log, &runtime, &name, batch, &stats)
        })
        .await
    }

    async fn retry(&mut self, case_id: &CaseId) -> Result<Option<View>, ProjectorError> {
        let (log, runtime, case_id) = (self.log.clone(), Handle::current(), case_id.clone());
        self.with_connection(move |connection| retry_case(connection, &log, &runtime, &case_id))
            .await
    }

    async fn lag(&mut self) -> Result<u64, ProjectorError> {
        let name = self.name.clone();
        self.with_connection(move |connection| {
            let after = checkpoint(connection, &name)?;
            let behind: i64 = connection
                .query_row(
                    "SELECT COUNT(*) FROM events WHERE position > ?1",
                    [to_sql(after)],
                    |row| row.get(0),
                )
                .map_err(sql("counting events"))?;
            Ok(u64::try_from(behind).unwrap_or(0))
        })
        .await
    }

    async fn quarantined(&self) -> Result<Vec<QuarantineRecord>, ProjectorError> {
        self.with_connection(|connection| {
            connection
                .prepare(
                    "SELECT position, case_key, code, reason FROM quarantine ORDER BY position",
                )
                .and_then(|mut statement| {
                    statement
                        .query_map([], |row| {
                            Ok(QuarantineRecord {
                                position: Position::new(row_position(row.get(0)?)?),
                                case_id: row.get(1)?,
                                code: row_code(&row.get::<_, String>(2)?)?,
                                reason: row.get(3)?,
                            })
                        })?
                        .collect()
                })
                .map_err(sql("reading quarantined events"))
        })
        .await
    }

    fn stats(&self) -> Arc<ProjectorStats> {
        Arc::clone(&self.stats)
    }
}

impl ViewSource for EmbeddedProjector {
    async fn view(&self, case_id: &CaseId) -> Result<Option<View>, ProjectorError> {
        let case = case_id.to_string();
        self.with_connection(move |connection| load_view(connection, &case))
            .await
    }

    async fn case_ids(&self) -> Result<Vec<CaseId>, ProjectorError> {
        self.with_connection(|connection| view_ids(connection))
            .await
    }
}

//! The projector on the embedded log: it tails the `events` table by position and keeps views,
//! quarantined events and its checkpoint in tables of the same SQLite file, each batch's views
//! and checkpoint in one transaction. Events are read strictly in position order, so there
//! is no redelivery to defer.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, params};
use wfstate_events::{LogError, LogErrorKind, StoredEvent};
use wfstate_store::{CaseId, Code, Position};

use crate::fold::{Outcome, QuarantineRecord, fold_event, quarantine};
use crate::jetstream::ProjectorStats;
use crate::view::View;
use crate::{Projector, ProjectorError, ViewSource};

/// The projector over an embedded log file.
pub struct EmbeddedProjector {
    connection: Arc<Mutex<Connection>>,
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

fn sql(what: &str) -> impl Fn(rusqlite::Error) -> ProjectorError + '_ {
    move |error| {
        let path = std::path::PathBuf::from(PROJECTOR_FILE);
        ProjectorError::Log(LogError::from_storage(&path, what, error))
    }
}

/// How the projector's messages name the file it works on.
const PROJECTOR_FILE: &str = "the projector's log file";

impl EmbeddedProjector {
    /// Opens the projector named `name` on the log file at `path` (see
    /// `wfstate_events::EmbeddedLog::path`), creating its tables.
    ///
    /// # Errors
    /// [`ProjectorError::Log`] when the file cannot be opened.
    pub fn open(path: &Path, name: &str, batch: usize) -> Result<Self, ProjectorError> {
        let connection = Connection::open(path).map_err(sql("opening the log file"))?;
        connection
            .busy_timeout(Duration::from_secs(10))
            .map_err(sql("busy timeout"))?;
        connection
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
                 CREATE TABLE IF NOT EXISTS views (
                     case_id  TEXT PRIMARY KEY,
                     position INTEGER NOT NULL,
                     view     BLOB NOT NULL
                 );
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
        Ok(EmbeddedProjector {
            connection: Arc::new(Mutex::new(connection)),
            name: name.to_owned(),
            batch: batch.max(1),
            stats: Arc::default(),
        })
    }

    async fn with_connection<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> Result<T, ProjectorError> + Send + 'static,
    ) -> Result<T, ProjectorError> {
        let connection = Arc::clone(&self.connection);
        tokio::task::spawn_blocking(move || {
            // A panic while the lock was held rolled back its transaction when it unwound.
            let mut connection = connection
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            work(&mut connection)
        })
        .await
        .map_err(|e| {
            LogError::new(LogErrorKind::Unexpected, "the projector's task failed").with_source(e)
        })?
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

fn load_view(connection: &Connection, case: &str) -> Result<Option<View>, ProjectorError> {
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

fn read_events(
    connection: &Connection,
    after: Position,
    batch: usize,
) -> Result<Vec<StoredEvent>, ProjectorError> {
    connection
        .prepare_cached(
            "SELECT position, case_id, commit_id, payload FROM events
             WHERE position > ?1 ORDER BY position LIMIT ?2",
        )
        .and_then(|mut statement| {
            let limit = i64::try_from(batch).unwrap_or(i64::MAX);
            statement
                .query_map(params![to_sql(after), limit], |row| {
                    let commit_id: String = row.get(2)?;
                    Ok(StoredEvent {
                        position: Position::new(row_position(row.get(0)?)?),
                        case_id: row.get(1)?,
                        commit_id: commit_id.parse().ok(),
                        payload: Bytes::from(row.get::<_, Vec<u8>>(3)?),
                    })
                })?
                .collect()
        })
        .map_err(sql("reading events"))
}

/// Per case in a batch: its view, whether the batch changed it, events applied to it.
type Views = BTreeMap<String, (Option<View>, bool, u64)>;

/// Folds a batch's events into the views; returns the quarantined events.
fn fold_batch(
    connection: &Connection,
    events: &[StoredEvent],
    views: &mut Views,
    stats: &ProjectorStats,
) -> Result<Vec<QuarantineRecord>, ProjectorError> {
    let mut records = Vec::new();
    for stored in events {
        let Ok(case_id) = CaseId::new(&stored.case_id) else {
            records.push(QuarantineRecord {
                position: stored.position,
                case_id: stored.case_id.clone(),
                code: Code::InvalidCaseId,
                reason: format!("{:?} is not a valid case id", stored.case_id),
            });
            continue;
        };
        if !views.contains_key(&stored.case_id) {
            views.insert(
                stored.case_id.clone(),
                (load_view(connection, &stored.case_id)?, false, 0),
            );
        }
        let entry = views.get_mut(&stored.case_id).expect("inserted above");
        let (view, outcome) = fold_event(entry.0.take(), &case_id, stored);
        entry.0 = view;
        match outcome {
            Outcome::Applied => {
                entry.1 = true;
                entry.2 += 1;
            }
            Outcome::Skipped => {
                stats.skipped.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Held => {
                entry.1 = true;
                stats.held.fetch_add(1, Ordering::Relaxed);
            }
            // Read in position order, an event ahead of its view has no earlier one to wait for.
            Outcome::Quarantined(record) | Outcome::Ahead(record) => {
                entry.0 = Some(quarantine(entry.0.take(), &case_id, &record));
                entry.1 = true;
                records.push(record);
            }
        }
    }
    Ok(records)
}

/// One batch, in one transaction: read, fold, write views, quarantine and checkpoint.
fn project_batch(
    connection: &mut Connection,
    name: &str,
    batch: usize,
    stats: &ProjectorStats,
) -> Result<usize, ProjectorError> {
    let transaction = connection
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(sql("beginning a batch"))?;
    let events = read_events(&transaction, checkpoint(&transaction, name)?, batch)?;
    let mut views = Views::new();
    let records = fold_batch(&transaction, &events, &mut views, stats)?;
    let mut applied = 0;
    let mut written = 0;
    for (case, (view, changed, count)) in &views {
        if let (Some(view), true) = (view, changed) {
            transaction
                .prepare_cached(
                    "INSERT OR REPLACE INTO views (case_id, position, view) VALUES (?1, ?2, ?3)",
                )
                .and_then(|mut s| s.execute(params![case, to_sql(view.position), view.encode()]))
                .map_err(sql("writing a view"))?;
            applied += count;
            written += 1;
        }
    }
    for record in &records {
        tracing::warn!(position = record.position.get(), case = %record.case_id, code = %record.code, "quarantined an event: {}", record.reason);
        transaction
            .prepare_cached("INSERT OR REPLACE INTO quarantine (position, case_key, code, reason) VALUES (?1, ?2, ?3, ?4)")
            .and_then(|mut s| s.execute(params![to_sql(record.position), record.case_id, record.code.as_str(), record.reason]))
            .map_err(sql("recording a quarantined event"))?;
    }
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
        .fetch_add(records.len() as u64, Ordering::Relaxed);
    stats.view_writes.fetch_add(written, Ordering::Relaxed);
    Ok(events.len())
}

impl Projector for EmbeddedProjector {
    async fn run_batch(&mut self) -> Result<usize, ProjectorError> {
        let (name, batch, stats) = (self.name.clone(), self.batch, Arc::clone(&self.stats));
        self.with_connection(move |connection| project_batch(connection, &name, batch, &stats))
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
        self.with_connection(|connection| {
            let keys: Vec<String> = connection
                .prepare("SELECT case_id FROM views ORDER BY case_id")
                .and_then(|mut statement| statement.query_map([], |row| row.get(0))?.collect())
                .map_err(sql("listing views"))?;
            Ok(keys
                .into_iter()
                .filter_map(|key| CaseId::new(key).ok())
                .collect())
        })
        .await
    }
}

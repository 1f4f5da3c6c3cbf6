//! The tree of an embedded log, in two tables of its file: `tree_leaves` (one row a leaf:
//! its event's position and its stored hashes) and `tree_checkpoints` (the signed notes, in
//! the order they were signed).

use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use wfstate_events::{EmbeddedLog, LogError, LogErrorKind};
use wfstate_store::{Hash, Position};

use super::{TreeRecord, TreeStore};
use crate::ProjectorError;
use crate::embedded::sql;
use crate::sqlite::{SharedConnection, readable};

const TABLES: &str = "CREATE TABLE IF NOT EXISTS tree_leaves (
                          leaf     INTEGER PRIMARY KEY,
                          position INTEGER NOT NULL UNIQUE,
                          hashes   BLOB NOT NULL
                      );
                      CREATE TABLE IF NOT EXISTS tree_checkpoints (
                          size INTEGER NOT NULL,
                          note TEXT NOT NULL
                      );";

/// The tree of an embedded log.
#[derive(Clone)]
pub struct EmbeddedTree {
    connection: SharedConnection,
}

impl std::fmt::Debug for EmbeddedTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedTree").finish_non_exhaustive()
    }
}

impl EmbeddedTree {
    /// Opens the tree in `log`'s file, creating its tables.
    ///
    /// # Errors
    /// [`ProjectorError::Log`] when the file cannot be opened or written.
    pub fn open(log: &EmbeddedLog) -> Result<Self, ProjectorError> {
        let connection = Connection::open(log.path()).map_err(sql("opening the log file"))?;
        connection
            .busy_timeout(Duration::from_secs(10))
            .map_err(sql("busy timeout"))?;
        connection
            .execute_batch(TABLES)
            .map_err(sql("creating the tree's tables"))?;
        Ok(Self::with(connection))
    }

    /// Opens the tree in `log`'s file to read only; a file without one has no leaves and no
    /// checkpoints.
    ///
    /// # Errors
    /// As [`EmbeddedLog::read_connection`].
    pub fn open_read_only(log: &EmbeddedLog) -> Result<Self, ProjectorError> {
        let connection = log.read_connection()?;
        readable(&connection, "tree_leaves", TABLES)?;
        Ok(Self::with(connection))
    }

    fn with(connection: Connection) -> Self {
        EmbeddedTree {
            connection: SharedConnection::new(connection),
        }
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> Result<T, ProjectorError> + Send + 'static,
    ) -> Result<T, ProjectorError> {
        self.connection.run(work).await
    }
}

fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn unsigned(value: i64, what: &str) -> Result<u64, ProjectorError> {
    u64::try_from(value).map_err(|_| {
        ProjectorError::Log(LogError::new(
            LogErrorKind::Corrupted,
            format!("the tree's tables hold {what} {value}, which this store never writes"),
        ))
    })
}

impl TreeStore for EmbeddedTree {
    async fn size(&self) -> Result<(u64, Position), ProjectorError> {
        self.run(|connection| {
            let (count, last): (i64, i64) = connection
                .query_row(
                    "SELECT COUNT(*), COALESCE(MAX(position), 0) FROM tree_leaves",
                    [],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .map_err(sql("reading the tree's size"))?;
            Ok((
                unsigned(count, "a count")?,
                Position::new(unsigned(last, "a position")?),
            ))
        })
        .await
    }

    async fn append(&self, first: u64, records: Vec<TreeRecord>) -> Result<(), ProjectorError> {
        self.run(move |connection| {
            let transaction = connection
                .transaction()
                .map_err(sql("extending the tree"))?;
            let count: i64 = transaction
                .query_row("SELECT COUNT(*) FROM tree_leaves", [], |row| row.get(0))
                .map_err(sql("reading the tree's size"))?;
            if unsigned(count, "a count")? != first {
                return Err(ProjectorError::Log(LogError::new(
                    LogErrorKind::Unavailable,
                    format!(
                        "the tree has {count} leaves, not {first}: another process extended it \
                         meanwhile; run the command again"
                    ),
                )));
            }
            {
                let mut insert = transaction
                    .prepare_cached(
                        "INSERT INTO tree_leaves (leaf, position, hashes) VALUES (?1, ?2, ?3)",
                    )
                    .map_err(sql("extending the tree"))?;
                for (leaf, record) in (first..).zip(&records) {
                    let bytes: Vec<u8> = record.hashes.iter().flat_map(|hash| hash.0).collect();
                    insert
                        .execute(params![signed(leaf), signed(record.position.get()), bytes])
                        .map_err(sql("extending the tree"))?;
                }
            }
            transaction.commit().map_err(sql("extending the tree"))
        })
        .await
    }

    async fn hashes(&self, leaves: Vec<u64>) -> Result<Vec<Vec<Hash>>, ProjectorError> {
        self.run(move |connection| {
            let mut select = connection
                .prepare_cached("SELECT hashes FROM tree_leaves WHERE leaf = ?1")
                .map_err(sql("reading the tree"))?;
            leaves
                .iter()
                .map(|&leaf| {
                    let bytes: Vec<u8> = select
                        .query_row([signed(leaf)], |row| row.get(0))
                        .optional()
                        .map_err(sql("reading the tree"))?
                        .ok_or_else(|| {
                            ProjectorError::Log(LogError::new(
                                LogErrorKind::Corrupted,
                                format!("the tree has no leaf {leaf}"),
                            ))
                        })?;
                    let (hashes, rest) = bytes.as_chunks::<32>();
                    if !rest.is_empty() || hashes.is_empty() {
                        return Err(ProjectorError::Log(LogError::new(
                            LogErrorKind::Corrupted,
                            format!("leaf {leaf} of the tree holds {} bytes", bytes.len()),
                        )));
                    }
                    Ok(hashes.iter().map(|bytes| Hash(*bytes)).collect())
                })
                .collect()
        })
        .await
    }

    async fn leaf_at(&self, position: Position) -> Result<Option<u64>, ProjectorError> {
        self.run(move |connection| {
            let leaf: Option<i64> = connection
                .query_row(
                    "SELECT leaf FROM tree_leaves WHERE position = ?1",
                    [signed(position.get())],
                    |row| row.get(0),
                )
                .optional()
                .map_err(sql("reading the tree"))?;
            leaf.map(|leaf| unsigned(leaf, "a leaf")).transpose()
        })
        .await
    }

    async fn checkpoints(&self) -> Result<Vec<String>, ProjectorError> {
        self.run(|connection| {
            connection
                .prepare("SELECT note FROM tree_checkpoints ORDER BY rowid")
                .and_then(|mut statement| statement.query_map([], |row| row.get(0))?.collect())
                .map_err(sql("reading the checkpoints"))
        })
        .await
    }

    async fn newest_checkpoint(&self) -> Result<Option<String>, ProjectorError> {
        self.run(|connection| {
            connection
                .query_row(
                    "SELECT note FROM tree_checkpoints ORDER BY rowid DESC LIMIT 1",
                    [],
                    |row| row.get(0),
                )
                .optional()
                .map_err(sql("reading the newest checkpoint"))
        })
        .await
    }

    async fn publish(&self, size: u64, note: String) -> Result<(), ProjectorError> {
        self.run(move |connection| {
            connection
                .execute(
                    "INSERT INTO tree_checkpoints (size, note) VALUES (?1, ?2)",
                    params![signed(size), note],
                )
                .map_err(sql("keeping a checkpoint"))?;
            Ok(())
        })
        .await
    }
}

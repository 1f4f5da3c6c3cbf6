//! One SQLite connection used from async code (the embedded projector, its views read to
//! verify, the log's tree): each use runs on a blocking thread, under the connection's lock.

use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use wfstate_events::{LogError, LogErrorKind};

use crate::ProjectorError;
use crate::embedded::sql;

/// A connection shared by the clones of its owner.
#[derive(Clone)]
pub(crate) struct SharedConnection(Arc<Mutex<Connection>>);

impl SharedConnection {
    pub(crate) fn new(connection: Connection) -> Self {
        SharedConnection(Arc::new(Mutex::new(connection)))
    }

    /// Runs `work` on the connection, on a blocking thread: work that reads the log blocks
    /// on its futures, which the runtime's other threads (or the one awaiting this) drive.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> Result<T, ProjectorError> + Send + 'static,
    ) -> Result<T, ProjectorError> {
        let connection = Arc::clone(&self.0);
        tokio::task::spawn_blocking(move || {
            // A panic while the lock was held rolled back its transaction when it unwound.
            let mut connection = connection
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            work(&mut connection)
        })
        .await
        .map_err(|error| {
            ProjectorError::Log(
                LogError::new(LogErrorKind::Unexpected, "a SQLite task failed").with_source(error),
            )
        })?
    }
}

/// Makes `tables` (their `CREATE TABLE` statements) readable on a connection that may only
/// read: where the file has no `table`, empty ones in the connection's own temporary schema
/// answer in their place (SQLite looks there first for an unqualified name), and nothing is
/// written to the file.
pub(crate) fn readable(
    connection: &Connection,
    table: &str,
    tables: &str,
) -> Result<(), ProjectorError> {
    let exists: bool = connection
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM main.sqlite_master WHERE type = 'table' AND name = ?1)",
            [table],
            |row| row.get(0),
        )
        .map_err(sql("looking for a table"))?;
    if !exists {
        connection
            .execute_batch(&tables.replace("CREATE TABLE", "CREATE TEMP TABLE"))
            .map_err(sql("opening a table to read"))?;
    }
    Ok(())
}

//! The SQLite file: its schema and version, how a connection is opened, and what each SQLite
//! error means for the store.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags};

use crate::error::{LogError, LogErrorKind};

/// The schema version this build writes (`PRAGMA user_version`). A file of an older version is
/// migrated when opened for writing; a newer one is refused.
pub const SQLITE_SCHEMA_VERSION: i64 = 1;

/// What each version before [`SQLITE_SCHEMA_VERSION`] needs to become the next one; index 0 takes a
/// file of version 0 (a new file, or one written before the schema had a version) to 1.
const MIGRATIONS: &[&str] = &[
    // Version 1: the events table, read by case through its `(case_id, version)` index; no
    // index by case and position (every append would pay for it with another randomly placed
    // page).
    "CREATE TABLE IF NOT EXISTS events (
        position  INTEGER PRIMARY KEY,
        case_id   TEXT    NOT NULL,
        version   INTEGER NOT NULL,
        commit_id TEXT    NOT NULL UNIQUE,
        payload   BLOB    NOT NULL,
        UNIQUE (case_id, version)
    );
    DROP INDEX IF EXISTS events_by_case;",
];

#[expect(clippy::cast_possible_wrap, reason = "a handful of migrations")]
const _: () = assert!(MIGRATIONS.len() as i64 == SQLITE_SCHEMA_VERSION);

/// What a SQLite error means: busy or locked may pass; a full disk, a read-only or unusable
/// file, and damage are for the user to fix, and the message says how.
pub(crate) fn sqlite_error(path: &Path, what: &str, error: rusqlite::Error) -> LogError {
    let (kind, hint) = classify(&error);
    LogError::new(kind, format!("{}: {what}: {hint}", path.display())).with_source(error)
}

/// [`sqlite_error`] for an error shared by several appends of one group commit.
pub(crate) fn shared_sqlite_error(
    path: &Path,
    what: &str,
    error: &Arc<rusqlite::Error>,
) -> LogError {
    let (kind, hint) = classify(error);
    LogError::new(kind, format!("{}: {what}: {hint}", path.display()))
        .with_source(Arc::clone(error))
}

/// A failure of a SQLite call on the file at `path`, classified as [`sqlite_error`] does;
/// any other error is [`LogErrorKind::Unexpected`].
pub(crate) fn storage_failure(path: &Path, what: &str, error: crate::error::BoxError) -> LogError {
    let (kind, hint) = match error.downcast_ref::<rusqlite::Error>() {
        Some(sqlite) => classify(sqlite),
        None => (
            LogErrorKind::Unexpected,
            "the call failed in a way this store does not know",
        ),
    };
    LogError::new(kind, format!("{}: {what}: {hint}", path.display())).with_source(error)
}

fn classify(error: &rusqlite::Error) -> (LogErrorKind, &'static str) {
    match error.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => (
            LogErrorKind::Unavailable,
            "another connection holds the file locked; try again later",
        ),
        Some(ErrorCode::DiskFull) => (
            LogErrorKind::NoSpace,
            "the disk is full; free space, then run the command again",
        ),
        Some(ErrorCode::ReadOnly | ErrorCode::PermissionDenied) => (
            LogErrorKind::PermissionDenied,
            "the file or its directory may not be written by this user; give it write access",
        ),
        Some(ErrorCode::CannotOpen) => (
            LogErrorKind::Config,
            "the file cannot be opened; check that the data directory exists, is a directory, \
             and may be read by this user",
        ),
        Some(ErrorCode::NotADatabase) => (
            LogErrorKind::Corrupted,
            "the file is not a SQLite database; point --data-dir at the right directory, or \
             move the file away",
        ),
        Some(ErrorCode::DatabaseCorrupt) => (
            LogErrorKind::Corrupted,
            "the database is damaged; restore it from a backup or an export",
        ),
        _ => match error {
            rusqlite::Error::IntegralValueOutOfRange(..)
            | rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::InvalidColumnType(..) => (
                LogErrorKind::Corrupted,
                "a stored row holds a value this store never writes; restore the file from a \
                 backup or an export",
            ),
            _ => (
                LogErrorKind::Unexpected,
                "SQLite failed in a way this store does not know",
            ),
        },
    }
}

/// A position or version read from a row: never negative in a file this store wrote.
pub(crate) fn unsigned(value: i64) -> rusqlite::Result<u64> {
    u64::try_from(value).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(0, value))
}

/// Opens a connection for reading and writing, and brings the file to [`SQLITE_SCHEMA_VERSION`].
pub(crate) fn open_writable(path: &Path, fsync: bool) -> Result<Connection, LogError> {
    let connection =
        Connection::open(path).map_err(|e| sqlite_error(path, "opening the log", e))?;
    configure(&connection, path)?;
    let synchronous = if fsync { "FULL" } else { "NORMAL" };
    connection
        .execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous};"
        ))
        .map_err(|e| sqlite_error(path, "setting up the log", e))?;
    migrate(&connection, path)?;
    Ok(connection)
}

fn configure(connection: &Connection, path: &Path) -> Result<(), LogError> {
    connection
        .busy_timeout(Duration::from_secs(10))
        .map_err(|e| sqlite_error(path, "setting the busy timeout", e))
}

fn user_version(connection: &Connection, path: &Path) -> Result<i64, LogError> {
    connection
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(|e| sqlite_error(path, "reading the schema version", e))
}

fn version_error(path: &Path, version: i64) -> LogError {
    if version > SQLITE_SCHEMA_VERSION {
        LogError::new(
            LogErrorKind::Config,
            format!(
                "{}: written by a newer wfstate (schema {version}; this one reads up to \
                 {SQLITE_SCHEMA_VERSION}); use that version or a newer one",
                path.display()
            ),
        )
    } else {
        LogError::new(
            LogErrorKind::Corrupted,
            format!(
                "{}: schema version {version} was never written by wfstate",
                path.display()
            ),
        )
    }
}

/// Opens the file to read only: nothing is created or migrated, so a user who may only read
/// the data directory can. A file of another schema version is refused, saying what to do.
pub(crate) fn open_read_only(path: &Path) -> Result<Connection, LogError> {
    if !path.is_file() {
        return Err(LogError::new(
            LogErrorKind::Config,
            format!(
                "{}: no store here to read; give the data directory a writer uses (--data-dir, \
                 WFSTATE_DATA_DIR)",
                path.display()
            ),
        ));
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let connection = Connection::open_with_flags(path, flags)
        .map_err(|e| sqlite_error(path, "opening the log to read", e))?;
    configure(&connection, path)?;
    let version = match user_version(&connection, path) {
        Err(error) if cannot_share(&error) && !wal_of(path).exists() => {
            // The reader may not create the file shared with writers (the directory is not
            // its to write), and none exists: no process has the file open, and with no
            // write-ahead log every commit is in the file itself. It is read as it is.
            drop(connection);
            let uri = format!("file:{}?immutable=1", path.display());
            let connection = Connection::open_with_flags(uri, flags | OpenFlags::SQLITE_OPEN_URI)
                .map_err(|e| sqlite_error(path, "opening the log to read", e))?;
            configure(&connection, path)?;
            let version = user_version(&connection, path)?;
            return checked_version(path, version).map(|()| connection);
        }
        read => read?,
    };
    checked_version(path, version).map(|()| connection)
}

/// The write-ahead log next to the file at `path`.
fn wal_of(path: &Path) -> std::path::PathBuf {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    wal.into()
}

/// Whether reading failed because the reader may not create the shared-memory file.
fn cannot_share(error: &LogError) -> bool {
    use std::error::Error as _;
    error
        .source()
        .and_then(|source| source.downcast_ref::<rusqlite::Error>())
        .and_then(rusqlite::Error::sqlite_error)
        .is_some_and(|e| {
            e.extended_code == rusqlite::ffi::SQLITE_READONLY_DIRECTORY
                || e.code == ErrorCode::CannotOpen
        })
}

/// A reader takes the current schema only: it may not migrate an older file.
fn checked_version(path: &Path, version: i64) -> Result<(), LogError> {
    match version {
        SQLITE_SCHEMA_VERSION => Ok(()),
        0 => Err(LogError::new(
            LogErrorKind::Config,
            format!(
                "{}: written by an older wfstate, and a reader may not migrate it; run a \
                 command that writes (wfstate project) once with write access",
                path.display()
            ),
        )),
        version => Err(version_error(path, version)),
    }
}

/// Brings the file to [`SQLITE_SCHEMA_VERSION`] in one transaction, or refuses a newer one.
fn migrate(connection: &Connection, path: &Path) -> Result<(), LogError> {
    let version = user_version(connection, path)?;
    if version == SQLITE_SCHEMA_VERSION {
        return Ok(());
    }
    if !(0..SQLITE_SCHEMA_VERSION).contains(&version) {
        return Err(version_error(path, version));
    }
    let steps: String = MIGRATIONS[usize::try_from(version).unwrap_or(0)..].concat();
    connection
        .execute_batch(&format!(
            "BEGIN IMMEDIATE; {steps} PRAGMA user_version = {SQLITE_SCHEMA_VERSION}; COMMIT;"
        ))
        .map_err(|e| sqlite_error(path, "migrating the schema", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_positions_are_corrupted_data_not_zero() {
        let error = unsigned(-3).unwrap_err();
        assert_eq!(
            sqlite_error(Path::new("f"), "reading", error).kind(),
            LogErrorKind::Corrupted
        );
        assert_eq!(unsigned(7).unwrap(), 7);
    }
}

//! The embedded log's own failures: a file that is not a log, a schema from a newer wfstate,
//! rows this store never writes, and what each SQLite error code means.

use rusqlite::ffi;

use super::*;

#[test]
fn opening_a_log_written_with_the_old_case_index_drops_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DATABASE_FILE);
    let old = Connection::open(&path).unwrap();
    old.execute_batch(
        "CREATE TABLE events (
            position  INTEGER PRIMARY KEY,
            case_id   TEXT    NOT NULL,
            version   INTEGER NOT NULL,
            commit_id TEXT    NOT NULL UNIQUE,
            payload   BLOB    NOT NULL,
            UNIQUE (case_id, version)
         );
         CREATE INDEX events_by_case ON events (case_id, position);
         INSERT INTO events (case_id, version, commit_id, payload) VALUES ('c', 1, 'x', x'00');",
    )
    .unwrap();
    drop(old);
    EmbeddedLog::open(&EmbeddedConfig::new(dir.path())).unwrap();
    let check = Connection::open(&path).unwrap();
    let indexes: Vec<String> = check
        .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_%'")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(indexes.is_empty(), "{indexes:?}");
    let rows: i64 = check
        .query_row("SELECT COUNT(*) FROM events", [], |row| row.get(0))
        .unwrap();
    assert_eq!(rows, 1);
}

#[test]
fn a_file_that_is_not_a_database_is_corrupted_and_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(DATABASE_FILE), vec![0x5a; 8192]).unwrap();
    let error = EmbeddedLog::open(&EmbeddedConfig::new(dir.path())).unwrap_err();
    assert_eq!(error.kind(), LogErrorKind::Corrupted, "{error}");
    assert!(error.to_string().contains(DATABASE_FILE), "{error}");
    assert!(!error.is_retryable());
}

#[test]
fn a_file_of_a_newer_schema_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    drop(EmbeddedLog::open(&EmbeddedConfig::new(dir.path())).unwrap());
    let path = dir.path().join(DATABASE_FILE);
    let newer = SQLITE_SCHEMA_VERSION + 1;
    Connection::open(&path)
        .unwrap()
        .execute_batch(&format!("PRAGMA user_version = {newer}"))
        .unwrap();
    let error = EmbeddedLog::open(&EmbeddedConfig::new(dir.path())).unwrap_err();
    assert_eq!(error.kind(), LogErrorKind::Config, "{error}");
    assert!(error.to_string().contains("newer wfstate"), "{error}");
    let version: i64 = Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap();
    assert_eq!(version, newer);
}

#[test]
fn a_data_directory_that_is_a_file_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let error = EmbeddedLog::open(&EmbeddedConfig::new(&file)).unwrap_err();
    assert_eq!(error.kind(), LogErrorKind::Config, "{error}");
    assert!(error.to_string().contains("not-a-dir"), "{error}");
}

/// A negative position cannot have been written by this store: reading it is an error, not
/// "position 0" (which would make the case look empty or its event misplaced).
#[tokio::test]
async fn a_negative_stored_position_is_corrupted_not_zero() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(&EmbeddedConfig::new(dir.path())).unwrap();
    Connection::open(log.path())
        .unwrap()
        .execute_batch(
            "INSERT INTO events (position, case_id, version, commit_id, payload)
             VALUES (-5, 'c', 1, 'x', x'00')",
        )
        .unwrap();
    let case_id = CaseId::new("c").unwrap();
    let last = log.last_event(&case_id).await.unwrap_err();
    assert_eq!(last.kind(), LogErrorKind::Corrupted, "{last}");
    let position = log.last_position().await.unwrap_err();
    assert_eq!(position.kind(), LogErrorKind::Corrupted, "{position}");
}

#[test]
fn sqlite_errors_are_classified_by_code() {
    let failure = |code| {
        let error = rusqlite::Error::SqliteFailure(ffi::Error::new(code), None);
        schema::sqlite_error(Path::new("f.sqlite3"), "writing", error)
    };
    let expected = [
        (ffi::SQLITE_BUSY, LogErrorKind::Unavailable),
        (ffi::SQLITE_LOCKED, LogErrorKind::Unavailable),
        (ffi::SQLITE_FULL, LogErrorKind::NoSpace),
        (ffi::SQLITE_READONLY, LogErrorKind::PermissionDenied),
        (ffi::SQLITE_PERM, LogErrorKind::PermissionDenied),
        (ffi::SQLITE_CANTOPEN, LogErrorKind::Config),
        (ffi::SQLITE_NOTADB, LogErrorKind::Corrupted),
        (ffi::SQLITE_CORRUPT, LogErrorKind::Corrupted),
        (ffi::SQLITE_IOERR, LogErrorKind::Unexpected),
    ];
    for (code, kind) in expected {
        let error = failure(code);
        assert_eq!(error.kind(), kind, "SQLite code {code}: {error}");
        assert!(error.to_string().contains("f.sqlite3"), "{error}");
    }
    assert!(failure(ffi::SQLITE_BUSY).is_retryable());
    assert!(!failure(ffi::SQLITE_FULL).is_retryable());
}

/// An append is acknowledged only once it is durable: every connection of the log runs with
/// `synchronous = FULL` (2) unless the configuration turns fsync off.
#[tokio::test]
async fn the_log_fsyncs_every_commit_unless_told_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(&EmbeddedConfig::new(dir.path())).unwrap();
    let synchronous = |log: &EmbeddedLog| {
        let log = log.clone();
        async move {
            log.read(|connection| {
                connection.query_row("PRAGMA synchronous", [], |row| row.get::<_, i64>(0))
            })
            .await
            .unwrap()
        }
    };
    assert_eq!(synchronous(&log).await, 2, "FULL");
    let writer = schema::open_writable(log.path(), true).unwrap();
    let mode: i64 = writer
        .query_row("PRAGMA synchronous", [], |row| row.get(0))
        .unwrap();
    assert_eq!(mode, 2, "the writer's connection is opened the same way");

    let mut relaxed = EmbeddedConfig::new(dir.path());
    relaxed.fsync = false;
    let relaxed = EmbeddedLog::open(&relaxed).unwrap();
    assert_eq!(synchronous(&relaxed).await, 1, "NORMAL");
}

/// A reader's open creates and migrates nothing: a missing store is named, an older file is
/// left as it is, appends are refused, and reads work.
#[tokio::test]
async fn a_read_only_open_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none");
    let mut config = EmbeddedConfig::new(&missing);
    config.read_only = true;
    let error = EmbeddedLog::open(&config).unwrap_err();
    assert_eq!(error.kind(), LogErrorKind::Config, "{error}");
    assert!(
        error.to_string().contains("no store here to read"),
        "{error}"
    );
    assert!(!missing.exists(), "a reader made the data directory");

    let writer = EmbeddedLog::open(&EmbeddedConfig::new(dir.path())).unwrap();
    let case = CaseId::new("c").unwrap();
    let appended = writer
        .append(
            &case,
            CommitId::generate(),
            Position::ZERO,
            Bytes::from_static(b"e"),
        )
        .await
        .unwrap();
    assert!(matches!(appended, AppendOutcome::Appended { .. }));
    let mut config = EmbeddedConfig::new(dir.path());
    config.read_only = true;
    let reader = EmbeddedLog::open(&config).unwrap();
    assert_eq!(reader.last_position().await.unwrap(), Position::new(1));
    let error = reader
        .append(
            &case,
            CommitId::generate(),
            Position::new(1),
            Bytes::from_static(b"f"),
        )
        .await
        .unwrap_err();
    assert_eq!(error.kind(), LogErrorKind::PermissionDenied, "{error}");
    drop((reader, writer));

    let path = dir.path().join(DATABASE_FILE);
    Connection::open(&path)
        .unwrap()
        .execute_batch("PRAGMA user_version = 0")
        .unwrap();
    let error = EmbeddedLog::open(&config).unwrap_err();
    assert_eq!(error.kind(), LogErrorKind::Config, "{error}");
    assert!(error.to_string().contains("older wfstate"), "{error}");
    let version: i64 = Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap();
    assert_eq!(version, 0, "a reader migrated the file");
}

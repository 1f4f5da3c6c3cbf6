//! `export` and `import`: a file, or `-` for stdout and stdin.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use serde_json::json;
use wfstate_projector::{AuditReport, TransferError, export_to, export_with, import};

use crate::Command;
use crate::backend::Backend;
use crate::commands::print_json;
use crate::error::CliError;
use crate::progress::Progress;
use crate::stdout::out;

/// What `export` and `import` call the standard streams.
const STANDARD: &str = "-";

fn is_standard(path: &Path) -> bool {
    path == Path::new(STANDARD)
}

pub async fn run<L: Backend>(log: &L, command: Command, json: bool) -> Result<u8, CliError> {
    match command {
        Command::Export { file, force } => export(log, &file, force, json).await,
        Command::Import { file, source } => import_file(log, &file, source, json).await,
        _ => unreachable!("only export and import are transfers"),
    }
}

async fn export<L: Backend>(log: &L, file: &Path, force: bool, json: bool) -> Result<u8, CliError> {
    let report = if is_standard(file) {
        let stdout = std::io::stdout();
        if stdout.is_terminal() {
            return Err(CliError::bad_input(
                "export writes binary CBOR: redirect stdout to a file or a pipe, or give a FILE",
            ));
        }
        let total = log.last_position().await?.get();
        let (counted, progress) = Progress::start(log, "exporting", Some(total), json);
        let exported = export_to(
            &counted,
            std::io::BufWriter::new(stdout.lock()),
            Path::new("stdout"),
        )
        .await;
        drop(progress);
        let (report, mut out) = match exported {
            Err(TransferError::File { source, .. }) if closed(source.as_ref()) => {
                std::process::exit(i32::from(crate::stdout::CLOSED));
            }
            exported => exported?,
        };
        match out.flush() {
            Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {
                std::process::exit(i32::from(crate::stdout::CLOSED));
            }
            flushed => flushed
                .map_err(|error| CliError::bad_input(format!("cannot write stdout: {error}")))?,
        }
        report
    } else {
        let total = log.last_position().await?.get();
        let (counted, _progress) = Progress::start(log, "exporting", Some(total), json);
        let report = export_with(&counted, file, force).await?;
        crate::stdout::stored(format!("the export is written to {}", file.display()));
        report
    };
    // The summary goes to stderr when the file itself is on stdout.
    let summary = summary_line(&report, file);
    if is_standard(file) {
        eprintln!("wfstate: {summary}");
    } else if json {
        print_json(&json!({"file": file, "cases": report.cases, "events": report.events}));
    } else {
        out!("{summary}");
    }
    Ok(0)
}

/// Whether a write failed because the reader closed the pipe: the reader has what it wanted
/// (`wfstate export - | head -c 100`), as for every other printing command.
fn closed(error: &(dyn std::error::Error + 'static)) -> bool {
    error
        .downcast_ref::<std::io::Error>()
        .is_some_and(|error| error.kind() == std::io::ErrorKind::BrokenPipe)
}

fn summary_line(report: &AuditReport, file: &Path) -> String {
    format!(
        "exported {} events of {} cases to {}, every chain verified",
        report.events,
        report.cases,
        if is_standard(file) {
            "stdout".into()
        } else {
            file.display().to_string()
        }
    )
}

/// Refuses, before the store is opened, an export that would write over the embedded store
/// (its file, a link to it, anything in its data directory) and an import that would read
/// the store's own file: paths are compared resolved, links followed, and files by identity.
pub fn guard_store(data_dir: &Path, command: &Command) -> Result<(), CliError> {
    let store = StoreFiles::of(data_dir);
    match command {
        Command::Export { file, .. } if !is_standard(file) => store.refuse_target(file),
        Command::Import { file, .. } if !is_standard(file) => store.refuse_source(file),
        _ => Ok(()),
    }
}

/// The embedded store's data directory and files, as they are on disk.
struct StoreFiles {
    /// The data directory, resolved (none when it is not there yet).
    dir: Option<PathBuf>,
    /// The database file, its write-ahead log and shared memory.
    files: [PathBuf; 3],
}

impl StoreFiles {
    fn of(data_dir: &Path) -> StoreFiles {
        let file = data_dir.join(wfstate_events::DATABASE_FILE);
        let with = |suffix: &str| {
            let mut name = file.clone().into_os_string();
            name.push(suffix);
            PathBuf::from(name)
        };
        StoreFiles {
            dir: data_dir.canonicalize().ok(),
            files: [with("-wal"), with("-shm"), file],
        }
    }

    /// Whether `path` is one of the store's files, under any name (a hard or symbolic link).
    fn holds(&self, path: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        let Ok(target) = std::fs::metadata(path) else {
            return false;
        };
        self.files.iter().any(|file| {
            std::fs::metadata(file)
                .is_ok_and(|own| (own.dev(), own.ino()) == (target.dev(), target.ino()))
        })
    }

    fn refuse_target(&self, file: &Path) -> Result<(), CliError> {
        let inside = resolved(file)
            .zip(self.dir.as_deref())
            .is_some_and(|(target, dir)| target.starts_with(dir));
        if inside || self.holds(file) {
            let dir = self
                .dir
                .as_deref()
                .unwrap_or(Path::new("the data directory"));
            return Err(CliError::bad_input(format!(
                "{} is {} the store being exported ({}): the export would overwrite it; write \
                 the export outside the data directory; nothing was written",
                file.display(),
                if inside {
                    "inside the data directory of"
                } else {
                    "a file of"
                },
                dir.display()
            )));
        }
        Ok(())
    }

    fn refuse_source(&self, file: &Path) -> Result<(), CliError> {
        if self.holds(file) {
            return Err(CliError::bad_input(format!(
                "{} is this store's own file, not an export: import reads a file `wfstate \
                 export` wrote; nothing was imported",
                file.display()
            )));
        }
        Ok(())
    }
}

/// `path` resolved: every link and `..` followed, for the file itself when it is there, else
/// for its directory (the file's name joined to it). `None` when its directory is not there.
fn resolved(path: &Path) -> Option<PathBuf> {
    if let Ok(path) = path.canonicalize() {
        return Some(path);
    }
    let name = path.file_name()?;
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    Some(parent.canonicalize().ok()?.join(name))
}

/// A copy of stdin in a temporary file (an import reads its file more than once), removed
/// when dropped.
#[derive(Debug)]
pub struct StdinCopy(PathBuf);

impl StdinCopy {
    fn take() -> Result<StdinCopy, CliError> {
        let stdin = std::io::stdin();
        if stdin.is_terminal() {
            return Err(CliError::bad_input(
                "import reads binary CBOR: pipe an export into stdin, or give a FILE",
            ));
        }
        let copy = StdinCopy(
            std::env::temp_dir().join(format!("wfstate-import-{}.cbor", std::process::id())),
        );
        let written = std::fs::File::create(&copy.0)
            .and_then(|mut file| std::io::copy(&mut stdin.lock(), &mut file));
        written.map_err(|error| {
            CliError::bad_input(format!(
                "cannot copy stdin to {}: {error}; give the export as a FILE",
                copy.0.display()
            ))
        })?;
        Ok(copy)
    }
}

impl Drop for StdinCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Where an import reads from: the file, or a copy of stdin; and how many events it holds.
#[derive(Debug)]
pub struct Source {
    from: From,
    events: u64,
}

#[derive(Debug)]
enum From {
    File(PathBuf),
    Stdin(StdinCopy),
}

impl Source {
    /// The file of `file` (`-`: a copy of stdin), checked to be a whole export: before the
    /// store is opened, so that a bad file creates nothing.
    pub fn checked(file: &Path) -> Result<Source, CliError> {
        let from = if is_standard(file) {
            From::Stdin(StdinCopy::take()?)
        } else {
            From::File(file.to_owned())
        };
        let mut source = Source { from, events: 0 };
        source.events = wfstate_projector::check_export(source.path())?;
        Ok(source)
    }

    fn path(&self) -> &Path {
        match &self.from {
            From::File(path) | From::Stdin(StdinCopy(path)) => path,
        }
    }

    fn events(&self) -> u64 {
        self.events
    }
}

async fn import_file<L: Backend>(
    log: &L,
    file: &Path,
    source: Option<Source>,
    json: bool,
) -> Result<u8, CliError> {
    let source = match source {
        Some(source) => source,
        None => Source::checked(file)?,
    };
    let (counted, progress) = Progress::start(log, "importing", Some(source.events()), json);
    let imported = import(&counted, source.path()).await?;
    drop(progress);
    crate::stdout::stored(format!(
        "the export is imported ({} events appended)",
        imported.appended
    ));
    let report = &imported.report;
    let name = if is_standard(file) {
        "stdin".to_owned()
    } else {
        file.display().to_string()
    };
    if json {
        print_json(&json!({
            "file": name,
            "cases": report.cases,
            "events": report.events,
            "appended": imported.appended,
            "already_there": imported.already_there,
        }));
    } else {
        out!(
            "imported {} events of {} cases from {name} ({} appended, {} already there), every \
             chain verified",
            report.events,
            report.cases,
            imported.appended,
            imported.already_there
        );
    }
    Ok(0)
}

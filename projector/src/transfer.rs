//! Export and import: a whole log to a portable file and back, into either backend, with
//! every chain verified. This is how a user moves from one machine to a NATS cluster. The
//! file's format is described in the `export_file` module.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use wfstate_events::{AppendOutcome, BoxError, EventLog, StoredEvent};
use wfstate_store::{CaseId, Event, Hash, Position, Version};

use crate::ProjectorError;
use crate::audit::{AuditReport, Auditor};
use crate::export_file::{ExportReader, ExportWriter, WRITE_FAILED};
use crate::spill::Cases;

/// Why an export or import did not complete.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    /// The file cannot be read or written.
    #[error("{}: {what}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The cause.
        source: BoxError,
    },
    /// The file is not an export of this format.
    #[error("{what}")]
    BadFile {
        /// What is wrong with the file, naming it.
        what: String,
        /// The cause, when there is one.
        source: Option<BoxError>,
    },
    /// A chain in the file (or the exported log) does not verify; nothing was imported.
    #[error("{}", broken(.0))]
    Broken(AuditReport),
    /// The target log holds events of a case in the file that are not the start of the
    /// file's history of that case; nothing was imported.
    #[error(
        "the target holds other events of case {0} than the file's; import into a log without it"
    )]
    CaseExists(String),
    /// The export's file exists, and overwriting was not asked for.
    #[error("{} exists; give another file, or overwrite it (--force)", .0.display())]
    Exists(PathBuf),
    /// The log failed.
    #[error(transparent)]
    Log(#[from] ProjectorError),
}

/// What a report of broken chains says, its first problem named.
fn broken(report: &AuditReport) -> String {
    match report.problems.first() {
        Some(first) => format!(
            "{} broken link(s), the first at position {} of case {} ({}): {}; nothing was written",
            report.problems.len(),
            first.position,
            first.case_id,
            first.code,
            first.detail
        ),
        None => "the chains do not verify; nothing was written".to_owned(),
    }
}

fn file_error<'a>(
    path: &'a Path,
    what: &'static str,
) -> impl FnOnce(std::io::Error) -> TransferError + 'a {
    move |error| TransferError::File {
        path: path.to_owned(),
        what,
        source: error.into(),
    }
}

fn bad_file(what: String, source: impl Into<BoxError>) -> TransferError {
    TransferError::BadFile {
        what,
        source: Some(source.into()),
    }
}

/// Writes the whole log to `path`, verifying every chain on the way; an existing file is
/// replaced. As [`export_with`] with `overwrite`.
///
/// # Errors
/// As [`export_with`].
pub async fn export<L: EventLog>(log: &L, path: &Path) -> Result<AuditReport, TransferError> {
    export_with(log, path, true).await
}

/// Removes a temporary file unless it was kept.
struct Partial {
    path: PathBuf,
    kept: bool,
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Writes the whole log to `path`, verifying every chain on the way. The file is written
/// beside `path` under a temporary name and renamed to `path` only once whole and synced, so
/// that a failed export (a full disk, a broken chain) leaves no file and `path` is either
/// the old file or the whole new one. Without `overwrite`, an existing `path` is refused.
///
/// # Errors
/// [`TransferError::Exists`] without `overwrite`; [`TransferError::Broken`] when a chain does
/// not verify (nothing is left behind); file and log errors.
pub async fn export_with<L: EventLog>(
    log: &L,
    path: &Path,
    overwrite: bool,
) -> Result<AuditReport, TransferError> {
    if !overwrite && path.exists() {
        return Err(TransferError::Exists(path.to_owned()));
    }
    let name = path.file_name().map_or_else(
        || "export".into(),
        |name| name.to_string_lossy().into_owned(),
    );
    let mut partial = Partial {
        path: path.with_file_name(format!(".{name}.partial-{}", std::process::id())),
        kept: false,
    };
    let file = File::create(&partial.path).map_err(file_error(path, "cannot create the file"))?;
    let (report, out) = export_to(log, BufWriter::new(file), path).await?;
    let file = out
        .into_inner()
        .map_err(|error| file_error(path, WRITE_FAILED)(error.into_error()))?;
    file.sync_all().map_err(file_error(path, WRITE_FAILED))?;
    if overwrite {
        std::fs::rename(&partial.path, path).map_err(file_error(path, WRITE_FAILED))?;
    } else {
        // A link fails where a file appeared meanwhile, which a rename would replace.
        std::fs::hard_link(&partial.path, path).map_err(|error| {
            if error.kind() == std::io::ErrorKind::AlreadyExists {
                TransferError::Exists(path.to_owned())
            } else {
                file_error(path, WRITE_FAILED)(error)
            }
        })?;
    }
    partial.kept = overwrite;
    Ok(report)
}

/// Writes the whole log to `out` (named `name` in errors), verifying every chain on the way;
/// returns the report and `out`. On a broken chain the output is incomplete: its trailer is
/// not written, so that no import takes it for a whole file.
///
/// # Errors
/// [`TransferError::Broken`] when a chain does not verify; file and log errors.
pub async fn export_to<L: EventLog, W: Write>(
    log: &L,
    out: W,
    name: &Path,
) -> Result<(AuditReport, W), TransferError> {
    let mut writer = ExportWriter::start(out, name)?;
    let mut auditor = Auditor::new();
    let last = log.last_position().await.map_err(ProjectorError::from)?;
    if last > Position::ZERO {
        let mut events = log
            .follow(Position::ZERO)
            .await
            .map_err(ProjectorError::from)?;
        while let Some(stored) = events.try_next().await.map_err(ProjectorError::from)? {
            auditor.observe(&stored)?;
            writer.record(&stored)?;
            if stored.position >= last {
                break;
            }
        }
    }
    let report = auditor.finish(None)?;
    if !report.is_clean() {
        return Err(TransferError::Broken(report));
    }
    Ok((report, writer.finish()?))
}

/// Opens an export file to read its records.
fn open(path: &Path) -> Result<ExportReader<BufReader<File>>, TransferError> {
    let file = File::open(path).map_err(file_error(path, "cannot open the file"))?;
    ExportReader::open(BufReader::new(file), path)
}

/// Reads an export file through to its trailer, checking that it is whole (every record
/// there, its count and hash as its trailer says); returns its event count. Chains are not
/// checked: [`import`] does that. For a check before a store is opened or created.
///
/// # Errors
/// [`TransferError::BadFile`] for a file cut, changed or not an export; file errors.
pub fn check_export(path: &Path) -> Result<u64, TransferError> {
    let mut reader = open(path)?;
    let mut events = 0;
    while reader.next()?.is_some() {
        events += 1;
    }
    Ok(events)
}

/// What an import did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// The file's cases and events, every chain verified.
    pub report: AuditReport,
    /// Events appended to the log.
    pub appended: u64,
    /// Events the log already held (an import resumed after an interruption, or run again).
    pub already_there: u64,
}

/// Where a case of the file stands in the target log: the version and payload hash of its
/// last event there.
#[derive(Debug, Serialize, Deserialize)]
struct Present {
    version: Version,
    event_hash: Hash,
    /// Whether the file's event at `version` is that very event.
    matched: bool,
}

/// Imports an export file into `log`, each case's events in order with their original commit
/// ids. Before anything is written, every chain in the file is verified, and every case the
/// log already holds is checked to hold the start of the file's history of that case (its
/// last event there is the file's event at the same version; the chains make the rest equal).
/// Such a case goes on from where it stands, so an import cut short can be run again and
/// completes it, and an import run twice writes nothing.
///
/// # Errors
/// [`TransferError::Broken`] or [`TransferError::CaseExists`] (nothing written); file and
/// log errors.
pub async fn import<L: EventLog>(log: &L, path: &Path) -> Result<Imported, TransferError> {
    let mut reader = open(path)?;
    let mut auditor = Auditor::new();
    while let Some(stored) = reader.next()? {
        auditor.observe(&stored)?;
    }
    let report = auditor.finish(None)?;
    if !report.is_clean() {
        return Err(TransferError::Broken(report));
    }
    // What the target holds of each case of the file, looked up on the case's first event.
    let mut cases: Cases<Target> = Cases::default();
    let mut reader = open(path)?;
    while let Some(stored) = reader.next()? {
        if cases.get(&stored.case_id)?.is_none() {
            let target = Target::look_up(log, &stored.case_id).await?;
            cases.get_or_insert_with(&stored.case_id, || target)?;
        }
        let target = cases.get_or_insert_with(&stored.case_id, Target::default)?;
        if let Some(standing) = &mut target.present
            && !standing.matched
            && file_version(&stored)? == standing.version
        {
            if Hash::of(&stored.payload) != standing.event_hash {
                return Err(TransferError::CaseExists(stored.case_id));
            }
            standing.matched = true;
        }
    }
    // The target holds more events of a case than the file: one is named.
    let longer = cases.find_map(|case, target| {
        let standing = target.present.as_ref()?;
        (!standing.matched).then(|| case.to_owned())
    })?;
    if let Some(case) = longer {
        return Err(TransferError::CaseExists(case));
    }
    let mut reader = open(path)?;
    let (mut appended, mut already_there) = (0, 0);
    while let Some(stored) = reader.next()? {
        let event = Event::decode(&stored.payload).map_err(|e| bad_file(e.to_string(), e))?;
        let target = cases.get_or_insert_with(&stored.case_id, Target::default)?;
        if target
            .present
            .as_ref()
            .is_some_and(|standing| event.version <= standing.version)
        {
            already_there += 1;
            continue;
        }
        let case_id =
            CaseId::new(stored.case_id.as_str()).map_err(|e| bad_file(e.to_string(), e))?;
        let outcome = log
            .append(&case_id, event.commit_id, target.position, stored.payload)
            .await
            .map_err(ProjectorError::from)?;
        let position = match outcome {
            AppendOutcome::Appended { position }
            // An earlier attempt of this import stored it (a lost acknowledgement).
            | AppendOutcome::Duplicate {
                position: Some(position),
            } => position,
            // Another writer wrote to the case while the import ran.
            AppendOutcome::Duplicate { position: None } | AppendOutcome::Conflict { .. } => {
                return Err(TransferError::CaseExists(stored.case_id));
            }
        };
        target.position = position;
        appended += 1;
    }
    Ok(Imported {
        report,
        appended,
        already_there,
    })
}

/// What the target log holds of a case of the file, and where its last event is.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Target {
    /// The target's last event of the case, when it has one.
    present: Option<Present>,
    /// The case's last position in the target (zero: none), as the import goes on.
    position: Position,
}

impl Target {
    async fn look_up<L: EventLog>(log: &L, case: &str) -> Result<Target, TransferError> {
        let case_id = CaseId::new(case).map_err(|e| bad_file(e.to_string(), e))?;
        let last = log
            .last_event(&case_id)
            .await
            .map_err(ProjectorError::from)?;
        let Some(last) = last else {
            return Ok(Target::default());
        };
        let event =
            Event::decode(&last.payload).map_err(|_| TransferError::CaseExists(case.into()))?;
        Ok(Target {
            present: Some(Present {
                version: event.version,
                event_hash: Hash::of(&last.payload),
                matched: false,
            }),
            position: last.position,
        })
    }
}

/// The version of an event of a verified file.
fn file_version(stored: &StoredEvent) -> Result<Version, TransferError> {
    Event::decode(&stored.payload)
        .map(|event| event.version)
        .map_err(|e| bad_file(e.to_string(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report without problems (no caller makes one, but the type allows it) is still
    /// described, not a panic on its first problem.
    #[test]
    fn a_broken_report_without_problems_is_described() {
        let error = TransferError::Broken(AuditReport::default());
        assert!(error.to_string().contains("nothing was written"), "{error}");
    }
}

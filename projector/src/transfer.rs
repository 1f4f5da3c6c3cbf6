//! Export and import: a whole log to a portable file and back, into either backend, with
//! every chain verified. This is how a user moves from one machine to a NATS cluster.
//!
//! The file is a CBOR sequence: a header map `{"format": "wfstate-export", "schema": 1}`,
//! then one map per event, in log order: `{"case_id": text, "position": uint,
//! "payload": bytes}` (`position` is the event's position in the exporting log; the payload is
//! the exact stored bytes, so every hash still holds).

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use wfstate_events::{AppendOutcome, BoxError, EventLog, StoredEvent};
use wfstate_store::{CaseId, Event, Hash, Position, Version};

use crate::ProjectorError;
use crate::audit::{AuditReport, Auditor};
use crate::spill::Cases;

const FORMAT: &str = "wfstate-export";
const FILE_SCHEMA: u64 = 1;

#[derive(Serialize, Deserialize)]
struct Header {
    format: String,
    schema: u64,
}

#[derive(Serialize, Deserialize)]
struct Record {
    case_id: String,
    position: Position,
    #[serde(with = "serde_bytes_compat")]
    payload: Vec<u8>,
}

/// Byte strings as CBOR bytes (not arrays of numbers).
mod serde_bytes_compat {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        match wfstate_store::Value::deserialize(deserializer)? {
            wfstate_store::Value::Bytes(bytes) => Ok(bytes),
            other => Err(serde::de::Error::custom(format!(
                "payload must be bytes, found {}",
                other.type_name()
            ))),
        }
    }
}

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

/// Writes the whole log to `path`, verifying every chain on the way.
///
/// # Errors
/// [`TransferError::Broken`] when a chain does not verify (the file is then incomplete and
/// removed); file and log errors.
pub async fn export<L: EventLog>(log: &L, path: &Path) -> Result<AuditReport, TransferError> {
    let file = File::create(path).map_err(file_error(path, "cannot create the file"))?;
    let mut out = BufWriter::new(file);
    let header = Header {
        format: FORMAT.into(),
        schema: FILE_SCHEMA,
    };
    write_item(&header, &mut out, path)?;
    let mut auditor = Auditor::new();
    let last = log.last_position().await.map_err(ProjectorError::from)?;
    if last > Position::ZERO {
        let mut events = log
            .follow(Position::ZERO)
            .await
            .map_err(ProjectorError::from)?;
        while let Some(stored) = events.try_next().await.map_err(ProjectorError::from)? {
            auditor.observe(&stored)?;
            let record = Record {
                case_id: stored.case_id.clone(),
                position: stored.position,
                payload: stored.payload.to_vec(),
            };
            write_item(&record, &mut out, path)?;
            if stored.position >= last {
                break;
            }
        }
    }
    out.flush()
        .map_err(file_error(path, "cannot write the file"))?;
    out.get_ref()
        .sync_all()
        .map_err(file_error(path, "cannot write the file"))?;
    let report = auditor.finish(None)?;
    if !report.is_clean() {
        let _ = std::fs::remove_file(path);
        return Err(TransferError::Broken(report));
    }
    Ok(report)
}

/// Reads the records of an export file, one at a time.
struct Reader {
    input: BufReader<File>,
    path: PathBuf,
}

/// What is wrong with a CBOR item of the file, in words.
fn cbor_problem(error: &ciborium::de::Error<std::io::Error>) -> String {
    match error {
        ciborium::de::Error::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            "the file ends in the middle of an item".to_owned()
        }
        ciborium::de::Error::Io(io) => format!("it cannot be read: {io}"),
        ciborium::de::Error::Syntax(offset) => format!("not CBOR at byte {offset} of the item"),
        ciborium::de::Error::Semantic(_, message) => {
            format!("an item of the wrong shape: {message}")
        }
        ciborium::de::Error::RecursionLimitExceeded => "items nested too deeply".to_owned(),
    }
}

/// Writes one CBOR item of the file.
fn write_item(
    item: &impl Serialize,
    out: &mut BufWriter<File>,
    path: &Path,
) -> Result<(), TransferError> {
    ciborium::into_writer(item, out).map_err(|error| match error {
        ciborium::ser::Error::Io(io) => file_error(path, "cannot write the file")(io),
        ciborium::ser::Error::Value(message) => {
            unreachable!("export items always encode: {message}")
        }
    })
}

impl Reader {
    fn open(path: &Path) -> Result<Reader, TransferError> {
        let file = File::open(path).map_err(file_error(path, "cannot open the file"))?;
        let mut input = BufReader::new(file);
        let header: Header = ciborium::from_reader(&mut input).map_err(|e| {
            let what = format!(
                "{}: not a wfstate export ({}); give a file written by wfstate export",
                path.display(),
                cbor_problem(&e)
            );
            bad_file(what, e)
        })?;
        if header.format != FORMAT || header.schema != FILE_SCHEMA {
            return Err(TransferError::BadFile {
                what: format!(
                    "{}: format {:?} schema {}; this wfstate reads {FORMAT:?} schema \
                     {FILE_SCHEMA}",
                    path.display(),
                    header.format,
                    header.schema
                ),
                source: None,
            });
        }
        Ok(Reader {
            input,
            path: path.to_owned(),
        })
    }

    fn next(&mut self) -> Result<Option<StoredEvent>, TransferError> {
        let at_end = self
            .input
            .fill_buf()
            .map_err(file_error(&self.path, "cannot read the file"))?
            .is_empty();
        if at_end {
            return Ok(None);
        }
        let record: Record = ciborium::from_reader(&mut self.input).map_err(|e| {
            let what = format!(
                "{}: a damaged record ({}); export the log again",
                self.path.display(),
                cbor_problem(&e)
            );
            bad_file(what, e)
        })?;
        Ok(Some(StoredEvent {
            position: record.position,
            case_id: record.case_id,
            commit_id: None,
            payload: Bytes::from(record.payload),
        }))
    }
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
    let mut reader = Reader::open(path)?;
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
    let mut reader = Reader::open(path)?;
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
    let mut reader = Reader::open(path)?;
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

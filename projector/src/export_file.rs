//! The export file format: a CBOR sequence of a header, one record per event, and a trailer
//! that counts the records and hashes every byte before it, so that a file cut at a record
//! boundary, or changed, is refused rather than imported short.
//!
//! - header: `{"format": "wfstate-export", "schema": 2}`;
//! - record: `{"case_id": text, "position": uint, "payload": bytes}` (`position` is the
//!   event's position in the exporting log; the payload is the exact stored bytes, so every
//!   hash still holds);
//! - trailer: `{"trailer": "wfstate-export", "events": uint, "sha256": bytes .size 32}`, the
//!   SHA-256 of the file's bytes from its first byte up to the trailer.

use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest, Sha256};
use wfstate_events::{BoxError, StoredEvent};
use wfstate_store::Position;

use crate::transfer::TransferError;

const FORMAT: &str = "wfstate-export";

/// What a failed write of an export says, with what to do.
pub(crate) const WRITE_FAILED: &str =
    "cannot write the file; free space, raise the file size limit, or write elsewhere";
const FILE_SCHEMA: u64 = 2;

#[derive(Serialize, Deserialize)]
struct Header {
    format: String,
    schema: u64,
}

#[derive(Serialize)]
struct Record<'a> {
    case_id: &'a str,
    position: Position,
    #[serde(serialize_with = "as_bytes")]
    payload: &'a [u8],
}

#[derive(Serialize)]
struct End<'a> {
    trailer: &'a str,
    events: u64,
    #[serde(serialize_with = "as_bytes")]
    sha256: &'a [u8],
}

fn as_bytes<S: serde::Serializer>(bytes: &&[u8], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_bytes(bytes)
}

/// A CBOR byte string (not an array of numbers).
struct ByteBuf(Vec<u8>);

impl<'de> Deserialize<'de> for ByteBuf {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ByteBuf, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ByteBuf;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<ByteBuf, E> {
                Ok(ByteBuf(bytes.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, bytes: Vec<u8>) -> Result<ByteBuf, E> {
                Ok(ByteBuf(bytes))
            }
        }
        deserializer.deserialize_byte_buf(Visitor)
    }
}

/// A record or the trailer, as read: which one it is shows in its keys.
#[derive(Deserialize)]
struct Item {
    case_id: Option<String>,
    position: Option<Position>,
    payload: Option<ByteBuf>,
    trailer: Option<String>,
    events: Option<u64>,
    sha256: Option<ByteBuf>,
}

/// Bytes passed through, hashed and counted on the way.
struct Hashing<T> {
    inner: T,
    hasher: Sha256,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(bytes)?;
        self.hasher.update(&bytes[..written]);
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buffer)?;
        self.hasher.update(&buffer[..read]);
        Ok(read)
    }
}

/// Writes an export: the header first, then [`ExportWriter::record`] for each event, then
/// [`ExportWriter::finish`].
pub(crate) struct ExportWriter<W: Write> {
    out: Hashing<W>,
    events: u64,
    name: PathBuf,
}

fn write_error(name: &Path) -> impl FnOnce(std::io::Error) -> TransferError + '_ {
    move |error| TransferError::File {
        path: name.to_owned(),
        what: WRITE_FAILED,
        source: error.into(),
    }
}

fn encode(item: &impl Serialize, out: &mut impl Write, name: &Path) -> Result<(), TransferError> {
    ciborium::into_writer(item, out).map_err(|error| match error {
        ciborium::ser::Error::Io(io) => write_error(name)(io),
        ciborium::ser::Error::Value(message) => {
            unreachable!("export items always encode: {message}")
        }
    })
}

impl<W: Write> ExportWriter<W> {
    /// Starts an export to `out`, named `name` in errors.
    pub(crate) fn start(out: W, name: &Path) -> Result<Self, TransferError> {
        let mut writer = ExportWriter {
            out: Hashing {
                inner: out,
                hasher: Sha256::new(),
            },
            events: 0,
            name: name.to_owned(),
        };
        let header = Header {
            format: FORMAT.into(),
            schema: FILE_SCHEMA,
        };
        encode(&header, &mut writer.out, &writer.name)?;
        Ok(writer)
    }

    /// Writes one event.
    pub(crate) fn record(&mut self, stored: &StoredEvent) -> Result<(), TransferError> {
        let record = Record {
            case_id: &stored.case_id,
            position: stored.position,
            payload: &stored.payload,
        };
        encode(&record, &mut self.out, &self.name)?;
        self.events += 1;
        Ok(())
    }

    /// Writes the trailer and flushes; returns the output.
    pub(crate) fn finish(self) -> Result<W, TransferError> {
        let Hashing { mut inner, hasher } = self.out;
        let digest = hasher.finalize();
        let trailer = End {
            trailer: FORMAT,
            events: self.events,
            sha256: &digest,
        };
        encode(&trailer, &mut inner, &self.name)?;
        inner.flush().map_err(write_error(&self.name))?;
        Ok(inner)
    }
}

fn bad_file(what: String, source: Option<BoxError>) -> TransferError {
    TransferError::BadFile { what, source }
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

/// Reads the records of an export, one at a time; the end is reached only through a trailer
/// that counts and hashes exactly what was read.
pub(crate) struct ExportReader<R: BufRead> {
    input: Hashing<R>,
    path: PathBuf,
    events: u64,
    ended: bool,
}

impl<R: BufRead> ExportReader<R> {
    /// Reads the header of `input`, the file `path`.
    pub(crate) fn open(input: R, path: &Path) -> Result<Self, TransferError> {
        let mut input = Hashing {
            inner: input,
            hasher: Sha256::new(),
        };
        let header: Header = ciborium::from_reader(&mut input).map_err(|e| {
            let what = format!(
                "{}: not a wfstate export ({}); give a file written by `wfstate export`",
                path.display(),
                cbor_problem(&e)
            );
            bad_file(what, None)
        })?;
        if header.format != FORMAT || header.schema != FILE_SCHEMA {
            let hint = if header.format == FORMAT && header.schema < FILE_SCHEMA {
                "; it has no trailer to show that it is whole: export the log again with this \
                 wfstate"
            } else {
                ""
            };
            return Err(bad_file(
                format!(
                    "{}: format {:?} schema {}; this wfstate reads {FORMAT:?} schema \
                     {FILE_SCHEMA}{hint}",
                    path.display(),
                    header.format,
                    header.schema
                ),
                None,
            ));
        }
        Ok(ExportReader {
            input,
            path: path.to_owned(),
            events: 0,
            ended: false,
        })
    }

    fn refuse(&self, problem: &str) -> TransferError {
        bad_file(
            format!(
                "{}: {problem}, after {} event(s); nothing was imported: export the log again",
                self.path.display(),
                self.events
            ),
            None,
        )
    }

    /// The next event; `None` after a trailer that holds.
    pub(crate) fn next(&mut self) -> Result<Option<StoredEvent>, TransferError> {
        let at_end = self
            .input
            .inner
            .fill_buf()
            .map_err(|error| TransferError::File {
                path: self.path.clone(),
                what: "cannot read the file",
                source: error.into(),
            })?
            .is_empty();
        if at_end {
            return if self.ended {
                Ok(None)
            } else {
                Err(self.refuse("the file ends without its trailer: it was cut"))
            };
        }
        if self.ended {
            return Err(self.refuse("the file goes on after its trailer"));
        }
        // The hash covers the bytes before the trailer: taken before the item is read.
        let before = self.input.hasher.clone().finalize();
        let item: Item = ciborium::from_reader(&mut self.input).map_err(|e| {
            let what = format!(
                "{}: a damaged record after {} event(s) ({}); nothing was imported: export the \
                 log again",
                self.path.display(),
                self.events,
                cbor_problem(&e)
            );
            bad_file(what, None)
        })?;
        match item {
            Item {
                case_id: Some(case_id),
                position: Some(position),
                payload: Some(ByteBuf(payload)),
                trailer: None,
                ..
            } => {
                self.events += 1;
                Ok(Some(StoredEvent {
                    position,
                    case_id,
                    commit_id: None,
                    payload: Bytes::from(payload),
                }))
            }
            Item {
                trailer: Some(trailer),
                events: Some(events),
                sha256: Some(ByteBuf(sha256)),
                case_id: None,
                ..
            } if trailer == FORMAT => {
                if events != self.events {
                    return Err(self.refuse(&format!(
                        "the trailer counts {events} event(s) where the file holds {}",
                        self.events
                    )));
                }
                if sha256 != before.as_slice() {
                    return Err(self.refuse(
                        "the trailer's hash is not the hash of the file's content: the file \
                         was changed",
                    ));
                }
                self.ended = true;
                self.next()
            }
            _ => Err(self.refuse("an item that is neither a record nor the trailer")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(position: u64) -> StoredEvent {
        StoredEvent {
            position: Position::new(position),
            case_id: format!("case-{}", position % 3),
            commit_id: None,
            payload: Bytes::from(vec![u8::try_from(position).unwrap_or(0); 40]),
        }
    }

    /// An export of `count` events, and where each of its items ends.
    fn export(count: u64) -> (Vec<u8>, Vec<usize>) {
        let mut writer = ExportWriter::start(Vec::new(), Path::new("test")).unwrap();
        let mut ends = vec![writer.out.inner.len()];
        for position in 1..=count {
            writer.record(&event(position)).unwrap();
            ends.push(writer.out.inner.len());
        }
        (writer.finish().unwrap(), ends)
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<StoredEvent>, TransferError> {
        let mut reader = ExportReader::open(bytes, Path::new("test"))?;
        let mut events = Vec::new();
        while let Some(stored) = reader.next()? {
            events.push(stored);
        }
        Ok(events)
    }

    #[test]
    fn a_whole_export_reads_back_as_written() {
        let (bytes, _) = export(20);
        let events = read_all(&bytes).unwrap();
        assert_eq!(events, (1..=20).map(event).collect::<Vec<_>>());
        assert!(read_all(&export(0).0).unwrap().is_empty());
    }

    #[test]
    fn a_file_cut_anywhere_is_refused() {
        let (bytes, ends) = export(20);
        // At every record boundary (the trailer gone), and inside the trailer.
        for end in ends.iter().copied().chain(bytes.len() - 10..bytes.len()) {
            let error = read_all(&bytes[..end]).unwrap_err();
            assert!(
                matches!(error, TransferError::BadFile { .. }),
                "{end}: {error}"
            );
        }
    }

    #[test]
    fn a_changed_byte_or_a_wrong_count_is_refused() {
        let (bytes, ends) = export(20);
        for at in [3, ends[5] + 2, ends[20] - 1, bytes.len() - 1] {
            let mut changed = bytes.clone();
            changed[at] ^= 1;
            assert!(read_all(&changed).is_err(), "byte {at}");
        }
        // A record dropped from the middle, the trailer kept: the count and hash disagree.
        let mut dropped = bytes[..ends[5]].to_vec();
        dropped.extend_from_slice(&bytes[ends[6]..]);
        let error = read_all(&dropped).unwrap_err();
        assert!(error.to_string().contains("counts 20 event(s)"), "{error}");
        // Anything after the trailer.
        let mut longer = bytes.clone();
        longer.extend_from_slice(&bytes[ends[0]..ends[1]]);
        let error = read_all(&longer).unwrap_err();
        assert!(error.to_string().contains("after its trailer"), "{error}");
    }
}

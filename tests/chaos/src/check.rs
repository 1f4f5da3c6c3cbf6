//! The end-of-run reader, independent of the writers' code path: every message of the stream
//! read by sequence through the leader (`STREAM.MSG.GET`, straight through async-nats), each
//! payload decoded as plain CBOR and hashed with `sha2`, each case's chain rebuilt from that.
//! Nothing here goes through wfstate's log, client or codec.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream;
use futures::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};

/// One stored event, as this reader sees it.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Its sequence in the stream.
    pub sequence: u64,
    /// The case its subject names.
    pub case: String,
    /// The version its payload holds.
    pub version: u64,
    /// SHA-256 of the payload, hex.
    pub hash: String,
    /// The writer's clock in the payload.
    pub committed_at_ms: u64,
    /// The commit id.
    pub commit_id: String,
    /// The value its mutations set the ctx key `n` to, if they set it.
    pub n: Option<u64>,
}

/// A chain that does not hold: a version out of order, a link to the wrong previous event, a
/// payload that is not an event of its subject's case.
#[derive(Debug, Clone)]
pub struct Break {
    /// The sequence of the event that breaks it.
    pub sequence: u64,
    /// The writer's clock of that event (0 when unreadable).
    pub committed_at_ms: u64,
    /// What is wrong.
    pub detail: String,
}

/// What the reader found.
#[derive(Debug, Default)]
pub struct StreamContents {
    /// Every event that decoded, in stream order.
    pub events: Vec<Stored>,
    /// For each commit id, the indexes of its events in `events`.
    pub by_commit_id: HashMap<String, Vec<usize>>,
    /// Every broken chain link.
    pub breaks: Vec<Break>,
}

/// The longest the whole read may take.
const READ_WITHIN: Duration = Duration::from_mins(5);
/// Reads in flight at once.
const READS_IN_FLIGHT: usize = 64;

/// Reads the whole stream `stream` (case subjects `<prefix>.<case>`) and checks each chain.
///
/// # Panics
/// When the stream cannot be read within five minutes: the run has no result then.
pub async fn read_stream(client: async_nats::Client, stream: &str, prefix: &str) -> StreamContents {
    let context = jetstream::new(client);
    let read = async {
        let mut handle = context.get_stream(stream).await?;
        let last = handle.info().await?.state.last_sequence;
        let messages: Vec<_> = futures::stream::iter(1..=last)
            .map(|sequence| {
                let handle = handle.clone();
                async move {
                    handle
                        .get_raw_message(sequence)
                        .await
                        .map(|message| (sequence, message.subject.to_string(), message.payload))
                }
            })
            .buffered(READS_IN_FLIGHT)
            .try_collect()
            .await?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(messages)
    };
    let messages = tokio::time::timeout(READ_WITHIN, read)
        .await
        .expect("the stream is read within five minutes")
        .expect("the stream can be read through its leader");

    let mut contents = StreamContents::default();
    // Per case: the last version and the hash of the last payload.
    let mut heads: HashMap<String, (u64, [u8; 32])> = HashMap::new();
    let subject_prefix = format!("{prefix}.");
    for (sequence, subject, payload) in messages {
        let hash: [u8; 32] = Sha256::digest(&payload).into();
        let Some(case) = subject.strip_prefix(&subject_prefix) else {
            contents.breaks.push(Break {
                sequence,
                committed_at_ms: 0,
                detail: format!("subject {subject} is not a case's"),
            });
            continue;
        };
        let event = match decode(&payload) {
            Ok(event) => event,
            Err(detail) => {
                contents.breaks.push(Break {
                    sequence,
                    committed_at_ms: 0,
                    detail: format!("case {case}: {detail}"),
                });
                continue;
            }
        };
        let (version, previous) = heads.get(case).copied().unwrap_or((0, [0; 32]));
        let broken = |detail: String| Break {
            sequence,
            committed_at_ms: event.committed_at_ms,
            detail: format!("case {case}: {detail}"),
        };
        if event.case_id != case {
            contents
                .breaks
                .push(broken(format!("the payload names case {}", event.case_id)));
        }
        if event.version != version + 1 {
            contents.breaks.push(broken(format!(
                "version {} follows version {version}",
                event.version
            )));
        }
        if event.prev_event_hash != previous {
            contents
                .breaks
                .push(broken("the link to the previous event is wrong".into()));
        }
        heads.insert(case.to_owned(), (event.version, hash));
        contents
            .by_commit_id
            .entry(event.commit_id.clone())
            .or_default()
            .push(contents.events.len());
        contents.events.push(Stored {
            sequence,
            case: case.to_owned(),
            version: event.version,
            hash: hex::encode(hash),
            committed_at_ms: event.committed_at_ms,
            commit_id: event.commit_id.clone(),
            n: event.n,
        });
    }
    contents
}

struct Decoded {
    case_id: String,
    version: u64,
    commit_id: String,
    prev_event_hash: [u8; 32],
    committed_at_ms: u64,
    n: Option<u64>,
}

/// The value a list of mutations (plain CBOR) sets the ctx key `n` to, if any: the last
/// `patch_ctx` `set` or `set_ctx` `ctx` that holds it.
fn sets_n(mutations: &ciborium::Value) -> Option<u64> {
    let entry = |map: &ciborium::Value, name: &str| {
        map.as_map()?
            .iter()
            .find(|(key, _)| key.as_text() == Some(name))
            .map(|(_, value)| value.clone())
    };
    mutations.as_array()?.iter().rev().find_map(|mutation| {
        let values = entry(mutation, "set").or_else(|| entry(mutation, "ctx"))?;
        let n = entry(&values, "n")?;
        u64::try_from(n.as_integer()?).ok()
    })
}

/// The fields the checks need, from the payload as plain CBOR (a map with text keys).
fn decode(payload: &[u8]) -> Result<Decoded, String> {
    let value: ciborium::Value =
        ciborium::from_reader(payload).map_err(|error| format!("not CBOR: {error}"))?;
    let ciborium::Value::Map(entries) = value else {
        return Err("the payload is not a map".into());
    };
    let field = |name: &str| {
        entries
            .iter()
            .find(|(key, _)| key.as_text() == Some(name))
            .map(|(_, value)| value)
            .ok_or_else(|| format!("no {name}"))
    };
    let integer = |name: &str| {
        field(name)?
            .as_integer()
            .and_then(|integer| u64::try_from(integer).ok())
            .ok_or_else(|| format!("{name} is not an unsigned integer"))
    };
    let text = |name: &str| {
        field(name)?
            .as_text()
            .map(str::to_owned)
            .ok_or_else(|| format!("{name} is not text"))
    };
    let prev_event_hash = field("prev_event_hash")?
        .as_bytes()
        .and_then(|bytes| <[u8; 32]>::try_from(bytes.as_slice()).ok())
        .ok_or("prev_event_hash is not 32 bytes")?;
    Ok(Decoded {
        case_id: text("case_id")?,
        version: integer("version")?,
        commit_id: text("commit_id")?,
        prev_event_hash,
        committed_at_ms: integer("committed_at_ms")?,
        n: field("mutations").ok().and_then(sets_n),
    })
}

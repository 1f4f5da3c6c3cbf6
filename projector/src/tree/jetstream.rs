//! The tree of a JetStream log, in two streams beside the log's: `<stream>_TREE`, whose
//! message at sequence `n + 1` is leaf `n` (its event's position, 8 bytes big-endian, then
//! its stored hashes), appended with an expected last sequence so that two processes cannot
//! both extend it; and `<stream>_CHECKPOINTS`, the signed notes in the order they were signed.
//! Both deny deletes and purges, and serve direct gets from any replica.

use async_nats::jetstream::{self, stream};
use futures::{StreamExt, TryStreamExt};
use wfstate_events::{JetStreamLog, LogError, LogErrorKind};
use wfstate_store::{Hash, Position};

use super::{TreeRecord, TreeStore, corrupted};
use crate::ProjectorError;
use crate::nats::failed;

/// Reads of leaves in flight at once.
const READS_IN_FLIGHT: usize = 32;

/// The tree of a JetStream log.
#[derive(Clone)]
pub struct JetStreamTree {
    context: jetstream::Context,
    leaves: stream::Stream,
    checkpoints: stream::Stream,
    leaf_subject: String,
    checkpoint_subject: String,
}

impl std::fmt::Debug for JetStreamTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamTree")
            .field("leaf_subject", &self.leaf_subject)
            .finish_non_exhaustive()
    }
}

impl JetStreamTree {
    /// Opens the tree of `log`, creating its two streams (with the log's replicas) when
    /// `create` and they are missing.
    ///
    /// # Errors
    /// [`ProjectorError::Log`] when the streams cannot be opened or made.
    pub async fn open(log: &JetStreamLog, create: bool) -> Result<Self, ProjectorError> {
        let name = log.stream_name();
        let leaf_subject = format!("wfstate-tree.{name}.leaf");
        let checkpoint_subject = format!("wfstate-tree.{name}.checkpoint");
        let context = log.context().clone();
        let leaves = open_stream(log, &format!("{name}_TREE"), &leaf_subject, create).await?;
        let checkpoints = open_stream(
            log,
            &format!("{name}_CHECKPOINTS"),
            &checkpoint_subject,
            create,
        )
        .await?;
        Ok(JetStreamTree {
            context,
            leaves,
            checkpoints,
            leaf_subject,
            checkpoint_subject,
        })
    }

    /// The message at `sequence` of `stream`.
    async fn message(stream: &stream::Stream, sequence: u64) -> Result<Vec<u8>, ProjectorError> {
        let message = stream
            .direct_get(sequence)
            .await
            .map_err(|e| failed(&format!("reading message {sequence} of the tree"), e))?;
        Ok(message.payload.to_vec())
    }

    async fn last_sequence(stream: &stream::Stream) -> Result<u64, ProjectorError> {
        let mut stream = stream.clone();
        let info = stream
            .info()
            .await
            .map_err(|e| failed("reading the tree's stream", e))?;
        Ok(info.state.last_sequence)
    }
}

async fn open_stream(
    log: &JetStreamLog,
    name: &str,
    subject: &str,
    create: bool,
) -> Result<stream::Stream, ProjectorError> {
    if let Ok(stream) = log.context().get_stream(name).await {
        return Ok(stream);
    }
    if !create {
        return Err(ProjectorError::Log(LogError::new(
            LogErrorKind::Config,
            format!(
                "stream {name} of the log's tree is missing: no checkpoint was made yet \
                 (`wfstate checkpoint`)"
            ),
        )));
    }
    log.context()
        .create_stream(stream::Config {
            name: name.to_owned(),
            subjects: vec![subject.to_owned()],
            storage: stream::StorageType::File,
            num_replicas: log.replicas(),
            deny_delete: true,
            deny_purge: true,
            allow_direct: true,
            ..stream::Config::default()
        })
        .await
        .map_err(|e| failed(&format!("creating stream {name} of the log's tree"), e))
}

/// A leaf's message: its position and its hashes.
fn decode(leaf: u64, bytes: &[u8]) -> Result<(Position, Vec<Hash>), ProjectorError> {
    let bad = || {
        corrupted(format!(
            "leaf {leaf} of the tree holds {} bytes",
            bytes.len()
        ))
    };
    let (position, hashes) = bytes.split_first_chunk::<8>().ok_or_else(bad)?;
    let (hashes, rest) = hashes.as_chunks::<32>();
    if !rest.is_empty() || hashes.is_empty() {
        return Err(bad());
    }
    Ok((
        Position::new(u64::from_be_bytes(*position)),
        hashes.iter().map(|bytes| Hash(*bytes)).collect(),
    ))
}

impl TreeStore for JetStreamTree {
    async fn size(&self) -> Result<(u64, Position), ProjectorError> {
        let size = Self::last_sequence(&self.leaves).await?;
        if size == 0 {
            return Ok((0, Position::ZERO));
        }
        let (position, _) = decode(size - 1, &Self::message(&self.leaves, size).await?)?;
        Ok((size, position))
    }

    async fn append(&self, first: u64, records: Vec<TreeRecord>) -> Result<(), ProjectorError> {
        let mut acks = futures::stream::FuturesOrdered::new();
        for (leaf, record) in (first..).zip(records) {
            let mut payload = record.position.get().to_be_bytes().to_vec();
            payload.extend(record.hashes.iter().flat_map(|hash| hash.0));
            let message = jetstream::message::PublishMessage::build()
                .payload(payload.into())
                .expected_last_sequence(leaf)
                .message_id(format!("leaf-{leaf}"));
            let ack = self
                .context
                .send_publish(self.leaf_subject.clone(), message)
                .await
                .map_err(|e| failed("extending the tree", e))?;
            acks.push_back(ack.into_future());
        }
        while let Some(ack) = acks.next().await {
            ack.map_err(|error| {
                ProjectorError::Log(
                    LogError::new(
                        LogErrorKind::Unavailable,
                        format!(
                            "extending the tree from leaf {first}: refused ({error}); another \
                             process may have extended it meanwhile: run the command again"
                        ),
                    )
                    .with_source(error),
                )
            })?;
        }
        Ok(())
    }

    async fn hashes(&self, leaves: Vec<u64>) -> Result<Vec<Vec<Hash>>, ProjectorError> {
        futures::stream::iter(leaves)
            .map(|leaf| async move {
                let bytes = Self::message(&self.leaves, leaf + 1).await?;
                decode(leaf, &bytes).map(|(_, hashes)| hashes)
            })
            .buffered(READS_IN_FLIGHT)
            .try_collect()
            .await
    }

    async fn leaf_at(&self, position: Position) -> Result<Option<u64>, ProjectorError> {
        // Leaves are in log order: positions only grow with them.
        let (mut low, mut high) = (0, Self::last_sequence(&self.leaves).await?);
        while low < high {
            let middle = low + (high - low) / 2;
            let (found, _) = decode(middle, &Self::message(&self.leaves, middle + 1).await?)?;
            match found.cmp(&position) {
                std::cmp::Ordering::Equal => return Ok(Some(middle)),
                std::cmp::Ordering::Less => low = middle + 1,
                std::cmp::Ordering::Greater => high = middle,
            }
        }
        Ok(None)
    }

    async fn checkpoints(&self) -> Result<Vec<String>, ProjectorError> {
        let last = Self::last_sequence(&self.checkpoints).await?;
        futures::stream::iter(1..=last)
            .map(|sequence| async move {
                let bytes = Self::message(&self.checkpoints, sequence).await?;
                String::from_utf8(bytes)
                    .map_err(|_| corrupted(format!("checkpoint {sequence} is not text")))
            })
            .buffered(READS_IN_FLIGHT)
            .try_collect()
            .await
    }

    async fn newest_checkpoint(&self) -> Result<Option<String>, ProjectorError> {
        let last = Self::last_sequence(&self.checkpoints).await?;
        if last == 0 {
            return Ok(None);
        }
        let bytes = Self::message(&self.checkpoints, last).await?;
        String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| corrupted(format!("checkpoint {last} is not text")))
    }

    async fn publish(&self, _size: u64, note: String) -> Result<(), ProjectorError> {
        self.context
            .publish(self.checkpoint_subject.clone(), note.into())
            .await
            .map_err(|e| failed("keeping a checkpoint", e))?
            .await
            .map_err(|e| failed("keeping a checkpoint", e))?;
        Ok(())
    }
}

//! The log's Merkle tree kept beside the log ([`wfstate_store::merkle`]): extended over new
//! events in log order, checkpointed with a signature ([`wfstate_store::checkpoint`]), and
//! read for proofs. A [`TreeStore`] keeps each leaf's stored hashes together, with the
//! event's position, and the signed checkpoints.
//!
//! What an auditor checks ([`audit_tree`]): every checkpoint is signed by a trusted key, each
//! extends the one before (a consistency proof from the stored tree), and the log's events
//! make each checkpoint's root again (a history rewritten after a checkpoint, or its newest
//! events cut, is found).

mod embedded;
mod jetstream;

use std::collections::BTreeMap;
use std::future::Future;

use futures::TryStreamExt;
use wfstate_events::{EventLog, LogError, LogErrorKind};
use wfstate_store::checkpoint::{self, Checkpoint, SignerKey, VerifierKey};
use wfstate_store::merkle;
use wfstate_store::{CaseId, Code, Hash, Position, Receipt, Version};

pub use embedded::EmbeddedTree;
pub use jetstream::JetStreamTree;

use crate::ProjectorError;
use crate::audit::audit_case;

/// Leaves appended to the store at a time while the tree is extended.
const APPEND_BATCH: usize = 1024;

/// One leaf as stored: the position of its event, and the hashes its append stored
/// ([`merkle::hashes_to_store`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeRecord {
    /// The event's position in the log.
    pub position: Position,
    /// The leaf's hash and one per subtree it completed.
    pub hashes: Vec<Hash>,
}

/// Where the tree and its checkpoints are kept.
pub trait TreeStore: Send + Sync {
    /// How many leaves the tree has, and the position of the last one's event.
    fn size(&self) -> impl Future<Output = Result<(u64, Position), ProjectorError>> + Send;

    /// Appends `records` as leaves `first`, `first + 1`, ..., all or none; refused unless the
    /// tree has exactly `first` leaves (another process extended it meanwhile).
    fn append(
        &self,
        first: u64,
        records: Vec<TreeRecord>,
    ) -> impl Future<Output = Result<(), ProjectorError>> + Send;

    /// The stored hashes of each of `leaves` (sorted, distinct), in the same order.
    fn hashes(
        &self,
        leaves: Vec<u64>,
    ) -> impl Future<Output = Result<Vec<Vec<Hash>>, ProjectorError>> + Send;

    /// The leaf of the event at `position`, if the tree has it.
    fn leaf_at(
        &self,
        position: Position,
    ) -> impl Future<Output = Result<Option<u64>, ProjectorError>> + Send;

    /// Every signed checkpoint, oldest first.
    fn checkpoints(&self) -> impl Future<Output = Result<Vec<String>, ProjectorError>> + Send;

    /// The newest signed checkpoint, if any.
    fn newest_checkpoint(
        &self,
    ) -> impl Future<Output = Result<Option<String>, ProjectorError>> + Send;

    /// Keeps a signed checkpoint of the tree of `size` leaves.
    fn publish(
        &self,
        size: u64,
        note: String,
    ) -> impl Future<Output = Result<(), ProjectorError>> + Send;
}

/// The stored hashes at `indexes`, for the pure tree functions ([`merkle`]'s `*_indexes`
/// name what each reads).
///
/// # Errors
/// [`ProjectorError::Log`] when the store cannot read them, or holds fewer than it should.
pub async fn stored_hashes(
    store: &impl TreeStore,
    indexes: &[u64],
) -> Result<BTreeMap<u64, Hash>, ProjectorError> {
    let mut places: BTreeMap<u64, Vec<(u64, u64)>> = BTreeMap::new();
    for &index in indexes {
        let (leaf, offset) = merkle::locate(index);
        places.entry(leaf).or_default().push((index, offset));
    }
    let leaves: Vec<u64> = places.keys().copied().collect();
    let records = store.hashes(leaves.clone()).await?;
    let mut hashes = BTreeMap::new();
    for (leaf, record) in leaves.iter().zip(records) {
        for &(index, offset) in &places[leaf] {
            let hash = usize::try_from(offset)
                .ok()
                .and_then(|offset| record.get(offset));
            let hash = hash.ok_or_else(|| {
                corrupted(format!(
                    "leaf {leaf} stores {} hashes, not {}",
                    record.len(),
                    offset + 1
                ))
            })?;
            hashes.insert(index, *hash);
        }
    }
    Ok(hashes)
}

fn corrupted(detail: impl std::fmt::Display) -> ProjectorError {
    ProjectorError::Log(LogError::new(
        LogErrorKind::Corrupted,
        format!("the log's tree: {detail}"),
    ))
}

fn tree_failed(error: merkle::MerkleError) -> ProjectorError {
    corrupted(error)
}

/// Extends the tree over every event of the log up to its last one now; returns the tree's
/// size, and its root.
///
/// # Errors
/// [`ProjectorError::Log`] when the log or the store fails, or another process extended the
/// tree meanwhile (run it again).
pub async fn extend<L: EventLog>(
    log: &L,
    store: &impl TreeStore,
) -> Result<(u64, Hash), ProjectorError> {
    let (size, mut last) = store.size().await?;
    let mut frontier = merkle::Frontier::of(
        size,
        &stored_hashes(store, &merkle::root_indexes(size)).await?,
    )
    .map_err(tree_failed)?;
    let until = log.last_position().await?;
    if last < until {
        let mut events = log.follow(last).await?;
        let mut records = Vec::with_capacity(APPEND_BATCH);
        let mut first = size;
        while last < until {
            let Some(event) = events.try_next().await? else {
                break;
            };
            let leaf = merkle::leaf_hash(&Hash::of(&event.payload).0);
            let hashes = frontier.push(leaf).map_err(tree_failed)?;
            last = event.position;
            records.push(TreeRecord {
                position: event.position,
                hashes,
            });
            if records.len() == APPEND_BATCH {
                store.append(first, std::mem::take(&mut records)).await?;
                first = frontier.size();
            }
        }
        // Every leaf counted in the root is stored before it is signed.
        if !records.is_empty() {
            store.append(first, records).await?;
        }
    }
    let root = frontier.root().map_err(tree_failed)?;
    Ok((frontier.size(), root))
}

/// Extends the tree and signs a checkpoint of it (origin `origin`, now); returns the note.
///
/// # Errors
/// As [`extend`].
pub async fn checkpoint<L: EventLog>(
    log: &L,
    store: &impl TreeStore,
    key: &SignerKey,
    origin: &str,
) -> Result<String, ProjectorError> {
    let (size, root) = extend(log, store).await?;
    sign(store, key, origin, size, root).await
}

async fn sign(
    store: &impl TreeStore,
    key: &SignerKey,
    origin: &str,
    size: u64,
    root: Hash,
) -> Result<String, ProjectorError> {
    let note = key.sign(&Checkpoint {
        origin: origin.to_owned(),
        size,
        root,
        time_ms: now_ms(),
    });
    store.publish(size, note.clone()).await?;
    Ok(note)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

/// The body of a signed note, read without checking its signature (a store's own newest
/// checkpoint, to know its size and time).
fn unchecked(note: &str) -> Result<Checkpoint, ProjectorError> {
    let text = note.rsplit_once("\n\n").map_or(note, |(text, _)| text);
    Checkpoint::parse_body(&format!("{text}\n"))
        .map_err(|error| corrupted(format!("the newest checkpoint: {error}")))
}

/// When a running projector signs a checkpoint: after `every` new events, or `interval` after
/// the newest checkpoint when there are new events at all.
#[derive(Debug, Clone)]
pub struct CheckpointPolicy {
    /// The key that signs.
    pub key: SignerKey,
    /// The log's origin line.
    pub origin: String,
    /// New events that call for a checkpoint.
    pub every: u64,
    /// Time after which any new event calls for one.
    pub interval: std::time::Duration,
}

/// Extends the tree, and signs a checkpoint when `policy` calls for one; returns it.
///
/// # Errors
/// As [`extend`].
pub async fn checkpoint_if_due<L: EventLog>(
    log: &L,
    store: &impl TreeStore,
    policy: &CheckpointPolicy,
) -> Result<Option<String>, ProjectorError> {
    let (size, root) = extend(log, store).await?;
    let newest = match store.newest_checkpoint().await? {
        Some(note) => Some(unchecked(&note)?),
        None => None,
    };
    let due = match newest {
        None => size > 0,
        Some(newest) => {
            let interval = u64::try_from(policy.interval.as_millis()).unwrap_or(u64::MAX);
            size > newest.size
                && (size - newest.size >= policy.every
                    || now_ms().saturating_sub(newest.time_ms) >= interval)
        }
    };
    if !due {
        return Ok(None);
    }
    sign(store, &policy.key, &policy.origin, size, root)
        .await
        .map(Some)
}

/// A receipt with the proof that its event is in a signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvenReceipt {
    /// The receipt, rebuilt from the stored event.
    pub receipt: Receipt,
    /// The event's leaf in the tree.
    pub leaf: u64,
    /// The newest checkpoint, as signed.
    pub checkpoint: String,
    /// The inclusion proof of the leaf in the checkpoint's tree.
    pub proof: Vec<Hash>,
}

/// The receipt of `case_id` at `version` (its chain verified up to there), with the proof of
/// its event in the newest checkpoint.
///
/// # Errors
/// [`ProjectorError::CaseNotFound`] for a case or version not in the log; a
/// [`LogErrorKind::Config`] error when no checkpoint holds the event yet (run
/// `wfstate checkpoint`); [`LogErrorKind::Corrupted`] when the stored tree does not prove
/// it (the log or its tree was changed).
pub async fn prove<L: EventLog>(
    log: &L,
    store: &impl TreeStore,
    case_id: &CaseId,
    version: Version,
) -> Result<ProvenReceipt, ProjectorError> {
    let mut found = None;
    let audited = audit_case(log, case_id, None, |receipt| {
        if receipt.version == version {
            found = Some(receipt.clone());
        }
    })
    .await?;
    if let Some(problem) = audited.problems.first() {
        return Err(corrupted(format!(
            "case {case_id} does not verify ({}: {} at position {}): run `wfstate audit {case_id}`",
            problem.code, problem.detail, problem.position
        )));
    }
    let Some(receipt) = found else {
        return Err(ProjectorError::CaseNotFound(format!(
            "{case_id} at version {version}"
        )));
    };
    let not_yet = || {
        ProjectorError::Log(LogError::new(
            LogErrorKind::Config,
            format!(
                "the event of {case_id} at version {version} (position {}) is in no \
                 checkpoint yet: run `wfstate checkpoint`",
                receipt.position
            ),
        ))
    };
    let leaf = store.leaf_at(receipt.position).await?.ok_or_else(not_yet)?;
    let note = store.newest_checkpoint().await?.ok_or_else(not_yet)?;
    let checkpoint = unchecked(&note)?;
    if leaf >= checkpoint.size {
        return Err(not_yet());
    }
    let hashes = stored_hashes(store, &merkle::inclusion_indexes_of(checkpoint.size, leaf)).await?;
    let proof = merkle::inclusion_proof(checkpoint.size, leaf, &hashes).map_err(tree_failed)?;
    let event_leaf = merkle::leaf_hash(&receipt.event_hash.0);
    merkle::verify_inclusion(&proof, checkpoint.size, &checkpoint.root, leaf, &event_leaf)
        .map_err(|error| {
            corrupted(format!(
                "the stored tree does not prove the event at position {} in the checkpoint of \
                 size {}: {error}; run `wfstate audit --consistency`",
                receipt.position, checkpoint.size
            ))
        })?;
    Ok(ProvenReceipt {
        receipt,
        leaf,
        checkpoint: note,
        proof,
    })
}

/// What [`audit_tree`] found wrong with a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TreeProblem {
    /// The checkpoint's tree size (0 when its note cannot be read).
    pub size: u64,
    /// What kind of problem it is.
    pub code: Code,
    /// What is wrong, in words.
    pub detail: String,
}

/// What [`audit_tree`] checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TreeAudit {
    /// Checkpoints read.
    pub checkpoints: usize,
    /// Events of the log read to rebuild the roots.
    pub events: u64,
    /// Every problem, oldest checkpoint first.
    pub problems: Vec<TreeProblem>,
}

/// Checks every checkpoint: signed by one of `trusted`, extending the one before it (a
/// consistency proof from the stored tree), and with the root the log's events make at its
/// size.
///
/// # Errors
/// [`ProjectorError`] when the log or the store cannot be read.
pub async fn audit_tree<L: EventLog>(
    log: &L,
    store: &impl TreeStore,
    trusted: &[VerifierKey],
) -> Result<TreeAudit, ProjectorError> {
    let notes = store.checkpoints().await?;
    let mut audit = TreeAudit {
        checkpoints: notes.len(),
        ..TreeAudit::default()
    };
    let mut opened: Vec<Checkpoint> = Vec::new();
    for note in &notes {
        match checkpoint::open(note, trusted) {
            Ok(checkpoint) => opened.push(checkpoint),
            Err(error) => audit.problems.push(TreeProblem {
                size: 0,
                code: error.code,
                detail: error.detail,
            }),
        }
    }
    for pair in opened.windows(2) {
        let (old, new) = (&pair[0], &pair[1]);
        let consistent = if new.size < old.size {
            Err(format!("it shrank from {} leaves", old.size))
        } else {
            let hashes =
                stored_hashes(store, &merkle::consistency_indexes_of(new.size, old.size)).await?;
            let proof =
                merkle::consistency_proof(new.size, old.size, &hashes).map_err(tree_failed)?;
            merkle::verify_consistency(&proof, new.size, &new.root, old.size, &old.root)
                .map_err(|error| format!("no consistency proof from {} leaves: {error}", old.size))
        };
        if let Err(detail) = consistent {
            audit.problems.push(TreeProblem {
                size: new.size,
                code: Code::CheckpointInconsistent,
                detail: format!(
                    "the checkpoint of {} leaves does not extend the one before: {detail}",
                    new.size
                ),
            });
        }
    }
    rebuild_roots(log, &opened, &mut audit).await?;
    Ok(audit)
}

/// Folds the log's events into a tree of its own (its frontier only) and compares its root at
/// each checkpoint's size.
async fn rebuild_roots<L: EventLog>(
    log: &L,
    checkpoints: &[Checkpoint],
    audit: &mut TreeAudit,
) -> Result<(), ProjectorError> {
    let mut sizes: Vec<&Checkpoint> = checkpoints.iter().collect();
    sizes.sort_by_key(|checkpoint| checkpoint.size);
    let Some(largest) = sizes.last().map(|checkpoint| checkpoint.size) else {
        return Ok(());
    };
    let until = log.last_position().await?;
    let mut frontier = merkle::Frontier::default();
    let mut next = sizes.into_iter().peekable();
    while let Some(checkpoint) = next.next_if(|checkpoint| checkpoint.size == 0) {
        if checkpoint.root != merkle::EMPTY_ROOT {
            audit.problems.push(TreeProblem {
                size: 0,
                code: Code::HistoryRewritten,
                detail: format!(
                    "the checkpoint of the empty log signed the root {}",
                    checkpoint.root
                ),
            });
        }
    }
    let mut events = log.follow(Position::ZERO).await?;
    let mut last = Position::ZERO;
    while frontier.size() < largest && last < until {
        let Some(event) = events.try_next().await? else {
            break;
        };
        last = event.position;
        let leaf = merkle::leaf_hash(&Hash::of(&event.payload).0);
        frontier.push(leaf).map_err(tree_failed)?;
        let size = frontier.size();
        audit.events += 1;
        while let Some(checkpoint) = next.next_if(|checkpoint| checkpoint.size == size) {
            let root = frontier.root().map_err(tree_failed)?;
            if root != checkpoint.root {
                audit.problems.push(TreeProblem {
                    size,
                    code: Code::HistoryRewritten,
                    detail: format!(
                        "the log's first {size} events make the root {root}, the checkpoint \
                         signed {}: an event up to position {last} was changed, removed or \
                         inserted",
                        checkpoint.root
                    ),
                });
            }
        }
    }
    let size = frontier.size();
    for checkpoint in next {
        audit.problems.push(TreeProblem {
            size: checkpoint.size,
            code: Code::LogCut,
            detail: format!(
                "the checkpoint counts {} events, the log holds {size}: its newest events were \
                 cut",
                checkpoint.size
            ),
        });
    }
    Ok(())
}

//! The log's Merkle tree: one leaf per event, in log order, whose data is the event's hash;
//! hashes, inclusion proofs and consistency proofs as RFC 9162 section 2.1 defines them
//! (`SHA-256(0x00 || leaf)`, `SHA-256(0x01 || left || right)`), so any RFC 9162 verifier
//! checks them.
//!
//! A tree is kept as the hashes of its complete subtrees, appended as leaves arrive, in the
//! dense order of Crosby and Wallach ("Efficient Data Structures for Tamper-Evident
//! Logging", section 3.3): leaf `n` brings its own hash and one per subtree it completes,
//! about two hashes a leaf. A root or a proof then reads at most about `2 log2 n` stored
//! hashes, never the whole log. Storage is the caller's ([`HashStore`]); nothing here does
//! I/O.

use sha2::{Digest, Sha256};

use crate::hash::Hash;

/// The root of the empty tree: SHA-256 of the empty string.
pub const EMPTY_ROOT: Hash = Hash([
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
]);

/// The hash of a leaf holding `data` (for the log, an event's hash).
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x00]);
    hasher.update(data);
    Hash(hasher.finalize().into())
}

/// The hash of an interior node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x01]);
    hasher.update(left.0);
    hasher.update(right.0);
    Hash(hasher.finalize().into())
}

/// Where the hash of the `n`th complete subtree of `2^level` leaves is stored.
pub fn stored_index(level: u32, n: u64) -> u64 {
    // A subtree's hash is stored right after that of the last leaf it covers; that leaf's
    // own index counts every hash stored before it (n + n/2 + n/4 + ...).
    let last_leaf = ((n + 1) << level) - 1;
    let mut index = 0;
    let mut rest = last_leaf;
    while rest > 0 {
        index += rest;
        rest >>= 1;
    }
    index + u64::from(level)
}

/// Which leaf's append stored the hash at `index` ([`hashes_to_store`] of that leaf), and its
/// place among them: the inverse of [`stored_index`], for stores that keep each leaf's hashes
/// together.
pub fn locate(index: u64) -> (u64, u64) {
    // stored_index(0, n) < 2n: the leaf is at or after index / 2, within about log2 of it.
    let mut leaf = index / 2;
    let mut first = stored_index(0, leaf);
    debug_assert!(first <= index, "leaf {leaf} starts past {index}");
    loop {
        let next = first + 1 + u64::from((leaf + 1).trailing_zeros());
        if next > index {
            break;
        }
        leaf += 1;
        first = next;
    }
    (leaf, index - first)
}

/// How many hashes a tree of `leaves` leaves stores.
pub fn stored_count(leaves: u64) -> u64 {
    match leaves {
        0 => 0,
        // The last leaf's hash, and one for each subtree it completed.
        _ => stored_index(0, leaves - 1) + 1 + u64::from((leaves).trailing_zeros()),
    }
}

/// Where the tree's hashes are kept. Reads are by [`stored_index`], sorted ascending.
pub trait HashStore {
    /// The hashes at `indexes`, in the same order.
    ///
    /// # Errors
    /// When the store cannot read them.
    fn read(&self, indexes: &[u64]) -> Result<Vec<Hash>, MerkleError>;
}

/// A failure to compute a root or a proof.
#[derive(Debug, thiserror::Error)]
pub enum MerkleError {
    /// A size or an index out of range.
    #[error("{0}")]
    Range(String),
    /// The store could not read a hash, or answered another count.
    #[error("reading the tree's hashes: {0}")]
    Store(String),
}

/// A proof that does not prove what it is checked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// A size or an index out of range for the proof's kind.
    #[error("{0}")]
    Range(String),
    /// The proof's hashes do not lead to the root given.
    #[error("the proof does not lead to the root {0}")]
    Mismatch(Hash),
}

/// The hashes to store when leaf `n` (the `n + 1`th) is appended with hash `leaf`, in order,
/// starting at [`stored_index`]`(0, n)`: the leaf's and one per subtree it completes.
///
/// # Errors
/// [`MerkleError::Store`] when the earlier hashes it combines cannot be read.
pub fn hashes_to_store(
    n: u64,
    leaf: Hash,
    store: &impl HashStore,
) -> Result<Vec<Hash>, MerkleError> {
    let completed = (n + 1).trailing_zeros();
    // The left sibling of each completed subtree, lowest level last: read in ascending order.
    let indexes: Vec<u64> = (0..completed)
        .rev()
        .map(|level| stored_index(level, (n >> level) - 1))
        .collect();
    let siblings = read(store, &indexes)?;
    let mut hashes = Vec::with_capacity(1 + siblings.len());
    let mut hash = leaf;
    hashes.push(hash);
    for sibling in siblings.iter().rev() {
        hash = node_hash(sibling, &hash);
        hashes.push(hash);
    }
    Ok(hashes)
}

/// The root of the tree of its first `size` leaves.
///
/// # Errors
/// [`MerkleError::Store`] when its hashes cannot be read.
pub fn root(size: u64, store: &impl HashStore) -> Result<Hash, MerkleError> {
    if size == 0 {
        return Ok(EMPTY_ROOT);
    }
    let mut need = Vec::new();
    subtree_indexes(0, size, &mut need);
    let hashes = read(store, &need)?;
    let mut hashes = hashes.as_slice();
    Ok(subtree_hash(0, size, &mut hashes))
}

/// The inclusion proof of leaf `index` in the tree of `size` leaves (RFC 9162 2.1.3.1): at
/// most `ceil(log2 size)` hashes.
///
/// # Errors
/// [`MerkleError::Range`] unless `index < size`; [`MerkleError::Store`].
pub fn inclusion_proof(
    size: u64,
    index: u64,
    store: &impl HashStore,
) -> Result<Vec<Hash>, MerkleError> {
    if index >= size {
        return Err(MerkleError::Range(format!(
            "leaf {index} is not in a tree of {size} leaves"
        )));
    }
    let mut need = Vec::new();
    inclusion_indexes(0, size, index, &mut need);
    let hashes = read(store, &need)?;
    let mut hashes = hashes.as_slice();
    let mut proof = Vec::new();
    inclusion(0, size, index, &mut hashes, &mut proof);
    Ok(proof)
}

/// Checks that `proof` shows leaf `index`, of hash `leaf`, in the tree of `size` leaves
/// whose root is `root`. Takes any input without panicking.
///
/// # Errors
/// [`ProofError::Range`] unless `index < size`; [`ProofError::Mismatch`] otherwise.
pub fn verify_inclusion(
    proof: &[Hash],
    size: u64,
    root: &Hash,
    index: u64,
    leaf: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::Range(format!(
            "leaf {index} is not in a tree of {size} leaves"
        )));
    }
    match run_inclusion(proof, 0, size, index, leaf) {
        Some(computed) if computed == *root => Ok(()),
        _ => Err(ProofError::Mismatch(*root)),
    }
}

/// The consistency proof from the tree of `old_size` leaves to that of `size` (RFC 9162
/// 2.1.4.1): at most `ceil(log2 size) + 1` hashes.
///
/// # Errors
/// [`MerkleError::Range`] unless `1 <= old_size <= size`; [`MerkleError::Store`].
pub fn consistency_proof(
    size: u64,
    old_size: u64,
    store: &impl HashStore,
) -> Result<Vec<Hash>, MerkleError> {
    if old_size == 0 || old_size > size {
        return Err(MerkleError::Range(format!(
            "no consistency proof from {old_size} leaves to {size}"
        )));
    }
    let mut need = Vec::new();
    consistency_indexes(0, size, old_size, &mut need);
    let hashes = read(store, &need)?;
    let mut hashes = hashes.as_slice();
    let mut proof = Vec::new();
    consistency(0, size, old_size, &mut hashes, &mut proof);
    Ok(proof)
}

/// Checks that `proof` shows the tree of `old_size` leaves with root `old_root` to be a
/// prefix of the tree of `size` leaves with root `root`. Takes any input without panicking.
///
/// # Errors
/// [`ProofError::Range`] unless `1 <= old_size <= size`; [`ProofError::Mismatch`] otherwise.
pub fn verify_consistency(
    proof: &[Hash],
    size: u64,
    root: &Hash,
    old_size: u64,
    old_root: &Hash,
) -> Result<(), ProofError> {
    if old_size == 0 || old_size > size {
        return Err(ProofError::Range(format!(
            "no consistency proof from {old_size} leaves to {size}"
        )));
    }
    match run_consistency(proof, 0, size, old_size, old_root) {
        Some((old, new)) if old == *old_root && new == *root => Ok(()),
        _ => Err(ProofError::Mismatch(*root)),
    }
}

/// A tree kept by the hashes of its complete subtrees alone (at most 64): enough to append
/// leaves and to compute its root, without the rest of the tree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    hashes: std::collections::BTreeMap<u64, Hash>,
}

impl Frontier {
    /// The frontier of the tree of `size` leaves whose hashes `store` holds.
    ///
    /// # Errors
    /// [`MerkleError::Store`] when they cannot be read.
    pub fn of(size: u64, store: &impl HashStore) -> Result<Frontier, MerkleError> {
        let indexes = root_indexes(size);
        let hashes = read(store, &indexes)?;
        Ok(Frontier {
            size,
            hashes: indexes.into_iter().zip(hashes).collect(),
        })
    }

    /// Leaves in the tree.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends the leaf of hash `leaf` ([`leaf_hash`]); returns what to store for it
    /// ([`hashes_to_store`]).
    ///
    /// # Errors
    /// [`MerkleError::Store`] only for a frontier that lost a hash, which cannot happen.
    pub fn push(&mut self, leaf: Hash) -> Result<Vec<Hash>, MerkleError> {
        let hashes = hashes_to_store(self.size, leaf, &self.hashes)?;
        let start = stored_index(0, self.size);
        self.hashes.extend((start..).zip(hashes.iter().copied()));
        self.size += 1;
        let keep = root_indexes(self.size);
        self.hashes.retain(|index, _| keep.contains(index));
        Ok(hashes)
    }

    /// The tree's root.
    ///
    /// # Errors
    /// As [`Frontier::push`].
    pub fn root(&self) -> Result<Hash, MerkleError> {
        root(self.size, &self.hashes)
    }
}

/// The stored hashes [`root`] reads for a tree of `size` leaves: the roots of its complete
/// subtrees, left to right. They are all an append needs too (its left siblings).
pub fn root_indexes(size: u64) -> Vec<u64> {
    let mut need = Vec::new();
    subtree_indexes(0, size, &mut need);
    need
}

/// The stored hashes [`inclusion_proof`] reads.
pub fn inclusion_indexes_of(size: u64, index: u64) -> Vec<u64> {
    let mut need = Vec::new();
    if index < size {
        inclusion_indexes(0, size, index, &mut need);
    }
    need
}

/// The stored hashes [`consistency_proof`] reads.
pub fn consistency_indexes_of(size: u64, old_size: u64) -> Vec<u64> {
    let mut need = Vec::new();
    if old_size != 0 && old_size <= size {
        consistency_indexes(0, size, old_size, &mut need);
    }
    need
}

impl HashStore for std::collections::BTreeMap<u64, Hash> {
    fn read(&self, indexes: &[u64]) -> Result<Vec<Hash>, MerkleError> {
        indexes
            .iter()
            .map(|index| {
                self.get(index)
                    .copied()
                    .ok_or_else(|| MerkleError::Store(format!("no hash at {index} was read")))
            })
            .collect()
    }
}

/// The largest power of two below `n` (for `n >= 2`): where RFC 9162 splits a tree of `n`
/// leaves.
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2, "a tree of {n} leaves does not split");
    1 << (n - 1).ilog2()
}

fn read(store: &impl HashStore, indexes: &[u64]) -> Result<Vec<Hash>, MerkleError> {
    if indexes.is_empty() {
        return Ok(Vec::new());
    }
    let hashes = store.read(indexes)?;
    if hashes.len() != indexes.len() {
        return Err(MerkleError::Store(format!(
            "asked for {} hashes, read {}",
            indexes.len(),
            hashes.len()
        )));
    }
    Ok(hashes)
}

/// The complete subtrees that make the subtree of leaves `[lo, hi)`, from the left, largest
/// first, as (level, first leaf).
fn parts(mut lo: u64, hi: u64) -> impl Iterator<Item = (u32, u64)> {
    std::iter::from_fn(move || {
        (lo < hi).then(|| {
            let level = (hi - lo).ilog2();
            // Every range split as RFC 9162 splits starts at a multiple of its largest part.
            debug_assert_eq!(lo % (1 << level), 0, "[{lo}, {hi}) is not aligned");
            let part = (level, lo);
            lo += 1 << level;
            part
        })
    })
}

/// The stored hashes that make the subtree of leaves `[lo, hi)`.
fn subtree_indexes(lo: u64, hi: u64, need: &mut Vec<u64>) {
    need.extend(parts(lo, hi).map(|(level, first)| stored_index(level, first >> level)));
}

/// The hash of the subtree `[lo, hi)` from the hashes [`subtree_indexes`] named, taken from
/// the front of `hashes`.
fn subtree_hash(lo: u64, hi: u64, hashes: &mut &[Hash]) -> Hash {
    let (taken, rest) = hashes.split_at(parts(lo, hi).count());
    *hashes = rest;
    let (last, lefts) = taken.split_last().expect("a subtree has a part");
    lefts
        .iter()
        .rev()
        .fold(*last, |hash, left| node_hash(left, &hash))
}

fn inclusion_indexes(lo: u64, hi: u64, index: u64, need: &mut Vec<u64>) {
    if hi - lo == 1 {
        return;
    }
    let k = split(hi - lo);
    if index < lo + k {
        inclusion_indexes(lo, lo + k, index, need);
        subtree_indexes(lo + k, hi, need);
    } else {
        subtree_indexes(lo, lo + k, need);
        inclusion_indexes(lo + k, hi, index, need);
    }
}

fn inclusion(lo: u64, hi: u64, index: u64, hashes: &mut &[Hash], proof: &mut Vec<Hash>) {
    if hi - lo == 1 {
        return;
    }
    let k = split(hi - lo);
    if index < lo + k {
        inclusion(lo, lo + k, index, hashes, proof);
        proof.push(subtree_hash(lo + k, hi, hashes));
    } else {
        let left = subtree_hash(lo, lo + k, hashes);
        inclusion(lo + k, hi, index, hashes, proof);
        proof.push(left);
    }
}

/// The root of `[lo, hi)` that `proof` implies for leaf `index` of hash `leaf`; `None` for a
/// proof of the wrong length.
fn run_inclusion(proof: &[Hash], lo: u64, hi: u64, index: u64, leaf: &Hash) -> Option<Hash> {
    if hi - lo == 1 {
        return proof.is_empty().then_some(*leaf);
    }
    let (sibling, rest) = proof.split_last()?;
    let k = split(hi - lo);
    Some(if index < lo + k {
        node_hash(&run_inclusion(rest, lo, lo + k, index, leaf)?, sibling)
    } else {
        node_hash(sibling, &run_inclusion(rest, lo + k, hi, index, leaf)?)
    })
}

fn consistency_indexes(lo: u64, hi: u64, old: u64, need: &mut Vec<u64>) {
    if old == hi {
        if lo != 0 {
            subtree_indexes(lo, hi, need);
        }
        return;
    }
    let k = split(hi - lo);
    if old <= lo + k {
        consistency_indexes(lo, lo + k, old, need);
        subtree_indexes(lo + k, hi, need);
    } else {
        subtree_indexes(lo, lo + k, need);
        consistency_indexes(lo + k, hi, old, need);
    }
}

fn consistency(lo: u64, hi: u64, old: u64, hashes: &mut &[Hash], proof: &mut Vec<Hash>) {
    if old == hi {
        // The old tree itself is known to the verifier: nothing to send for it.
        if lo != 0 {
            proof.push(subtree_hash(lo, hi, hashes));
        }
        return;
    }
    let k = split(hi - lo);
    if old <= lo + k {
        consistency(lo, lo + k, old, hashes, proof);
        proof.push(subtree_hash(lo + k, hi, hashes));
    } else {
        let left = subtree_hash(lo, lo + k, hashes);
        consistency(lo + k, hi, old, hashes, proof);
        proof.push(left);
    }
}

/// The roots of `[lo, hi)` in the old tree (`old` leaves) and in the new one that `proof`
/// implies; `None` for a proof of the wrong length.
fn run_consistency(
    proof: &[Hash],
    lo: u64,
    hi: u64,
    old: u64,
    old_root: &Hash,
) -> Option<(Hash, Hash)> {
    if old == hi {
        return match (lo, proof) {
            (0, []) => Some((*old_root, *old_root)),
            (1.., [hash]) => Some((*hash, *hash)),
            _ => None,
        };
    }
    let (sibling, rest) = proof.split_last()?;
    let k = split(hi - lo);
    if old <= lo + k {
        let (old_hash, new_hash) = run_consistency(rest, lo, lo + k, old, old_root)?;
        Some((old_hash, node_hash(&new_hash, sibling)))
    } else {
        let (old_hash, new_hash) = run_consistency(rest, lo + k, hi, old, old_root)?;
        Some((node_hash(sibling, &old_hash), node_hash(sibling, &new_hash)))
    }
}

#[cfg(test)]
#[path = "merkle_tests.rs"]
mod tests;

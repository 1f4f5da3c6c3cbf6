//! The tree against RFC 6962's reference vectors (the 8-leaf tree of the Certificate
//! Transparency test suite), against a recursive MTH written from the RFC, and every proof of
//! small trees against tampering.

use super::*;

/// A tree's stored hashes, in memory.
#[derive(Default)]
struct Stored(Vec<Hash>);

impl HashStore for Stored {
    fn read(&self, indexes: &[u64]) -> Result<Vec<Hash>, MerkleError> {
        indexes
            .iter()
            .map(|&index| {
                usize::try_from(index)
                    .ok()
                    .and_then(|index| self.0.get(index).copied())
                    .ok_or_else(|| MerkleError::Store(format!("no hash at {index}")))
            })
            .collect()
    }
}

impl Stored {
    /// Appends a leaf of `data`, checking where its hashes go.
    fn append(&mut self, n: u64, data: &[u8]) {
        assert_eq!(self.0.len() as u64, stored_index(0, n));
        let hashes = hashes_to_store(n, leaf_hash(data), self).unwrap();
        self.0.extend(hashes);
        assert_eq!(self.0.len() as u64, stored_count(n + 1));
    }

    fn of(leaves: &[Vec<u8>]) -> Stored {
        let mut stored = Stored::default();
        for (n, data) in leaves.iter().enumerate() {
            stored.append(n as u64, data);
        }
        stored
    }
}

/// A leaf number as an index into a test's leaves.
fn at(n: u64) -> usize {
    usize::try_from(n).unwrap()
}

fn hex(text: &str) -> Hash {
    Hash::from_hex(text).unwrap()
}

/// The 8 leaves of RFC 6962's reference tree.
fn reference_leaves() -> Vec<Vec<u8>> {
    vec![
        vec![],
        vec![0x00],
        vec![0x10],
        vec![0x20, 0x21],
        vec![0x30, 0x31],
        vec![0x40, 0x41, 0x42, 0x43],
        (0x50..0x58).collect(),
        (0x60..0x70).collect(),
    ]
}

/// MTH as RFC 9162 2.1.1 writes it, over leaf data.
fn mth(leaves: &[Vec<u8>]) -> Hash {
    match leaves.len() {
        0 => Hash::of(b""),
        1 => leaf_hash(&leaves[0]),
        n => {
            let k = n.next_power_of_two() / 2;
            node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
        }
    }
}

fn numbered(count: u64) -> Vec<Vec<u8>> {
    (0..count).map(|n| n.to_be_bytes().to_vec()).collect()
}

#[test]
fn the_reference_tree_has_the_reference_roots() {
    let leaves = reference_leaves();
    let stored = Stored::of(&leaves);
    let roots = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];
    assert_eq!(root(0, &stored).unwrap(), EMPTY_ROOT);
    assert_eq!(EMPTY_ROOT, Hash::of(b""));
    for (size, expected) in (1..).zip(roots) {
        assert_eq!(root(size, &stored).unwrap(), hex(expected), "size {size}");
    }
}

#[test]
fn the_reference_proofs_are_produced_and_verified() {
    let stored = Stored::of(&reference_leaves());
    let hashes = |texts: &[&str]| texts.iter().map(|text| hex(text)).collect::<Vec<_>>();
    let cases: [(u64, u64, Vec<Hash>); 2] = [
        (
            0,
            8,
            hashes(&[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ]),
        ),
        (
            5,
            8,
            hashes(&[
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ]),
        ),
    ];
    for (index, size, expected) in cases {
        let proof = inclusion_proof(size, index, &stored).unwrap();
        assert_eq!(proof, expected, "inclusion of {index} in {size}");
        let leaf = leaf_hash(&reference_leaves()[at(index)]);
        let root = root(size, &stored).unwrap();
        verify_inclusion(&proof, size, &root, index, &leaf).unwrap();
    }
    let consistency: [(u64, u64, Vec<Hash>); 3] = [
        (1, 8, consistency_proof(8, 1, &stored).unwrap()),
        (
            6,
            8,
            hashes(&[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ]),
        ),
        (
            2,
            5,
            hashes(&[
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ]),
        ),
    ];
    for (old, size, expected) in consistency {
        let proof = consistency_proof(size, old, &stored).unwrap();
        assert_eq!(proof, expected, "consistency from {old} to {size}");
        let (old_root, root) = (root(old, &stored).unwrap(), root(size, &stored).unwrap());
        verify_consistency(&proof, size, &root, old, &old_root).unwrap();
    }
    // From one leaf, the consistency proof is that leaf's inclusion proof.
    assert_eq!(
        consistency_proof(8, 1, &stored).unwrap(),
        inclusion_proof(8, 0, &stored).unwrap()
    );
}

#[test]
fn every_stored_hash_is_located_at_its_leaf() {
    let mut index = 0;
    for leaf in 0..5_000_u64 {
        let count = 1 + u64::from((leaf + 1).trailing_zeros());
        for offset in 0..count {
            assert_eq!(locate(index), (leaf, offset), "index {index}");
            index += 1;
        }
    }
    for level in 0..8 {
        for n in 0..100 {
            let (leaf, offset) = locate(stored_index(level, n));
            assert_eq!((leaf, offset), ((((n + 1) << level) - 1), u64::from(level)));
        }
    }
}

#[test]
fn a_frontier_appends_and_roots_as_the_whole_tree_does() {
    let leaves = numbered(300);
    let stored = Stored::of(&leaves);
    let mut frontier = Frontier::default();
    for (n, data) in (0_u64..).zip(&leaves) {
        let start = at(stored_index(0, n));
        let end = at(stored_count(n + 1));
        assert_eq!(
            frontier.push(leaf_hash(data)).unwrap(),
            stored.0[start..end]
        );
        assert_eq!(
            frontier.root().unwrap(),
            root_of(n + 1, &stored),
            "size {}",
            n + 1
        );
        // Resumed from the store, it is the same frontier.
        assert_eq!(Frontier::of(n + 1, &stored).unwrap(), frontier);
    }
}

#[test]
fn stored_roots_equal_the_recursive_definition() {
    let leaves = numbered(300);
    let stored = Stored::of(&leaves);
    for size in 0..=300_u64 {
        assert_eq!(
            root(size, &stored).unwrap(),
            mth(&leaves[..at(size)]),
            "size {size}"
        );
    }
}

/// Every hash of `proof` changed in turn, one dropped, one added at either end: none passes
/// `check`.
fn tampered(proof: &[Hash], check: impl Fn(&[Hash]) -> bool, what: &str) {
    for at in 0..proof.len() {
        let mut bad = proof.to_vec();
        bad[at].0[at % 32] ^= 1;
        assert!(!check(&bad), "{what}: hash {at} changed");
    }
    if let Some((_, shorter)) = proof.split_last() {
        assert!(!check(shorter), "{what}: last hash dropped");
    }
    // Hashes are consumed from the end (the root's sibling) to the front (the leaf's).
    let mut longer = proof.to_vec();
    longer.push(Hash::of(b"extra"));
    assert!(!check(&longer), "{what}: a hash added at the end");
    longer.rotate_right(1);
    assert!(!check(&longer), "{what}: a hash added at the front");
}

/// `ceil(log2 size)`.
fn depth(size: u64) -> usize {
    (64 - (size.max(1) - 1).leading_zeros()) as usize
}

#[test]
fn every_inclusion_proof_of_small_trees_verifies_and_no_tampered_one_does() {
    let leaves = numbered(70);
    let stored = Stored::of(&leaves);
    for size in 1..=70_u64 {
        let root = root(size, &stored).unwrap();
        for index in 0..size {
            let leaf = leaf_hash(&leaves[at(index)]);
            let proof = inclusion_proof(size, index, &stored).unwrap();
            assert!(
                proof.len() <= depth(size),
                "{index} in {size}: {}",
                proof.len()
            );
            verify_inclusion(&proof, size, &root, index, &leaf).unwrap();
            let check = |proof: &[Hash]| verify_inclusion(proof, size, &root, index, &leaf).is_ok();
            tampered(&proof, check, &format!("{index} in {size}"));
            let other = leaf_hash(b"another event");
            assert!(verify_inclusion(&proof, size, &root, index, &other).is_err());
            if index + 1 < size {
                assert!(verify_inclusion(&proof, size, &root, index + 1, &leaf).is_err());
            }
        }
        assert!(matches!(
            verify_inclusion(&[], size, &root, size, &root),
            Err(ProofError::Range(_))
        ));
        assert!(matches!(
            inclusion_proof(size, size, &stored),
            Err(MerkleError::Range(_))
        ));
    }
}

#[test]
fn every_consistency_proof_of_small_trees_verifies_and_no_tampered_one_does() {
    let leaves = numbered(70);
    let stored = Stored::of(&leaves);
    for size in 1..=70_u64 {
        let root = root(size, &stored).unwrap();
        for old in 1..=size {
            let old_root = root_of(old, &stored);
            let proof = consistency_proof(size, old, &stored).unwrap();
            assert!(
                proof.len() <= depth(size) + 1,
                "{old} to {size}: {}",
                proof.len()
            );
            verify_consistency(&proof, size, &root, old, &old_root).unwrap();
            let check =
                |proof: &[Hash]| verify_consistency(proof, size, &root, old, &old_root).is_ok();
            if old < size {
                tampered(&proof, check, &format!("{old} to {size}"));
            }
            // Another old tree (a rewritten history) does not extend to this one.
            let rewritten = node_hash(&old_root, &old_root);
            assert!(verify_consistency(&proof, size, &root, old, &rewritten).is_err());
            assert!(verify_consistency(&proof, size, &rewritten, old, &old_root).is_err());
        }
        for old in [0, size + 1] {
            assert!(matches!(
                verify_consistency(&[], size, &root, old, &root),
                Err(ProofError::Range(_))
            ));
            assert!(matches!(
                consistency_proof(size, old, &stored),
                Err(MerkleError::Range(_))
            ));
        }
    }
}

fn root_of(size: u64, stored: &Stored) -> Hash {
    root(size, stored).unwrap()
}

#[test]
fn proofs_of_a_large_tree_read_few_hashes() {
    /// A store that counts what it reads.
    struct Counting<'a>(&'a Stored, std::cell::Cell<usize>);
    impl HashStore for Counting<'_> {
        fn read(&self, indexes: &[u64]) -> Result<Vec<Hash>, MerkleError> {
            self.1.set(self.1.get() + indexes.len());
            self.0.read(indexes)
        }
    }
    let size = 100_000_u64;
    let stored = Stored::of(&numbered(size));
    assert_eq!(stored.0.len() as u64, stored_count(size));
    let counting = Counting(&stored, std::cell::Cell::new(0));
    let root = root(size, &counting).unwrap();
    for index in [0, 1, 4_095, 65_536, 99_999] {
        counting.1.set(0);
        let proof = inclusion_proof(size, index, &counting).unwrap();
        assert!(
            counting.1.get() <= 2 * depth(size),
            "{} reads",
            counting.1.get()
        );
        let leaf = leaf_hash(&index.to_be_bytes());
        verify_inclusion(&proof, size, &root, index, &leaf).unwrap();
    }
    counting.1.set(0);
    let proof = consistency_proof(size, 77_777, &counting).unwrap();
    assert!(
        counting.1.get() <= 2 * depth(size) + 2,
        "{} reads",
        counting.1.get()
    );
    verify_consistency(&proof, size, &root, 77_777, &root_of(77_777, &stored)).unwrap();
}

#[test]
fn verifying_arbitrary_input_never_panics() {
    let hash = Hash::of(b"x");
    for size in [1, 2, 3, u64::MAX / 2, u64::MAX] {
        for index in [0, 1, size - 1] {
            for length in [0, 1, 5, 64, 70] {
                let proof = vec![hash; length];
                let _ = verify_inclusion(&proof, size, &hash, index, &hash);
                let _ = verify_consistency(&proof, size, &hash, index.max(1), &hash);
            }
        }
    }
}

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/merkle.json");

/// RFC 6962's reference tree with every root, inclusion proof and consistency proof of its
/// sizes, for verifiers written elsewhere (`tools/verify_receipt.py merkle`).
fn vectors() -> serde_json::Value {
    let leaves = reference_leaves();
    let stored = Stored::of(&leaves);
    let hexes = |hashes: Vec<Hash>| hashes.iter().map(Hash::to_hex).collect::<Vec<_>>();
    let size_max = leaves.len() as u64;
    let roots: Vec<String> = (0..=size_max)
        .map(|size| root_of(size, &stored).to_hex())
        .collect();
    let mut inclusion = Vec::new();
    let mut consistency = Vec::new();
    for size in 1..=size_max {
        for index in 0..size {
            inclusion.push(serde_json::json!({
                "size": size,
                "index": index,
                "proof": hexes(inclusion_proof(size, index, &stored).unwrap()),
            }));
        }
        for old in 1..=size {
            consistency.push(serde_json::json!({
                "old_size": old,
                "size": size,
                "proof": hexes(consistency_proof(size, old, &stored).unwrap()),
            }));
        }
    }
    serde_json::json!({
        "description": "RFC 6962's reference tree (leaf data in hex), the root of each size \
                        (roots[n]: the first n leaves), and every inclusion and consistency \
                        proof of its sizes (RFC 9162 2.1.3 and 2.1.4).",
        "leaves": leaves.iter().map(hex::encode).collect::<Vec<_>>(),
        "roots": roots,
        "inclusion": inclusion,
        "consistency": consistency,
    })
}

#[test]
fn the_merkle_vectors_are_what_wfstate_computes() {
    let built = serde_json::to_string_pretty(&vectors()).unwrap() + "\n";
    if std::env::var_os("WFSTATE_BLESS_VECTORS").is_some() {
        std::fs::write(VECTORS, &built).unwrap();
    }
    let stored = std::fs::read_to_string(VECTORS).unwrap();
    assert!(
        stored == built,
        "the tree's hashes or proofs differ from {VECTORS}: proofs already given out would \
         no longer verify"
    );
}

//! The costs of the log's signed tree at 10^4, 10^5 and 10^6 events: keeping the tree (its
//! stored hashes per event), producing an inclusion and a consistency proof from the embedded
//! log's tables, their sizes, and verifying them and a checkpoint's signature. The leaves are
//! synthetic event hashes; the tree is the one `wfstate checkpoint` keeps.
//!
//! `cargo run --release -p wfstate-bench --example proofs -- [SIZES...]`

use std::time::{Duration, Instant};

use wfstate_events::{EmbeddedConfig, EmbeddedLog};
use wfstate_projector::{EmbeddedTree, TreeRecord, TreeStore, stored_hashes};
use wfstate_store::checkpoint::{self, Checkpoint, SignerKey};
use wfstate_store::merkle;
use wfstate_store::{Hash, Position};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Proofs produced and verified per size, for the averages.
const SAMPLES: u64 = 200;

/// The log file's bytes with its write-ahead log (which holds the newest pages).
fn file_bytes(path: &std::path::Path) -> u64 {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    [path.as_os_str(), wal.as_os_str()]
        .iter()
        .filter_map(|file| std::fs::metadata(file).ok())
        .map(|metadata| metadata.len())
        .sum()
}

/// A deterministic spread of leaves below `size`.
fn sample(size: u64, n: u64) -> u64 {
    n.wrapping_mul(0x9e37_79b9_7f4a_7c15) % size
}

fn micros(elapsed: Duration, count: u64) -> f64 {
    elapsed.as_secs_f64() * 1e6 / count as f64
}

async fn measure(size: u64) -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let log = EmbeddedLog::open(&EmbeddedConfig::new(dir.path()))?;
    let tree = EmbeddedTree::open(&log)?;

    // Keeping the tree: the hashes of each new leaf, and its row.
    let started = Instant::now();
    let mut frontier = merkle::Frontier::default();
    let mut records = Vec::with_capacity(1024);
    let mut stored = 0_u64;
    for n in 0..size {
        let leaf = merkle::leaf_hash(&Hash::of(&n.to_be_bytes()).0);
        let hashes = frontier.push(leaf)?;
        stored += hashes.len() as u64;
        records.push(TreeRecord {
            position: Position::new(n + 1),
            hashes,
        });
        if records.len() == 1024 || n + 1 == size {
            tree.append(n + 1 - records.len() as u64, std::mem::take(&mut records))
                .await?;
        }
    }
    let kept = started.elapsed();
    let root = frontier.root()?;
    let old_size = size / 3 * 2;
    let old_root = merkle::root(
        old_size,
        &stored_hashes(&tree, &merkle::root_indexes(old_size)).await?,
    )?;

    // Inclusion proofs, read from the tables.
    let started = Instant::now();
    let mut proofs = Vec::new();
    for n in 0..SAMPLES {
        let index = sample(size, n);
        let hashes = stored_hashes(&tree, &merkle::inclusion_indexes_of(size, index)).await?;
        proofs.push((index, merkle::inclusion_proof(size, index, &hashes)?));
    }
    let proving = started.elapsed();
    let hashes_max = proofs
        .iter()
        .map(|(_, proof)| proof.len())
        .max()
        .unwrap_or(0);
    let started = Instant::now();
    for (index, proof) in &proofs {
        let leaf = merkle::leaf_hash(&Hash::of(&index.to_be_bytes()).0);
        merkle::verify_inclusion(proof, size, &root, *index, &leaf)?;
    }
    let verifying = started.elapsed();

    // A consistency proof from two thirds of the tree.
    let started = Instant::now();
    let hashes = stored_hashes(&tree, &merkle::consistency_indexes_of(size, old_size)).await?;
    let consistency = merkle::consistency_proof(size, old_size, &hashes)?;
    let consistency_proving = started.elapsed();
    let started = Instant::now();
    merkle::verify_consistency(&consistency, size, &root, old_size, &old_root)?;
    let consistency_verifying = started.elapsed();

    // A checkpoint: signed and opened.
    let key = SignerKey::new("bench", [7; 32])?;
    let point = Checkpoint {
        origin: "wfstate/bench".into(),
        size,
        root,
        time_ms: 0,
    };
    let started = Instant::now();
    let note = key.sign(&point);
    let signing = started.elapsed();
    let started = Instant::now();
    checkpoint::open(&note, &[key.verifier()])?;
    let opening = started.elapsed();

    println!(
        "{size:>9} events: tree kept {:.2} us/event ({:.2} hashes/event, {} KiB in the file); \
         inclusion proof {:.0} us to produce from the file, {hashes_max} hashes ({} B) at most, \
         {:.1} us to verify; consistency from {old_size}: {:.0} us, {} hashes, {:.1} us to \
         verify; checkpoint {} B, signed in {:.0} us, opened in {:.0} us",
        micros(kept, size),
        stored as f64 / size as f64,
        file_bytes(log.path()) / 1024,
        micros(proving, SAMPLES),
        hashes_max * 32,
        micros(verifying, SAMPLES),
        micros(consistency_proving, 1),
        consistency.len(),
        micros(consistency_verifying, 1),
        note.len(),
        micros(signing, 1),
        micros(opening, 1),
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let sizes: Vec<u64> = std::env::args()
        .skip(1)
        .map(|size| size.parse())
        .collect::<Result<_, _>>()?;
    let sizes = if sizes.is_empty() {
        vec![10_000, 100_000, 1_000_000]
    } else {
        sizes
    };
    for size in sizes {
        measure(size).await?;
    }
    Ok(())
}

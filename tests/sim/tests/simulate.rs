//! The simulator under `cargo test`: two million operations with a new seed each time
//! (printed as `WFSTATE_SEED=...`, taken back from the environment), and one seed giving one
//! trace however many threads run it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Operations the test suite runs (the floor: two million).
const OPS: u64 = 2_000_000;

fn seed() -> u64 {
    let seed = std::env::var("WFSTATE_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |since| since.as_secs() % 1_000_000_000)
        });
    println!("simulation seed: WFSTATE_SEED={seed}");
    seed
}

#[test]
fn two_million_simulated_operations_break_no_promise() {
    let seed = seed();
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let summary = wfstate_sim::simulate(seed, OPS, 100, threads);
    println!(
        "{} ops, {} events, {} faults in {:.1} s ({:.0} ops/s), trace {}",
        summary.ops,
        summary.events,
        summary.faults,
        summary.seconds,
        summary.ops as f64 / summary.seconds,
        hex::encode(summary.trace_hash)
    );
    if let Some((world, ops, violations)) = summary.failed {
        let shrunk = wfstate_sim::shrink(world, &ops, violations[0].rule);
        panic!(
            "WFSTATE_SEED={seed}: {violations:#?}\nshrunk, to paste into tests/found.rs:\n{}",
            wfstate_sim::as_test(&world, &shrunk)
        );
    }
    assert_eq!(summary.ops, OPS, "every operation ran");
    assert!(
        summary.faults > OPS / 10,
        "faults were injected: {}",
        summary.faults
    );
}

#[test]
fn one_seed_gives_one_trace_on_any_number_of_threads() {
    let seed = seed();
    let one = wfstate_sim::simulate(seed, 3_000, 100, 1);
    let two = wfstate_sim::simulate(seed, 3_000, 100, 2);
    let again = wfstate_sim::simulate(seed, 3_000, 100, 2);
    assert_eq!(one.trace_hash, two.trace_hash);
    assert_eq!(two.trace_hash, again.trace_hash);
    assert_eq!((one.events, one.faults), (two.events, two.faults));
    let other = wfstate_sim::simulate(seed + 1, 3_000, 100, 2);
    assert_ne!(one.trace_hash, other.trace_hash);
}

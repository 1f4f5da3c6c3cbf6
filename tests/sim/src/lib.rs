//! A deterministic simulator of wfstate's commit client and projector, in the spirit of
//! `TigerBeetle`'s VOPR and `FoundationDB`'s simulation testing.
//!
//! Workers make random sequences of every public call of `Workspace` and `CaseHandle` over a
//! [`SimLog`]: a memory log behind a layer that answers as the real logs may (failures before
//! and after storing, lost acknowledgements, 10158 and 10163, conflicts without a position,
//! unknown answers, refusals, slow answers, appends that land after their caller gave up, the
//! duplicate window passing, reads from a replica behind). Workers restart and send again what
//! their record says was not acknowledged; a projector folds alongside and crashes between its
//! view writes and its acknowledgement. Everything runs on one thread on tokio's paused clock,
//! so one seed fixes a run and its trace hash.
//!
//! An oracle written apart from the client (it reads the stored bytes and folds them with the
//! store's own rules, never the client's resolution code) checks that every receipt is of its
//! stored event, no commit id is stored twice, no case holds two events of one version, every
//! case loads, an error other than in doubt stored nothing, a commit in doubt is settled by
//! its handle's next call, a handle is always its case at its position, and every view equals
//! its replay. A failing episode is shrunk to a short list of ops, printed as a test.
//!
//! ```
//! let world = wfstate_sim::World::of(7, 0);
//! let report = wfstate_sim::run(world, &world.program(200));
//! assert!(report.violations.is_empty(), "{:?}", report.violations);
//! ```

mod env;
mod episode;
mod journal;
mod log;
mod program;
mod rng;
mod shrink;
mod worker;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

pub use episode::{Report, run};
pub use journal::Violation;
pub use log::SimLog;
pub use program::{Act, Change, Op, World};
pub use shrink::{as_test, shrink};

/// An episode run: its world, its ops when it failed (else none), its report.
type Ran = (World, Vec<Op>, Report);

/// What a simulation of many episodes found.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The seed.
    pub seed: u64,
    /// Operations run.
    pub ops: u64,
    /// Faults the logs answered with.
    pub faults: u64,
    /// Events stored.
    pub events: u64,
    /// The first failing episode: its world, its ops, what it broke.
    pub failed: Option<(World, Vec<Op>, Vec<Violation>)>,
    /// The hash of every episode's trace hash, in order.
    pub trace_hash: [u8; 32],
    /// Wall time, in seconds.
    pub seconds: f64,
}

/// Runs episodes of `episode_ops` ops from `seed` until `ops` ops have run, or one fails, on
/// `threads` threads (each episode alone on one: the results do not depend on how many).
///
/// # Panics
/// When a thread of the simulation panics.
pub fn simulate(seed: u64, ops: u64, episode_ops: usize, threads: usize) -> Summary {
    use sha2::Digest;
    let started = Instant::now();
    let episode_ops = episode_ops.max(1);
    let episodes = ops.div_ceil(episode_ops as u64);
    let next = AtomicU64::new(0);
    // The first failing episode: no thread starts one past it.
    let failed_at = AtomicU64::new(u64::MAX);
    let results: Mutex<BTreeMap<u64, Ran>> = Mutex::default();
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                loop {
                    let episode = next.fetch_add(1, Ordering::SeqCst);
                    if episode >= episodes || episode > failed_at.load(Ordering::SeqCst) {
                        return;
                    }
                    let done = episode * episode_ops as u64;
                    let count = usize::try_from(ops - done)
                        .map_or(episode_ops, |left| left.min(episode_ops));
                    let world = World::of(seed, episode);
                    let program = world.program(count);
                    let report = run(world, &program);
                    if !report.violations.is_empty() {
                        failed_at.fetch_min(episode, Ordering::SeqCst);
                    }
                    let kept = if report.violations.is_empty() {
                        Vec::new()
                    } else {
                        program
                    };
                    results
                        .lock()
                        .expect("no thread panicked holding the results")
                        .insert(episode, (world, kept, report));
                }
            });
        }
    });
    let results = results
        .into_inner()
        .expect("no thread panicked holding the results");
    let last = failed_at.into_inner().min(episodes.saturating_sub(1));
    let mut trace = sha2::Sha256::new();
    let mut summary = Summary {
        seed,
        ops: 0,
        faults: 0,
        events: 0,
        failed: None,
        trace_hash: [0; 32],
        seconds: 0.0,
    };
    for (episode, (world, program, report)) in results
        .into_iter()
        .take_while(|(episode, _)| *episode <= last)
    {
        let count = if program.is_empty() {
            (ops - episode * episode_ops as u64).min(episode_ops as u64)
        } else {
            program.len() as u64
        };
        summary.ops += count;
        summary.faults += report.faults;
        summary.events += report.events;
        trace.update(report.trace_hash);
        if !report.violations.is_empty() {
            summary.failed = Some((world, program, report.violations));
        }
    }
    summary.trace_hash = trace.finalize().into();
    summary.seconds = started.elapsed().as_secs_f64();
    summary
}

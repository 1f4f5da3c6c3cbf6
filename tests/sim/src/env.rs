//! [`SimEnvironment`]: commit ids, the clock and the jitter of retries, from a seed and the
//! simulated clock, so that a run repeats exactly.

use std::sync::atomic::{AtomicU64, Ordering};

use wfstate_events::Environment;
use wfstate_store::CommitId;

use crate::rng::mix;

/// The simulated clock starts at this instant (ms since the Unix epoch), whatever the day.
pub const EPOCH_MS: u64 = 1_800_000_000_000;

/// A worker's environment: ids and random numbers from one stream, time from tokio's clock
/// (paused and advanced by the runtime).
#[derive(Debug)]
pub struct SimEnvironment {
    state: AtomicU64,
    start: tokio::time::Instant,
}

impl SimEnvironment {
    /// An environment drawing from `seed`, whose clock reads [`EPOCH_MS`] at `start`.
    pub fn new(seed: u64, start: tokio::time::Instant) -> Self {
        SimEnvironment {
            state: AtomicU64::new(seed),
            start,
        }
    }

    fn next(&self) -> u64 {
        mix(self
            .state
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15))
    }
}

/// Now on the simulated clock, in ms since the Unix epoch.
pub fn now_ms(start: tokio::time::Instant) -> u64 {
    EPOCH_MS + u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl Environment for SimEnvironment {
    fn commit_id(&self) -> CommitId {
        let bits = (u128::from(self.next()) << 64) | u128::from(self.next());
        // A random (version 4) UUID, its bits from the seed.
        let uuid = uuid::Builder::from_random_bytes(bits.to_be_bytes()).into_uuid();
        CommitId::from(uuid)
    }

    fn now_ms(&self) -> u64 {
        now_ms(self.start)
    }

    fn random_below(&self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }
}

//! [`Environment`]: what the commit client takes from outside itself (new commit ids, the
//! clock, the spread of its pauses), so that a deterministic test can give all of it from one
//! seed.

use std::time::{SystemTime, UNIX_EPOCH};

use wfstate_store::CommitId;

/// Where a [`crate::Workspace`] gets what it does not decide by itself: the commit ids of new
/// commits, the time recorded in events, and random numbers that spread the pauses of writers
/// retrying together. [`SystemEnvironment`] is the default; a simulation gives one of its own
/// (drawn from its seed, on its own clock) so that a run can be repeated exactly.
///
/// The deadline of retries is measured on tokio's clock (`tokio::time::Instant`), which a
/// simulation pauses and advances.
pub trait Environment: Send + Sync + std::fmt::Debug + 'static {
    /// A new commit id, never handed out before.
    fn commit_id(&self) -> CommitId;

    /// The time, in ms since the Unix epoch.
    fn now_ms(&self) -> u64;

    /// A number in `0..bound` (`bound` > 0).
    fn random_below(&self, bound: u64) -> u64;
}

/// The system's clock and random numbers: UUID v7 commit ids, the wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemEnvironment;

impl Environment for SystemEnvironment {
    fn commit_id(&self) -> CommitId {
        CommitId::generate()
    }

    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| {
                u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
            })
    }

    fn random_below(&self, bound: u64) -> u64 {
        // The clock's nanoseconds are random enough to keep racing writers out of step.
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.subsec_nanos());
        u64::from(nanos) % bound.max(1)
    }
}

//! [`FaultyLog`]: a wrapper over any [`EventLog`] that injects faults into its appends on a
//! script, so that the commit client's answers to them are tested deterministically, without
//! timing luck.
//!
//! A [`Script`] says what happens to the Nth append (counted from 1, single and multi-event
//! alike): fail before storing, fail after storing (a lost acknowledgement), answer with a
//! conflict that does not name the actual position (a replicated stream, 10164), answer "in
//! process" (10158), or hold the answer for a while. [`Script::seeded`] draws one from a seed,
//! printed by the tests that use it. Reads pass through untouched, except that
//! [`FaultyLog::lagging_reads`] makes the next reads of single events answer "not there", as
//! a replica behind the leader does.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use wfstate_events::{AppendOutcome, EventLog, EventStream, LogError, LogErrorKind, StoredEvent};
use wfstate_store::{CaseId, CommitId, Position};

/// What happens to one append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The append fails with this kind, nothing stored.
    FailBefore(LogErrorKind),
    /// The append is stored, then fails with this kind: a lost acknowledgement.
    FailAfter(LogErrorKind),
    /// The log answers with a sequence conflict that does not name the case's last position
    /// (as a replicated stream's 10164), having stored the event (`stored`) or not.
    Conflict {
        /// Whether the event was stored before the answer.
        stored: bool,
    },
    /// The log answers "duplicate message id is in process" (10158): an earlier attempt may
    /// still land. With `stored`, it has landed by the time the answer arrives.
    InProcess {
        /// Whether the event was stored before the answer.
        stored: bool,
    },
    /// The log answers "expected last sequence per subject temporarily unavailable" (10163,
    /// a new leader not ready yet), having stored the event or not.
    NotReady {
        /// Whether the event was stored before the answer.
        stored: bool,
    },
    /// The append is stored, and the log answers that it is a duplicate at a position that
    /// cannot be read yet (a replica behind): the commit landed, and must not be reported
    /// as failed.
    UnreadableDuplicate,
    /// The append is forwarded after this pause.
    Delay(Duration),
    /// The append is stored, and its answer comes after this pause: a commit whose future is
    /// dropped meanwhile has landed without knowing it.
    SlowAnswer(Duration),
}

/// Which append gets which fault.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Script {
    faults: BTreeMap<u64, Fault>,
}

impl Script {
    /// No faults.
    pub fn new() -> Self {
        Script::default()
    }

    /// The same script with `fault` on the `nth` append (from 1).
    #[must_use]
    pub fn on(mut self, nth: u64, fault: Fault) -> Self {
        self.faults.insert(nth, fault);
        self
    }

    /// A script for the first `appends` appends in which each gets a fault with probability
    /// `percent`/100, drawn from `seed` (the same seed, the same script).
    pub fn seeded(seed: u64, appends: u64, percent: u64) -> Self {
        let mut random = SplitMix64(seed);
        let mut script = Script::new();
        for nth in 1..=appends {
            if random.next() % 100 >= percent {
                continue;
            }
            let kind = [LogErrorKind::Unavailable, LogErrorKind::TimedOut]
                [usize::from(random.next().is_multiple_of(2))];
            let stored = random.next().is_multiple_of(2);
            let fault = match random.next() % 5 {
                0 => Fault::FailBefore(kind),
                1 => Fault::FailAfter(kind),
                2 => Fault::Conflict { stored },
                3 => Fault::InProcess { stored },
                _ => Fault::Delay(Duration::from_millis(random.next() % 20)),
            };
            script.faults.insert(nth, fault);
        }
        script
    }

    /// The faults, by append number.
    pub fn faults(&self) -> &BTreeMap<u64, Fault> {
        &self.faults
    }
}

/// A small, well-known generator (splitmix64): enough to draw a script from a seed.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// A log that injects the faults of a [`Script`] into the appends of `inner`.
#[derive(Clone)]
pub struct FaultyLog<L> {
    inner: L,
    script: Arc<Script>,
    appends: Arc<AtomicU64>,
    injected: Arc<Mutex<Vec<(u64, Fault)>>>,
    /// How many more reads of a single event (`event_at`, `event_after`) answer "not there".
    lagging: Arc<AtomicU64>,
}

impl<L: EventLog + Clone> FaultyLog<L> {
    /// `inner` with the faults of `script`.
    pub fn new(inner: L, script: Script) -> Self {
        FaultyLog {
            inner,
            script: Arc::new(script),
            appends: Arc::default(),
            injected: Arc::default(),
            lagging: Arc::default(),
        }
    }

    /// The next `reads` reads of a single event (`event_at`, `event_after`) answer "not
    /// there", whatever the log holds: a replica that has not caught up yet.
    pub fn lagging_reads(&self, reads: u64) {
        self.lagging.store(reads, Ordering::SeqCst);
    }

    /// Whether this read lags (and one fewer will).
    fn lags(&self) -> bool {
        self.lagging
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(1)
            })
            .is_ok()
    }

    /// The log underneath, without faults.
    pub fn inner(&self) -> &L {
        &self.inner
    }

    /// How many appends were made.
    pub fn appends(&self) -> u64 {
        self.appends.load(Ordering::SeqCst)
    }

    /// The faults injected so far, by append number.
    ///
    /// # Panics
    /// When a test thread panicked while recording one.
    pub fn injected(&self) -> Vec<(u64, Fault)> {
        self.injected.lock().expect("not poisoned").clone()
    }

    /// The fault of the next append, if any.
    fn next_fault(&self) -> Option<Fault> {
        let nth = self.appends.fetch_add(1, Ordering::SeqCst) + 1;
        let fault = self.script.faults.get(&nth).copied()?;
        self.injected
            .lock()
            .expect("not poisoned")
            .push((nth, fault));
        Some(fault)
    }

    /// Runs `append` on the inner log under the next fault.
    async fn faulty<F>(&self, append: impl FnOnce() -> F) -> Result<AppendOutcome, LogError>
    where
        F: Future<Output = Result<AppendOutcome, LogError>>,
    {
        let injected = |kind| LogError::new(kind, "a fault injected by the test's script");
        match self.next_fault() {
            None => append().await,
            Some(Fault::FailBefore(kind)) => Err(injected(kind)),
            Some(Fault::FailAfter(kind)) => {
                let _ = append().await?;
                Err(injected(kind))
            }
            Some(Fault::Conflict { stored }) => {
                if stored {
                    let _ = append().await?;
                }
                Ok(AppendOutcome::Conflict { actual: None })
            }
            Some(Fault::InProcess { stored }) => {
                if stored {
                    let _ = append().await?;
                }
                Err(injected(LogErrorKind::Unavailable).with_code(10158))
            }
            Some(Fault::NotReady { stored }) => {
                if stored {
                    let _ = append().await?;
                }
                Err(injected(LogErrorKind::Unavailable).with_code(10163))
            }
            Some(Fault::UnreadableDuplicate) => {
                let _ = append().await?;
                Ok(AppendOutcome::Duplicate {
                    position: Some(Position::new(u64::MAX)),
                })
            }
            Some(Fault::Delay(pause)) => {
                tokio::time::sleep(pause).await;
                append().await
            }
            Some(Fault::SlowAnswer(pause)) => {
                let outcome = append().await;
                tokio::time::sleep(pause).await;
                outcome
            }
        }
    }
}

impl<L: EventLog + Clone> EventLog for FaultyLog<L> {
    async fn append(
        &self,
        case_id: &CaseId,
        commit_id: CommitId,
        expected_position: Position,
        payload: Bytes,
    ) -> Result<AppendOutcome, LogError> {
        self.faulty(|| {
            self.inner
                .append(case_id, commit_id, expected_position, payload)
        })
        .await
    }

    async fn append_many(
        &self,
        case_id: &CaseId,
        events: &[(CommitId, Bytes)],
        expected_position: Position,
    ) -> Result<AppendOutcome, LogError> {
        self.faulty(|| self.inner.append_many(case_id, events, expected_position))
            .await
    }

    async fn last_event(&self, case_id: &CaseId) -> Result<Option<StoredEvent>, LogError> {
        self.inner.last_event(case_id).await
    }

    async fn event_after(
        &self,
        case_id: &CaseId,
        position: Position,
    ) -> Result<Option<StoredEvent>, LogError> {
        if self.lags() {
            return Ok(None);
        }
        self.inner.event_after(case_id, position).await
    }

    async fn event_at(&self, position: Position) -> Result<Option<StoredEvent>, LogError> {
        if self.lags() {
            return Ok(None);
        }
        self.inner.event_at(position).await
    }

    async fn history(
        &self,
        case_id: &CaseId,
        after_position: Position,
    ) -> Result<EventStream, LogError> {
        self.inner.history(case_id, after_position).await
    }

    async fn follow(&self, after_position: Position) -> Result<EventStream, LogError> {
        self.inner.follow(after_position).await
    }

    async fn last_position(&self) -> Result<Position, LogError> {
        self.inner.last_position().await
    }

    fn payload_size_max(&self) -> usize {
        self.inner.payload_size_max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_the_same_script_every_time() {
        let script = Script::seeded(7, 200, 30);
        assert_eq!(script, Script::seeded(7, 200, 30));
        assert_ne!(script, Script::seeded(8, 200, 30));
        let count = script.faults().len();
        assert!((30..=90).contains(&count), "{count} faults of 200 at 30%");
    }
}

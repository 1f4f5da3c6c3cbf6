//! [`SimLog`]: a log that answers as the real ones may, over a [`MemoryLog`] that forgets
//! nothing. It keeps JetStream's duplicate table itself (forgotten whole when the world says
//! the window passed), and each append meets the fault its call's seed draws: a failure
//! before or after storing (a lost acknowledgement), a conflict without a position, 10158 or
//! 10163 with the event stored or not, an answer this store does not know, a refusal, a slow
//! answer, or an append that stays in the network and lands later, after its caller was told
//! it timed out. Reads of single events may come from a replica that lags. Every stored event
//! is tagged with the call that stored it, for the oracle.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use wfstate_events::{
    AppendOutcome, EventLog, EventStream, LogError, LogErrorKind, MemoryLog, StoredEvent,
};
use wfstate_store::{CaseId, CommitId, Position};

use crate::rng::{Rng, derive};

tokio::task_local! {
    /// The call the current task is making: its id and the seed of its faults.
    pub static CALL: Call;
}

/// A worker's call, as the log sees it.
#[derive(Debug, Clone)]
pub struct Call {
    /// Its number in the run (0: no call, the world's own reads).
    pub id: u64,
    /// The seed of the faults its appends meet; 0: none.
    pub faults: u64,
    /// Appends made so far, for the faults' draws.
    pub attempts: std::cell::Cell<u32>,
}

impl Call {
    /// Call `id`, its appends meeting the faults of `faults`.
    pub fn new(id: u64, faults: u64) -> Call {
        Call {
            id,
            faults,
            attempts: std::cell::Cell::new(0),
        }
    }
}

/// What happens to one append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    FailBefore(LogErrorKind),
    FailAfter(LogErrorKind),
    Conflict { stored: bool },
    InProcess { stored: bool },
    NotReady { stored: bool },
    Unknown { stored: bool },
    Refused,
    Delay(u64),
    SlowAnswer(u64),
    InFlight(u64),
}

/// The log of a simulation. Cheap to clone: clones share everything.
#[derive(Clone)]
pub struct SimLog {
    inner: MemoryLog,
    shared: Arc<Mutex<Shared>>,
}

#[derive(Default)]
struct Shared {
    /// The commit ids the log remembers, and where each is.
    dedup: HashMap<CommitId, Position>,
    /// Reads of single events see only what is at or before `.1` until `.0`.
    lag: Option<(tokio::time::Instant, u64)>,
    /// The call that stored each event, by position from 1.
    origins: Vec<u64>,
    /// Faults answered.
    injected: u64,
    /// Faults and lags are off: the world has healed.
    healed: bool,
}

impl SimLog {
    /// An empty log.
    pub fn new() -> Self {
        SimLog {
            inner: MemoryLog::new().with_dedup(false),
            shared: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The log underneath, every event as stored, with no faults.
    pub fn inner(&self) -> &MemoryLog {
        &self.inner
    }

    /// The log forgets every commit id it remembered.
    pub fn forget(&self) {
        self.lock().dedup.clear();
    }

    /// Reads of single events lag where the log is now, for `ms`.
    pub fn lag(&self, ms: u64, last: Position) {
        let mut shared = self.lock();
        if !shared.healed {
            shared.lag = Some((
                tokio::time::Instant::now() + Duration::from_millis(ms),
                last.get(),
            ));
        }
    }

    /// No more faults or lag.
    pub fn heal(&self) {
        let mut shared = self.lock();
        shared.healed = true;
        shared.lag = None;
    }

    /// The call that stored each event, by position from 1.
    pub fn origins(&self) -> Vec<u64> {
        self.lock().origins.clone()
    }

    /// How many faults the log answered with.
    pub fn injected(&self) -> u64 {
        self.lock().injected
    }

    /// The fault of the current call's next append.
    fn draw(&self, call: &Call) -> Option<Fault> {
        let mut shared = self.lock();
        if call.faults == 0 || shared.healed {
            return None;
        }
        let attempt = call.attempts.get() + 1;
        call.attempts.set(attempt);
        let mut rng = Rng::new(derive(call.faults, u64::from(attempt)));
        // One call in eight is a storm: every attempt fails, until the deadline.
        let storm = call.faults % 8 == 1;
        if !storm && !rng.chance(35) {
            return None;
        }
        shared.injected += 1;
        let kind = if rng.chance(50) {
            LogErrorKind::Unavailable
        } else {
            LogErrorKind::TimedOut
        };
        let stored = rng.chance(50);
        Some(match rng.below(if storm { 2 } else { 13 }) {
            0 => Fault::FailBefore(kind),
            1 => Fault::InProcess { stored: false },
            2 => Fault::FailAfter(kind),
            3 => Fault::Conflict { stored },
            4 => Fault::InProcess { stored },
            5 => Fault::NotReady { stored },
            6 => Fault::Unknown { stored },
            7 => Fault::Refused,
            8 | 9 => Fault::Delay(rng.below(30)),
            10 => Fault::SlowAnswer(rng.below(30)),
            _ => Fault::InFlight(rng.below(200)),
        })
    }

    /// Stores `events` as JetStream would: a commit id it remembers is a duplicate (nothing
    /// stored), else the expected position is checked.
    fn store(
        &self,
        origin: u64,
        case_id: &CaseId,
        events: &[(CommitId, Bytes)],
        expected: Position,
    ) -> Result<AppendOutcome, LogError> {
        let mut shared = self.lock();
        if let Some(position) = events
            .iter()
            .find_map(|(commit_id, _)| shared.dedup.get(commit_id).copied())
        {
            return Ok(AppendOutcome::Duplicate {
                position: (events.len() == 1).then_some(position),
            });
        }
        // The memory log answers at once: nothing else runs between its check and its push.
        let outcome = now_or_never(self.inner.append_many(case_id, events, expected))?;
        if let AppendOutcome::Appended { position } = outcome {
            let first = position.get() + 1 - events.len() as u64;
            for ((commit_id, _), at) in events.iter().zip(first..) {
                shared.dedup.insert(*commit_id, Position::new(at));
                shared.origins.push(origin);
                debug_assert_eq!(shared.origins.len() as u64, at, "origins by position");
            }
        }
        Ok(outcome)
    }

    async fn append_under_faults(
        &self,
        case_id: &CaseId,
        events: Vec<(CommitId, Bytes)>,
        expected: Position,
    ) -> Result<AppendOutcome, LogError> {
        let (id, fault) = CALL
            .try_with(|call| (call.id, self.draw(call)))
            .unwrap_or((0, None));
        let injected = |kind| LogError::new(kind, "a fault of the simulation");
        let store = || self.store(id, case_id, &events, expected);
        let Some(fault) = fault else {
            return store();
        };
        match fault {
            Fault::FailBefore(kind) => Err(injected(kind)),
            Fault::FailAfter(kind) => {
                let _ = store()?;
                Err(injected(kind))
            }
            Fault::Conflict { stored } => {
                if stored {
                    let _ = store()?;
                }
                Ok(AppendOutcome::Conflict { actual: None })
            }
            Fault::InProcess { stored } | Fault::NotReady { stored } => {
                if stored {
                    let _ = store()?;
                }
                let code = if matches!(fault, Fault::InProcess { .. }) {
                    10158
                } else {
                    10163
                };
                Err(injected(LogErrorKind::Unavailable).with_code(code))
            }
            Fault::Unknown { stored } => {
                if stored {
                    let _ = store()?;
                }
                Err(injected(LogErrorKind::Unexpected))
            }
            Fault::Refused => Err(injected(LogErrorKind::PermissionDenied)),
            Fault::Delay(ms) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                store()
            }
            Fault::SlowAnswer(ms) => {
                let outcome = store();
                tokio::time::sleep(Duration::from_millis(ms)).await;
                outcome
            }
            Fault::InFlight(ms) => {
                // The message stays in the network and lands later, whatever its sender does.
                let (log, case_id) = (self.clone(), case_id.clone());
                tokio::task::spawn_local(async move {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    let _ = log.store(id, &case_id, &events, expected);
                });
                Err(injected(LogErrorKind::TimedOut))
            }
        }
    }

    /// The last position a read of a single event sees now.
    fn visible(&self) -> u64 {
        let mut shared = self.lock();
        match shared.lag {
            Some((until, last)) if tokio::time::Instant::now() < until => last,
            Some(_) => {
                shared.lag = None;
                u64::MAX
            }
            None => u64::MAX,
        }
    }
}

impl Default for SimLog {
    fn default() -> Self {
        SimLog::new()
    }
}

/// The output of a future that is ready at its first poll.
fn now_or_never<T>(future: impl Future<Output = T>) -> T {
    futures::FutureExt::now_or_never(future).expect("the memory log answers at once")
}

impl EventLog for SimLog {
    async fn append(
        &self,
        case_id: &CaseId,
        commit_id: CommitId,
        expected_position: Position,
        payload: Bytes,
    ) -> Result<AppendOutcome, LogError> {
        self.append_under_faults(case_id, vec![(commit_id, payload)], expected_position)
            .await
    }

    async fn append_many(
        &self,
        case_id: &CaseId,
        events: &[(CommitId, Bytes)],
        expected_position: Position,
    ) -> Result<AppendOutcome, LogError> {
        self.append_under_faults(case_id, events.to_vec(), expected_position)
            .await
    }

    async fn last_event(&self, case_id: &CaseId) -> Result<Option<StoredEvent>, LogError> {
        let visible = self.visible();
        let last = self.inner.last_event(case_id).await?;
        match last {
            Some(stored) if stored.position.get() > visible => {
                // The case's last event the lagging replica has.
                let mut found = None;
                let mut after = Position::ZERO;
                while let Some(next) = self.inner.event_after(case_id, after).await? {
                    if next.position.get() > visible {
                        break;
                    }
                    after = next.position;
                    found = Some(next);
                }
                Ok(found)
            }
            last => Ok(last),
        }
    }

    async fn event_after(
        &self,
        case_id: &CaseId,
        position: Position,
    ) -> Result<Option<StoredEvent>, LogError> {
        let visible = self.visible();
        Ok(self
            .inner
            .event_after(case_id, position)
            .await?
            .filter(|stored| stored.position.get() <= visible))
    }

    async fn event_at(&self, position: Position) -> Result<Option<StoredEvent>, LogError> {
        if position.get() > self.visible() {
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

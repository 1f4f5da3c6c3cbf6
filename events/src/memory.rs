//! [`MemoryLog`]: an event log held in memory, for tests of code built on the store.
//!
//! It keeps the contract of every backend (the conformance suite runs on it): positions from
//! 1, one commit id stored at most once (for as long as the log lives), the expected position
//! checked under the same lock as the append, several events of one case stored together or
//! not at all. Everything stays in memory until the log is dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use tokio::sync::watch;
use wfstate_store::{CaseId, CommitId, Position};

use crate::error::LogError;
use crate::log::{AppendOutcome, EventLog, EventStream, StoredEvent};

/// Events handed out per read of a stream, so that a reader never holds the lock for long.
const PAGE_EVENTS: usize = 512;

/// An event log in memory. Cheap to clone: clones share the events.
#[derive(Clone)]
pub struct MemoryLog {
    shared: Arc<Shared>,
    payload_size_max: usize,
    dedup: bool,
}

struct Shared {
    events: Mutex<Events>,
    /// The last position, for readers that follow.
    appended: watch::Sender<u64>,
}

#[derive(Default)]
struct Events {
    /// Every event; `all[i]` is at position `i + 1`.
    all: Vec<StoredEvent>,
    /// Where each commit id is stored.
    by_commit: HashMap<CommitId, u64>,
    /// Each case's positions, in order.
    by_case: HashMap<String, Vec<u64>>,
}

impl std::fmt::Debug for MemoryLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryLog")
            .field("events", &self.lock().all.len())
            .finish_non_exhaustive()
    }
}

impl Default for MemoryLog {
    fn default() -> Self {
        MemoryLog::new()
    }
}

impl MemoryLog {
    /// An empty log that takes payloads of up to 1 MiB.
    pub fn new() -> Self {
        MemoryLog {
            shared: Arc::new(Shared {
                events: Mutex::default(),
                appended: watch::Sender::new(0),
            }),
            payload_size_max: 1024 * 1024,
            dedup: true,
        }
    }

    /// The same log, remembering commit ids (`true`, the default: a commit id is stored at
    /// most once) or not (`false`: as JetStream once its duplicate window has passed, a commit
    /// id sent again is stored again).
    #[must_use]
    pub fn with_dedup(mut self, dedup: bool) -> Self {
        self.dedup = dedup;
        self
    }

    /// The same log with another payload size limit.
    #[must_use]
    pub fn with_payload_size_max(mut self, bytes: usize) -> Self {
        self.payload_size_max = bytes;
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Events> {
        // Every change under the lock is one push after all checks: a panic cannot leave it
        // half done.
        self.shared
            .events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn store(
        &self,
        case_id: &CaseId,
        events: &[(CommitId, Bytes)],
        expected_position: Position,
    ) -> Result<AppendOutcome, LogError> {
        for (_, payload) in events {
            LogError::check_size(payload, self.payload_size_max)?;
        }
        let mut log = self.lock();
        let stored: Vec<u64> = events
            .iter()
            .filter(|_| self.dedup)
            .filter_map(|(commit_id, _)| log.by_commit.get(commit_id).copied())
            .collect();
        if let Some(&position) = stored.first() {
            return Ok(AppendOutcome::Duplicate {
                position: (events.len() == 1).then_some(Position::new(position)),
            });
        }
        let last = log
            .by_case
            .get(case_id.as_str())
            .and_then(|positions| positions.last().copied())
            .unwrap_or(0);
        if last != expected_position.get() {
            return Ok(AppendOutcome::Conflict {
                actual: Some(Position::new(last)),
            });
        }
        let mut position = 0;
        for (commit_id, payload) in events {
            position = log.all.len() as u64 + 1;
            log.all.push(StoredEvent {
                position: Position::new(position),
                case_id: case_id.to_string(),
                commit_id: Some(*commit_id),
                payload: payload.clone(),
            });
            log.by_commit.insert(*commit_id, position);
            match log.by_case.get_mut(case_id.as_str()) {
                Some(positions) => positions.push(position),
                None => {
                    log.by_case.insert(case_id.to_string(), vec![position]);
                }
            }
        }
        drop(log);
        self.shared.appended.send_replace(position);
        Ok(AppendOutcome::Appended {
            position: Position::new(position),
        })
    }

    /// The case's events after `after`, up to `until`, at most `count`.
    fn case_page(&self, case_id: &str, after: u64, until: u64, count: usize) -> Vec<StoredEvent> {
        let log = self.lock();
        let Some(positions) = log.by_case.get(case_id) else {
            return Vec::new();
        };
        let start = positions.partition_point(|&position| position <= after);
        positions[start..]
            .iter()
            .take_while(|&&position| position <= until)
            .take(count)
            .map(|&position| log.all[index(position)].clone())
            .collect()
    }

    /// Every event after `after`, at most a page.
    fn page(&self, after: u64) -> Vec<StoredEvent> {
        let log = self.lock();
        let start = usize::try_from(after)
            .unwrap_or(usize::MAX)
            .min(log.all.len());
        log.all[start..].iter().take(PAGE_EVENTS).cloned().collect()
    }
}

/// The index in `Events::all` of the event at `position` (from 1).
fn index(position: u64) -> usize {
    usize::try_from(position - 1).expect("positions of events held in memory fit a usize")
}

impl EventLog for MemoryLog {
    async fn append(
        &self,
        case_id: &CaseId,
        commit_id: CommitId,
        expected_position: Position,
        payload: Bytes,
    ) -> Result<AppendOutcome, LogError> {
        self.store(case_id, &[(commit_id, payload)], expected_position)
    }

    async fn append_many(
        &self,
        case_id: &CaseId,
        events: &[(CommitId, Bytes)],
        expected_position: Position,
    ) -> Result<AppendOutcome, LogError> {
        assert!(!events.is_empty(), "the client sends no empty append");
        self.store(case_id, events, expected_position)
    }

    async fn last_event(&self, case_id: &CaseId) -> Result<Option<StoredEvent>, LogError> {
        let log = self.lock();
        Ok(log
            .by_case
            .get(case_id.as_str())
            .and_then(|positions| positions.last())
            .map(|&position| log.all[index(position)].clone()))
    }

    async fn event_after(
        &self,
        case_id: &CaseId,
        position: Position,
    ) -> Result<Option<StoredEvent>, LogError> {
        Ok(self
            .case_page(case_id.as_str(), position.get(), u64::MAX, 1)
            .into_iter()
            .next())
    }

    async fn event_at(&self, position: Position) -> Result<Option<StoredEvent>, LogError> {
        let log = self.lock();
        Ok((position > Position::ZERO)
            .then(|| log.all.get(index(position.get())).cloned())
            .flatten())
    }

    async fn history(
        &self,
        case_id: &CaseId,
        after_position: Position,
    ) -> Result<EventStream, LogError> {
        let until = self.lock().all.len() as u64;
        let (log, case_id) = (self.clone(), case_id.to_string());
        Ok(Box::pin(futures::stream::unfold(
            (after_position.get(), Vec::new().into_iter()),
            move |(after, mut page)| {
                let (log, case_id) = (log.clone(), case_id.clone());
                async move {
                    if page.len() == 0 {
                        page = log
                            .case_page(&case_id, after, until, PAGE_EVENTS)
                            .into_iter();
                    }
                    let event = page.next()?;
                    let after = event.position.get();
                    Some((Ok(event), (after, page)))
                }
            },
        )))
    }

    async fn follow(&self, after_position: Position) -> Result<EventStream, LogError> {
        let log = self.clone();
        Ok(Box::pin(futures::stream::unfold(
            (after_position.get(), Vec::new().into_iter()),
            move |(after, mut page)| {
                let log = log.clone();
                async move {
                    let mut appended = log.shared.appended.subscribe();
                    while page.len() == 0 {
                        page = log.page(after).into_iter();
                        if page.len() == 0 {
                            // Woken by the next append; the sender lives as long as the log.
                            appended.changed().await.ok()?;
                        }
                    }
                    let event = page.next()?;
                    let after = event.position.get();
                    Some((Ok(event), (after, page)))
                }
            },
        )))
    }

    async fn last_position(&self) -> Result<Position, LogError> {
        Ok(Position::new(self.lock().all.len() as u64))
    }

    fn payload_size_max(&self) -> usize {
        self.payload_size_max
    }
}

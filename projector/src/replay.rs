//! Replay: rebuild a case from its history.

use futures::{Stream, StreamExt};
use wfstate_events::{EventLog, LogError, LogErrorKind, StoredEvent};
use wfstate_store::{Case, CaseId, CaseState, Event, Hash, Position, Version};

use crate::ProjectorError;
use crate::view::View;

/// A case rebuilt from its history.
#[derive(Debug, Clone, PartialEq)]
pub struct Replayed {
    /// The state after the last event.
    pub state: CaseState,
    /// The hash of the last event.
    pub last_event_hash: Hash,
    /// The position of the last event.
    pub position: Position,
    /// How many events were folded (after the starting view, if any).
    pub events_folded: u64,
}

/// Which state hashes a replay checks. Every event's chain link is always checked (its bytes
/// are the ones written, in order); the state hash proves the rebuilt state is the one its
/// writer committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StateChecks {
    /// Every [`STATE_CHECK_INTERVAL`]th event's and the last event's: a divergence is found,
    /// at the next check after it.
    #[default]
    Sampled,
    /// Every event's: a divergence is found at the event that caused it.
    Every,
}

/// How often a [`StateChecks::Sampled`] replay checks the state hash, in events.
pub const STATE_CHECK_INTERVAL: u64 = 1024;

/// Events handed from the reader to the folding thread at a time, at most.
const CHUNK: usize = 256;

/// Chunks in flight between the reader and the folding thread.
const CHUNKS_IN_FLIGHT: usize = 8;

/// Rebuilds a case by folding its history, streaming: memory grows with the case's state, not
/// with its history. With a healthy `from` view it starts there and folds only later events.
/// Every event's chain link is checked, the state hash every [`STATE_CHECK_INTERVAL`] events
/// and at the last ([`replay_with`] checks every one).
///
/// A long history is read and folded at the same time: the events are received on the async
/// task and folded on a blocking thread, in chunks of what has arrived. A short one (what the
/// first read returns) is folded in place.
///
/// # Errors
/// [`ProjectorError::CaseNotFound`] for a case with no events; [`ProjectorError::BadEvent`]
/// for an event that does not decode or fold (with its position);
/// [`ProjectorError::Log`].
pub async fn replay<L: EventLog>(
    log: &L,
    case_id: &CaseId,
    from: Option<&View>,
) -> Result<Replayed, ProjectorError> {
    replay_through(log, case_id, from, None, StateChecks::Sampled).await
}

/// [`replay`], checking the state hashes `checks` asks for.
///
/// # Errors
/// As [`replay`].
pub async fn replay_with<L: EventLog>(
    log: &L,
    case_id: &CaseId,
    from: Option<&View>,
    checks: StateChecks,
) -> Result<Replayed, ProjectorError> {
    replay_through(log, case_id, from, None, checks).await
}

/// Rebuilds a case from scratch by folding its history up to and including the event at
/// `until` (or its last event before it): the case as it was then, checking every state hash.
/// As [`replay`] otherwise.
///
/// # Errors
/// As [`replay`].
pub async fn replay_until<L: EventLog>(
    log: &L,
    case_id: &CaseId,
    until: Position,
) -> Result<Replayed, ProjectorError> {
    replay_through(
        log,
        case_id,
        None,
        Some(Until::Position(until)),
        StateChecks::Every,
    )
    .await
}

/// Where a replay into the past stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// After the event at this position, or the case's last before it.
    Position(Position),
    /// After the event of this version.
    Version(Version),
    /// Before the first event committed after this instant (milliseconds since the epoch):
    /// the events are read in version order, and writers' clocks may disagree, so a later
    /// event stamped earlier is not included.
    Time(u64),
}

impl Until {
    /// Whether `event` is at or before the bound.
    fn includes(self, event: &StoredEvent) -> bool {
        match self {
            Until::Position(position) => event.position <= position,
            // An event that does not decode is let through: the fold reports it.
            Until::Version(version) => {
                Event::decode(&event.payload).map_or(true, |event| event.version <= version)
            }
            Until::Time(ms) => {
                Event::decode(&event.payload).map_or(true, |event| event.committed_at_ms <= ms)
            }
        }
    }
}

/// Rebuilds a case from scratch up to `until`, checking every state hash: the case as it was
/// at a version or an instant. As [`replay`] otherwise; reading stops at the first event past
/// the bound.
///
/// # Errors
/// As [`replay`]; [`ProjectorError::CaseNotFound`] also when no event is within the bound.
pub async fn replay_to<L: EventLog>(
    log: &L,
    case_id: &CaseId,
    until: Until,
) -> Result<Replayed, ProjectorError> {
    replay_through(log, case_id, None, Some(until), StateChecks::Every).await
}

async fn replay_through<L: EventLog>(
    log: &L,
    case_id: &CaseId,
    from: Option<&View>,
    until: Option<Until>,
    checks: StateChecks,
) -> Result<Replayed, ProjectorError> {
    let (case, position) = match from.filter(|view| view.is_healthy()) {
        Some(view) => (view.to_case(), view.position),
        None => (Case::new(case_id.clone()), Position::ZERO),
    };
    let mut fold = Fold {
        case_id: case_id.clone(),
        case,
        position,
        events_folded: 0,
        checks,
        unchecked: None,
    };
    // Reading stops at the first event past `until`: a case that grows meanwhile costs
    // nothing more.
    let until = until.unwrap_or(Until::Position(Position::new(u64::MAX)));
    let mut chunks = log
        .history(case_id, position)
        .await?
        .take_while(move |event| {
            futures::future::ready(event.as_ref().map_or(true, |event| until.includes(event)))
        })
        .ready_chunks(CHUNK);
    if let Some(first) = chunks.next().await {
        fold = fold.chunk(first)?;
        fold = fold_in_background(fold, chunks).await?;
    }
    fold.check_last()?;
    if fold.position == 0 {
        return Err(ProjectorError::CaseNotFound(case_id.to_string()));
    }
    let (state, last_event_hash) = fold.case.into_parts();
    Ok(Replayed {
        state,
        last_event_hash,
        position: fold.position,
        events_folded: fold.events_folded,
    })
}

/// A replay in progress.
struct Fold {
    case_id: CaseId,
    case: Case,
    position: Position,
    events_folded: u64,
    checks: StateChecks,
    /// The state hash of the last event folded, when it was not checked.
    unchecked: Option<Hash>,
}

impl Fold {
    fn chunk(mut self, events: Vec<Result<StoredEvent, LogError>>) -> Result<Fold, ProjectorError> {
        for stored in events {
            let stored = stored?;
            let bad = |source| ProjectorError::BadEvent {
                case_id: self.case_id.to_string(),
                position: stored.position,
                source,
            };
            let check = self.checks == StateChecks::Every
                || (self.events_folded + 1).is_multiple_of(STATE_CHECK_INTERVAL);
            // `Case::fold` skips the copy that would keep the case intact on error: a bad
            // event ends the replay.
            if check {
                self.case = self.case.fold(&stored.payload).map_err(bad)?.0;
                self.unchecked = None;
            } else {
                let (case, event) = self.case.fold_unhashed(&stored.payload).map_err(bad)?;
                self.case = case;
                self.unchecked = Some(event.state_hash);
            }
            self.position = stored.position;
            self.events_folded += 1;
        }
        Ok(self)
    }

    /// Checks the last event's state hash, if it was not: the rebuilt state is the one its
    /// writer committed.
    fn check_last(&self) -> Result<(), ProjectorError> {
        match self.unchecked {
            Some(expected) => {
                self.case
                    .check_state_hash(expected)
                    .map_err(|source| ProjectorError::BadEvent {
                        case_id: self.case_id.to_string(),
                        position: self.position,
                        source,
                    })
            }
            None => Ok(()),
        }
    }
}

/// Folds the rest of `chunks` on a blocking thread while this task goes on reading; returns at
/// once when there is nothing more to read.
async fn fold_in_background(
    mut fold: Fold,
    mut chunks: impl Stream<Item = Vec<Result<StoredEvent, LogError>>> + Unpin,
) -> Result<Fold, ProjectorError> {
    let Some(second) = chunks.next().await else {
        return Ok(fold);
    };
    let (sender, mut receiver) = tokio::sync::mpsc::channel(CHUNKS_IN_FLIGHT);
    let folder = tokio::task::spawn_blocking(move || {
        while let Some(events) = receiver.blocking_recv() {
            fold = fold.chunk(events)?;
        }
        Ok::<_, ProjectorError>(fold)
    });
    let mut next = Some(second);
    while let Some(events) = next {
        if sender.send(events).await.is_err() {
            // The folding thread stopped at a bad event: its error is the replay's.
            break;
        }
        next = chunks.next().await;
    }
    drop(sender);
    folder.await.map_err(|error| {
        ProjectorError::Log(
            LogError::new(
                LogErrorKind::Unexpected,
                "the replay's folding thread failed",
            )
            .with_source(error),
        )
    })?
}

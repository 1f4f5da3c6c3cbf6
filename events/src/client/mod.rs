//! The commit client: [`Workspace`] creates, loads and commits cases over any [`EventLog`],
//! resolving every retry to exactly one stored event.
//!
//! The protocol of one commit:
//! 1. the case handle tries the batch on its state and encodes the event
//!    ([`wfstate_store::Case::try_commit`]);
//! 2. the payload is appended with its commit id and the case's last position as the expected
//!    position;
//! 3. the outcome is resolved ([`retry`]): appended or a duplicate is done; a sequence conflict
//!    is resolved by reading the case's first event **after** the expected position: ours (an
//!    earlier attempt landed, perhaps outside the dedup window) is done, another writer's is a
//!    real [`CommitError::Conflict`], none means the conflict was transient and the same
//!    append is sent again; an unavailable log is retried with the same commit id and expected
//!    position until the deadline. An outcome still unknown then is
//!    [`CommitError::InDoubt`] and the prepared event is kept in the handle, so the next commit
//!    re-sends the very same bytes (and returns their receipt; mutations buffered since stay
//!    buffered for the commit after). A commit future dropped while its append is in flight
//!    leaves the commit in doubt the same way.
//!
//! Commits of different cases share nothing but the log connection: many are in flight at
//! once.

mod handle;
mod many;
mod retry;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::TryStreamExt;
use wfstate_store::{
    Case, CaseId, CommitId, CommitMeta, Event, Hash, Limits, Position, PreparedCommit, Receipt,
};

pub use handle::CaseHandle;
use handle::{InDoubt, InFlight};
pub use retry::RetryPolicy;
use retry::{Append, Resolved, jitter};

use crate::error::{CommitError, LogError, LogErrorKind, Misuse};
use crate::log::{EventLog, StoredEvent};

/// What [`Workspace::transact`] returns.
#[derive(Debug)]
pub struct Transacted {
    /// The receipt of the commit that landed.
    pub receipt: Receipt,
    /// The case after it.
    pub case: CaseHandle,
    /// How many times the closure ran (1 when there was no conflict).
    pub attempts: u32,
}

/// The commit client over an event log. Cheap to clone; share one per process.
#[derive(Debug)]
pub struct Workspace<L> {
    log: Arc<L>,
    writer: String,
    limits: Limits,
    retry: RetryPolicy,
}

impl<L> Clone for Workspace<L> {
    fn clone(&self) -> Self {
        Workspace {
            log: Arc::clone(&self.log),
            writer: self.writer.clone(),
            limits: self.limits,
            retry: self.retry,
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// The default writer id: host name and process id.
fn default_writer() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}/{}", std::process::id())
}

impl<L: EventLog> Workspace<L> {
    /// A client over `log`, with the default writer id (`host/pid`), limits and retries. The
    /// event size limit is lowered to what the log accepts.
    pub fn new(log: L) -> Self {
        let mut limits = Limits::default();
        limits.event_size_max_bytes = limits.event_size_max_bytes.min(log.payload_size_max());
        Workspace {
            log: Arc::new(log),
            writer: default_writer(),
            limits,
            retry: RetryPolicy::default(),
        }
    }

    /// Sets the writer id recorded in events.
    #[must_use]
    pub fn with_writer(mut self, writer: impl Into<String>) -> Self {
        self.writer = writer.into();
        self
    }

    /// Sets the limits (the event size limit stays at most what the log accepts).
    #[must_use]
    pub fn with_limits(mut self, mut limits: Limits) -> Self {
        limits.event_size_max_bytes = limits.event_size_max_bytes.min(self.log.payload_size_max());
        self.limits = limits;
        self
    }

    /// Sets the retry policy.
    #[must_use]
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The event log.
    pub fn log(&self) -> &L {
        &self.log
    }

    /// The metadata of a new commit of this writer: a fresh commit id and the clock.
    fn meta(&self) -> CommitMeta {
        CommitMeta {
            commit_id: CommitId::generate(),
            committed_at_ms: now_ms(),
            writer: self.writer.clone(),
        }
    }

    /// A handle on a case that has no events yet: buffer its first mutations, then
    /// [`Workspace::commit`] creates it (or fails with [`CommitError::CaseExists`]).
    pub fn new_case(&self, case_id: CaseId) -> CaseHandle {
        CaseHandle::new(Case::new(case_id).with_limits(self.limits), Position::ZERO)
    }

    /// Creates a case with `mutations` as its first commit.
    ///
    /// # Errors
    /// [`CommitError::CaseExists`] when the case has events; any commit error.
    pub async fn create(
        &self,
        case_id: CaseId,
        mutations: impl IntoIterator<Item = wfstate_store::Mutation>,
    ) -> Result<(CaseHandle, Receipt), CommitError> {
        let mut handle = self.new_case(case_id);
        for mutation in mutations {
            handle.case.buffer(mutation);
        }
        let receipt = self.commit(&mut handle).await?;
        Ok((handle, receipt))
    }

    /// Loads a case by folding its whole history, checking every link and state hash.
    ///
    /// # Errors
    /// [`CommitError::CaseNotFound`] when it has no events; [`CommitError::Corrupted`] for an
    /// event that does not decode or fold; [`CommitError::Log`] when the log fails.
    pub async fn load(&self, case_id: &CaseId) -> Result<CaseHandle, CommitError> {
        let mut handle = self.new_case(case_id.clone());
        let mut events = self.log.history(case_id, Position::ZERO).await?;
        while let Some(event) = events.try_next().await? {
            fold(&mut handle, &event)?;
        }
        if handle.position == Position::ZERO {
            return Err(CommitError::CaseNotFound(case_id.clone()));
        }
        Ok(handle)
    }

    /// Commits the handle's buffer as one event and returns its receipt. On any error the
    /// handle's state is unchanged and its buffer kept.
    ///
    /// # Errors
    /// [`CommitError::Rejected`] (every invalid mutation, or a limit), [`CommitError::Conflict`],
    /// [`CommitError::CaseExists`] (first commit of an existing case),
    /// [`CommitError::InDoubt`] (outcome unknown: commit again to resolve it),
    /// [`CommitError::Log`] (nothing was stored).
    pub async fn commit(&self, handle: &mut CaseHandle) -> Result<Receipt, CommitError> {
        let meta = self.meta();
        self.commit_with_meta(handle, meta).await
    }

    /// [`Workspace::commit`] with a given commit id, clock and writer: for a caller that
    /// retries across processes with the idempotency key it chose. When the handle's case
    /// already holds an event with that commit id (a process that restarted, loaded the case
    /// and sends its commit again), that event's receipt is returned, the buffer is dropped,
    /// and nothing is appended, whether or not the log still remembers the id.
    ///
    /// # Errors
    /// As [`Workspace::commit`].
    pub async fn commit_with_meta(
        &self,
        handle: &mut CaseHandle,
        meta: CommitMeta,
    ) -> Result<Receipt, CommitError> {
        match &handle.in_doubt {
            Some(InDoubt::Many(_)) => return Err(Misuse::ManyInDoubt.into()),
            Some(InDoubt::One(_)) => return self.resend(handle).await,
            None => {}
        }
        // A commit id the case already holds (sent again by a process that restarted and
        // loaded the case): it landed; its receipt is the answer, and nothing is stored again.
        if let Some(&position) = handle.folded.get(&meta.commit_id) {
            return self.landed_earlier(handle, position).await;
        }
        let CaseHandle {
            case,
            position,
            in_doubt,
            ..
        } = handle;
        let expected = *position;
        // The batch is applied to the case on trial while its event is appended: kept when the
        // log has it, undone on any other outcome; put in doubt if this future is dropped.
        let in_flight = InFlight::new(case.try_commit(meta)?, in_doubt);
        let (case_id, commit_id, payload) = {
            let tentative = in_flight.tentative();
            (
                tentative.state().case_id.clone(),
                tentative.commit_id(),
                tentative.payload_bytes(),
            )
        };
        let outcome = self
            .append_one(&case_id, commit_id, expected, payload, false)
            .await;
        let tentative = in_flight.landed();
        if let Ok(Resolved::Ours { position: stored }) = outcome {
            let receipt = tentative.receipt(stored);
            tentative.keep();
            *position = stored;
            return Ok(receipt);
        }
        let prepared = tentative.into_prepared();
        Self::settle(handle, prepared, outcome)
    }

    /// Sends the handle's commit in doubt again, as it was (same commit id, bytes and expected
    /// position), and settles it. If this future is dropped, the commit stays in doubt.
    async fn resend(&self, handle: &mut CaseHandle) -> Result<Receipt, CommitError> {
        let Some(InDoubt::One(prepared)) = &handle.in_doubt else {
            unreachable!("resend is called with a single commit in doubt")
        };
        let (commit_id, payload) = (prepared.event().commit_id, prepared.payload_bytes());
        let case_id = handle.case.id().clone();
        let expected = handle.position;
        let outcome = self
            .append_one(&case_id, commit_id, expected, payload, true)
            .await;
        let Some(InDoubt::One(prepared)) = handle.in_doubt.take() else {
            unreachable!("the handle was borrowed while its commit was resent")
        };
        Self::settle(handle, prepared, outcome)
    }

    /// Appends one event and resolves the outcome ([`Workspace::resolve`]); `may_have_landed`
    /// when an earlier attempt of the same event may have.
    async fn append_one(
        &self,
        case_id: &CaseId,
        commit_id: CommitId,
        expected: Position,
        payload: Bytes,
        may_have_landed: bool,
    ) -> Result<Resolved, CommitError> {
        let append = Append {
            case_id,
            commit_id,
            expected,
            may_have_landed,
        };
        self.resolve(append, || {
            self.log
                .append(case_id, commit_id, expected, payload.clone())
        })
        .await
    }

    /// The receipt of the case's event at `position`, a commit the handle holds already; the
    /// buffer (the same commit, sent again) is dropped.
    async fn landed_earlier(
        &self,
        handle: &mut CaseHandle,
        position: Position,
    ) -> Result<Receipt, CommitError> {
        let stored = self.log.event_at(position).await?.ok_or_else(|| {
            LogError::new(
                LogErrorKind::Corrupted,
                format!(
                    "case {}: the event at position {position}, which the handle folded, is \
                     gone from the log",
                    handle.case.id()
                ),
            )
        })?;
        let event = Event::decode(&stored.payload).map_err(|source| CommitError::Corrupted {
            case_id: handle.case.id().clone(),
            position,
            source: source.into(),
        })?;
        handle.case.rollback();
        Ok(Receipt::new(&event, Hash::of(&stored.payload), position))
    }

    /// Ends a commit from its prepared event and the outcome of its append: the handle takes
    /// the stored event, keeps the event in doubt (outcome unknown), or stays as it was.
    fn settle(
        handle: &mut CaseHandle,
        prepared: PreparedCommit,
        outcome: Result<Resolved, CommitError>,
    ) -> Result<Receipt, CommitError> {
        match outcome {
            Ok(resolved) => Self::adopt(handle, prepared, &resolved),
            Err(CommitError::Conflict { .. }) if handle.position == Position::ZERO => {
                Err(CommitError::CaseExists(handle.case.id().clone()))
            }
            Err(error @ CommitError::InDoubt { .. }) => {
                handle.in_doubt = Some(InDoubt::One(prepared));
                Err(error)
            }
            Err(error) => Err(error),
        }
    }

    /// Makes the handle's state the stored event's.
    fn adopt(
        handle: &mut CaseHandle,
        prepared: PreparedCommit,
        resolved: &Resolved,
    ) -> Result<Receipt, CommitError> {
        match resolved {
            // The commit id is an event the case already holds (it landed before this handle
            // was loaded): its receipt, and the batch sent again is dropped.
            Resolved::Stored(stored) if stored.position <= handle.position => {
                let event =
                    Event::decode(&stored.payload).map_err(|source| CommitError::Corrupted {
                        case_id: handle.case.id().clone(),
                        position: stored.position,
                        source: source.into(),
                    })?;
                handle.case.rollback();
                Ok(Receipt::new(
                    &event,
                    Hash::of(&stored.payload),
                    stored.position,
                ))
            }
            // An earlier attempt stored other bytes under this commit id: fold those.
            Resolved::Stored(stored) if Hash::of(&stored.payload) != prepared.event_hash() => {
                let event = handle
                    .case
                    .adopt(&prepared, &stored.payload)
                    .map_err(|source| CommitError::Corrupted {
                        case_id: handle.case.id().clone(),
                        position: stored.position,
                        source,
                    })?;
                handle.position = stored.position;
                Ok(Receipt::new(
                    &event,
                    Hash::of(&stored.payload),
                    stored.position,
                ))
            }
            Resolved::Stored(StoredEvent { position, .. }) | Resolved::Ours { position } => {
                let receipt = Receipt::new(prepared.event(), prepared.event_hash(), *position);
                let commit_id = prepared.event().commit_id;
                handle.case.complete(prepared).map_err(|stale| {
                    CommitError::Misuse(Misuse::StaleInDoubt {
                        commit_id,
                        prepared: stale.prepared,
                        current: stale.current,
                    })
                })?;
                handle.position = *position;
                Ok(receipt)
            }
        }
    }

    /// Loads the case and runs [`Workspace::transact_on`] on it.
    ///
    /// # Errors
    /// As [`Workspace::transact_on`]; `CaseNotFound` when the case has no events. After
    /// [`CommitError::InDoubt`] the handle that knows the commit is dropped: callers that must
    /// not apply a change twice use `transact_on` with their own handle.
    pub async fn transact<F>(&self, case_id: &CaseId, change: F) -> Result<Transacted, CommitError>
    where
        F: FnMut(&mut Case) + Send,
    {
        let mut handle = self.load(case_id).await?;
        let (receipt, attempts) = self.transact_on(&mut handle, change).await?;
        Ok(Transacted {
            receipt,
            case: handle,
            attempts,
        })
    }

    /// Runs `change` to buffer mutations on the handle's case and commits; on a conflict drops
    /// the buffer, catches up with the other writers' events ([`Workspace::refresh`]) and runs
    /// `change` again, up to [`RetryPolicy::transact_attempts`] times. Returns the receipt and
    /// how many times it committed.
    ///
    /// If an earlier call ended in doubt (or its future was dropped), its event is re-sent
    /// first (same commit id and bytes): when it had landed, that is the result and `change`
    /// does not run again; only when another writer's event is there instead does `change` run
    /// on the refreshed case. So a retry after an unknown outcome never applies a change twice.
    ///
    /// # Errors
    /// The last [`CommitError::Conflict`] when every attempt lost; any other commit error at
    /// once (the handle keeps an event in doubt for the next call).
    pub async fn transact_on<F>(
        &self,
        handle: &mut CaseHandle,
        mut change: F,
    ) -> Result<(Receipt, u32), CommitError>
    where
        F: FnMut(&mut Case) + Send,
    {
        let mut resend = handle.in_doubt.is_some();
        let mut attempts = 0;
        loop {
            attempts += 1;
            if !resend {
                change(&mut handle.case);
            }
            resend = false;
            match self.commit(handle).await {
                Ok(receipt) => return Ok((receipt, attempts)),
                Err(error @ CommitError::Conflict { .. }) => {
                    handle.case.rollback();
                    if attempts >= self.retry.transact_attempts {
                        return Err(error);
                    }
                    tokio::time::sleep(jitter(self.retry.backoff_min, attempts)).await;
                    self.refresh(handle).await?;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Folds the events committed to the case since the handle's position (by other writers),
    /// reading them one by one: for catching up a few events, not for loading a history.
    ///
    /// # Errors
    /// [`CommitError::Corrupted`] for an event that does not fold; [`CommitError::Log`].
    pub async fn refresh(&self, handle: &mut CaseHandle) -> Result<(), CommitError> {
        while let Some(stored) = self
            .log
            .event_after(handle.case.id(), handle.position)
            .await?
        {
            fold(handle, &stored)?;
        }
        Ok(())
    }
}

/// Folds a stored event into the handle.
fn fold(handle: &mut CaseHandle, stored: &StoredEvent) -> Result<(), CommitError> {
    let event = handle
        .case
        .apply_payload(&stored.payload)
        .map_err(|source| CommitError::Corrupted {
            case_id: handle.case.id().clone(),
            position: stored.position,
            source,
        })?;
    handle.folded.insert(event.commit_id, stored.position);
    handle.position = stored.position;
    Ok(())
}

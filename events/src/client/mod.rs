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
//!    [`CommitError::InDoubt`]: the handle keeps the event with the position it was sent
//!    after, and its mutations leave the buffer. The handle's next call (a commit, a refresh,
//!    a transact) re-sends the very same bytes with the same expected position first, and so
//!    settles it: stored (its receipt), or another writer's event in its place (a conflict:
//!    it never landed). A commit future dropped while its append is in flight leaves the
//!    commit in doubt the same way.
//! 4. the handle records the commit id of every event it holds, its own commits and those it
//!    folded: a commit sent again with one of them returns its first receipt and stores
//!    nothing, whether or not the log still remembers the id.
//!
//! Commits of different cases share nothing but the log connection: many are in flight at
//! once.

mod env;
mod handle;
mod many;
mod retry;

use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use wfstate_store::{
    Case, CaseId, CommitId, CommitMeta, Event, Hash, Limits, Position, PreparedCommit, Receipt,
};

pub use env::{Environment, SystemEnvironment};
pub use handle::{CaseHandle, Draft};
use handle::{InDoubt, InFlight};
pub use retry::RetryPolicy;
use retry::{Append, Resolved, jitter};

use crate::error::{CommitError, Misuse};
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
    env: Arc<dyn Environment>,
}

impl<L> Clone for Workspace<L> {
    fn clone(&self) -> Self {
        Workspace {
            log: Arc::clone(&self.log),
            writer: self.writer.clone(),
            limits: self.limits,
            retry: self.retry,
            env: Arc::clone(&self.env),
        }
    }
}

/// The default writer id: host name and process id, read once per process.
fn default_writer() -> String {
    static WRITER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    WRITER
        .get_or_init(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|name| name.trim().to_owned())
                .ok()
                .filter(|name| !name.is_empty())
                .unwrap_or_else(|| "localhost".into());
            format!("{host}/{}", std::process::id())
        })
        .clone()
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
            env: Arc::new(SystemEnvironment),
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

    /// Sets where commit ids, the clock and random pauses come from ([`SystemEnvironment`]
    /// by default).
    #[must_use]
    pub fn with_environment(mut self, env: impl Environment) -> Self {
        self.env = Arc::new(env);
        self
    }

    /// The event log.
    pub fn log(&self) -> &L {
        &self.log
    }

    /// The metadata of a new commit of this writer: a fresh commit id and the clock.
    pub fn meta(&self) -> CommitMeta {
        CommitMeta {
            commit_id: self.env.commit_id(),
            committed_at_ms: self.env.now_ms(),
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

    /// Commits the handle's buffer as one event and returns its receipt. On any error but
    /// [`CommitError::InDoubt`] the handle's state is unchanged and its buffer kept.
    ///
    /// When an earlier commit of the handle is in doubt, this call settles it first and
    /// returns its outcome instead: its receipt, or [`CommitError::Conflict`] when another
    /// writer's event is where it would be (it never landed); what is buffered waits for the
    /// next commit.
    ///
    /// # Errors
    /// [`CommitError::Rejected`] (every invalid mutation, or a limit), [`CommitError::Conflict`],
    /// [`CommitError::CaseExists`] (first commit of an existing case),
    /// [`CommitError::InDoubt`] (outcome unknown: the handle's next call resolves it; its
    /// mutations are the commit's, no longer in the buffer), [`CommitError::Log`] (nothing
    /// was stored).
    pub async fn commit(&self, handle: &mut CaseHandle) -> Result<Receipt, CommitError> {
        let meta = self.meta();
        self.commit_with_meta(handle, meta).await
    }

    /// [`Workspace::commit`] with a given commit id, clock and writer: for a caller that
    /// retries across processes with the idempotency key it chose. When the handle holds an
    /// event with that commit id (its own earlier commit, or one it folded: a process that
    /// restarted, loaded the case and sends its commit again), that event's receipt is
    /// returned, the buffer is dropped, and nothing is appended, whether or not the log still
    /// remembers the id. A commit id stored for another case is refused
    /// ([`Misuse::CommitIdTaken`]) when the log still remembers it.
    ///
    /// # Errors
    /// As [`Workspace::commit`].
    pub async fn commit_with_meta(
        &self,
        handle: &mut CaseHandle,
        meta: CommitMeta,
    ) -> Result<Receipt, CommitError> {
        if handle.in_doubt.is_some() {
            return self.settle_in_doubt(handle).await;
        }
        // A commit id the case already holds: it landed; its receipt is the answer, and
        // nothing is stored again.
        if let Some(position) = handle.known(meta.commit_id) {
            handle.case.rollback();
            return self.landed_earlier(handle, meta.commit_id, position).await;
        }
        let expected = handle.position;
        let CaseHandle { case, in_doubt, .. } = &mut *handle;
        // The batch is applied to the case on trial while its event is appended: kept when the
        // log has it, undone on any other outcome; put in doubt if this future is dropped.
        let in_flight = InFlight::new(case.try_commit(meta)?, in_doubt, expected);
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
        match outcome {
            Ok(Resolved::Ours { position }) => {
                let receipt = tentative.receipt(position);
                tentative.keep();
                handle.advance(commit_id, position);
                Ok(receipt)
            }
            Ok(Resolved::Stored(stored)) => {
                let (event, receipt) = decode_stored(&case_id, &stored)?;
                if stored.position <= expected || !tentative.follows_as_this(&event) {
                    // Stored, but not as the handle's next event: an event the handle holds,
                    // or one past events it has not folded yet (it learns them by refreshing).
                    tentative.drop_batch();
                    handle.known.insert(commit_id, stored.position);
                    return Ok(receipt);
                }
                if Hash::of(&stored.payload) == tentative.event_hash() {
                    tentative.keep();
                } else {
                    // An earlier attempt stored other bytes under this commit id: those are
                    // the case's.
                    tentative.replace(&stored.payload).map_err(|source| {
                        CommitError::Corrupted {
                            case_id,
                            position: stored.position,
                            source,
                        }
                    })?;
                }
                handle.advance(commit_id, stored.position);
                Ok(receipt)
            }
            Err(error @ CommitError::InDoubt { .. }) => {
                handle.in_doubt = Some(InDoubt::One {
                    prepared: tentative.set_aside(),
                    expected,
                });
                Err(error)
            }
            Err(error) => {
                drop(tentative);
                Err(Self::refused(handle, error))
            }
        }
    }

    /// The error of a commit that was not stored: a conflict on a case's first commit is
    /// [`CommitError::CaseExists`].
    fn refused(handle: &CaseHandle, error: CommitError) -> CommitError {
        match error {
            CommitError::Conflict { .. } if handle.position == Position::ZERO => {
                CommitError::CaseExists(handle.case.id().clone())
            }
            error => error,
        }
    }

    /// Settles what the handle has in doubt: sends its commit again as it was (same commit
    /// id, bytes and expected position), or reads the landed commit whose receipt was not
    /// known. If this future is dropped, the commit stays in doubt.
    async fn settle_in_doubt(&self, handle: &mut CaseHandle) -> Result<Receipt, CommitError> {
        match &handle.in_doubt {
            Some(InDoubt::One { prepared, expected }) => {
                let expected = *expected;
                // The handle's state does not move while a commit is in doubt: this checks
                // it, before anything is sent.
                if expected != handle.position || !handle.case.follows(prepared.event()) {
                    return Err(Misuse::StaleInDoubt {
                        commit_id: prepared.event().commit_id,
                        prepared: prepared.event().version,
                        current: handle.case.state().version,
                    }
                    .into());
                }
                let (commit_id, payload) = (prepared.event().commit_id, prepared.payload_bytes());
                let case_id = handle.case.id().clone();
                let outcome = self
                    .append_one(&case_id, commit_id, expected, payload, true)
                    .await;
                let Some(InDoubt::One { prepared, .. }) = handle.in_doubt.take() else {
                    unreachable!("the handle was borrowed while its commit was resent")
                };
                match outcome {
                    Ok(Resolved::Ours { position }) => {
                        Ok(Self::complete(handle, prepared, position))
                    }
                    Ok(Resolved::Stored(stored)) => Self::take_stored(handle, prepared, &stored),
                    Err(error @ CommitError::InDoubt { .. }) => {
                        handle.in_doubt = Some(InDoubt::One { prepared, expected });
                        Err(error)
                    }
                    Err(error) => Err(Self::refused(handle, error)),
                }
            }
            Some(InDoubt::Landed {
                commit_id,
                position,
            }) => {
                // Left in doubt until the read ends: a future dropped meanwhile keeps it.
                let (commit_id, position) = (*commit_id, *position);
                self.landed_earlier(handle, commit_id, position).await
            }
            Some(InDoubt::Many(_)) => Err(Misuse::ManyInDoubt.into()),
            None => unreachable!("settle_in_doubt is called with something in doubt"),
        }
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

    /// The receipt of the case's event at `position`, a commit the handle holds already.
    /// While the event cannot be read, the receipt is in doubt: the handle's next call reads
    /// it again.
    async fn landed_earlier(
        &self,
        handle: &mut CaseHandle,
        commit_id: CommitId,
        position: Position,
    ) -> Result<Receipt, CommitError> {
        let case_id = handle.case.id().clone();
        let read = self.read_landed(&case_id, commit_id, position).await;
        if !matches!(read, Ok(Err(_))) {
            // Read, or the log changed under the handle: nothing is left to settle.
            handle.in_doubt = None;
        }
        match read? {
            Ok(stored) => {
                let event =
                    Event::decode(&stored.payload).map_err(|source| CommitError::Corrupted {
                        case_id,
                        position,
                        source: source.into(),
                    })?;
                Ok(Receipt::new(&event, Hash::of(&stored.payload), position))
            }
            Err(cause) => {
                handle.in_doubt = Some(InDoubt::Landed {
                    commit_id,
                    position,
                });
                Err(CommitError::InDoubt {
                    case_id,
                    commit_id,
                    cause,
                })
            }
        }
    }

    /// Makes a commit the log acknowledged the handle's: its prepared event follows the
    /// handle (checked before it was sent, and nothing changes the handle meanwhile).
    fn complete(handle: &mut CaseHandle, prepared: PreparedCommit, position: Position) -> Receipt {
        let receipt = Receipt::new(prepared.event(), prepared.event_hash(), position);
        let commit_id = prepared.event().commit_id;
        handle
            .case
            .complete(prepared)
            .expect("a commit in doubt is sent only while it follows its handle");
        handle.advance(commit_id, position);
        receipt
    }

    /// The log holds an event with the id of the commit in doubt (stored by an earlier
    /// attempt): the handle takes it as its next event, as prepared when the bytes are the
    /// same, as stored when the earlier attempt stored other bytes. An event that does not
    /// follow the handle (one it holds, or one past events it has not folded) is only
    /// acknowledged.
    fn take_stored(
        handle: &mut CaseHandle,
        prepared: PreparedCommit,
        stored: &StoredEvent,
    ) -> Result<Receipt, CommitError> {
        let case_id = handle.case.id().clone();
        let (event, receipt) = decode_stored(&case_id, stored)?;
        if stored.position <= handle.position || !handle.case.follows(&event) {
            handle.known.insert(event.commit_id, stored.position);
            return Ok(receipt);
        }
        if Hash::of(&stored.payload) == prepared.event_hash() {
            return Ok(Self::complete(handle, prepared, stored.position));
        }
        handle
            .case
            .apply_payload(&stored.payload)
            .map_err(|source| CommitError::Corrupted {
                case_id,
                position: stored.position,
                source,
            })?;
        handle.advance(event.commit_id, stored.position);
        Ok(receipt)
    }

    /// Loads the case and runs [`Workspace::transact_on`] on it.
    ///
    /// # Errors
    /// As [`Workspace::transact_on`]; `CaseNotFound` when the case has no events. After
    /// [`CommitError::InDoubt`] the handle that knows the commit is dropped: callers that must
    /// not apply a change twice use `transact_on` with their own handle.
    pub async fn transact<F>(&self, case_id: &CaseId, change: F) -> Result<Transacted, CommitError>
    where
        F: FnMut(&mut Draft<'_>) + Send,
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
    /// `change` again, up to [`RetryPolicy::transact_attempts`] times, every attempt under one
    /// commit id (a conflict stored nothing). Returns the receipt and how many times it
    /// committed.
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
        change: F,
    ) -> Result<(Receipt, u32), CommitError>
    where
        F: FnMut(&mut Draft<'_>) + Send,
    {
        let meta = self.meta();
        self.transact_on_with_meta(handle, meta, change).await
    }

    /// [`Workspace::transact_on`] under a commit id (and clock and writer) the caller chose,
    /// kept for every attempt: run again with the same commit id after an unknown outcome (in
    /// another process, on a case loaded again), it returns the first receipt and `change`
    /// does not run.
    ///
    /// # Errors
    /// As [`Workspace::transact_on`].
    pub async fn transact_on_with_meta<F>(
        &self,
        handle: &mut CaseHandle,
        meta: CommitMeta,
        mut change: F,
    ) -> Result<(Receipt, u32), CommitError>
    where
        F: FnMut(&mut Draft<'_>) + Send,
    {
        let mut resend = handle.in_doubt.is_some() || handle.known(meta.commit_id).is_some();
        let mut attempts = 0;
        loop {
            attempts += 1;
            if !resend {
                change(&mut Draft::new(&mut handle.case));
            }
            match self.commit_with_meta(handle, meta.clone()).await {
                Ok(receipt) => return Ok((receipt, attempts)),
                Err(error @ CommitError::Conflict { .. }) => {
                    handle.case.rollback();
                    if attempts >= self.retry.transact_attempts {
                        return Err(error);
                    }
                    tokio::time::sleep(jitter(&*self.env, self.retry.backoff_min, attempts)).await;
                    self.refresh(handle).await?;
                    // The refresh may have folded this very commit (an earlier process's).
                    resend = handle.known(meta.commit_id).is_some();
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Folds the events committed to the case since the handle's position (by other writers),
    /// reading them one by one: for catching up a few events, not for loading a history.
    ///
    /// A commit of the handle in doubt is settled first, by sending it again as it was:
    /// returns its receipts when it had landed (empty when nothing was in doubt, or another
    /// writer's event is in its place and it never landed).
    ///
    /// # Errors
    /// [`CommitError::InDoubt`] when the commit in doubt is still unknown (nothing is folded);
    /// [`CommitError::Corrupted`] for an event that does not fold; [`CommitError::Log`].
    pub async fn refresh(&self, handle: &mut CaseHandle) -> Result<Vec<Receipt>, CommitError> {
        let settled = match &handle.in_doubt {
            None => Vec::new(),
            Some(InDoubt::Many(_)) => match self.commit_many(handle, Vec::new()).await {
                Ok(receipts) => receipts,
                Err(CommitError::Conflict { .. }) => Vec::new(),
                Err(error) => return Err(error),
            },
            Some(_) => match self.settle_in_doubt(handle).await {
                Ok(receipt) => vec![receipt],
                Err(CommitError::Conflict { .. } | CommitError::CaseExists(_)) => Vec::new(),
                Err(error) => return Err(error),
            },
        };
        debug_assert!(handle.in_doubt.is_none(), "settled or returned");
        while let Some(stored) = self
            .log
            .event_after(handle.case.id(), handle.position)
            .await?
        {
            fold(handle, &stored)?;
        }
        Ok(settled)
    }
}

/// The stored event with a commit's id, decoded, and its receipt.
fn decode_stored(case_id: &CaseId, stored: &StoredEvent) -> Result<(Event, Receipt), CommitError> {
    let event = Event::decode(&stored.payload).map_err(|source| CommitError::Corrupted {
        case_id: case_id.clone(),
        position: stored.position,
        source: source.into(),
    })?;
    let receipt = Receipt::new(&event, Hash::of(&stored.payload), stored.position);
    Ok((event, receipt))
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
    handle.advance(event.commit_id, stored.position);
    Ok(())
}

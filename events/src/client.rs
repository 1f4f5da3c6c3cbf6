//! The commit client: [`Workspace`] creates, loads and commits cases over any [`EventLog`],
//! resolving every retry to exactly one stored event.
//!
//! The protocol of one commit:
//! 1. the case handle prepares the event (validate, apply, encode, hash, undo);
//! 2. the payload is appended with its commit id and the case's last position as the expected
//!    position;
//! 3. the outcome is resolved: an ack or a duplicate ack is done; a sequence conflict is
//!    resolved by reading the case's first event **after** the expected position: ours (an
//!    earlier attempt landed, perhaps outside the dedup window) is done, another writer's is a
//!    real [`CommitError::Conflict`], none means the conflict was transient and the same
//!    append is sent again; an unavailable log is retried with the same commit id and expected
//!    position until the deadline. An outcome that is still unknown at the deadline is
//!    reported as [`CommitError::Unavailable`] and the prepared event is kept, so the next
//!    commit of the handle re-sends the very same bytes (and returns their receipt; mutations
//!    buffered since stay buffered for the commit after).
//!
//! Commits of different cases share nothing but the log connection: many are in flight at
//! once.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::TryStreamExt;
use wfstate_store::{
    Case, CaseId, CommitId, CommitMeta, Event, FoldError, Hash, IdError, Limits, PrepareError,
    PreparedCommit, Receipt, ValidationErrors,
};

use crate::log::{EventLog, LogError, StoredEvent};

/// Why a commit, create or load did not succeed. Match on [`CommitError::kind`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommitError {
    /// Another writer committed to the case first; reload and try again (or use
    /// [`Workspace::transact`]).
    #[error(
        "conflict on case {case}: expected its last event at position {expected}, another writer's is at {actual}"
    )]
    Conflict {
        /// The case.
        case: CaseId,
        /// The position this commit expected.
        expected: u64,
        /// The position of the other writer's event.
        actual: u64,
    },
    /// `create` of a case that already has events.
    #[error("case {0} already exists")]
    CaseExists(CaseId),
    /// `load` of a case with no events.
    #[error("case {0} not found")]
    CaseNotFound(CaseId),
    /// The batch is invalid; every error is listed.
    #[error(transparent)]
    Validation(ValidationErrors),
    /// The batch or its event exceeds a limit.
    #[error("{0}")]
    TooLarge(String),
    /// An id is invalid.
    #[error(transparent)]
    InvalidId(#[from] IdError),
    /// The log cannot be reached or did not answer before the deadline; the commit's outcome
    /// is unknown until the handle commits again (it re-sends the same event).
    #[error("{0}")]
    Unavailable(String),
    /// The credentials in use may not do this.
    #[error("{0}")]
    PermissionDenied(String),
    /// A stored event cannot be decoded or folded.
    #[error("event at position {position} of case {case}: {reason}")]
    Decode {
        /// The case.
        case: String,
        /// The event's position.
        position: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// Anything else the log reported (configuration, unexpected errors).
    #[error("{0}")]
    Log(String),
}

/// The kind of a [`CommitError`], for matching without its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CommitErrorKind {
    /// See [`CommitError::Conflict`].
    Conflict,
    /// See [`CommitError::CaseExists`].
    CaseExists,
    /// See [`CommitError::CaseNotFound`].
    CaseNotFound,
    /// See [`CommitError::Validation`].
    Validation,
    /// See [`CommitError::TooLarge`].
    TooLarge,
    /// See [`CommitError::InvalidId`].
    InvalidId,
    /// See [`CommitError::Unavailable`].
    Unavailable,
    /// See [`CommitError::PermissionDenied`].
    PermissionDenied,
    /// See [`CommitError::Decode`].
    Decode,
    /// See [`CommitError::Log`].
    Log,
}

impl CommitError {
    /// The error's kind.
    pub fn kind(&self) -> CommitErrorKind {
        match self {
            CommitError::Conflict { .. } => CommitErrorKind::Conflict,
            CommitError::CaseExists(_) => CommitErrorKind::CaseExists,
            CommitError::CaseNotFound(_) => CommitErrorKind::CaseNotFound,
            CommitError::Validation(_) => CommitErrorKind::Validation,
            CommitError::TooLarge(_) => CommitErrorKind::TooLarge,
            CommitError::InvalidId(_) => CommitErrorKind::InvalidId,
            CommitError::Unavailable(_) => CommitErrorKind::Unavailable,
            CommitError::PermissionDenied(_) => CommitErrorKind::PermissionDenied,
            CommitError::Decode { .. } => CommitErrorKind::Decode,
            CommitError::Log(_) => CommitErrorKind::Log,
        }
    }
}

impl From<LogError> for CommitError {
    fn from(error: LogError) -> Self {
        match error {
            LogError::Unavailable(_) | LogError::TransientConflict(_) => {
                CommitError::Unavailable(error.to_string())
            }
            LogError::TooLarge { .. } => CommitError::TooLarge(error.to_string()),
            LogError::PermissionDenied(_) => CommitError::PermissionDenied(error.to_string()),
            LogError::Conflict { .. } | LogError::Config(_) | LogError::Other(_) => {
                CommitError::Log(error.to_string())
            }
        }
    }
}

impl From<PrepareError> for CommitError {
    fn from(error: PrepareError) -> Self {
        match error {
            PrepareError::Invalid(errors) => CommitError::Validation(errors),
            other => CommitError::TooLarge(other.to_string()),
        }
    }
}

/// How long and how often the client retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The longest a commit keeps retrying an unavailable log before it reports
    /// [`CommitError::Unavailable`], counted from its first failed attempt.
    pub deadline: Duration,
    /// The first pause between retries; it doubles up to `backoff_max`.
    pub backoff_min: Duration,
    /// The longest pause between retries.
    pub backoff_max: Duration,
    /// How many times [`Workspace::transact`] runs its closure before giving up on conflicts.
    pub transact_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            deadline: Duration::from_secs(30),
            backoff_min: Duration::from_millis(20),
            backoff_max: Duration::from_secs(1),
            transact_attempts: 16,
        }
    }
}

/// A case loaded or created through a [`Workspace`]: the store's [`Case`] plus the position
/// of its last event.
#[derive(Debug)]
pub struct CaseHandle {
    case: Case,
    position: u64,
    /// An event sent whose outcome is unknown: the next commit re-sends it first.
    in_doubt: Option<PreparedCommit>,
    /// An atomic batch sent whose outcome is unknown: [`Workspace::commit_batches`] re-sends
    /// it, as it was, before anything else is committed.
    in_doubt_batch: Option<PendingBatch>,
}

/// An atomic batch of prepared events, each chained to the one before, and the case as they
/// leave it.
#[derive(Debug)]
struct PendingBatch {
    events: Vec<(Event, Hash, Bytes)>,
    after: Case,
    expected: u64,
}

impl CaseHandle {
    /// The case (state, buffer, closures).
    pub fn case(&self) -> &Case {
        &self.case
    }

    /// The case, to buffer mutations.
    pub fn case_mut(&mut self) -> &mut Case {
        &mut self.case
    }

    /// The position of the case's last event (0 before the first).
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The events sent whose outcome is unknown (after [`CommitError::Unavailable`]), in
    /// order, with their commit ids: the next commit (or, for an atomic batch,
    /// [`Workspace::commit_batches`]) sends exactly these again. Empty when nothing is in
    /// doubt.
    pub fn in_doubt(&self) -> Vec<(CommitId, &[u8])> {
        let single = self
            .in_doubt
            .iter()
            .map(|prepared| (prepared.event().commit_id, prepared.payload()));
        let batch = self
            .in_doubt_batch
            .iter()
            .flat_map(|pending| pending.events.iter())
            .map(|(event, _, payload)| (event.commit_id, payload.as_ref()));
        single.chain(batch).collect()
    }
}

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

    /// A handle on a case that has no events yet: buffer its first mutations, then
    /// [`Workspace::commit`] creates it (or fails with [`CommitError::CaseExists`]).
    pub fn new_case(&self, case_id: CaseId) -> CaseHandle {
        CaseHandle {
            case: Case::new(case_id).with_limits(self.limits),
            position: 0,
            in_doubt: None,
            in_doubt_batch: None,
        }
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
    /// [`CommitError::CaseNotFound`] when it has no events; [`CommitError::Decode`] for an
    /// event that does not decode or fold; [`CommitError::Unavailable`].
    pub async fn load(&self, case_id: &CaseId) -> Result<CaseHandle, CommitError> {
        let mut handle = self.new_case(case_id.clone());
        let mut events = self.log.history(case_id, 0).await?;
        while let Some(event) = events.try_next().await? {
            fold(&mut handle, &event)?;
        }
        if handle.position == 0 {
            return Err(CommitError::CaseNotFound(case_id.clone()));
        }
        Ok(handle)
    }

    /// Commits the handle's buffer as one event and returns its receipt. On any error the
    /// handle's state is unchanged and its buffer kept.
    ///
    /// # Errors
    /// [`CommitError::Validation`] (every invalid mutation), [`CommitError::Conflict`],
    /// [`CommitError::CaseExists`] (first commit of an existing case),
    /// [`CommitError::TooLarge`], [`CommitError::Unavailable`] (outcome unknown: commit again
    /// to resolve it).
    pub async fn commit(&self, handle: &mut CaseHandle) -> Result<Receipt, CommitError> {
        let meta = CommitMeta {
            commit_id: CommitId::generate(),
            committed_at_ms: now_ms(),
            writer: self.writer.clone(),
        };
        self.commit_with_meta(handle, meta).await
    }

    /// [`Workspace::commit`] with a given commit id, clock and writer: for a caller that
    /// retries across processes with the idempotency key it chose.
    ///
    /// # Errors
    /// As [`Workspace::commit`].
    pub async fn commit_with_meta(
        &self,
        handle: &mut CaseHandle,
        meta: CommitMeta,
    ) -> Result<Receipt, CommitError> {
        if handle.in_doubt_batch.is_some() {
            return Err(CommitError::Log(BATCH_IN_DOUBT.into()));
        }
        let case_id = handle.case.id().clone();
        let expected = handle.position;
        // An earlier attempt whose outcome is unknown is re-sent as it was (same commit id,
        // bytes and expected position) before anything else: it may have landed.
        if let Some(prepared) = handle.in_doubt.take() {
            let outcome = self
                .append_resolved(
                    &case_id,
                    prepared.event().commit_id,
                    prepared.payload_bytes(),
                    expected,
                )
                .await;
            return Self::settle(handle, prepared, outcome);
        }
        // The batch is applied to the case on trial while its event is appended: kept when
        // the log has it, undone on any other outcome (and if this future is dropped).
        let tentative = handle.case.try_commit(meta)?;
        let outcome = self
            .append_resolved(
                &case_id,
                tentative.commit_id(),
                tentative.payload_bytes(),
                expected,
            )
            .await;
        match outcome {
            Ok(Resolved::Ours { position }) => {
                let receipt = tentative.receipt(position);
                tentative.keep();
                handle.position = position;
                Ok(receipt)
            }
            outcome => {
                let prepared = tentative.into_prepared();
                Self::settle(handle, prepared, outcome)
            }
        }
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
            Err(CommitError::Conflict { .. }) if handle.position == 0 => {
                Err(CommitError::CaseExists(handle.case.id().clone()))
            }
            Err(error @ CommitError::Unavailable(_)) => {
                handle.in_doubt = Some(prepared);
                Err(error)
            }
            Err(error) => Err(error),
        }
    }

    /// Loads the case and runs [`Workspace::transact_on`] on it.
    ///
    /// # Errors
    /// As [`Workspace::transact_on`]; `CaseNotFound` when the case has no events. After
    /// [`CommitError::Unavailable`] the outcome is unknown and the handle that knows it is
    /// dropped: callers that must not apply a change twice use `transact_on` with their own
    /// handle.
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
    /// If an earlier call ended with [`CommitError::Unavailable`], its event is re-sent first
    /// (same commit id and bytes): when it had landed, that is the result and `change` does
    /// not run again; only when another writer's event is there instead does `change` run on
    /// the refreshed case. So a retry after an unknown outcome never applies a change twice.
    ///
    /// # Errors
    /// The last [`CommitError::Conflict`] when every attempt lost; any other commit error at
    /// once (the handle keeps an in-doubt event for the next call).
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
    /// [`CommitError::Decode`] for an event that does not fold; [`CommitError::Unavailable`].
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

    /// Appends and resolves the outcome to the stored event, or a definite error.
    async fn append_resolved(
        &self,
        case_id: &CaseId,
        commit_id: CommitId,
        payload: Bytes,
        expected: u64,
    ) -> Result<Resolved, CommitError> {
        // Set at the first failed attempt: a commit that succeeds at once reads no clock for it.
        let mut deadline = None;
        let mut attempt = 0;
        // The append's future and those of the rare paths (a duplicate, a conflict, a retry)
        // are boxed: the commit's own future stays small, and no call moves them into place.
        loop {
            attempt += 1;
            let outcome = Box::pin(
                self.log
                    .append(case_id, commit_id, expected, payload.clone()),
            )
            .await;
            let error = match outcome {
                Ok(appended) if !appended.duplicate => {
                    return Ok(Resolved::Ours {
                        position: appended.position,
                    });
                }
                Ok(appended) => {
                    // The log had this commit id already: read what it stored, which an earlier
                    // attempt may have written with other bytes.
                    match Box::pin(self.log.event_at(appended.position)).await {
                        Ok(Some(stored)) => return Ok(Resolved::Stored(stored)),
                        Ok(None) => LogError::Other(format!(
                            "duplicate ack for position {} but no event there",
                            appended.position
                        )),
                        Err(error) => error,
                    }
                }
                Err(LogError::Conflict { .. } | LogError::TransientConflict(_)) => {
                    match Box::pin(self.after_conflict(case_id, expected, commit_id)).await? {
                        Ok(stored) => return Ok(Resolved::Stored(stored)),
                        Err(retry) => retry,
                    }
                }
                Err(error) => error,
            };
            tracing::debug!(%case_id, %commit_id, attempt, %error, "retrying append");
            let unknown = format!(
                "the outcome of commit {commit_id} is unknown: commit the same handle again to resolve it"
            );
            let deadline = *deadline.get_or_insert_with(|| Instant::now() + self.retry.deadline);
            Box::pin(self.pause_or_give_up(error, attempt, deadline, &unknown)).await?;
        }
    }

    /// After a sequence conflict, what the case holds right after the expected position: our
    /// event (`Ok(Ok)`: an earlier attempt landed), nothing or a read error (`Ok(Err)`: try
    /// again), or another writer's event ([`CommitError::Conflict`]).
    async fn after_conflict(
        &self,
        case_id: &CaseId,
        expected: u64,
        ours: CommitId,
    ) -> Result<Result<StoredEvent, LogError>, CommitError> {
        match self.log.event_after(case_id, expected).await {
            Ok(Some(stored)) if stored.commit_id == Some(ours) => Ok(Ok(stored)),
            Ok(Some(stored)) => Err(CommitError::Conflict {
                case: case_id.clone(),
                expected,
                actual: stored.position,
            }),
            // Nothing after the expected position: the conflict was transient.
            Ok(None) => Ok(Err(LogError::Unavailable(
                "transient sequence conflict".into(),
            ))),
            Err(error) => Ok(Err(error)),
        }
    }

    /// Waits before the next attempt, or ends the retries: at once for an error that a retry
    /// cannot cure, with [`CommitError::Unavailable`] (saying what is `unknown`) after the
    /// deadline.
    async fn pause_or_give_up(
        &self,
        error: LogError,
        attempt: u32,
        deadline: Instant,
        unknown: &str,
    ) -> Result<(), CommitError> {
        if !error.is_retryable() {
            return Err(error.into());
        }
        if Instant::now() >= deadline {
            return Err(CommitError::Unavailable(format!(
                "{error}; gave up after {attempt} attempts in {:?}; {unknown}",
                self.retry.deadline
            )));
        }
        let pause = jitter(self.retry.backoff_min, attempt).min(self.retry.backoff_max);
        tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
        Ok(())
    }

    /// Makes the handle's state the stored event's.
    fn adopt(
        handle: &mut CaseHandle,
        prepared: PreparedCommit,
        resolved: &Resolved,
    ) -> Result<Receipt, CommitError> {
        match resolved {
            // An earlier attempt stored other bytes under this commit id: fold those.
            Resolved::Stored(stored) if Hash::of(&stored.payload) != prepared.event_hash() => {
                let event = handle
                    .case
                    .adopt(&prepared, &stored.payload)
                    .map_err(|error| decode_error(handle.case.id(), stored.position, &error))?;
                handle.position = stored.position;
                Ok(Receipt::new(
                    &event,
                    Hash::of(&stored.payload),
                    stored.position,
                ))
            }
            Resolved::Stored(StoredEvent { position, .. }) | Resolved::Ours { position } => {
                let receipt = Receipt::new(prepared.event(), prepared.event_hash(), *position);
                handle
                    .case
                    .complete(prepared)
                    .map_err(|e| CommitError::Log(e.to_string()))?;
                handle.position = *position;
                Ok(receipt)
            }
        }
    }
}

/// The outcome of an append.
enum Resolved {
    /// The log stored our bytes at `position`.
    Ours { position: u64 },
    /// The log holds an event with our commit id (a duplicate or a resolved conflict).
    Stored(StoredEvent),
}

fn decode_error(case: &CaseId, position: u64, error: &FoldError) -> CommitError {
    CommitError::Decode {
        case: case.to_string(),
        position,
        reason: error.to_string(),
    }
}

/// Folds a stored event into the handle.
fn fold(handle: &mut CaseHandle, stored: &StoredEvent) -> Result<(), CommitError> {
    handle
        .case
        .apply_payload(&stored.payload)
        .map_err(|error| decode_error(handle.case.id(), stored.position, &error))?;
    handle.position = stored.position;
    Ok(())
}

/// A pause that grows with `attempt` and is spread so that racing writers do not collide in
/// step.
fn jitter(base: Duration, attempt: u32) -> Duration {
    let grown = base.saturating_mul(1 << attempt.min(6));
    let nanos = u64::from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos()),
    );
    let spread = u64::try_from(grown.as_nanos()).unwrap_or(u64::MAX).max(1);
    grown / 2 + Duration::from_nanos(nanos % spread)
}

/// Why a handle with an atomic batch in doubt takes no other commit.
const BATCH_IN_DOUBT: &str = "an atomic batch of this case is in doubt (its outcome was \
     unknown): call commit_batches with no batches to resolve it first";

impl<L: EventLog> Workspace<L> {
    /// Commits several batches of mutations to one case in one round trip: each batch becomes
    /// its own event (one event per commit, each chained to the one before), and all are
    /// appended as one atomic batch ([`EventLog::append_batch`]: on JetStream an atomic batch
    /// publish, nats-server 2.12+; on the embedded log one transaction), stored together or
    /// not at all, the first carrying the case's expected position. For a hot case that would
    /// otherwise take one round trip per commit.
    ///
    /// The handle must have nothing buffered and no single commit in doubt. On any error it
    /// is unchanged, except after [`CommitError::Unavailable`]: the outcome is unknown, and
    /// the handle keeps the batch, as it was sent. Then call `commit_batches` with no batches:
    /// it sends the same events again (same commit ids, same expected position) and returns
    /// their receipts whether this attempt or the earlier one stored them, or
    /// [`CommitError::Conflict`] when another writer's event is there instead (the batch did
    /// not land). Until then the handle takes no other commit, so that a change is never
    /// applied twice.
    ///
    /// # Errors
    /// [`CommitError::Validation`] for an invalid batch (by its index within that batch),
    /// [`CommitError::Conflict`], [`CommitError::TooLarge`], [`CommitError::Unavailable`],
    /// [`CommitError::Log`] when the stream does not allow atomic batches, or when a batch is
    /// in doubt and `batches` is not empty.
    pub async fn commit_batches(
        &self,
        handle: &mut CaseHandle,
        batches: Vec<Vec<wfstate_store::Mutation>>,
    ) -> Result<Vec<Receipt>, CommitError> {
        if handle.case.buffered() > 0 || handle.in_doubt.is_some() {
            return Err(CommitError::Log(
                "commit_batches needs a handle with nothing buffered and nothing in doubt".into(),
            ));
        }
        let pending = match handle.in_doubt_batch.take() {
            Some(pending) if batches.is_empty() => pending,
            Some(pending) => {
                handle.in_doubt_batch = Some(pending);
                return Err(CommitError::Log(BATCH_IN_DOUBT.into()));
            }
            None => match self.prepare_batch(handle, batches)? {
                Some(pending) => pending,
                None => return Ok(Vec::new()),
            },
        };
        match self.send_batch(handle.case.id(), &pending).await {
            Ok(last) => {
                let first_position = last + 1 - pending.events.len() as u64;
                let receipts = pending
                    .events
                    .iter()
                    .zip(first_position..)
                    .map(|((event, hash, _), position)| Receipt::new(event, *hash, position))
                    .collect();
                handle.case = pending.after;
                handle.position = last;
                Ok(receipts)
            }
            Err(error @ CommitError::Unavailable(_)) => {
                handle.in_doubt_batch = Some(pending);
                Err(error)
            }
            Err(error) => Err(error),
        }
    }

    /// Prepares one chained event per batch on a copy of the handle's case; `None` for no
    /// batches.
    fn prepare_batch(
        &self,
        handle: &CaseHandle,
        batches: Vec<Vec<wfstate_store::Mutation>>,
    ) -> Result<Option<PendingBatch>, CommitError> {
        let mut after =
            Case::from_parts(handle.case.state().clone(), handle.case.last_event_hash())
                .with_limits(self.limits);
        let mut events = Vec::with_capacity(batches.len());
        for batch in batches {
            for mutation in batch {
                after.buffer(mutation);
            }
            let meta = CommitMeta {
                commit_id: CommitId::generate(),
                committed_at_ms: now_ms(),
                writer: self.writer.clone(),
            };
            let commit = after.prepare_commit(meta)?;
            events.push((
                commit.event().clone(),
                commit.event_hash(),
                commit.payload_bytes(),
            ));
            after
                .complete(commit)
                .map_err(|e| CommitError::Log(e.to_string()))?;
        }
        Ok((!events.is_empty()).then_some(PendingBatch {
            events,
            after,
            expected: handle.position,
        }))
    }

    /// Publishes the batch and resolves the outcome to the position of its last event, or a
    /// definite error.
    async fn send_batch(
        &self,
        case_id: &CaseId,
        pending: &PendingBatch,
    ) -> Result<u64, CommitError> {
        let events: Vec<(CommitId, Bytes)> = pending
            .events
            .iter()
            .map(|(event, _, payload)| (event.commit_id, payload.clone()))
            .collect();
        let first_id = events[0].0;
        let (expected, count) = (pending.expected, events.len() as u64);
        let mut deadline = None;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let error = match self.log.append_batch(case_id, &events, expected).await {
                Ok(last) => return Ok(last),
                Err(LogError::Conflict { .. } | LogError::TransientConflict(_)) => {
                    match self.after_conflict(case_id, expected, first_id).await? {
                        // Atomic: our first event there means the whole batch landed.
                        Ok(stored) => return Ok(stored.position + count - 1),
                        Err(retry) => retry,
                    }
                }
                Err(error) => error,
            };
            let unknown = format!(
                "whether the batch of {count} events landed is unknown: call commit_batches \
                 with no batches on the same handle to resolve it"
            );
            let deadline = *deadline.get_or_insert_with(|| Instant::now() + self.retry.deadline);
            self.pause_or_give_up(error, attempt, deadline, &unknown)
                .await?;
        }
    }
}

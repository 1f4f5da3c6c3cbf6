//! The one loop that resolves an append to exactly one stored event (or a definite error), for
//! single commits and multi-event appends alike.
//!
//! An outcome that may still land (a time-out, an unavailable server, an answer this store
//! does not know) is retried with the same commit ids and expected position until the
//! deadline; if it is still unknown then, the commit is in doubt ([`CommitError::InDoubt`]),
//! never reported as failed.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use wfstate_store::{CaseId, CommitId, Position};

use super::Workspace;
use super::env::Environment;
use crate::error::{CommitError, LogError, LogErrorKind, Misuse};
use crate::log::{AppendOutcome, EventLog, StoredEvent};

/// How long and how often the client retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// The longest a commit keeps retrying an unavailable log before it reports
    /// [`CommitError::InDoubt`], counted from its first failed attempt.
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

impl RetryPolicy {
    /// The same policy with another deadline.
    #[must_use]
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// The same policy with other pauses between retries.
    #[must_use]
    pub fn with_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff_min = min;
        self.backoff_max = max;
        self
    }

    /// The same policy with another number of [`Workspace::transact`] attempts.
    #[must_use]
    pub fn with_transact_attempts(mut self, attempts: u32) -> Self {
        self.transact_attempts = attempts;
        self
    }
}

/// What the log holds for an append that was resolved.
pub(crate) enum Resolved {
    /// This attempt stored the events; `position` is the last one's.
    Ours { position: Position },
    /// The log holds an event with the (first) commit id: a duplicate, or a conflict resolved
    /// by reading the case. Its bytes may be an earlier attempt's.
    Stored(StoredEvent),
}

/// What the case holds right after the expected position.
enum AfterExpected {
    /// The event with our commit id: an earlier attempt landed.
    Ours(StoredEvent),
    /// Another writer's event, at this position.
    Theirs(Position),
    /// The commit id is stored, for another case: this commit is not, and cannot be under
    /// that id.
    Elsewhere,
    /// Nothing yet, or the read failed: try again.
    Retry(LogError),
}

/// One append to resolve: the case, the first commit id it carries, the expected position, and
/// whether an earlier attempt (before this call) may have landed.
pub(crate) struct Append<'a> {
    pub case_id: &'a CaseId,
    pub commit_id: CommitId,
    pub expected: Position,
    pub may_have_landed: bool,
}

impl<L: EventLog> Workspace<L> {
    /// Sends `attempt` until its outcome is resolved: the stored event, a conflict, or a
    /// definite error; [`CommitError::InDoubt`] when an attempt may have landed and the
    /// deadline passed first.
    pub(crate) async fn resolve<F, Fut>(
        &self,
        append: Append<'_>,
        mut attempt: F,
    ) -> Result<Resolved, CommitError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<AppendOutcome, LogError>>,
    {
        let Append {
            case_id,
            commit_id,
            expected,
            mut may_have_landed,
        } = append;
        // Set at the first failed attempt: a commit that succeeds at once reads no clock for it.
        let mut deadline = None;
        let mut attempts = 0;
        loop {
            attempts += 1;
            // The futures of the rare paths are boxed, so the commit's own future stays small.
            let outcome = Box::pin(attempt()).await;
            let error = match outcome {
                Ok(AppendOutcome::Appended { position }) => return Ok(Resolved::Ours { position }),
                Ok(AppendOutcome::Duplicate { position }) => {
                    // The log has this commit id: it landed, whatever is read next.
                    may_have_landed = true;
                    match Box::pin(self.read_duplicate(case_id, commit_id, expected, position))
                        .await
                    {
                        AfterExpected::Ours(stored) => return Ok(Resolved::Stored(stored)),
                        AfterExpected::Theirs(actual) => {
                            return Err(conflict(case_id, expected, actual));
                        }
                        AfterExpected::Elsewhere => {
                            return Err(Misuse::CommitIdTaken { commit_id }.into());
                        }
                        AfterExpected::Retry(error) => error,
                    }
                }
                Ok(AppendOutcome::Conflict { .. }) => {
                    match Box::pin(self.after_expected(case_id, expected, commit_id)).await {
                        AfterExpected::Ours(stored) => return Ok(Resolved::Stored(stored)),
                        AfterExpected::Theirs(actual) => {
                            return Err(conflict(case_id, expected, actual));
                        }
                        AfterExpected::Elsewhere => {
                            unreachable!("a case's own events are of the case")
                        }
                        AfterExpected::Retry(error) => {
                            // A conflict the case does not show yet (a replicated stream's
                            // 10164, a read behind): this very event may be what moved it.
                            may_have_landed = true;
                            error
                        }
                    }
                }
                Err(error) => {
                    may_have_landed |= error.kind().may_have_landed();
                    error
                }
            };
            tracing::debug!(%case_id, %commit_id, attempts, %error, "retrying append");
            let deadline = *deadline.get_or_insert_with(|| Instant::now() + self.retry.deadline);
            if !error.is_retryable() || Instant::now() >= deadline {
                return Err(give_up(case_id, commit_id, error, may_have_landed));
            }
            self.pause(attempts, deadline).await;
        }
    }

    /// The pause before attempt `attempts + 1`, cut to what is left before `deadline`.
    async fn pause(&self, attempts: u32, deadline: Instant) {
        let pause =
            jitter(&*self.env, self.retry.backoff_min, attempts).min(self.retry.backoff_max);
        let left = deadline.saturating_duration_since(Instant::now());
        Box::pin(tokio::time::sleep(pause.min(left))).await;
    }

    /// The event at `position`, which holds `commit_id` of `case_id` (the handle folded or
    /// committed it): read from the log's leader, and asked again while it is not there yet
    /// (a log that answers from a replica behind) or the log is unavailable, until the
    /// deadline. The inner error when it could not be read (by then, or at all: a refused
    /// read): the commit landed, only its receipt is not known, so the caller reports it in
    /// doubt, never failed.
    ///
    /// # Errors
    /// An event at `position` that is another commit: the log changed under the handle.
    pub(crate) async fn read_landed(
        &self,
        case_id: &CaseId,
        commit_id: CommitId,
        position: Position,
    ) -> Result<Result<StoredEvent, LogError>, CommitError> {
        let deadline = Instant::now() + self.retry.deadline;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let error = match self.log.event_at(position).await {
                Ok(Some(stored)) if stored.commit_id == Some(commit_id) => {
                    return Ok(Ok(stored));
                }
                Ok(Some(stored)) => {
                    return Err(LogError::new(
                        LogErrorKind::Corrupted,
                        format!(
                            "case {case_id}: the event at position {position} was commit \
                             {commit_id} when the handle read it, and is now {}",
                            stored.commit_id.map_or_else(
                                || "an event without a commit id".to_owned(),
                                |id| format!("commit {id}")
                            )
                        ),
                    )
                    .into());
                }
                Ok(None) => LogError::new(
                    LogErrorKind::Unavailable,
                    format!(
                        "case {case_id}: commit {commit_id} is stored at position {position}, \
                         but that event cannot be read yet"
                    ),
                ),
                Err(error) if error.is_retryable() => error,
                Err(error) => return Ok(Err(error)),
            };
            tracing::debug!(%case_id, %commit_id, attempts, %error, "reading a landed commit again");
            if Instant::now() >= deadline {
                return Ok(Err(error));
            }
            self.pause(attempts, deadline).await;
        }
    }

    /// After a duplicate answer: the stored event at the position the log named, or, when it
    /// named none, the case's event after the expected position.
    async fn read_duplicate(
        &self,
        case_id: &CaseId,
        commit_id: CommitId,
        expected: Position,
        position: Option<Position>,
    ) -> AfterExpected {
        let Some(position) = position else {
            return self.after_expected(case_id, expected, commit_id).await;
        };
        match self.log.event_at(position).await {
            Ok(Some(stored))
                if stored.commit_id == Some(commit_id) && stored.case_id != case_id.as_str() =>
            {
                AfterExpected::Elsewhere
            }
            Ok(Some(stored)) if stored.commit_id == Some(commit_id) => AfterExpected::Ours(stored),
            Ok(_) => AfterExpected::Retry(LogError::new(
                LogErrorKind::Unavailable,
                format!(
                    "the log acknowledged commit {commit_id} as stored at position {position}, \
                     but that event cannot be read yet"
                ),
            )),
            Err(error) => AfterExpected::Retry(error),
        }
    }

    /// After a sequence conflict: what the case holds right after the expected position.
    async fn after_expected(
        &self,
        case_id: &CaseId,
        expected: Position,
        ours: CommitId,
    ) -> AfterExpected {
        match self.log.event_after(case_id, expected).await {
            Ok(Some(stored)) if stored.commit_id == Some(ours) => AfterExpected::Ours(stored),
            Ok(Some(stored)) => AfterExpected::Theirs(stored.position),
            // Nothing after the expected position: the conflict was transient.
            Ok(None) => AfterExpected::Retry(LogError::new(
                LogErrorKind::Unavailable,
                format!(
                    "a sequence conflict on case {case_id}, but nothing follows position \
                     {expected} yet"
                ),
            )),
            Err(error) => AfterExpected::Retry(error),
        }
    }
}

fn conflict(case_id: &CaseId, expected: Position, actual: Position) -> CommitError {
    CommitError::Conflict {
        case_id: case_id.clone(),
        expected,
        actual,
    }
}

/// The error a resolution ends with: in doubt when any attempt may have landed, else the
/// log's error (nothing was stored).
fn give_up(
    case_id: &CaseId,
    commit_id: CommitId,
    error: LogError,
    may_have_landed: bool,
) -> CommitError {
    if may_have_landed {
        CommitError::InDoubt {
            case_id: case_id.clone(),
            commit_id,
            cause: error,
        }
    } else {
        CommitError::Log(error)
    }
}

/// A pause that grows with `attempt` and is spread so that racing writers do not collide in
/// step.
pub(crate) fn jitter(env: &dyn Environment, base: Duration, attempt: u32) -> Duration {
    let grown = base.saturating_mul(1 << attempt.min(6));
    let spread = u64::try_from(grown.as_nanos()).unwrap_or(u64::MAX).max(1);
    grown / 2 + Duration::from_nanos(env.random_below(spread))
}

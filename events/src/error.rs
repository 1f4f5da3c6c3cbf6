//! The errors of the event log and of the commit client.
//!
//! A [`LogError`] is a failure of a backend: a closed [`LogErrorKind`] to match on, a sentence
//! that names what was being done and where, the JetStream error code when the server gave
//! one, and the cause (the async-nats, rusqlite or io error) behind [`std::error::Error::source`].
//! The protocol's normal answers to an append (a duplicate, a conflict) are not errors: they
//! are [`crate::AppendOutcome`] values.
//!
//! A [`CommitError`] is why a commit, create or load did not succeed; its
//! [`CommitErrorKind`] separates what the caller must fix from what may succeed later, and a
//! commit whose event may still land is [`CommitErrorKind::InDoubt`], never a failure.

use std::fmt;

use wfstate_store::{
    CaseId, CommitId, FoldError, IdError, Position, PrepareError, ValidationErrors, Version,
};

/// A cause of any type, kept for [`std::error::Error::source`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What kind of failure a [`LogError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LogErrorKind {
    /// The log cannot be reached, has no leader, or is busy; the same request may succeed
    /// later. A write that failed this way may still land.
    Unavailable,
    /// The log did not answer in time; a write may still land.
    TimedOut,
    /// The event is larger than the log accepts; nothing was stored.
    TooLarge,
    /// The credentials (or file permissions) in use may not do this.
    PermissionDenied,
    /// The log is configured in a way this store refuses, or cannot be opened as given.
    Config,
    /// The log's storage is full; nothing was stored.
    NoSpace,
    /// Stored data cannot be what this store wrote (a negative position, a damaged file).
    Corrupted,
    /// An answer this store does not know; a write's outcome is unknown.
    Unexpected,
}

impl LogErrorKind {
    /// Whether the same request may succeed if sent again.
    pub fn is_retryable(self) -> bool {
        matches!(self, LogErrorKind::Unavailable | LogErrorKind::TimedOut)
    }

    /// Whether a write that failed with this kind may still have been stored (so its commit
    /// is in doubt, not failed).
    pub fn may_have_landed(self) -> bool {
        matches!(
            self,
            LogErrorKind::Unavailable | LogErrorKind::TimedOut | LogErrorKind::Unexpected
        )
    }
}

/// A failure of the event log.
#[derive(Debug)]
pub struct LogError {
    kind: LogErrorKind,
    message: String,
    code: Option<u64>,
    source: Option<BoxError>,
}

impl LogError {
    /// An error of `kind`, described by `message` (what was being done, where, and what to
    /// do about it).
    pub fn new(kind: LogErrorKind, message: impl Into<String>) -> Self {
        LogError {
            kind,
            message: message.into(),
            code: None,
            source: None,
        }
    }

    /// The same error with its cause.
    #[must_use]
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// The same error with the JetStream error code the server answered with.
    #[must_use]
    pub fn with_code(mut self, code: u64) -> Self {
        self.code = Some(code);
        self
    }

    /// A failure of an async-nats call (a KV read or write, a consumer request), classified
    /// by the JetStream error code among its causes, or else by how the call failed (a
    /// time-out, no responders, a dropped connection); `what` says what was being done.
    pub fn from_nats(what: &str, error: impl Into<BoxError>) -> LogError {
        crate::jetstream::nats_failure(what, error.into())
    }

    /// A failure of a SQLite call on the file at `path` (the embedded projector's tables),
    /// classified as the embedded log classifies its own: busy or locked may pass; a full
    /// disk, a read-only or unusable file and damage say what to do.
    pub fn from_storage(
        path: &std::path::Path,
        what: &str,
        error: impl Into<BoxError>,
    ) -> LogError {
        crate::embedded::storage_failure(path, what, error.into())
    }

    /// The error's kind.
    pub fn kind(&self) -> LogErrorKind {
        self.kind
    }

    /// The JetStream error code (`err_code`) the server answered with, if any.
    pub fn code(&self) -> Option<u64> {
        self.code
    }

    /// Whether the same request may succeed if sent again.
    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }

    /// Refuses a payload over `limit` bytes, before anything is sent.
    ///
    /// # Errors
    /// [`LogErrorKind::TooLarge`], naming the size and the limit.
    pub fn check_size(payload: &[u8], limit: usize) -> Result<(), LogError> {
        if payload.len() > limit {
            return Err(LogError::too_large(payload.len(), Some(limit)));
        }
        Ok(())
    }

    /// An event of `size` bytes refused as too large, by a `limit` when it is known.
    pub fn too_large(size: usize, limit: Option<usize>) -> LogError {
        let message = match limit {
            Some(limit) => format!(
                "the event is {size} bytes, over the log's limit of {limit}; split the batch"
            ),
            None => format!(
                "the log refused an event of {size} bytes as too large (its maximum message \
                 size); split the batch or raise the limit"
            ),
        };
        LogError::new(LogErrorKind::TooLarge, message)
    }
}

impl fmt::Display for LogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(code) = self.code {
            write!(f, " (JetStream error {code})")?;
        }
        Ok(())
    }
}

impl std::error::Error for LogError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn std::error::Error + 'static))
    }
}

/// A use of the commit client that it refuses, whatever the log does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Misuse {
    /// `commit_many` was called on a handle with buffered mutations or a single commit in
    /// doubt.
    #[error(
        "commit_many needs a handle with nothing buffered and no commit in doubt; commit or \
         roll back the buffer first"
    )]
    HandleBusy,
    /// A multi-event append of the handle is in doubt and other events were given.
    #[error(
        "a multi-event append of this case is in doubt (its outcome was unknown): call \
         commit_many with no batches to resolve it first"
    )]
    ManyInDoubt,
    /// The handle's case moved while one of its commits was in doubt, so the commit no
    /// longer follows it; nothing was sent. The client keeps a handle still while a commit is
    /// in doubt, so this does not happen through its API.
    #[error(
        "the case moved while commit {commit_id} was in doubt (version {current}, the commit \
         is version {prepared}); nothing was sent; load the case again"
    )]
    StaleInDoubt {
        /// The commit in doubt.
        commit_id: CommitId,
        /// Its version.
        prepared: Version,
        /// The handle's version.
        current: Version,
    },
    /// The commit id is stored for another case (an idempotency key is one commit's); nothing
    /// was stored.
    #[error(
        "commit id {commit_id} is already stored for another case; nothing was stored; give \
         this commit an id of its own"
    )]
    CommitIdTaken {
        /// The commit id.
        commit_id: CommitId,
    },
}

/// Why a commit, create or load did not succeed. Match on [`CommitError::kind`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommitError {
    /// Another writer committed to the case first; nothing was committed. Reload and try
    /// again (or use [`crate::Workspace::transact`]).
    #[error(
        "conflict on case {case_id}: expected its last event at position {expected}, another \
         writer's is at {actual}; nothing was committed"
    )]
    Conflict {
        /// The case.
        case_id: CaseId,
        /// The position this commit expected.
        expected: Position,
        /// The position of the other writer's event.
        actual: Position,
    },
    /// `create` of a case that already has events.
    #[error("case {0} already exists")]
    CaseExists(CaseId),
    /// `load` of a case with no events.
    #[error("case {0} not found")]
    CaseNotFound(CaseId),
    /// The batch cannot become an event (invalid mutations, a limit, the writer id); nothing
    /// was sent.
    #[error(transparent)]
    Rejected(#[from] PrepareError),
    /// An id is invalid.
    #[error(transparent)]
    InvalidId(#[from] IdError),
    /// The event was sent and may have been stored: the outcome is unknown until the handle
    /// commits again (it re-sends the same event, which resolves it).
    #[error(
        "the outcome of commit {commit_id} on case {case_id} is unknown ({cause}); commit the \
         same handle again to resolve it"
    )]
    InDoubt {
        /// The case.
        case_id: CaseId,
        /// The commit in doubt.
        commit_id: CommitId,
        /// Why the outcome is unknown.
        #[source]
        cause: LogError,
    },
    /// The log failed (nothing of this commit was stored, or this was a read).
    #[error(transparent)]
    Log(#[from] LogError),
    /// A stored event of the case cannot be decoded or folded.
    #[error("event at position {position} of case {case_id}: {source}")]
    Corrupted {
        /// The case.
        case_id: CaseId,
        /// The event's position.
        position: Position,
        /// What is wrong with it.
        source: FoldError,
    },
    /// The client was used in a way it refuses.
    #[error(transparent)]
    Misuse(#[from] Misuse),
}

/// The kind of a [`CommitError`], for matching without its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CommitErrorKind {
    /// Another writer came first.
    Conflict,
    /// `create` of a case that exists.
    CaseExists,
    /// `load` of a case with no events.
    CaseNotFound,
    /// Invalid mutations.
    Validation,
    /// Too many mutations, or an event over the size limit.
    TooLarge,
    /// An empty or too long writer id.
    InvalidWriter,
    /// An invalid case, token or scope id.
    InvalidId,
    /// The commit may have landed; commit the same handle again to resolve it.
    InDoubt,
    /// The log cannot be reached or did not answer; nothing was written (or it was a read).
    Unavailable,
    /// The credentials may not do this.
    PermissionDenied,
    /// The log is configured in a way this store refuses.
    Config,
    /// The log's storage is full.
    NoSpace,
    /// Stored data cannot be what this store wrote.
    Corrupted,
    /// An answer of the log this store does not know.
    Unexpected,
    /// The client was used in a way it refuses.
    Misuse,
}

impl CommitError {
    /// The error's kind.
    pub fn kind(&self) -> CommitErrorKind {
        match self {
            CommitError::Conflict { .. } => CommitErrorKind::Conflict,
            CommitError::CaseExists(_) => CommitErrorKind::CaseExists,
            CommitError::CaseNotFound(_) => CommitErrorKind::CaseNotFound,
            CommitError::Rejected(PrepareError::Invalid(_)) => CommitErrorKind::Validation,
            CommitError::Rejected(PrepareError::InvalidWriter(_)) => CommitErrorKind::InvalidWriter,
            CommitError::Rejected(_) => CommitErrorKind::TooLarge,
            CommitError::InvalidId(_) => CommitErrorKind::InvalidId,
            CommitError::InDoubt { .. } => CommitErrorKind::InDoubt,
            CommitError::Log(error) => match error.kind() {
                LogErrorKind::Unavailable | LogErrorKind::TimedOut => CommitErrorKind::Unavailable,
                LogErrorKind::TooLarge => CommitErrorKind::TooLarge,
                LogErrorKind::PermissionDenied => CommitErrorKind::PermissionDenied,
                LogErrorKind::Config => CommitErrorKind::Config,
                LogErrorKind::NoSpace => CommitErrorKind::NoSpace,
                LogErrorKind::Corrupted => CommitErrorKind::Corrupted,
                LogErrorKind::Unexpected => CommitErrorKind::Unexpected,
            },
            CommitError::Corrupted { .. } => CommitErrorKind::Corrupted,
            CommitError::Misuse(_) => CommitErrorKind::Misuse,
        }
    }

    /// Every invalid mutation, when the batch did not validate.
    pub fn validation_errors(&self) -> Option<&ValidationErrors> {
        match self {
            CommitError::Rejected(PrepareError::Invalid(errors)) => Some(errors),
            _ => None,
        }
    }

    /// The log error behind this one, if any.
    pub fn log_error(&self) -> Option<&LogError> {
        match self {
            CommitError::Log(error) | CommitError::InDoubt { cause: error, .. } => Some(error),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn a_log_error_keeps_its_cause_and_code() {
        let io = std::io::Error::other("disk on fire");
        let error = LogError::new(LogErrorKind::Unavailable, "publishing to x")
            .with_code(10158)
            .with_source(io);
        assert_eq!(error.to_string(), "publishing to x (JetStream error 10158)");
        assert_eq!(error.code(), Some(10158));
        assert_eq!(error.source().unwrap().to_string(), "disk on fire");
    }

    #[test]
    fn each_prepare_error_keeps_its_own_kind() {
        let writer: CommitError =
            PrepareError::InvalidWriter("0 bytes; use 1 to 256".into()).into();
        assert_eq!(writer.kind(), CommitErrorKind::InvalidWriter);
        let many: CommitError = PrepareError::TooManyMutations { count: 2, limit: 1 }.into();
        assert_eq!(many.kind(), CommitErrorKind::TooLarge);
        let invalid: CommitError = PrepareError::Invalid(ValidationErrors(Vec::new())).into();
        assert_eq!(invalid.kind(), CommitErrorKind::Validation);
    }

    #[test]
    fn only_outcomes_that_may_still_land_are_retried_or_in_doubt() {
        use LogErrorKind::*;
        for kind in [Unavailable, TimedOut] {
            assert!(kind.is_retryable() && kind.may_have_landed(), "{kind:?}");
        }
        assert!(!Unexpected.is_retryable() && Unexpected.may_have_landed());
        for kind in [TooLarge, PermissionDenied, Config, NoSpace, Corrupted] {
            assert!(!kind.is_retryable() && !kind.may_have_landed(), "{kind:?}");
        }
    }
}

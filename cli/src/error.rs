//! [`CliError`]: an exit code and the lines to print, built from the libraries' typed errors.
//!
//! Exit codes separate what the user must fix (2: input, ids, paths, files, credentials,
//! configuration) from what may pass if tried again later (4), a failed check (1), a lost
//! race (3), and a change that was stored though its output could not be written (5).

use wfstate_events::{CommitError, CommitErrorKind, LogError, LogErrorKind};
use wfstate_projector::{ProjectorError, TransferError};
use wfstate_store::IdError;

/// Exit code: a check failed.
pub const CHECK_FAILED: u8 = 1;
/// Exit code: bad input or configuration.
pub const BAD_INPUT: u8 = 2;
/// Exit code: conflict.
pub const CONFLICT: u8 = 3;
/// Exit code: try again later (the backend is unavailable, or a commit's outcome is unknown).
pub const UNAVAILABLE: u8 = 4;
/// Exit code: done (the change is stored), but the output could not be written.
pub const DONE_UNWRITTEN: u8 = 5;

/// A failure of a command: its exit code and message lines.
#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    pub lines: Vec<String>,
    /// A case that is not in the store: the message is completed with the store's name.
    pub missing_case: bool,
    /// What was asked for is not there (a case, a version): HTTP 404 in `serve`.
    pub not_found: bool,
}

impl CliError {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        CliError {
            code,
            lines: vec![message.into()],
            missing_case: false,
            not_found: false,
        }
    }

    /// What was asked for is not there (exit 2).
    pub fn not_found(message: impl Into<String>) -> Self {
        let mut error = CliError::bad_input(message);
        error.not_found = true;
        error
    }

    /// A case with no events in the store.
    pub fn case_not_found(case: impl std::fmt::Display) -> Self {
        let mut error = CliError::not_found(format!("case {case} not found"));
        error.missing_case = true;
        error
    }

    /// Completes a missing case's message with where it was looked for, and what to do.
    pub fn looked_in(mut self, store: &str) -> Self {
        if self.missing_case
            && let Some(line) = self.lines.first_mut()
        {
            *line = format!(
                "{line} in {store}; `wfstate list` shows the cases there, and --data-dir or \
                 --nats names another store"
            );
            self.missing_case = false;
        }
        self
    }

    pub fn bad_input(message: impl Into<String>) -> Self {
        CliError::new(BAD_INPUT, message)
    }

    /// One line: the error, then the causes behind it.
    fn with_causes(code: u8, error: &dyn std::error::Error) -> Self {
        let mut line = error.to_string();
        let mut causes = Vec::new();
        let mut next = error.source();
        while let Some(cause) = next {
            let text = cause.to_string();
            // A cause whose words the message or an earlier cause already holds adds nothing.
            if !line.contains(&text)
                && !causes
                    .iter()
                    .any(|earlier: &String| earlier.contains(&text))
            {
                causes.push(text);
            }
            next = cause.source();
        }
        if !causes.is_empty() {
            line = format!("{line} (cause: {})", causes.join(": "));
        }
        CliError::new(code, line)
    }

    pub fn print(&self) {
        for line in &self.lines {
            crate::stdout::say(format_args!("wfstate: {line}"));
        }
    }
}

/// The exit code of a failure of the event log or of the view store.
fn log_code(kind: LogErrorKind) -> u8 {
    match kind {
        LogErrorKind::Unavailable | LogErrorKind::TimedOut | LogErrorKind::Unexpected => {
            UNAVAILABLE
        }
        // Too large, permissions, configuration, a full disk, a damaged file: for the user to
        // fix before trying again.
        _ => BAD_INPUT,
    }
}

impl From<CommitError> for CliError {
    fn from(error: CommitError) -> Self {
        let code = match error.kind() {
            CommitErrorKind::Conflict | CommitErrorKind::CaseExists => CONFLICT,
            CommitErrorKind::InDoubt
            | CommitErrorKind::Unavailable
            | CommitErrorKind::Unexpected => UNAVAILABLE,
            CommitErrorKind::Corrupted if error.log_error().is_none() => CHECK_FAILED,
            _ => BAD_INPUT,
        };
        if let CommitError::InDoubt {
            case_id,
            commit_id,
            cause,
        } = &error
        {
            let mut line = format!(
                "the outcome of commit {commit_id} on case {case_id} is not known yet ({cause}); \
                 it may still land: run the same command again with --commit-id {commit_id}, \
                 which stores it at most once and prints its receipt"
            );
            if let Some(source) = std::error::Error::source(cause) {
                line = format!("{line} (cause: {source})");
            }
            return CliError::new(code, line);
        }
        if let Some(errors) = error.validation_errors() {
            let mut lines = vec![format!(
                "{} invalid mutation(s); nothing was committed:",
                errors.0.len()
            )];
            lines.extend(errors.0.iter().map(ToString::to_string));
            return CliError {
                code,
                lines,
                missing_case: false,
                not_found: false,
            };
        }
        CliError::with_causes(code, &error)
    }
}

impl From<LogError> for CliError {
    fn from(error: LogError) -> Self {
        CliError::with_causes(log_code(error.kind()), &error)
    }
}

fn projector_code(error: &ProjectorError) -> u8 {
    match error {
        ProjectorError::Log(log) => log_code(log.kind()),
        ProjectorError::CaseNotFound(_) => BAD_INPUT,
        ProjectorError::BadEvent { .. } | ProjectorError::BadView { .. } => CHECK_FAILED,
        _ => UNAVAILABLE,
    }
}

impl From<ProjectorError> for CliError {
    fn from(error: ProjectorError) -> Self {
        if let ProjectorError::CaseNotFound(case) = &error {
            return CliError::case_not_found(case);
        }
        CliError::with_causes(projector_code(&error), &error)
    }
}

impl From<TransferError> for CliError {
    fn from(error: TransferError) -> Self {
        let code = match &error {
            TransferError::Broken(_) => CHECK_FAILED,
            TransferError::Log(error) => projector_code(error),
            TransferError::CaseExists(_) => CONFLICT,
            _ => BAD_INPUT,
        };
        CliError::with_causes(code, &error)
    }
}

impl From<IdError> for CliError {
    fn from(error: IdError) -> Self {
        CliError::bad_input(error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use wfstate_events::Misuse;

    use super::*;

    /// A misuse of the client and a damaged file are for the user to fix (2), not "try again
    /// later" (4).
    #[test]
    fn what_the_user_must_fix_is_not_try_again_later() {
        let misuse = CliError::from(CommitError::Misuse(Misuse::HandleBusy));
        assert_eq!(misuse.code, BAD_INPUT);
        for kind in [
            LogErrorKind::TooLarge,
            LogErrorKind::PermissionDenied,
            LogErrorKind::Config,
            LogErrorKind::NoSpace,
            LogErrorKind::Corrupted,
        ] {
            let error = CliError::from(LogError::new(kind, "x"));
            assert_eq!(error.code, BAD_INPUT, "{kind:?}");
        }
        for kind in [LogErrorKind::Unavailable, LogErrorKind::TimedOut] {
            assert_eq!(
                CliError::from(LogError::new(kind, "x")).code,
                UNAVAILABLE,
                "{kind:?}"
            );
        }
    }

    /// A commit whose outcome is unknown says which commit, and how to settle it.
    #[test]
    fn an_unknown_outcome_names_its_commit_id_and_how_to_settle_it() {
        let commit_id = wfstate_store::CommitId::generate();
        let error = CliError::from(CommitError::InDoubt {
            case_id: wfstate_store::CaseId::new("c1").unwrap(),
            commit_id,
            cause: LogError::new(LogErrorKind::TimedOut, "no answer"),
        });
        assert_eq!(error.code, UNAVAILABLE);
        assert_eq!(error.lines.len(), 1);
        let line = &error.lines[0];
        assert!(
            line.contains(&format!(
                "run the same command again with --commit-id {commit_id}"
            )),
            "{line}"
        );
    }

    #[test]
    fn causes_are_printed_once_on_the_same_line() {
        let io = std::io::Error::other("refused");
        let error = LogError::new(LogErrorKind::Unavailable, "cannot connect").with_source(io);
        let printed = CliError::from(error);
        assert_eq!(printed.lines, ["cannot connect (cause: refused)"]);
    }
}

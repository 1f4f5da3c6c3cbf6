//! [`CliError`]: an exit code and the lines to print, built from the libraries' typed errors.

use wfstate_events::{CommitError, CommitErrorKind, LogError};
use wfstate_projector::{ProjectorError, TransferError};
use wfstate_store::IdError;

/// Exit code: a check failed.
pub const CHECK_FAILED: u8 = 1;
/// Exit code: bad input.
pub const BAD_INPUT: u8 = 2;
/// Exit code: conflict.
pub const CONFLICT: u8 = 3;
/// Exit code: backend unavailable.
pub const UNAVAILABLE: u8 = 4;

/// A failure of a command: its exit code and message lines.
#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    pub lines: Vec<String>,
}

impl CliError {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        CliError {
            code,
            lines: vec![message.into()],
        }
    }

    pub fn bad_input(message: impl Into<String>) -> Self {
        CliError::new(BAD_INPUT, message)
    }

    pub fn print(&self) {
        for line in &self.lines {
            eprintln!("wfstate: {line}");
        }
    }
}

impl From<CommitError> for CliError {
    fn from(error: CommitError) -> Self {
        let code = match error.kind() {
            CommitErrorKind::Conflict | CommitErrorKind::CaseExists => CONFLICT,
            CommitErrorKind::Unavailable
            | CommitErrorKind::PermissionDenied
            | CommitErrorKind::Log => UNAVAILABLE,
            CommitErrorKind::Decode => CHECK_FAILED,
            _ => BAD_INPUT,
        };
        if let CommitError::Validation(errors) = &error {
            let mut lines = vec![format!(
                "{} invalid mutation(s); nothing was committed:",
                errors.0.len()
            )];
            lines.extend(errors.0.iter().map(ToString::to_string));
            return CliError { code, lines };
        }
        CliError::new(code, error.to_string())
    }
}

impl From<LogError> for CliError {
    fn from(error: LogError) -> Self {
        let code = match error {
            LogError::Conflict { .. } => CONFLICT,
            LogError::TooLarge { .. } => BAD_INPUT,
            _ => UNAVAILABLE,
        };
        CliError::new(code, error.to_string())
    }
}

impl From<ProjectorError> for CliError {
    fn from(error: ProjectorError) -> Self {
        let code = match error {
            ProjectorError::CaseNotFound(_) => BAD_INPUT,
            ProjectorError::BadEvent { .. } | ProjectorError::BadView { .. } => CHECK_FAILED,
            _ => UNAVAILABLE,
        };
        CliError::new(code, error.to_string())
    }
}

impl From<TransferError> for CliError {
    fn from(error: TransferError) -> Self {
        let code = match &error {
            TransferError::Broken(_) => CHECK_FAILED,
            TransferError::Log(_) => UNAVAILABLE,
            TransferError::CaseExists(_) => CONFLICT,
            _ => BAD_INPUT,
        };
        CliError::new(code, error.to_string())
    }
}

impl From<IdError> for CliError {
    fn from(error: IdError) -> Self {
        CliError::bad_input(error.to_string())
    }
}

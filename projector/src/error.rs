//! [`ProjectorError`]: why projecting, replaying, verifying or auditing did not complete.

use wfstate_events::LogError;
use wfstate_store::{FoldError, Position};

use crate::view::ViewError;

/// What can go wrong projecting, replaying or auditing. A failure of the event log or of the
/// view store is a [`LogError`], with its kind and cause.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectorError {
    /// The event log or the view store failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The case has no events.
    #[error("case {0} not found")]
    CaseNotFound(String),
    /// An event of a case does not decode or fold.
    #[error("event at position {position} of case {case_id} ({}): {source}", source.code())]
    BadEvent {
        /// The case.
        case_id: String,
        /// The event's position.
        position: Position,
        /// What is wrong with it.
        source: FoldError,
    },
    /// A stored view cannot be used.
    #[error("the stored view of case {case_id} is unreadable: {source}")]
    BadView {
        /// The case.
        case_id: String,
        /// What is wrong.
        source: ViewError,
    },
}

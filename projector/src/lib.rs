//! Views, replay and audit of wfstate.
//!
//! - The projector ([`JetStreamProjector`]) folds every event into a per-case [`View`] with
//!   the same `apply` the writers use, checks each state hash, and quarantines events that do
//!   not apply, marking their case's view.
//! - [`fn@replay`] rebuilds a case from its history; [`verify`] compares replays with views.
//! - [`mod@audit`] rebuilds receipts and verifies every chain, with read-only access.
//!
//! ```no_run
//! use wfstate_events::{JetStreamConfig, JetStreamLog};
//! use wfstate_projector::{JetStreamProjector, ProjectorConfig, ViewSource, replay};
//! use wfstate_store::CaseId;
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let log = JetStreamLog::connect(&JetStreamConfig::new("nats://127.0.0.1:4222")).await?;
//! let mut projector = JetStreamProjector::open(&log, ProjectorConfig::default()).await?;
//! projector.catch_up().await?;
//! let case_id = CaseId::new("order-42")?;
//! let view = projector.view(&case_id).await?;
//! let replayed = replay(&log, &case_id, None).await?;
//! assert_eq!(view.map(|v| v.state), Some(replayed.state));
//! # Ok(())
//! # }
//! ```

use std::future::Future;

use wfstate_events::LogError;
use wfstate_store::CaseId;

pub mod audit;
pub mod fold;
pub mod jetstream;
pub mod replay;
pub mod view;

pub use audit::{AuditReport, Auditor, Problem, audit_all, audit_case, audit_follow};
pub use fold::{Outcome, QuarantineRecord, fold_event};
pub use jetstream::{JetStreamProjector, ProjectorConfig, ProjectorStats};
pub use replay::{Mismatch, Replayed, replay, verify};
pub use view::{Quarantine, View};

/// What can go wrong projecting, replaying or auditing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectorError {
    /// The log or the view store cannot be reached.
    #[error("{0}")]
    Unavailable(String),
    /// The case has no events.
    #[error("case {0} not found")]
    CaseNotFound(String),
    /// An event of a case does not decode or fold.
    #[error("event at position {position} of case {case} ({code}): {reason}")]
    BadEvent {
        /// The case.
        case: String,
        /// The event's position.
        position: u64,
        /// A machine-readable reason.
        code: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A stored view cannot be decoded.
    #[error("the stored view of case {case} is unreadable: {reason}")]
    BadView {
        /// The case.
        case: String,
        /// What is wrong.
        reason: String,
    },
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

impl From<LogError> for ProjectorError {
    fn from(error: LogError) -> Self {
        match error {
            LogError::Unavailable(_) | LogError::TransientConflict(_) => {
                ProjectorError::Unavailable(error.to_string())
            }
            other => ProjectorError::Other(other.to_string()),
        }
    }
}

/// Where views are read from (the projector's store).
pub trait ViewSource {
    /// The view of a case, if it has one.
    fn view(
        &self,
        case_id: &CaseId,
    ) -> impl Future<Output = Result<Option<View>, ProjectorError>> + Send;

    /// Every case that has a view.
    fn case_ids(&self) -> impl Future<Output = Result<Vec<CaseId>, ProjectorError>> + Send;
}

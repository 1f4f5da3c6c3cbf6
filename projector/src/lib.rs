//! Views, replay and audit of wfstate.
//!
//! - The projector ([`JetStreamProjector`]) folds every event into a per-case [`View`] with
//!   the same `apply` the writers use, checks each state hash, and quarantines events that do
//!   not apply, marking their case's view.
//! - [`fn@replay`] rebuilds a case from its history; [`verify`] compares replays with views.
//! - [`audit_case`] and [`audit_all`] rebuild receipts and verify every chain, with read-only
//!   access.
//!
//! ```no_run
//! use wfstate_events::{JetStreamConfig, JetStreamLog};
//! use wfstate_projector::{JetStreamProjector, Projector, ProjectorConfig, ViewSource, replay};
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

use wfstate_store::CaseId;

mod audit;
mod embedded;
mod engine;
mod error;
mod export_file;
mod fold;
mod history;
mod jetstream;
mod kv;
mod memory;
mod nats;
mod partition;
mod readers;
mod replay;
mod share;
mod spill;
mod sqlite;
mod transfer;
mod tree;
mod verify;
mod view;

pub use audit::{
    AuditReport, Auditor, Problem, audit_all, audit_case, audit_follow, audit_follow_case,
};
pub use embedded::EmbeddedProjector;
pub use error::ProjectorError;
pub use fold::{Outcome, QuarantineRecord, fold_event};
pub use jetstream::{JetStreamProjector, ProjectorConfig, ProjectorStats};
pub use kv::{KvViews, ViewStore};
pub use memory::{Acknowledged, MemoryProjector, MemoryViews};
pub use partition::Partition;
pub use readers::{EmbeddedViews, KvViewReader, ScanCursor, ViewScan};
pub use replay::{
    Replayed, STATE_CHECK_INTERVAL, StateChecks, Until, replay, replay_to, replay_until,
    replay_with,
};
pub use share::{ShareConfig, Shared};
pub use transfer::{Imported, TransferError, check_export, export, export_to, export_with, import};
pub use tree::{
    CheckpointPolicy, EmbeddedTree, JetStreamTree, ProvenReceipt, TreeAudit, TreeProblem,
    TreeRecord, TreeStore, audit_tree, checkpoint, checkpoint_if_due, extend, prove, stored_hashes,
};
pub use verify::{Mismatch, Verified, verify, verify_all};
pub use view::{Quarantine, VIEW_SCHEMA, View, ViewError};

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

/// A projector over either backend: folds batches of events into views.
pub trait Projector: ViewSource + Send {
    /// Projects one batch; returns how many events it held.
    fn run_batch(&mut self) -> impl Future<Output = Result<usize, ProjectorError>> + Send;

    /// Events not yet projected.
    fn lag(&mut self) -> impl Future<Output = Result<u64, ProjectorError>> + Send;

    /// Folds `case_id`'s view again from its first event (after a writer fix, say) and
    /// writes it in place of the old one, with the case's quarantined events; returns the new
    /// view (none when the case has no events). A case whose event still does not apply is
    /// halted there again.
    fn retry(
        &mut self,
        case_id: &CaseId,
    ) -> impl Future<Output = Result<Option<View>, ProjectorError>> + Send;

    /// Every quarantined event, by position.
    fn quarantined(
        &self,
    ) -> impl Future<Output = Result<Vec<QuarantineRecord>, ProjectorError>> + Send;

    /// The counters, shared.
    fn stats(&self) -> std::sync::Arc<ProjectorStats>;

    /// Runs batches until nothing is left to project. The lag is asked only once a batch
    /// comes back empty: while batches come, there is more.
    fn catch_up(&mut self) -> impl Future<Output = Result<(), ProjectorError>> + Send {
        async {
            loop {
                if self.run_batch().await? == 0 && self.lag().await? == 0 {
                    return Ok(());
                }
            }
        }
    }
}

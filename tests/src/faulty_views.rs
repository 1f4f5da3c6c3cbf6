//! [`FaultyViews`]: a wrapper over a projector's [`ViewStore`] that injects a crash between
//! writing the views and acknowledging the events: every write is stored and then answered
//! with an error, as if the projector died right after it. The batch is not acknowledged and
//! comes back; what the crash leaves behind is exactly what was stored.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use wfstate_events::{LogError, LogErrorKind};
use wfstate_projector::{ProjectorError, QuarantineRecord, View, ViewStore};
use wfstate_store::CaseId;

/// A view store whose writes crash after storing.
#[derive(Debug, Clone)]
pub struct FaultyViews<V> {
    inner: V,
    crashed: Arc<AtomicU64>,
}

impl<V: ViewStore> FaultyViews<V> {
    /// `inner`, with every write stored and then answered by a crash.
    pub fn crash_after_write(inner: V) -> Self {
        FaultyViews {
            inner,
            crashed: Arc::default(),
        }
    }

    /// How many writes crashed (each after storing its view).
    pub fn crashed(&self) -> u64 {
        self.crashed.load(Ordering::SeqCst)
    }
}

impl<V: ViewStore> ViewStore for FaultyViews<V> {
    async fn load(&self, case_id: &str) -> Result<Option<(View, u64)>, ProjectorError> {
        self.inner.load(case_id).await
    }

    async fn revision(&self, case_id: &str) -> Result<Option<u64>, ProjectorError> {
        self.inner.revision(case_id).await
    }

    async fn write(
        &self,
        case_id: &str,
        bytes: Vec<u8>,
        revision: Option<u64>,
    ) -> Result<u64, ProjectorError> {
        self.inner.write(case_id, bytes, revision).await?;
        self.crashed.fetch_add(1, Ordering::SeqCst);
        Err(ProjectorError::Log(LogError::new(
            LogErrorKind::Unexpected,
            "a crash injected by the test after the view was written",
        )))
    }

    async fn record_quarantine(&self, record: &QuarantineRecord) -> Result<(), ProjectorError> {
        self.inner.record_quarantine(record).await
    }

    async fn clear_quarantine(&self, case_id: &str) -> Result<(), ProjectorError> {
        self.inner.clear_quarantine(case_id).await
    }

    async fn quarantined(&self) -> Result<Vec<QuarantineRecord>, ProjectorError> {
        self.inner.quarantined().await
    }

    async fn case_ids(&self) -> Result<Vec<CaseId>, ProjectorError> {
        self.inner.case_ids().await
    }
}

//! [`MemoryProjector`] and [`MemoryViews`]: the projector's batch fold over any event log,
//! with its views, quarantined events and acknowledged position held in memory. For tests of
//! code built on the store, and for the simulator that checks the client and the projector
//! together on one seeded clock: the fold, the skipping of redelivered events and the
//! compare-and-set on views are the JetStream projector's own; only where views are kept
//! differs.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use futures::TryStreamExt;
use wfstate_events::{EventLog, LogError, LogErrorKind};
use wfstate_store::{CaseId, Position};

use crate::engine::Batch;
use crate::fold::QuarantineRecord;
use crate::history;
use crate::jetstream::ProjectorStats;
use crate::kv::ViewStore;
use crate::view::View;
use crate::{Projector, ProjectorError, ViewSource};

/// Views and quarantined events in memory, shared by clones: what a projector that crashed
/// leaves for the next one. Writes are compare-and-set on each view's revision, as in a KV
/// bucket.
#[derive(Debug, Clone, Default)]
pub struct MemoryViews {
    shared: Arc<Mutex<Stored>>,
}

#[derive(Debug, Default)]
struct Stored {
    /// Each case's encoded view and its revision.
    views: BTreeMap<String, (Vec<u8>, u64)>,
    /// Quarantined events by position.
    quarantine: BTreeMap<u64, QuarantineRecord>,
    /// The last revision handed out.
    revision: u64,
}

impl MemoryViews {
    /// No views.
    pub fn new() -> Self {
        MemoryViews::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Stored> {
        // Every change under the lock is one insert or remove: a panic leaves it whole.
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ViewStore for MemoryViews {
    async fn load(&self, case_id: &str) -> Result<Option<(View, u64)>, ProjectorError> {
        let Some((bytes, revision)) = self.lock().views.get(case_id).cloned() else {
            return Ok(None);
        };
        let view = View::decode(&bytes).map_err(|source| ProjectorError::BadView {
            case_id: case_id.to_owned(),
            source,
        })?;
        Ok(Some((view, revision)))
    }

    async fn revision(&self, case_id: &str) -> Result<Option<u64>, ProjectorError> {
        Ok(self
            .lock()
            .views
            .get(case_id)
            .map(|(_, revision)| *revision))
    }

    async fn write(
        &self,
        case_id: &str,
        bytes: Vec<u8>,
        revision: Option<u64>,
    ) -> Result<u64, ProjectorError> {
        let mut stored = self.lock();
        let current = stored.views.get(case_id).map(|(_, revision)| *revision);
        if current != revision {
            return Err(ProjectorError::Log(LogError::new(
                LogErrorKind::Unavailable,
                format!(
                    "writing the view of case {case_id}: another projector wrote it meanwhile; \
                     the batch comes back"
                ),
            )));
        }
        stored.revision += 1;
        let next = stored.revision;
        stored.views.insert(case_id.to_owned(), (bytes, next));
        Ok(next)
    }

    async fn record_quarantine(&self, record: &QuarantineRecord) -> Result<(), ProjectorError> {
        self.lock()
            .quarantine
            .insert(record.position.get(), record.clone());
        Ok(())
    }

    async fn clear_quarantine(&self, case_id: &str) -> Result<(), ProjectorError> {
        self.lock()
            .quarantine
            .retain(|_, record| record.case_id != case_id);
        Ok(())
    }

    async fn quarantined(&self) -> Result<Vec<QuarantineRecord>, ProjectorError> {
        Ok(self.lock().quarantine.values().cloned().collect())
    }

    async fn case_ids(&self) -> Result<Vec<CaseId>, ProjectorError> {
        Ok(self
            .lock()
            .views
            .keys()
            .filter_map(|key| CaseId::new(key).ok())
            .collect())
    }
}

/// The position up to which a projector's events are acknowledged, kept apart from the
/// projector (as a durable consumer's acknowledgement floor is kept by the server): a
/// projector that crashed is replaced by one that goes on from there.
#[derive(Debug, Clone, Default)]
pub struct Acknowledged(Arc<AtomicU64>);

impl Acknowledged {
    /// Nothing acknowledged.
    pub fn new() -> Self {
        Acknowledged::default()
    }

    /// The last position acknowledged (0: none).
    pub fn position(&self) -> Position {
        Position::new(self.0.load(Ordering::SeqCst))
    }

    fn set(&self, position: Position) {
        self.0.store(position.get(), Ordering::SeqCst);
    }
}

/// The projector over any event log, with its views in a [`ViewStore`] (by default
/// [`MemoryViews`]) and its acknowledged position in an [`Acknowledged`]. A batch reads the
/// events after the acknowledged position, folds them with the JetStream projector's own
/// engine, writes the views it changed with compare-and-set, then acknowledges: a crash
/// between the writes and the acknowledgement brings the batch back, and its events are
/// skipped where the views are past them.
#[derive(Debug)]
pub struct MemoryProjector<L, V = MemoryViews> {
    log: L,
    store: V,
    acknowledged: Acknowledged,
    batch: usize,
    stats: Arc<ProjectorStats>,
    /// The views it wrote, with their revisions, for the next batches (at most
    /// [`WRITTEN_MAX`]): a stale one (another projector wrote the case meanwhile) is refused
    /// by the compare-and-set, and the batch comes back with none kept.
    written: BTreeMap<String, (View, u64)>,
}

/// The most views a memory projector keeps from one batch for the next.
const WRITTEN_MAX: usize = 4096;

/// The largest view a memory projector writes.
const VIEW_SIZE_MAX: usize = 64 * 1024 * 1024;

impl<L: EventLog + Clone, V: ViewStore> MemoryProjector<L, V> {
    /// A projector of `log` into `store`, going on from `acknowledged`, folding at most
    /// `batch` events a batch.
    pub fn new(log: L, store: V, acknowledged: Acknowledged, batch: usize) -> Self {
        MemoryProjector {
            log,
            store,
            acknowledged,
            batch: batch.max(1),
            stats: Arc::default(),
            written: BTreeMap::new(),
        }
    }

    /// The view store.
    pub fn store(&self) -> &V {
        &self.store
    }

    /// The events after `after`, up to the log's last when asked, at most a batch.
    async fn events_after(
        &self,
        after: Position,
    ) -> Result<Vec<wfstate_events::StoredEvent>, ProjectorError> {
        let last = self.log.last_position().await?;
        if last <= after {
            return Ok(Vec::new());
        }
        let mut events = Vec::new();
        let mut stream = self.log.follow(after).await?;
        while events.len() < self.batch {
            let Some(stored) = stream.try_next().await? else {
                break;
            };
            let end = stored.position >= last;
            events.push(stored);
            if end {
                break;
            }
        }
        Ok(events)
    }
}

impl<L: EventLog + Clone, V: ViewStore> Projector for MemoryProjector<L, V> {
    async fn run_batch(&mut self) -> Result<usize, ProjectorError> {
        let events = self.events_after(self.acknowledged.position()).await?;
        let Some(last) = events.last().map(|stored| stored.position) else {
            return Ok(0);
        };
        // Taken now: an error anywhere below leaves no cached view behind.
        let mut written = std::mem::take(&mut self.written);
        let mut batch = Batch::default();
        for key in Batch::cases(&events) {
            let (view, revision) = match written.remove(&key) {
                // Kept from an earlier batch; put back when this one writes it.
                Some((view, revision)) => (Some(view), Some(revision)),
                None => match self.store.load(&key).await {
                    Ok(loaded) => loaded.unzip(),
                    Err(ProjectorError::BadView { .. }) => (None, self.store.revision(&key).await?),
                    Err(error) => return Err(error),
                },
            };
            batch.insert(key, view, revision);
        }
        let gaps = batch.fold(&events);
        history::fill(&self.log, &mut batch, gaps).await?;
        let finished = batch.finish(VIEW_SIZE_MAX);
        for record in &finished.records {
            self.store.record_quarantine(record).await?;
            self.stats.quarantined.fetch_add(1, Ordering::Relaxed);
        }
        for changed in finished.changed {
            let revision = self
                .store
                .write(&changed.key, changed.bytes, changed.revision)
                .await?;
            self.stats
                .applied
                .fetch_add(changed.applied, Ordering::Relaxed);
            self.stats.view_writes.fetch_add(1, Ordering::Relaxed);
            written.insert(changed.key, (changed.view, revision));
        }
        self.stats.count(finished.counts);
        // Acknowledged once every view of the batch is written.
        self.acknowledged.set(last);
        if written.len() > WRITTEN_MAX {
            written.clear();
        }
        self.written = written;
        Ok(events.len())
    }

    async fn lag(&mut self) -> Result<u64, ProjectorError> {
        let last = self.log.last_position().await?;
        Ok(last
            .get()
            .saturating_sub(self.acknowledged.position().get()))
    }

    async fn retry(&mut self, case_id: &CaseId) -> Result<Option<View>, ProjectorError> {
        self.written.clear();
        let revision = self.store.revision(case_id.as_str()).await?;
        let finished = history::refold(&self.log, case_id, revision)
            .await?
            .finish(VIEW_SIZE_MAX);
        self.store.clear_quarantine(case_id.as_str()).await?;
        for record in &finished.records {
            self.store.record_quarantine(record).await?;
        }
        let mut retried = None;
        for changed in finished.changed {
            self.store
                .write(&changed.key, changed.bytes, changed.revision)
                .await?;
            retried = Some(changed.view);
        }
        Ok(retried)
    }

    async fn quarantined(&self) -> Result<Vec<QuarantineRecord>, ProjectorError> {
        self.store.quarantined().await
    }

    fn stats(&self) -> Arc<ProjectorStats> {
        Arc::clone(&self.stats)
    }
}

impl<L: EventLog + Clone, V: ViewStore> ViewSource for MemoryProjector<L, V> {
    async fn view(&self, case_id: &CaseId) -> Result<Option<View>, ProjectorError> {
        Ok(self
            .store
            .load(case_id.as_str())
            .await?
            .map(|(view, _)| view))
    }

    async fn case_ids(&self) -> Result<Vec<CaseId>, ProjectorError> {
        self.store.case_ids().await
    }
}

#[cfg(test)]
mod tests {
    use wfstate_events::{MemoryLog, Workspace};
    use wfstate_store::Mutation;

    use super::*;

    /// A batch whose views were written but not acknowledged comes back, and its events are
    /// skipped: the views are as if it ran once.
    #[tokio::test]
    async fn a_batch_that_comes_back_is_skipped_where_the_views_are_past_it() {
        let log = MemoryLog::new();
        let workspace = Workspace::new(log.clone());
        let id = CaseId::new("p1").unwrap();
        let (mut handle, _) = workspace.create(id.clone(), []).await.unwrap();
        for _ in 0..3 {
            handle.buffer(Mutation::IncrementStepCount);
            workspace.commit(&mut handle).await.unwrap();
        }
        let views = MemoryViews::new();
        let mut first = MemoryProjector::new(log.clone(), views.clone(), Acknowledged::new(), 2);
        first.run_batch().await.unwrap();
        // A crash before the acknowledgement: a new projector from nothing acknowledged.
        let mut second = MemoryProjector::new(log.clone(), views, Acknowledged::new(), 2);
        second.catch_up().await.unwrap();
        assert_eq!(second.stats().skipped.load(Ordering::Relaxed), 2);
        let view = second.view(&id).await.unwrap().unwrap();
        assert_eq!(&view.state, handle.state());
        assert_eq!(view.position, handle.position());
        assert_eq!(second.lag().await.unwrap(), 0);
    }
}

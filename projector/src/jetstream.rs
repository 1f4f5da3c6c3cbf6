//! The projector on JetStream: a durable pull consumer over every case subject, explicit
//! acknowledgement, views in a KV bucket keyed by case id, quarantined events in another keyed
//! by position.
//!
//! One batch: fetch up to `batch` events; fold them per case (one view read and one view
//! write per case in the batch); record quarantined events; write the views with
//! compare-and-set on their revision; acknowledge the batch. A crash anywhere before the
//! acknowledgement redelivers the batch, and every event at or below a view's position is
//! skipped, so nothing is applied twice.
//!
//! While there is a backlog the batches overlap: after a full batch the next is fetched while
//! this one is folded and written, its acknowledgements are sent while the next is folded,
//! and the views it wrote are kept (with their revisions) instead of being read back.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::TryStreamExt;
use wfstate_events::{EventLog, JetStreamLog};
use wfstate_store::{CaseId, Code, Position};

use crate::fold::{Outcome, QuarantineRecord, fold_event, quarantine};
use crate::kv::{KvViews, ViewStore};
use crate::nats::{Fetched, failed, receive, task_failed};
use crate::view::View;
use crate::{Projector, ProjectorError, ViewSource};

/// Names and sizes of the projector. Start from [`ProjectorConfig::default`] and set the
/// fields that differ.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProjectorConfig {
    /// The durable consumer's name.
    pub name: String,
    /// The KV bucket of views.
    pub views_bucket: String,
    /// The KV bucket of quarantined events.
    pub quarantine_bucket: String,
    /// The most events fetched in one batch.
    pub batch: usize,
    /// How long the server waits for an acknowledgement before redelivering.
    pub ack_wait: Duration,
    /// How long one fetch waits for events.
    pub fetch_wait: Duration,
}

impl Default for ProjectorConfig {
    fn default() -> Self {
        ProjectorConfig {
            name: "wfstate-projector".into(),
            views_bucket: "WFSTATE_VIEWS".into(),
            quarantine_bucket: "WFSTATE_QUARANTINE".into(),
            batch: 4096,
            ack_wait: Duration::from_secs(30),
            fetch_wait: Duration::from_millis(250),
        }
    }
}

/// What the projector has done (shared, so it can be read while it runs).
#[derive(Debug, Default)]
pub struct ProjectorStats {
    /// Events applied to a view.
    pub applied: AtomicU64,
    /// Events skipped as already applied (redeliveries).
    pub skipped: AtomicU64,
    /// Events quarantined.
    pub quarantined: AtomicU64,
    /// View writes (one per case per batch).
    pub view_writes: AtomicU64,
    /// Events of halted cases held behind their quarantined event.
    pub held: AtomicU64,
    /// Views rebuilt from their case's history (missing, or behind an event).
    pub rebuilt: AtomicU64,
}

/// One case's view during a batch: the view, its KV revision, whether the batch changed it.
struct Entry {
    view: Option<View>,
    revision: Option<u64>,
    changed: bool,
    /// Events applied to the view in this batch (counted once the view is written).
    applied: u64,
}

type Work = BTreeMap<String, Entry>;

/// The projector over a JetStream log, keeping its views in `V` ([`KvViews`] unless a test
/// wraps it).
pub struct JetStreamProjector<V = KvViews> {
    log: JetStreamLog,
    consumer: consumer::PullConsumer,
    store: V,
    prefix: String,
    config: ProjectorConfig,
    stats: Arc<ProjectorStats>,
    /// The next batch, fetched while the current one is projected (after a full batch).
    prefetched: Option<Fetched>,
    /// The views the last batch wrote, with their new revisions: the next batch folds on
    /// them without reading them back. Emptied by any error.
    written: HashMap<String, (View, u64)>,
    /// The last batch's acknowledgements, being sent.
    acks: Option<tokio::task::JoinHandle<Result<(), ProjectorError>>>,
}

impl<V> std::fmt::Debug for JetStreamProjector<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamProjector")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl JetStreamProjector {
    /// Opens (or creates) the durable consumer and the buckets.
    ///
    /// # Errors
    /// [`ProjectorError::Log`] when the server does not answer or refuses.
    pub async fn open(log: &JetStreamLog, config: ProjectorConfig) -> Result<Self, ProjectorError> {
        let store = KvViews::open(log, &config).await?;
        JetStreamProjector::with_store(log, config, store).await
    }
}

impl<V: ViewStore> JetStreamProjector<V> {
    /// Opens (or creates) the durable consumer, keeping the views in `store`.
    ///
    /// # Errors
    /// [`ProjectorError::Log`] when the server does not answer or refuses.
    pub async fn with_store(
        log: &JetStreamLog,
        config: ProjectorConfig,
        store: V,
    ) -> Result<Self, ProjectorError> {
        let prefix = log.subject_prefix().to_owned();
        let stream = log
            .context()
            .get_stream(log.stream_name())
            .await
            .map_err(|e| failed("opening the stream", e))?;
        let consumer = stream
            .get_or_create_consumer(
                &config.name,
                consumer::pull::Config {
                    durable_name: Some(config.name.clone()),
                    filter_subject: format!("{prefix}.*"),
                    // Explicit: acknowledging one event must never acknowledge another that a
                    // crashed projector left pending.
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: config.ack_wait,
                    deliver_policy: consumer::DeliverPolicy::All,
                    max_ack_pending: i64::try_from(config.batch * 4).unwrap_or(i64::MAX),
                    ..consumer::pull::Config::default()
                },
            )
            .await
            .map_err(|e| failed("creating the projector's consumer", e))?;
        Ok(JetStreamProjector {
            log: log.clone(),
            consumer,
            store,
            prefix,
            config,
            stats: Arc::default(),
            prefetched: None,
            written: HashMap::new(),
            acks: None,
        })
    }

    /// The counters, shared.
    pub fn stats(&self) -> Arc<ProjectorStats> {
        Arc::clone(&self.stats)
    }

    /// Events not yet acknowledged by the projector: its lag, in events.
    ///
    /// # Errors
    /// [`ProjectorError::Log`].
    pub async fn lag(&mut self) -> Result<u64, ProjectorError> {
        self.acknowledged().await?;
        let info = self
            .consumer
            .info()
            .await
            .map_err(|e| failed("consumer info", e))?;
        Ok(info.num_pending + info.num_ack_pending as u64)
    }

    /// Fetches and projects one batch; returns how many events it held.
    ///
    /// # Errors
    /// [`ProjectorError`]: the batch is not acknowledged and will be redelivered.
    pub async fn run_batch(&mut self) -> Result<usize, ProjectorError> {
        // Taken now: an error anywhere below leaves no cached view behind.
        let mut written = std::mem::take(&mut self.written);
        let current = match self.prefetched.take() {
            Some(prefetched) => prefetched,
            None => self.fetch().await?,
        };
        let received = current
            .await
            .map_err(|e| task_failed("fetching events", e))??;
        if received.len() == self.config.batch {
            // A full batch: more is waiting. The next one is asked for now, so the server
            // delivers it while this one is folded and written (the consumer allows several
            // batches unacknowledged). Only once this one is in: the server spreads its
            // messages over all waiting requests, which would mix two batches' orders.
            self.prefetched = Some(self.fetch().await?);
        }
        // The views of every case in the batch, read all at once: one KV round trip per case
        // one after another would bound the projector by the number of cases, not events.
        let mut keys: Vec<&String> = received
            .iter()
            .map(|(_, stored)| &stored.case_id)
            .filter(|key| CaseId::new(key.as_str()).is_ok())
            .collect();
        keys.sort_unstable();
        keys.dedup();
        let this = &*self;
        let loads = keys.into_iter().map(|key| {
            let cached = written.remove(key.as_str());
            async move {
                let loaded = match cached {
                    Some(cached) => Some(cached),
                    None => this.store.load(key).await?,
                };
                let (view, revision) = loaded.map_or((None, None), |(view, revision)| {
                    (Some(view), Some(revision))
                });
                Ok::<_, ProjectorError>((
                    key.clone(),
                    Entry {
                        view,
                        revision,
                        changed: false,
                        applied: 0,
                    },
                ))
            }
        });
        let mut work: Work = futures::future::try_join_all(loads)
            .await?
            .into_iter()
            .collect();
        let mut delivered = Vec::with_capacity(received.len());
        for (message, stored) in received {
            this.project(&mut work, &stored).await?;
            delivered.push(message);
        }
        // One write per changed case, all in flight at once.
        let writes =
            work.into_iter()
                .filter_map(|(key, entry)| match (entry.view, entry.changed) {
                    (Some(view), true) => Some(async move {
                        let revision = this.write_view(&key, &view, entry.revision).await?;
                        this.stats
                            .applied
                            .fetch_add(entry.applied, Ordering::Relaxed);
                        Ok::<_, ProjectorError>((key, (view, revision)))
                    }),
                    _ => None,
                });
        let written: HashMap<_, _> = futures::future::try_join_all(writes)
            .await?
            .into_iter()
            .collect();
        // Acknowledged only once every view of the batch is written, on a task of their own
        // so that the next batch is folded meanwhile. An acknowledgement that is lost only
        // brings its event back, to be skipped: its view is past it.
        let count = delivered.len();
        self.acknowledged().await?;
        self.acks = Some(tokio::spawn(async move {
            for message in delivered {
                message
                    .ack_with(jetstream::AckKind::Ack)
                    .await
                    .map_err(|e| failed("acknowledging events", e))?;
            }
            Ok(())
        }));
        self.written = written;
        Ok(count)
    }

    /// Asks for the next batch (what is there now, without waiting for more) and receives it
    /// on a task of its own.
    async fn fetch(&self) -> Result<Fetched, ProjectorError> {
        let messages = self
            .consumer
            .fetch()
            .max_messages(self.config.batch)
            .expires(self.config.fetch_wait)
            .messages()
            .await
            .map_err(|e| failed("fetching events", e))?;
        Ok(tokio::spawn(receive(
            messages,
            self.config.batch,
            self.prefix.clone(),
        )))
    }

    /// Waits until the last batch's acknowledgements are sent.
    async fn acknowledged(&mut self) -> Result<(), ProjectorError> {
        match self.acks.take() {
            Some(acks) => acks
                .await
                .map_err(|e| task_failed("acknowledging events", e))?,
            None => Ok(()),
        }
    }

    /// Folds the case's events after `view` and before the event at `before` into it, as
    /// read from the log; returns the view and how many events were applied. A bad event
    /// among them halts the case there, as in a batch.
    async fn catch_up_view(
        &self,
        case_id: &CaseId,
        mut view: Option<View>,
        before: Position,
    ) -> Result<(Option<View>, u64), ProjectorError> {
        let after = view.as_ref().map_or(Position::ZERO, |view| view.position);
        let mut events = self.log.history(case_id, after).await?;
        let mut applied = 0;
        while let Some(stored) = events.try_next().await? {
            if stored.position >= before {
                break;
            }
            let (folded, outcome) = fold_event(view, case_id, &stored);
            view = folded;
            match outcome {
                Outcome::Applied => applied += 1,
                Outcome::Skipped | Outcome::Held => {}
                Outcome::Quarantined(record) | Outcome::Ahead(record) => {
                    view = Some(quarantine(view, case_id, &record));
                    self.record_quarantine(&record).await?;
                }
            }
        }
        Ok((view, applied))
    }

    /// Folds one event into the batch's work. Every event is acknowledged with its batch:
    /// none is sent back to wait for another, so none comes back forever.
    async fn project(
        &self,
        work: &mut Work,
        stored: &wfstate_events::StoredEvent,
    ) -> Result<(), ProjectorError> {
        let Ok(case_id) = CaseId::new(&stored.case_id) else {
            // A subject that names no valid case (published around the store): there is no
            // view to fold it into, but it is recorded.
            let record = QuarantineRecord {
                position: stored.position,
                case_id: stored.case_id.clone(),
                code: Code::InvalidCaseId,
                reason: format!(
                    "the subject names {:?}, which is not a valid case id",
                    stored.case_id
                ),
            };
            self.record_quarantine(&record).await?;
            return Ok(());
        };
        let entry = work
            .get_mut(&stored.case_id)
            .expect("run_batch loads the view of every valid case id in the batch");
        let (view, outcome) = fold_event(entry.view.take(), &case_id, stored);
        entry.view = view;
        match outcome {
            Outcome::Applied => {
                entry.changed = true;
                entry.applied += 1;
            }
            Outcome::Skipped => {
                self.stats.skipped.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Quarantined(record) => {
                entry.changed = true;
                self.record_quarantine(&record).await?;
            }
            Outcome::Held => {
                entry.changed = true;
                self.stats.held.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Ahead(_) => {
                // The view is missing or behind (a deleted key, a recreated bucket, earlier
                // events still to be redelivered): it is caught up from the case's history,
                // then the event is folded again. What is redelivered later is skipped.
                self.stats.rebuilt.fetch_add(1, Ordering::Relaxed);
                let (view, applied) = self
                    .catch_up_view(&case_id, entry.view.take(), stored.position)
                    .await?;
                entry.applied += applied;
                entry.changed = true;
                let (view, outcome) = fold_event(view, &case_id, stored);
                entry.view = view;
                match outcome {
                    Outcome::Applied => entry.applied += 1,
                    Outcome::Skipped => {}
                    Outcome::Held => {
                        self.stats.held.fetch_add(1, Ordering::Relaxed);
                    }
                    // Nothing between the view and the event: a gap in the case's history.
                    Outcome::Quarantined(record) | Outcome::Ahead(record) => {
                        entry.view = Some(quarantine(entry.view.take(), &case_id, &record));
                        self.record_quarantine(&record).await?;
                    }
                }
            }
        }
        Ok(())
    }
}

impl<V: ViewStore> JetStreamProjector<V> {
    /// Writes a view with compare-and-set on `revision`; returns its new revision.
    async fn write_view(
        &self,
        key: &str,
        view: &View,
        revision: Option<u64>,
    ) -> Result<u64, ProjectorError> {
        let revision = self.store.write(key, view, revision).await?;
        self.stats.view_writes.fetch_add(1, Ordering::Relaxed);
        Ok(revision)
    }

    async fn record_quarantine(&self, record: &QuarantineRecord) -> Result<(), ProjectorError> {
        tracing::warn!(position = record.position.get(), case = %record.case_id, code = %record.code, "quarantined an event: {}", record.reason);
        self.store.record_quarantine(record).await?;
        self.stats.quarantined.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Every quarantined event, by position.
    ///
    /// # Errors
    /// [`ProjectorError::Log`].
    pub async fn quarantined(&self) -> Result<Vec<QuarantineRecord>, ProjectorError> {
        self.store.quarantined().await
    }
}

impl<V: ViewStore> Projector for JetStreamProjector<V> {
    async fn run_batch(&mut self) -> Result<usize, ProjectorError> {
        JetStreamProjector::run_batch(self).await
    }

    async fn lag(&mut self) -> Result<u64, ProjectorError> {
        JetStreamProjector::lag(self).await
    }

    async fn quarantined(&self) -> Result<Vec<QuarantineRecord>, ProjectorError> {
        JetStreamProjector::quarantined(self).await
    }

    fn stats(&self) -> Arc<ProjectorStats> {
        JetStreamProjector::stats(self)
    }
}

impl<V: ViewStore> ViewSource for JetStreamProjector<V> {
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

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

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::{StreamExt, TryStreamExt};
use wfstate_events::{JetStreamLog, LogErrorKind};
use wfstate_store::CaseId;

use crate::engine::{Batch, Counts};
use crate::fold::QuarantineRecord;
use crate::history;
use crate::kv::{KvViews, ViewStore};
use crate::nats::{Fetched, failed, receive, task_failed};
use crate::partition::Partition;
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
    /// The most bytes of events fetched in one batch (at least one event always comes). With
    /// the next batch fetched while one is folded, the projector holds at most two.
    pub batch_bytes: usize,
    /// The most view reads or writes in flight at once.
    pub kv_in_flight: usize,
    /// The cases this projector folds, when several share the work: its durable consumer is
    /// `<name>-<index>-of-<count>`, and it acknowledges the other partitions' events unread.
    /// `None`: every case.
    pub partition: Option<Partition>,
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
            batch_bytes: 8 * 1024 * 1024,
            kv_in_flight: 256,
            partition: None,
            ack_wait: Duration::from_secs(30),
            fetch_wait: Duration::from_millis(250),
        }
    }
}

impl ProjectorConfig {
    /// The configuration of the projector of the stream `stream`: its buckets are named
    /// after it (`<stream>_VIEWS`, `<stream>_QUARANTINE`), so that projectors of different
    /// streams on one server keep apart. For the default stream `WFSTATE` it is the default.
    pub fn for_stream(stream: &str) -> Self {
        ProjectorConfig {
            views_bucket: format!("{stream}_VIEWS"),
            quarantine_bucket: format!("{stream}_QUARANTINE"),
            ..ProjectorConfig::default()
        }
    }
}

/// Bytes of a view's message kept for what is not the view: the compare-and-set header.
const VIEW_HEADROOM: usize = 512;

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

impl ProjectorStats {
    /// Adds what a batch's fold counted.
    pub(crate) fn count(&self, counts: Counts) {
        self.skipped.fetch_add(counts.skipped, Ordering::Relaxed);
        self.held.fetch_add(counts.held, Ordering::Relaxed);
        self.rebuilt.fetch_add(counts.rebuilt, Ordering::Relaxed);
    }
}

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
    /// The largest view the store takes, in bytes: what the server takes in one message.
    view_size_max: usize,
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
    /// [`ProjectorError::Log`] when the server does not answer or refuses
    /// ([`LogErrorKind::PermissionDenied`] for credentials that may not).
    pub async fn open(log: &JetStreamLog, config: ProjectorConfig) -> Result<Self, ProjectorError> {
        let opened = async {
            let store = KvViews::open(log, &config).await?;
            JetStreamProjector::with_store(log, config, store).await
        };
        opened.await.map_err(|error| refused(log, error))
    }
}

/// A request through async-nats that failed (timed out, mostly) because the server refused it
/// (it answers a permission violation on the connection, not to the request): said as such.
pub(crate) fn refused(log: &JetStreamLog, error: ProjectorError) -> ProjectorError {
    match error {
        ProjectorError::Log(error) if error.kind() != LogErrorKind::PermissionDenied => {
            match log.refusal("opening the projector") {
                Some(denied) => ProjectorError::Log(denied.with_source(error)),
                None => ProjectorError::Log(error),
            }
        }
        error => error,
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
        let durable = match config.partition {
            Some(partition) => format!("{}-{partition}", config.name),
            None => config.name.clone(),
        };
        let consumer = stream
            .get_or_create_consumer(
                &durable,
                consumer::pull::Config {
                    durable_name: Some(durable.clone()),
                    filter_subject: config
                        .partition
                        .and_then(|p| log.partition_subjects(p.index, p.count))
                        .unwrap_or_else(|| log.stored_subjects()),
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
            view_size_max: log
                .context()
                .client()
                .server_info()
                .max_payload
                .saturating_sub(VIEW_HEADROOM),
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
        let mut fetched = current
            .await
            .map_err(|e| task_failed("fetching events", e))??;
        if fetched.received.is_empty() && fetched.full_by_bytes {
            // The next event alone is larger than a batch's bytes: it comes on its own.
            fetched = self.fetch_one().await?;
        }
        let received = fetched.received;
        if received.len() == self.config.batch || fetched.full_by_bytes {
            // A full batch (by count or bytes): more is waiting. The next one is asked for
            // now, so the server delivers it while this one is folded and written (the
            // consumer allows several batches unacknowledged). Only once this one is in: the
            // server spreads its messages over all waiting requests, which would mix two
            // batches' orders.
            self.prefetched = Some(self.fetch().await?);
        }
        let (messages, mut events): (Vec<_>, Vec<_>) = received.into_iter().unzip();
        if let Some(partition) = self.config.partition {
            // Another projector folds them; they are acknowledged with the batch.
            events.retain(|stored| partition.holds(&stored.case_id));
        }
        let mut batch = Batch::default();
        // The views of every case in the batch, read together (up to `kv_in_flight` at once):
        // one KV round trip per case one after another would bound the projector by the
        // number of cases, not events.
        let this = &*self;
        let loads = Batch::cases(&events).into_iter().map(|key| {
            let cached = written.remove(key.as_str());
            async move {
                let loaded = match cached {
                    Some(cached) => Some(cached),
                    None => match this.store.load(&key).await {
                        Ok(loaded) => loaded,
                        // A view that does not decode (damaged, or of another schema) would
                        // fail every batch holding its case: it is rebuilt from the history
                        // and written over, with compare-and-set on its revision.
                        Err(error @ ProjectorError::BadView { .. }) => {
                            tracing::warn!(case = %key, "rebuilding a view: {error}");
                            let revision = this.store.revision(&key).await?;
                            return Ok((key, (None, revision)));
                        }
                        Err(error) => return Err(error),
                    },
                };
                Ok::<_, ProjectorError>((key, loaded.unzip()))
            }
        });
        let loaded: Vec<_> = futures::stream::iter(loads)
            .buffer_unordered(this.config.kv_in_flight)
            .try_collect()
            .await?;
        for (key, (view, revision)) in loaded {
            batch.insert(key, view, revision);
        }
        let gaps = batch.fold(&events);
        // A view missing or behind (a deleted key, a recreated bucket, earlier events still
        // to be redelivered) is caught up from its case's history. What is redelivered later
        // is skipped.
        history::fill(&this.log, &mut batch, gaps).await?;
        let finished = batch.finish(this.view_size_max);
        for record in &finished.records {
            this.record_quarantine(record).await?;
        }
        // One write per changed case, all in flight at once.
        let writes = finished.changed.into_iter().map(|changed| async move {
            let revision = this
                .write_view(&changed.key, changed.bytes, changed.revision)
                .await?;
            this.stats
                .applied
                .fetch_add(changed.applied, Ordering::Relaxed);
            Ok::<_, ProjectorError>((changed.key, (changed.view, revision)))
        });
        let written: HashMap<_, _> = futures::stream::iter(writes)
            .buffer_unordered(this.config.kv_in_flight)
            .try_collect()
            .await?;
        self.stats.count(finished.counts);
        // Acknowledged only once every view of the batch is written, on a task of their own
        // so that the next batch is folded meanwhile. An acknowledgement that is lost only
        // brings its event back, to be skipped: its view is past it.
        let count = messages.len();
        self.acknowledged().await?;
        self.acks = Some(tokio::spawn(async move {
            for message in messages {
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
            .max_bytes(self.config.batch_bytes)
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

    /// Fetches the next event, whatever its size.
    async fn fetch_one(&self) -> Result<crate::nats::Batch, ProjectorError> {
        let messages = self
            .consumer
            .fetch()
            .max_messages(1)
            .expires(self.config.fetch_wait)
            .messages()
            .await
            .map_err(|e| failed("fetching events", e))?;
        receive(messages, 1, self.prefix.clone()).await
    }

    /// Stops this projector for another to go on: waits for the last batch's
    /// acknowledgements and sends back the batch fetched ahead (negative acknowledgements), so
    /// that the consumer's next client gets those events at once, not after the
    /// acknowledgement wait.
    ///
    /// # Errors
    /// [`ProjectorError::Log`]; what is not sent back comes back after the wait.
    pub async fn release(mut self) -> Result<(), ProjectorError> {
        self.acknowledged().await?;
        if let Some(prefetched) = self.prefetched.take() {
            let fetched = prefetched
                .await
                .map_err(|e| task_failed("fetching events", e))??;
            for (message, _) in fetched.received {
                message
                    .ack_with(jetstream::AckKind::Nak(None))
                    .await
                    .map_err(|e| failed("sending events back", e))?;
            }
        }
        Ok(())
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
}

impl<V: ViewStore> JetStreamProjector<V> {
    /// Writes a view with compare-and-set on `revision`; returns its new revision.
    async fn write_view(
        &self,
        key: &str,
        bytes: Vec<u8>,
        revision: Option<u64>,
    ) -> Result<u64, ProjectorError> {
        let revision = self.store.write(key, bytes, revision).await?;
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

    async fn retry(&mut self, case_id: &CaseId) -> Result<Option<View>, ProjectorError> {
        // The views the last batch wrote are kept with their revisions: this one's changes.
        self.acknowledged().await?;
        self.written.clear();
        // Whatever the old view holds, even bytes that do not decode, it is replaced.
        let revision = self.store.revision(case_id.as_str()).await?;
        let finished = history::refold(&self.log, case_id, revision)
            .await?
            .finish(self.view_size_max);
        self.store.clear_quarantine(case_id.as_str()).await?;
        for record in &finished.records {
            self.record_quarantine(record).await?;
        }
        let mut retried = None;
        for changed in finished.changed {
            // Compare-and-set: a projector that folded the old view meanwhile fails its write
            // and folds its batch again on this one.
            self.write_view(&changed.key, changed.bytes, changed.revision)
                .await?;
            retried = Some(changed.view);
        }
        Ok(retried)
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

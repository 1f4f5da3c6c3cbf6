//! Where the projector keeps its views and quarantined events: the [`ViewStore`] it writes
//! through, and [`KvViews`], the store of the JetStream projector (two KV buckets). A test can
//! wrap a store to inject faults (a crash between writing the views and acknowledging the
//! events).

use std::future::Future;

use async_nats::jetstream::kv;
use futures::StreamExt;
use wfstate_events::{JetStreamLog, LogError, LogErrorKind};
use wfstate_store::CaseId;

use crate::ProjectorError;
use crate::fold::QuarantineRecord;
use crate::jetstream::ProjectorConfig;
use crate::nats::{bucket, failed};
use crate::view::View;

/// Where a projector keeps its views (with a revision for compare-and-set) and its quarantined
/// events.
pub trait ViewStore: Send + Sync + 'static {
    /// The view of `case_id` and its revision, if it has one.
    fn load(
        &self,
        case_id: &str,
    ) -> impl Future<Output = Result<Option<(View, u64)>, ProjectorError>> + Send;

    /// The revision of `case_id`'s view, if it has one, whatever it holds: a view that does
    /// not decode is replaced with compare-and-set on it.
    fn revision(
        &self,
        case_id: &str,
    ) -> impl Future<Output = Result<Option<u64>, ProjectorError>> + Send;

    /// Writes the view of `case_id`, encoded as `bytes` ([`View::encode`]), if its revision
    /// is still `revision` (`None`: it has no view yet); returns the new revision.
    fn write(
        &self,
        case_id: &str,
        bytes: Vec<u8>,
        revision: Option<u64>,
    ) -> impl Future<Output = Result<u64, ProjectorError>> + Send;

    /// Records a quarantined event (keyed by its position: a redelivery overwrites it).
    fn record_quarantine(
        &self,
        record: &QuarantineRecord,
    ) -> impl Future<Output = Result<(), ProjectorError>> + Send;

    /// Forgets the quarantined events of `case_id` (its view is being folded again).
    fn clear_quarantine(
        &self,
        case_id: &str,
    ) -> impl Future<Output = Result<(), ProjectorError>> + Send;

    /// Every quarantined event, by position.
    fn quarantined(
        &self,
    ) -> impl Future<Output = Result<Vec<QuarantineRecord>, ProjectorError>> + Send;

    /// Every case that has a view.
    fn case_ids(&self) -> impl Future<Output = Result<Vec<CaseId>, ProjectorError>> + Send;
}

/// The JetStream projector's store: a KV bucket of views keyed by case id, and one of
/// quarantined events keyed by position.
#[derive(Clone)]
pub struct KvViews {
    views: kv::Store,
    quarantine: kv::Store,
}

impl std::fmt::Debug for KvViews {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvViews").finish_non_exhaustive()
    }
}

impl KvViews {
    /// Opens (or creates) the buckets `config` names, on `log`'s server.
    ///
    /// # Errors
    /// [`ProjectorError::Log`] when the server does not answer or refuses.
    pub async fn open(
        log: &JetStreamLog,
        config: &ProjectorConfig,
    ) -> Result<Self, ProjectorError> {
        Ok(KvViews {
            views: bucket(log.context(), &config.views_bucket, log.replicas()).await?,
            quarantine: bucket(log.context(), &config.quarantine_bucket, log.replicas()).await?,
        })
    }
}

/// The view a KV entry holds, with its revision; none for a deleted one.
pub(crate) fn view_of(
    entry: Option<kv::Entry>,
    key: &str,
) -> Result<Option<(View, u64)>, ProjectorError> {
    match entry {
        Some(entry) if entry.operation == kv::Operation::Put => {
            let view = View::decode(&entry.value).map_err(|source| ProjectorError::BadView {
                case_id: key.to_owned(),
                source,
            })?;
            Ok(Some((view, entry.revision)))
        }
        _ => Ok(None),
    }
}

/// A quarantined event's key: its position, zero-padded so that keys sort by position.
fn record_key(record: &QuarantineRecord) -> String {
    format!("{:020}", record.position)
}

impl ViewStore for KvViews {
    async fn record_quarantine(&self, record: &QuarantineRecord) -> Result<(), ProjectorError> {
        let mut bytes = Vec::new();
        ciborium::into_writer(record, &mut bytes).expect("a record always encodes");
        // Keyed by position: a redelivered bad event overwrites its own record.
        self.quarantine
            .put(record_key(record), bytes.into())
            .await
            .map_err(|e| failed("recording a quarantined event", e))?;
        Ok(())
    }

    async fn load(&self, key: &str) -> Result<Option<(View, u64)>, ProjectorError> {
        let entry = self
            .views
            .entry(key)
            .await
            .map_err(|e| failed("reading a view", e))?;
        view_of(entry, key)
    }

    async fn revision(&self, key: &str) -> Result<Option<u64>, ProjectorError> {
        let entry = self
            .views
            .entry(key)
            .await
            .map_err(|e| failed("reading a view", e))?;
        Ok(entry
            .filter(|entry| entry.operation == kv::Operation::Put)
            .map(|entry| entry.revision))
    }

    async fn write(
        &self,
        key: &str,
        bytes: Vec<u8>,
        revision: Option<u64>,
    ) -> Result<u64, ProjectorError> {
        let bytes = bytes.into();
        // Compare-and-set: a second projector writing the same case makes this batch fail
        // (and be redelivered) rather than lose an update.
        let what = format!("writing the view of case {key}");
        // A refused compare-and-set is another projector's write, not a failure of the store:
        // the batch is not acknowledged and comes back.
        let raced = || {
            ProjectorError::Log(LogError::new(
                LogErrorKind::Unavailable,
                format!("{what}: another projector wrote it meanwhile; the batch comes back"),
            ))
        };
        let revision = match revision {
            Some(revision) => self
                .views
                .update(key, bytes, revision)
                .await
                .map_err(|e| match e.kind() {
                    kv::UpdateErrorKind::WrongLastRevision => raced(),
                    _ => failed(&what, e),
                })?,
            None => self
                .views
                .create(key, bytes)
                .await
                .map_err(|e| match e.kind() {
                    kv::CreateErrorKind::AlreadyExists => raced(),
                    _ => failed(&what, e),
                })?,
        };
        Ok(revision)
    }

    async fn clear_quarantine(&self, case_id: &str) -> Result<(), ProjectorError> {
        for record in self.quarantined().await? {
            if record.case_id == case_id {
                self.quarantine
                    .purge(record_key(&record))
                    .await
                    .map_err(|e| failed("clearing a quarantined event", e))?;
            }
        }
        Ok(())
    }

    async fn quarantined(&self) -> Result<Vec<QuarantineRecord>, ProjectorError> {
        let mut keys: Vec<String> = self
            .quarantine
            .keys()
            .await
            .map_err(|e| failed("listing quarantined events", e))?
            .filter_map(|key| async move { key.ok() })
            .collect()
            .await;
        keys.sort();
        let mut records = Vec::new();
        for key in keys {
            if let Some(bytes) = self
                .quarantine
                .get(&key)
                .await
                .map_err(|e| failed("reading a quarantine record", e))?
            {
                let record = ciborium::from_reader(bytes.as_ref()).map_err(|e| {
                    LogError::new(
                        LogErrorKind::Corrupted,
                        format!("the quarantine record {key} cannot be decoded"),
                    )
                    .with_source(e)
                })?;
                records.push(record);
            }
        }
        Ok(records)
    }

    async fn case_ids(&self) -> Result<Vec<CaseId>, ProjectorError> {
        let keys: Vec<String> = self
            .views
            .keys()
            .await
            .map_err(|e| failed("listing views", e))?
            .filter_map(|key| async move { key.ok() })
            .collect()
            .await;
        Ok(keys
            .into_iter()
            .filter_map(|key| CaseId::new(key).ok())
            .collect())
    }
}

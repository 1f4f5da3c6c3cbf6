//! Views for readers that may not write: an auditor's `verify` reads the views the projector
//! left, as they are, where a projector would first bring them up to date. Nothing here
//! creates a table, a bucket or a consumer, so read rights are enough: on the embedded log,
//! a connection that may only read the file; on JetStream, direct gets on the views bucket
//! (its keys listed by batched direct gets, not by the consumer a KV key listing makes).

use async_nats::jetstream::kv;
use wfstate_events::{EmbeddedLog, JetStreamLog};
use wfstate_store::CaseId;

use crate::embedded::{VIEWS_TABLE, load_view, view_ids};
use crate::jetstream::ProjectorConfig;
use crate::kv::view_of;
use crate::nats::failed;
use crate::sqlite::{SharedConnection, readable};
use crate::view::View;
use crate::{ProjectorError, ViewSource};

/// The views of an embedded log, read through a connection that may only read the file.
#[derive(Clone)]
pub struct EmbeddedViews {
    connection: SharedConnection,
}

impl std::fmt::Debug for EmbeddedViews {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedViews").finish_non_exhaustive()
    }
}

impl EmbeddedViews {
    /// Opens `log`'s file to read its views. A file no projector has run on has none.
    ///
    /// # Errors
    /// As opening the log to read ([`EmbeddedLog::read_connection`]).
    pub fn open(log: &EmbeddedLog) -> Result<Self, ProjectorError> {
        let connection = log.read_connection()?;
        readable(&connection, "views", VIEWS_TABLE)?;
        Ok(EmbeddedViews {
            connection: SharedConnection::new(connection),
        })
    }
}

impl ViewSource for EmbeddedViews {
    async fn view(&self, case_id: &CaseId) -> Result<Option<View>, ProjectorError> {
        let case = case_id.to_string();
        self.connection
            .run(move |connection| load_view(connection, &case))
            .await
    }

    async fn case_ids(&self) -> Result<Vec<CaseId>, ProjectorError> {
        self.connection.run(|connection| view_ids(connection)).await
    }
}

/// The views of a JetStream projector, read from its bucket with read rights only.
#[derive(Clone)]
pub struct KvViewReader {
    views: kv::Store,
    log: JetStreamLog,
    bucket: String,
}

impl std::fmt::Debug for KvViewReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvViewReader")
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

impl KvViewReader {
    /// Opens the views bucket `config` names on `log`'s server, which must exist.
    ///
    /// # Errors
    /// [`ProjectorError::Log`] when the bucket cannot be read or does not exist.
    pub async fn open(
        log: &JetStreamLog,
        config: &ProjectorConfig,
    ) -> Result<Self, ProjectorError> {
        let bucket = config.views_bucket.clone();
        let views = log
            .context()
            .get_key_value(&bucket)
            .await
            .map_err(|error| {
                failed(
                    &format!(
                        "opening the views bucket {bucket} to read (it exists once a projector \
                     has run: `wfstate project`)"
                    ),
                    error,
                )
            })?;
        Ok(KvViewReader {
            views,
            log: log.clone(),
            bucket,
        })
    }
}

impl ViewSource for KvViewReader {
    async fn view(&self, case_id: &CaseId) -> Result<Option<View>, ProjectorError> {
        let entry = self
            .views
            .entry(case_id.as_str())
            .await
            .map_err(|e| failed("reading a view", e))?;
        Ok(view_of(entry, case_id.as_str())?.map(|(view, _)| view))
    }

    async fn case_ids(&self) -> Result<Vec<CaseId>, ProjectorError> {
        let prefix = format!("$KV.{}.", self.bucket);
        let subjects = self
            .log
            .live_subjects(&format!("KV_{}", self.bucket), &format!("{prefix}>"))
            .await?;
        Ok(subjects
            .iter()
            .filter_map(|subject| CaseId::new(subject.strip_prefix(&prefix)?).ok())
            .collect())
    }
}

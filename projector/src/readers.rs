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

/// How many views a page of a scan holds at most.
const SCAN_PAGE: usize = 1024;

/// Where a scan of the views goes on: [`ScanCursor::default`] starts one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanCursor(Option<String>);

/// Every view in pages, in one pass over the store: for listing and searching cases. A view
/// written while a scan runs may be seen twice (its newer version later) or not at all if it
/// is new: a page is a view as it was when it was read.
pub trait ViewScan {
    /// Up to 1,024 views after `cursor`, and the cursor of the next page (none at the end).
    fn scan_page(
        &self,
        cursor: &ScanCursor,
    ) -> impl Future<Output = Result<(Vec<View>, Option<ScanCursor>), ProjectorError>> + Send;
}

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

impl ViewScan for EmbeddedViews {
    async fn scan_page(
        &self,
        cursor: &ScanCursor,
    ) -> Result<(Vec<View>, Option<ScanCursor>), ProjectorError> {
        let after = cursor.0.clone().unwrap_or_default();
        self.connection
            .run(move |connection| {
                let rows: Vec<(String, Vec<u8>)> = connection
                    .prepare_cached(
                        "SELECT case_id, view FROM views WHERE case_id > ?1 ORDER BY case_id \
                         LIMIT ?2",
                    )
                    .and_then(|mut statement| {
                        statement
                            .query_map(rusqlite::params![after, SCAN_PAGE], |row| {
                                Ok((row.get(0)?, row.get(1)?))
                            })?
                            .collect()
                    })
                    .map_err(crate::embedded::sql("scanning the views"))?;
                let next = (rows.len() == SCAN_PAGE)
                    .then(|| rows.last().map(|(case, _)| ScanCursor(Some(case.clone()))))
                    .flatten();
                let views = rows
                    .iter()
                    .map(|(case, bytes)| {
                        View::decode(bytes).map_err(|source| ProjectorError::BadView {
                            case_id: case.clone(),
                            source,
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((views, next))
            })
            .await
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

impl ViewScan for KvViewReader {
    async fn scan_page(
        &self,
        cursor: &ScanCursor,
    ) -> Result<(Vec<View>, Option<ScanCursor>), ProjectorError> {
        let from = match &cursor.0 {
            None => 1,
            Some(text) => text.parse().unwrap_or(u64::MAX),
        };
        let prefix = format!("$KV.{}.", self.bucket);
        let page = self
            .log
            .direct_page(&format!("KV_{}", self.bucket), &format!("{prefix}>"), from)
            .await?;
        let next = page
            .last()
            .map(|last| ScanCursor(Some((last.sequence + 1).to_string())));
        let mut views = Vec::with_capacity(page.len());
        // The bucket keeps one message a key: a delete marker is a case without a view.
        for entry in page.into_iter().filter(|entry| !entry.deleted) {
            let key = entry
                .subject
                .strip_prefix(&prefix)
                .unwrap_or(&entry.subject);
            views.push(
                View::decode(&entry.payload).map_err(|source| ProjectorError::BadView {
                    case_id: key.to_owned(),
                    source,
                })?,
            );
        }
        Ok((views, next))
    }
}

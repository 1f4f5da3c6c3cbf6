//! Batched direct gets (nats-server 2.11+): how a connection refused a consumer (an auditor
//! with read rights only) reads a case's long history and the whole stream. Any replica
//! answers; each request returns up to [`DIRECT_BATCH`] events and an end-of-batch status.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use wfstate_store::{CaseId, Position};

use super::connect::Refused;
use super::{DIRECT_BATCH, JetStreamLog};
use crate::error::{LogError, LogErrorKind};
use crate::log::{EventStream, StoredEvent};

/// A message of a stream read by [`JetStreamLog::direct_page`].
#[derive(Debug, Clone)]
pub struct DirectEntry {
    /// Its subject.
    pub subject: String,
    /// Its sequence in the stream.
    pub sequence: u64,
    /// Its data.
    pub payload: bytes::Bytes,
    /// Whether it is a KV delete or purge marker.
    pub deleted: bool,
}

/// How long a follower reading in batched direct gets waits before asking again for new
/// events.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

impl JetStreamLog {
    /// The case's events after `position` up to `last` in batched direct gets: no consumer is
    /// made, so a reader needs no right beyond reading the stream. The next batch is fetched
    /// while the reader takes the current one: at most two batches are held.
    pub(crate) fn history_in_batches(
        &self,
        case_id: &CaseId,
        position: Position,
        last: Position,
    ) -> EventStream {
        let fetch = move |log: JetStreamLog, case_id: CaseId, position: Position| {
            tokio::spawn(async move { log.history_batch(&case_id, position, last).await })
        };
        let first = fetch(self.clone(), case_id.clone(), position);
        Box::pin(
            futures::stream::try_unfold(
                (self.clone(), case_id.clone(), Some(first)),
                move |(log, case_id, pending)| async move {
                    let Some(pending) = pending else {
                        return Ok(None);
                    };
                    let batch = pending.await.map_err(|error| {
                        LogError::new(
                            LogErrorKind::Unexpected,
                            "reading a history: the task failed",
                        )
                        .with_source(error)
                    })??;
                    let reached = batch.last().map_or(last, |event| event.position);
                    let next =
                        (reached < last).then(|| fetch(log.clone(), case_id.clone(), reached));
                    let events = futures::stream::iter(batch.into_iter().map(Ok));
                    Ok(Some((events, (log, case_id, next))))
                },
            )
            .try_flatten(),
        )
    }

    /// The case's next events after `position`, at most up to `last`: a batched direct get
    /// from any replica. A replica that lags behind `last` answers short; the event it lacks is
    /// then asked of the leader, so the history never looks shorter than the leader's.
    async fn history_batch(
        &self,
        case_id: &CaseId,
        position: Position,
        last: Position,
    ) -> Result<Vec<StoredEvent>, LogError> {
        let mut batch = self
            .direct_batch(&self.stored_subject(case_id), position, Some(last))
            .await?;
        batch.retain(|event| event.position > position && event.position <= last);
        if batch.is_empty() {
            let next = self.next_event(case_id, position).await?;
            batch.extend(next.filter(|event| event.position <= last));
        }
        if batch.is_empty() {
            return Err(LogError::new(
                LogErrorKind::Unavailable,
                format!(
                    "reading case {case_id} from {}: the event after position {position} is \
                     gone; try again later",
                    self.urls
                ),
            ));
        }
        Ok(batch)
    }

    /// Up to [`DIRECT_BATCH`] events of `filter` after `after` and not past `until`, in one
    /// batched direct get (nats-server 2.11+) answered by any replica; ends early where the
    /// replica's events end.
    async fn direct_batch(
        &self,
        filter: &str,
        after: Position,
        until: Option<Position>,
    ) -> Result<Vec<StoredEvent>, LogError> {
        let mut request = serde_json::json!({
            "seq": after.get() + 1,
            "batch": DIRECT_BATCH,
        });
        // An empty filter is the whole stream: the batch goes by sequence alone.
        if !filter.is_empty() {
            request["next_by_subj"] = filter.into();
        }
        if let Some(until) = until {
            request["up_to_seq"] = until.get().into();
        }
        self.direct_messages(self.stream_name(), &request)
            .await?
            .iter()
            .map(|reply| self.batched(reply))
            .collect()
    }

    /// Every subject under `filter` in the stream `stream` whose last message is not a KV
    /// delete or purge marker, in batched direct gets: the keys of a KV bucket (`stream`
    /// `KV_<bucket>`, `filter` `$KV.<bucket>.>`) for a reader that may not create the
    /// consumer a key listing uses. Each message of the stream is read once, in order.
    ///
    /// # Errors
    /// As reading the stream: [`LogErrorKind::Unavailable`], [`LogErrorKind::TimedOut`],
    /// [`LogErrorKind::PermissionDenied`].
    pub async fn live_subjects(&self, stream: &str, filter: &str) -> Result<Vec<String>, LogError> {
        let mut live = std::collections::BTreeSet::new();
        let mut next = 1_u64;
        loop {
            let page = self.direct_page(stream, filter, next).await?;
            let Some(last) = page.last() else {
                return Ok(live.into_iter().collect());
            };
            next = last.sequence + 1;
            for entry in page {
                if entry.deleted {
                    live.remove(&entry.subject);
                } else {
                    live.insert(entry.subject);
                }
            }
        }
    }

    /// Up to 1,024 messages under `filter` in the stream `stream`, from the sequence
    /// `from` on, in one batched direct get: a page of a KV bucket read with read rights only.
    /// An empty page is the end of the stream; the next page starts after the last sequence.
    ///
    /// # Errors
    /// As [`JetStreamLog::live_subjects`].
    pub async fn direct_page(
        &self,
        stream: &str,
        filter: &str,
        from: u64,
    ) -> Result<Vec<DirectEntry>, LogError> {
        let request = serde_json::json!({
            "seq": from,
            "batch": DIRECT_BATCH,
            "next_by_subj": filter,
        });
        let replies = self.direct_messages(stream, &request).await?;
        let mut page = Vec::with_capacity(replies.len());
        for reply in replies {
            let sequence = header(&reply, "Nats-Sequence")
                .and_then(|text| text.parse::<u64>().ok())
                .ok_or_else(|| {
                    LogError::new(
                        LogErrorKind::Unexpected,
                        "a batched direct get answered a message without its sequence",
                    )
                })?;
            // Strictly increasing: a reader's loop over the pages ends with the stream.
            if sequence < from
                || page
                    .last()
                    .is_some_and(|last: &DirectEntry| last.sequence >= sequence)
            {
                return Err(LogError::new(
                    LogErrorKind::Unexpected,
                    format!("reading stream {stream}: asked from {from}, answered {sequence}"),
                ));
            }
            let Some(subject) = header(&reply, "Nats-Subject").map(str::to_owned) else {
                continue;
            };
            let deleted = matches!(header(&reply, "KV-Operation"), Some("DEL" | "PURGE"));
            page.push(DirectEntry {
                subject,
                sequence,
                payload: reply.payload,
                deleted,
            });
        }
        Ok(page)
    }

    async fn direct_messages(
        &self,
        stream: &str,
        request: &serde_json::Value,
    ) -> Result<Vec<async_nats::Message>, LogError> {
        let what = format!("reading stream {stream} from {}", self.urls);
        let direct_get = format!("$JS.API.DIRECT.GET.{stream}");
        let failed = |error: &dyn std::fmt::Display, kind| {
            LogError::new(kind, format!("{what}: {error}; try again later"))
        };
        let api = format!("$JS.API.DIRECT.GET.{stream}");
        let inbox = self.client.new_inbox();
        let mut replies = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| failed(&e, LogErrorKind::Unavailable).with_source(e))?;
        self.client
            .publish_with_reply(api.clone(), inbox, request.to_string().into())
            .await
            .map_err(|e| failed(&e, LogErrorKind::Unavailable).with_source(e))?;
        let mut messages = Vec::new();
        // Bounded by the batch: at most DIRECT_BATCH messages and the end-of-batch answer.
        for _ in 0..=DIRECT_BATCH {
            let reply = match tokio::time::timeout(self.request_timeout, replies.next()).await {
                Ok(Some(reply)) => reply,
                Ok(None) => {
                    return Err(failed(
                        &"the reply subscription ended",
                        LogErrorKind::Unavailable,
                    ));
                }
                Err(elapsed) => {
                    return Err(self
                        .permission_error(Refused::Under(&direct_get), &what)
                        .unwrap_or_else(|| failed(&"no answer", LogErrorKind::TimedOut))
                        .with_source(elapsed));
                }
            };
            match reply.status {
                None => messages.push(reply),
                // The end of the batch, or nothing to send.
                Some(status) if status.as_u16() == 204 || status.as_u16() == 404 => {
                    return Ok(messages);
                }
                Some(status) if status == async_nats::StatusCode::NO_RESPONDERS => {
                    return Err(failed(&"no replica answered", LogErrorKind::Unavailable));
                }
                Some(status) => {
                    return Err(LogError::new(
                        LogErrorKind::Unexpected,
                        format!(
                            "{what}: the server answered {status} {}",
                            reply.description.as_deref().unwrap_or_default()
                        ),
                    ));
                }
            }
        }
        Err(LogError::new(
            LogErrorKind::Unexpected,
            format!("{what}: a batch of {DIRECT_BATCH} messages did not end"),
        ))
    }

    /// The event a reply of a batched direct get carries, named by its headers.
    fn batched(&self, reply: &async_nats::Message) -> Result<StoredEvent, LogError> {
        let position = header(reply, "Nats-Sequence")
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| {
                LogError::new(
                    LogErrorKind::Unexpected,
                    "a batched direct get answered a message without its sequence",
                )
            })?;
        Ok(StoredEvent::from_message(
            &self.subject_prefix,
            Position::new(position),
            header(reply, "Nats-Subject").unwrap_or_default(),
            header(reply, async_nats::header::NATS_MESSAGE_ID.as_ref()),
            reply.payload.clone(),
        ))
    }

    /// Every event after `after`, and every new one as it comes, in batched direct gets: for
    /// a connection refused a consumer. When a batch finds nothing new it asks again after
    /// [`FOLLOW_POLL`]; the stream ends only when dropped, as a consumer's would.
    pub(crate) fn follow_in_batches(&self, after: Position) -> EventStream {
        let filter = self.stored_subjects();
        Box::pin(
            futures::stream::try_unfold((self.clone(), after), move |(log, after)| {
                let filter = filter.clone();
                async move {
                    loop {
                        let batch = log.direct_batch(&filter, after, None).await?;
                        if let Some(last) = batch.last().map(|event| event.position) {
                            let events = futures::stream::iter(batch.into_iter().map(Ok));
                            return Ok(Some((events, (log, last))));
                        }
                        tokio::time::sleep(FOLLOW_POLL).await;
                    }
                }
            })
            .try_flatten(),
        )
    }
}

/// A header of a batched direct get's reply.
fn header<'a>(reply: &'a async_nats::Message, name: &str) -> Option<&'a str> {
    reply
        .headers
        .as_ref()
        .and_then(|headers| headers.get(name))
        .map(async_nats::HeaderValue::as_str)
}

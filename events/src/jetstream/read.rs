//! Reads: direct gets for a case's last event and the event after a position, pull consumers
//! for long histories ([`super::pull`]), ordered consumers for following the whole stream,
//! and batched direct gets in their place for a connection refused a consumer.

use std::sync::atomic::Ordering;

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use wfstate_store::{CaseId, Position};

use super::codes::{api_error, api_error_of, api_failure, request_kind};
use super::connect::Refused;
use super::{DIRECT_READS, JetStreamLog};
use crate::error::{LogError, LogErrorKind};
use crate::log::{EventStream, StoredEvent};

impl JetStreamLog {
    pub(crate) fn stored(
        &self,
        message: &async_nats::jetstream::message::StreamMessage,
    ) -> StoredEvent {
        StoredEvent::from_message(
            &self.subject_prefix,
            Position::new(message.sequence),
            &message.subject,
            message
                .headers
                .get(async_nats::header::NATS_MESSAGE_ID)
                .map(async_nats::HeaderValue::as_str),
            message.payload.clone(),
        )
    }

    pub(crate) async fn direct_get(
        &self,
        get: impl Future<Output = Result<jetstream::message::StreamMessage, stream::DirectGetError>>,
    ) -> Result<Option<StoredEvent>, LogError> {
        match get.await {
            Ok(message) => Ok(Some(self.stored(&message))),
            Err(error) => match error.kind() {
                stream::DirectGetErrorKind::NotFound => Ok(None),
                _ => Err(self.read_failure(error)),
            },
        }
    }

    /// What a failed direct get means.
    fn read_failure(&self, error: stream::DirectGetError) -> LogError {
        let what = format!("reading events from {}", self.urls);
        let (kind, message) = match error.kind() {
            stream::DirectGetErrorKind::TimedOut | stream::DirectGetErrorKind::Request => {
                let api = format!("$JS.API.DIRECT.GET.{}", self.stream_name());
                if let Some(denied) = self.permission_error(Refused::Under(&api), &what) {
                    return denied.with_source(error);
                }
                let kind = if matches!(error.kind(), stream::DirectGetErrorKind::TimedOut) {
                    LogErrorKind::TimedOut
                } else {
                    LogErrorKind::Unavailable
                };
                (kind, format!("{what}: no answer; try again later"))
            }
            stream::DirectGetErrorKind::ErrorResponse(status, _)
                if status == async_nats::StatusCode::NO_RESPONDERS || status.as_u16() == 503 =>
            {
                (
                    LogErrorKind::Unavailable,
                    format!("{what}: no replica answered; try again later"),
                )
            }
            _ => (
                LogErrorKind::Unexpected,
                format!("{what}: an answer this store does not know"),
            ),
        };
        LogError::new(kind, message).with_source(error)
    }

    /// A read answered by the stream's leader (the `STREAM.MSG.GET` API): it sees every event
    /// acknowledged before it was sent, which a direct get answered by a lagging replica does
    /// not promise. The reads that decide a commit go this way.
    pub(crate) async fn leader_get(
        &self,
        get: impl Future<Output = Result<jetstream::message::StreamMessage, stream::RawMessageError>>,
    ) -> Result<Option<StoredEvent>, LogError> {
        let error = match get.await {
            Ok(message) => return Ok(Some(self.stored(&message))),
            Err(error) => error,
        };
        let what = format!("reading events from the stream leader on {}", self.urls);
        let code = match error.kind() {
            stream::LastRawMessageErrorKind::NoMessageFound => return Ok(None),
            stream::LastRawMessageErrorKind::JetStream(api)
                if api.error_code() == jetstream::ErrorCode::NO_MESSAGE_FOUND =>
            {
                return Ok(None);
            }
            stream::LastRawMessageErrorKind::JetStream(api) => Some(api.error_code().0),
            _ => None,
        };
        let request = request_kind(&error);
        let api = format!("$JS.API.STREAM.MSG.GET.{}", self.stream_name());
        Err(self
            .permission_error(Refused::Exact(&api), &what)
            .unwrap_or_else(|| {
                let kind = api_failure(code, request);
                // A request that failed without an answer (the connection dropped) may pass.
                if code.is_none() && kind == LogErrorKind::Unexpected {
                    return LogError::new(
                        LogErrorKind::Unavailable,
                        format!("{what}: no answer; try again later"),
                    )
                    .with_source(error);
                }
                api_error_of(&what, code, request, error)
            }))
    }

    /// The case's last event, as the stream's leader has it.
    pub(crate) async fn last_of(&self, case_id: &CaseId) -> Result<Option<StoredEvent>, LogError> {
        let subject = self.stored_subject(case_id);
        self.leader_get(self.stream.get_last_raw_message_by_subject(&subject))
            .await
    }

    /// The case's first event after `position`, as the stream's leader has it.
    pub(crate) async fn next_event(
        &self,
        case_id: &CaseId,
        position: Position,
    ) -> Result<Option<StoredEvent>, LogError> {
        self.leader_get(
            self.stream
                .get_first_raw_message_by_subject(self.stored_subject(case_id), position.get() + 1),
        )
        .await
    }

    /// The case's first event after `position`, from any replica (a direct get); for reads
    /// bounded by a position the leader gave.
    async fn next_event_any(
        &self,
        case_id: &CaseId,
        position: Position,
    ) -> Result<Option<StoredEvent>, LogError> {
        self.direct_get(
            self.stream.direct_get_next_for_subject(
                self.stored_subject(case_id),
                Some(position.get() + 1),
            ),
        )
        .await
    }

    pub(crate) async fn read_history(
        &self,
        case_id: &CaseId,
        after_position: Position,
    ) -> Result<EventStream, LogError> {
        let Some(last) = self.last_of(case_id).await? else {
            return Ok(Box::pin(futures::stream::empty()));
        };
        let last = last.position;
        // Short histories (most loads) are read with direct gets: a consumer costs more round
        // trips than a few events. Long ones go on through a pull consumer, which streams
        // them without a request per event. Both are bounded by the last position the leader
        // gave: a replica that lags behind it is asked again through the leader, so it can
        // never make the history look shorter.
        let mut head = Vec::new();
        let mut position = after_position;
        while head.len() < DIRECT_READS && position < last {
            let next = match self.next_event_any(case_id, position).await? {
                Some(event) if event.position <= last => Some(event),
                _ => self.next_event(case_id, position).await?,
            };
            match next {
                Some(event) => {
                    position = event.position;
                    head.push(Ok(event));
                }
                None => break,
            }
        }
        if position >= last {
            return Ok(Box::pin(futures::stream::iter(head)));
        }
        let tail = if self.consumers_refused.load(Ordering::Relaxed) {
            self.history_in_batches(case_id, position, last)
        } else {
            match self.history_in_pulls(case_id, position, last).await {
                Err(error) if error.kind() == LogErrorKind::PermissionDenied => {
                    // A reader that may not create consumers (an auditor) reads in batched
                    // direct gets from now on.
                    self.consumers_refused.store(true, Ordering::Relaxed);
                    self.history_in_batches(case_id, position, last)
                }
                tail => tail?,
            }
        };
        Ok(Box::pin(futures::stream::iter(head).chain(tail)))
    }

    pub(crate) async fn read_all(&self, after_position: Position) -> Result<EventStream, LogError> {
        if !self.consumers_refused.load(Ordering::Relaxed) {
            match self
                .ordered(self.stored_subjects(), after_position, None)
                .await
            {
                Err(error) if error.kind() == LogErrorKind::PermissionDenied => {
                    self.consumers_refused.store(true, Ordering::Relaxed);
                }
                events => return events,
            }
        }
        Ok(self.follow_in_batches(after_position))
    }

    pub(crate) async fn stream_last_position(&self) -> Result<Position, LogError> {
        let info = self.stream.get_info().await.map_err(|error| {
            let what = format!("reading the stream's state on {}", self.urls);
            let code = api_error(&error).map(|api| api.error_code().0);
            let request = Some(error.kind());
            let api = format!("$JS.API.STREAM.INFO.{}", self.stream_name());
            self.permission_error(Refused::Exact(&api), &what)
                .unwrap_or_else(|| api_error_of(&what, code, request, error))
        })?;
        Ok(Position::new(info.state.last_sequence))
    }
    /// What a refused reader's consumer means to the store.
    pub(crate) fn consumer_error(&self, error: stream::ConsumerError) -> LogError {
        let what = format!("creating a reader on {}", self.urls);
        let code = match error.kind() {
            stream::ConsumerErrorKind::JetStream(e) => Some(e.error_code().0),
            _ => None,
        };
        let request = request_kind(&error);
        let api = format!("$JS.API.CONSUMER.CREATE.{}", self.stream_name());
        self.permission_error(Refused::Under(&api), &what)
            .unwrap_or_else(|| api_error_of(&what, code, request, error))
    }

    /// An ordered consumer over `filter` from `after + 1`, as a stream of events.
    pub(crate) async fn ordered(
        &self,
        filter: String,
        after: Position,
        name: Option<String>,
    ) -> Result<EventStream, LogError> {
        let deliver_policy = if after == Position::ZERO {
            consumer::DeliverPolicy::All
        } else {
            consumer::DeliverPolicy::ByStartSequence {
                start_sequence: after.get() + 1,
            }
        };
        let consumer = self
            .stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: filter,
                deliver_policy,
                name,
                ..consumer::pull::OrderedConfig::default()
            })
            .await
            .map_err(|error| self.consumer_error(error))?;
        let messages = consumer.messages().await.map_err(|error| {
            LogError::new(
                LogErrorKind::Unavailable,
                format!("reading events from {}; try again later", self.urls),
            )
            .with_source(error)
        })?;
        let prefix = self.subject_prefix.clone();
        let events = messages.map(move |message| {
            let message = message.map_err(|error| {
                LogError::new(
                    LogErrorKind::Unavailable,
                    "reading events: the reader failed; try again later",
                )
                .with_source(error)
            })?;
            StoredEvent::from_consumed(&prefix, &message)
        });
        Ok(only_after(events, after))
    }
}

/// Hands out only the events past the last one handed out, starting after `after`. An ordered
/// consumer recreated before it delivered anything (a leader change) starts over from the
/// first event of its filter (async-nats recreates it from sequence 0 then): without this, a
/// history read would see the case's first event again where it expects the next one.
pub(crate) fn only_after(
    events: impl futures::Stream<Item = Result<StoredEvent, LogError>> + Send + 'static,
    after: Position,
) -> EventStream {
    let mut last = after;
    Box::pin(events.filter_map(move |event| {
        let keep = match &event {
            Ok(stored) if stored.position <= last => false,
            Ok(stored) => {
                last = stored.position;
                true
            }
            Err(_) => true,
        };
        futures::future::ready(keep.then_some(event))
    }))
}

impl StoredEvent {
    /// The event a message delivered by a JetStream consumer carries (case subjects
    /// `<prefix>.<case id>`): its position from the message's metadata, its commit id from
    /// `Nats-Msg-Id`, its case from its subject.
    ///
    /// # Errors
    /// [`LogErrorKind::Unexpected`] when the message has no JetStream metadata.
    pub fn from_consumed(
        prefix: &str,
        message: &jetstream::Message,
    ) -> Result<StoredEvent, LogError> {
        let info = message.info().map_err(|error| {
            LogError::new(
                LogErrorKind::Unexpected,
                "a delivered message carries no JetStream metadata",
            )
            .with_source(error)
        })?;
        let commit_id = message
            .headers
            .as_ref()
            .and_then(|headers| headers.get(async_nats::header::NATS_MESSAGE_ID))
            .map(async_nats::HeaderValue::as_str);
        Ok(StoredEvent::from_message(
            prefix,
            Position::new(info.stream_sequence),
            &message.subject,
            commit_id,
            message.payload.clone(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use wfstate_store::CommitId;

    #[test]
    fn stored_events_carry_case_and_commit_id() {
        let commit = CommitId::generate();
        let event = StoredEvent::from_message(
            "wfstate.case",
            Position::new(7),
            "wfstate.case.c1",
            Some(&commit.to_string()),
            Bytes::from_static(b"x"),
        );
        assert_eq!(
            (event.position, event.case_id.as_str(), event.commit_id),
            (Position::new(7), "c1", Some(commit))
        );
    }

    fn event(position: u64) -> StoredEvent {
        StoredEvent::from_message(
            "wfstate.case",
            Position::new(position),
            "wfstate.case.c1",
            None,
            Bytes::new(),
        )
    }

    /// A reader recreated before it delivered anything starts over at the first event: what
    /// it hands out again is dropped, and the history goes on where it was.
    #[tokio::test]
    async fn a_reader_that_starts_over_hands_out_nothing_twice() {
        let restarted =
            futures::stream::iter([1, 5, 17, 18, 1, 5, 17, 18, 19, 30].map(|n| Ok(event(n))));
        let positions: Vec<u64> = only_after(restarted, Position::new(16))
            .map(|event| event.unwrap().position.get())
            .collect()
            .await;
        assert_eq!(positions, [17, 18, 19, 30]);
    }
}

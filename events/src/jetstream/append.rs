//! Appends: one event per publish with its commit id and expected position, or several events
//! of one case as one atomic batch (nats-server 2.12+).

use async_nats::HeaderMap;
use async_nats::jetstream::{self, context::PublishErrorKind};
use bytes::Bytes;
use wfstate_store::{CaseId, CommitId, Position};

use super::JetStreamLog;
use super::codes::{Meaning, actual_position, api_error, description, meaning, request_kind, why};
use super::connect::Refused;
use crate::error::{LogError, LogErrorKind};
use crate::log::AppendOutcome;

/// The header names the store writes besides async-nats's own constants.
pub(crate) mod headers {
    use async_nats::HeaderName;

    /// The payload's media type.
    pub const CONTENT_TYPE: HeaderName = HeaderName::from_static("Content-Type");
    /// The event schema version.
    pub const SCHEMA: HeaderName = HeaderName::from_static("Wfstate-Schema");
    /// The value of [`SCHEMA`], written out once.
    pub const SCHEMA_VALUE: &str = "1";
    /// The case's expected last position.
    pub const EXPECTED_LAST_SUBJECT_SEQUENCE: HeaderName =
        HeaderName::from_static("Nats-Expected-Last-Subject-Sequence");
    /// An atomic batch's id.
    pub const BATCH_ID: HeaderName = HeaderName::from_static("Nats-Batch-Id");
    /// A message's place in its atomic batch, from 1.
    pub const BATCH_SEQUENCE: HeaderName = HeaderName::from_static("Nats-Batch-Sequence");
    /// Set on the last message of an atomic batch.
    pub const BATCH_COMMIT: HeaderName = HeaderName::from_static("Nats-Batch-Commit");

    const _: () = assert!(
        wfstate_store::SCHEMA_VERSION == 1,
        "SCHEMA_VALUE must spell SQLITE_SCHEMA_VERSION"
    );
}

/// The answer of the server to a publish or an atomic batch that carried an error code.
fn coded_outcome(
    code: u64,
    description: &str,
    what: &str,
    size: usize,
) -> Result<AppendOutcome, LogError> {
    match meaning(code) {
        Meaning::Conflict => Ok(AppendOutcome::Conflict {
            actual: actual_position(description),
        }),
        Meaning::Duplicate => Ok(AppendOutcome::Duplicate { position: None }),
        Meaning::Failure(LogErrorKind::TooLarge) => {
            Err(LogError::too_large(size, None).with_code(code))
        }
        Meaning::Failure(kind) => {
            let reason = why(code).unwrap_or(description);
            Err(LogError::new(kind, format!("{what}: {reason}")).with_code(code))
        }
    }
}

impl JetStreamLog {
    /// What a failed publish means: a conflict is an outcome; anything else an error, a
    /// forbidden subject as such rather than as the time-out it looks like.
    fn publish_outcome(
        &self,
        error: jetstream::context::PublishError,
        subject: &str,
        size: usize,
    ) -> Result<AppendOutcome, LogError> {
        let what = format!("publishing to {subject} on {}", self.urls);
        let api = api_error(&error);
        let (kind, message) = match error.kind() {
            PublishErrorKind::WrongLastSequence => {
                return Ok(AppendOutcome::Conflict {
                    actual: api.and_then(|api| actual_position(&description(api))),
                });
            }
            PublishErrorKind::MaxPayloadExceeded => {
                return Err(LogError::too_large(size, None).with_source(error));
            }
            PublishErrorKind::StreamNotFound => (
                LogErrorKind::Unavailable,
                format!(
                    "{what}: no stream answered (no responders: the stream has no leader, or \
                     does not exist); try again later"
                ),
            ),
            PublishErrorKind::TimedOut => (
                LogErrorKind::TimedOut,
                format!("{what}: no acknowledgement in time"),
            ),
            PublishErrorKind::BrokenPipe | PublishErrorKind::MaxAckPending => (
                LogErrorKind::Unavailable,
                format!("{what}: the connection dropped or is saturated; try again later"),
            ),
            _ => match api {
                Some(api) => {
                    let code = api.error_code().0;
                    let description = description(api);
                    return coded_outcome(code, &description, &what, size)
                        .map_err(|e| e.with_source(error));
                }
                None => (
                    LogErrorKind::Unexpected,
                    format!("{what}: an answer this store does not know"),
                ),
            },
        };
        if kind != LogErrorKind::Unexpected
            && let Some(denied) = self.permission_error(Refused::Exact(subject), &what)
        {
            return Err(denied.with_source(error));
        }
        Err(LogError::new(kind, message).with_source(error))
    }

    /// Appends one event (see [`crate::EventLog::append`]).
    pub(crate) async fn append_one(
        &self,
        case_id: &CaseId,
        commit_id: CommitId,
        expected_position: Position,
        payload: Bytes,
    ) -> Result<AppendOutcome, LogError> {
        LogError::check_size(&payload, self.payload_size_max)?;
        let size = payload.len();
        let message = jetstream::message::PublishMessage::build()
            .payload(payload)
            .message_id(commit_id.encode(&mut [0; CommitId::TEXT_LENGTH]))
            .expected_last_subject_sequence(expected_position.get())
            .header(headers::CONTENT_TYPE, "application/cbor")
            .header(headers::SCHEMA, headers::SCHEMA_VALUE);
        let subject = async_nats::Subject::from(self.subject(case_id));
        let ack = match self.context.send_publish(subject.clone(), message).await {
            Ok(ack) => ack.await,
            Err(error) => Err(error),
        };
        match ack {
            Ok(ack) if ack.duplicate => Ok(AppendOutcome::Duplicate {
                position: Some(Position::new(ack.sequence)),
            }),
            Ok(ack) => Ok(AppendOutcome::Appended {
                position: Position::new(ack.sequence),
            }),
            Err(error) => self.publish_outcome(error, &subject, size),
        }
    }

    /// Appends several events of one case as one atomic batch (see
    /// [`crate::EventLog::append_many`]): the first and the last are requests, the others
    /// plain publishes.
    pub(crate) async fn append_batch(
        &self,
        case_id: &CaseId,
        events: &[(CommitId, Bytes)],
        expected_position: Position,
    ) -> Result<AppendOutcome, LogError> {
        assert!(!events.is_empty(), "the client sends no empty append");
        let total = events.len();
        if !self.stream.cached_info().config.allow_atomic_publish {
            return Err(LogError::new(
                LogErrorKind::Config,
                format!(
                    "stream {} does not allow atomic batches; set allow_atomic on it",
                    self.stream.cached_info().config.name
                ),
            ));
        }
        let mut size = 0;
        for (_, payload) in events {
            LogError::check_size(payload, self.payload_size_max)?;
            size = size.max(payload.len());
        }
        let subject = self.subject(case_id);
        let what = format!("publishing {total} events to {subject} on {}", self.urls);
        let batch_id = CommitId::generate().as_uuid().simple().to_string();
        for (index, (commit_id, payload)) in events.iter().enumerate() {
            let last = index + 1 == total;
            let headers = batch_headers(&batch_id, index, *commit_id, expected_position, last);
            if index == 0 || last {
                // The server answers the first only with an error, the last with the batch's
                // acknowledgement.
                let reply = self
                    .client
                    .request_with_headers(subject.clone(), headers, payload.clone())
                    .await
                    .map_err(|error| self.request_failure(&subject, &what, error))?;
                if last || !reply.payload.is_empty() {
                    return batch_outcome(&reply.payload, &what, size);
                }
            } else {
                self.client
                    .publish_with_headers(subject.clone(), headers, payload.clone())
                    .await
                    .map_err(|error| {
                        LogError::new(
                            LogErrorKind::Unavailable,
                            format!("{what}: the connection dropped; try again later"),
                        )
                        .with_source(error)
                    })?;
            }
        }
        unreachable!("the last event of a batch returns its acknowledgement")
    }

    fn request_failure(
        &self,
        subject: &str,
        what: &str,
        error: async_nats::RequestError,
    ) -> LogError {
        if let Some(denied) = self.permission_error(Refused::Exact(subject), what) {
            return denied.with_source(error);
        }
        let kind = match request_kind(&error) {
            Some(jetstream::context::RequestErrorKind::TimedOut) => LogErrorKind::TimedOut,
            _ => LogErrorKind::Unavailable,
        };
        LogError::new(kind, format!("{what}: no answer; try again later")).with_source(error)
    }
}

fn batch_headers(
    batch_id: &str,
    index: usize,
    commit_id: CommitId,
    expected_position: Position,
    last: bool,
) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(headers::BATCH_ID, batch_id);
    headers.insert(headers::BATCH_SEQUENCE, (index + 1).to_string().as_str());
    headers.insert(
        async_nats::header::NATS_MESSAGE_ID,
        commit_id.encode(&mut [0; CommitId::TEXT_LENGTH]),
    );
    headers.insert(headers::CONTENT_TYPE, "application/cbor");
    headers.insert(headers::SCHEMA, headers::SCHEMA_VALUE);
    if index == 0 {
        headers.insert(
            headers::EXPECTED_LAST_SUBJECT_SEQUENCE,
            expected_position.to_string().as_str(),
        );
    }
    if last {
        headers.insert(headers::BATCH_COMMIT, "1");
    }
    headers
}

/// Reads the server's answer to an atomic batch.
fn batch_outcome(reply: &[u8], what: &str, size: usize) -> Result<AppendOutcome, LogError> {
    #[derive(serde::Deserialize)]
    struct ApiError {
        err_code: u64,
        description: String,
    }
    #[derive(serde::Deserialize)]
    struct Ack {
        #[serde(default)]
        seq: u64,
        #[serde(default)]
        error: Option<ApiError>,
    }
    let ack: Ack = serde_json::from_slice(reply).map_err(|e| {
        LogError::new(
            LogErrorKind::Unexpected,
            format!("{what}: the acknowledgement cannot be read"),
        )
        .with_source(e)
    })?;
    match ack.error {
        None if ack.seq > 0 => Ok(AppendOutcome::Appended {
            position: Position::new(ack.seq),
        }),
        None => Err(LogError::new(
            LogErrorKind::Unexpected,
            format!("{what}: the acknowledgement names no position"),
        )),
        Some(error) => coded_outcome(error.err_code, &error.description, what, size),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_answers_are_outcomes_or_errors_by_code() {
        let answer = |json: &str| batch_outcome(json.as_bytes(), "x", 2000);
        assert_eq!(
            answer(r#"{"seq": 9, "count": 3}"#).unwrap(),
            AppendOutcome::Appended {
                position: Position::new(9)
            }
        );
        assert_eq!(
            answer(r#"{"error": {"err_code": 10071, "description": "wrong last sequence: 4"}}"#)
                .unwrap(),
            AppendOutcome::Conflict {
                actual: Some(Position::new(4))
            }
        );
        assert_eq!(
            answer(r#"{"error": {"err_code": 10201, "description": "duplicate"}}"#).unwrap(),
            AppendOutcome::Duplicate { position: None }
        );
        let too_large =
            answer(r#"{"error": {"err_code": 10054, "description": "too big"}}"#).unwrap_err();
        assert_eq!(too_large.kind(), LogErrorKind::TooLarge);
        assert!(too_large.to_string().contains("2000 bytes"), "{too_large}");
        let unknown = answer(r#"{"error": {"err_code": 12345, "description": "??"}}"#).unwrap_err();
        assert_eq!(unknown.kind(), LogErrorKind::Unexpected);
        assert_eq!(
            answer("not json").unwrap_err().kind(),
            LogErrorKind::Unexpected
        );
    }
}

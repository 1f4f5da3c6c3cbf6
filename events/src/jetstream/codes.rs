//! What each answer of the server means for this store: one table, by JetStream error code
//! (`err_code`), never by the text of a message.
//!
//! A code that means "this may still land" (an earlier attempt still in raft, a leader change)
//! is retryable: the client sends the same event again (same commit id, same expected
//! position) under its deadline, and a commit whose deadline passes is in doubt, never failed.

use std::error::Error as StdError;

use async_nats::jetstream::{self, ErrorCode};

use wfstate_store::Position;

use crate::error::{LogError, LogErrorKind};

/// What an answer means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Meaning {
    /// A sequence conflict: the case's last event is not at the expected position. 10071
    /// carries the case's last position in its description; 10164 (a replicated stream that
    /// cannot know it yet, or another append of the subject in flight) does not.
    Conflict,
    /// A multi-event append holds a commit id the stream already has; nothing was stored.
    Duplicate,
    /// A failure of this kind.
    Failure(LogErrorKind),
}

/// One row of the table: the code, what it means, and why.
struct Row {
    code: u64,
    meaning: Meaning,
    why: &'static str,
}

const fn row(code: ErrorCode, meaning: Meaning, why: &'static str) -> Row {
    Row {
        code: code.0,
        meaning,
        why,
    }
}

use LogErrorKind::{Config, NoSpace, TooLarge, Unavailable};
use Meaning::{Conflict, Duplicate, Failure};

/// Every code this store gives a meaning; any other is [`LogErrorKind::Unexpected`].
const TABLE: &[Row] = &[
    row(
        ErrorCode::STREAM_WRONG_LAST_SEQUENCE,
        Conflict,
        "wrong last sequence: <actual>",
    ),
    row(
        ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT,
        Conflict,
        "wrong last sequence, the actual one not known yet (replicated stream)",
    ),
    row(
        ErrorCode::ATOMIC_PUBLISH_CONTAINS_DUPLICATE_MESSAGE,
        Duplicate,
        "an atomic batch holds a commit id already stored",
    ),
    row(
        ErrorCode::STREAM_DUPLICATE_MESSAGE_CONFLICT,
        Failure(Unavailable),
        "an earlier attempt with this commit id is still in process: it may land",
    ),
    row(
        ErrorCode::STREAM_EXPECTED_LAST_SEQ_PER_SUBJECT_NOT_READY,
        Failure(Unavailable),
        "the expected-sequence check is not ready yet (a new leader)",
    ),
    row(
        ErrorCode::STREAM_TOO_MANY_REQUESTS,
        Failure(Unavailable),
        "too many requests",
    ),
    row(
        ErrorCode::CLUSTER_NOT_AVAILABLE,
        Failure(Unavailable),
        "no cluster quorum",
    ),
    row(
        ErrorCode::CLUSTER_NO_PEERS,
        Failure(Unavailable),
        "no server to place a replica on: one is offline or not yet known to the cluster, \
         or the cluster has fewer servers with JetStream than replicas asked for \
         (--replicas, WFSTATE_REPLICAS)",
    ),
    row(
        ErrorCode::STREAM_STORE_FAILED,
        Failure(Unavailable),
        "the store closed under an entry (a leader change): it may land",
    ),
    row(
        ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM,
        Failure(TooLarge),
        "the message is over the stream's max_msg_size",
    ),
    row(
        ErrorCode::ATOMIC_PUBLISH_TOO_LARGE_BATCH,
        Failure(TooLarge),
        "too many messages in one atomic batch",
    ),
    row(
        ErrorCode::STREAM_NOT_FOUND,
        Failure(Config),
        "the stream does not exist",
    ),
    row(
        ErrorCode::JETSTREAM_NOT_ENABLED,
        Failure(Config),
        "JetStream is not enabled",
    ),
    row(
        ErrorCode::JETSTREAM_NOT_ENABLED_FOR_ACCOUNT,
        Failure(Config),
        "JetStream is not enabled for this account",
    ),
    row(
        ErrorCode::STREAM_SEALED,
        Failure(Config),
        "the stream is sealed",
    ),
    row(
        ErrorCode::ATOMIC_PUBLISH_DISABLED,
        Failure(Config),
        "the stream does not allow atomic batches",
    ),
    row(
        ErrorCode::STORAGE_RESOURCES_EXCEEDED,
        Failure(NoSpace),
        "the account's storage is used up",
    ),
    row(
        ErrorCode::INSUFFICIENT_RESOURCES,
        Failure(NoSpace),
        "the server has no resources left",
    ),
];

/// What `code` means; [`LogErrorKind::Unexpected`] for a code not in the table.
pub(crate) fn meaning(code: u64) -> Meaning {
    TABLE
        .iter()
        .find(|row| row.code == code)
        .map_or(Failure(LogErrorKind::Unexpected), |row| row.meaning)
}

/// Why the server answers with `code`, in words, when the table knows it.
pub(crate) fn why(code: u64) -> Option<&'static str> {
    TABLE.iter().find(|row| row.code == code).map(|row| row.why)
}

/// The position a 10071 answer names ("wrong last sequence: 41"), if it names one.
pub(crate) fn actual_position(description: &str) -> Option<Position> {
    let (_, number) = description.rsplit_once(':')?;
    number.trim().parse().ok().map(Position::new)
}

/// The server's description of an API error: its `Display` without the codes async-nats
/// appends (the error keeps the description private).
pub(crate) fn description(api: &jetstream::Error) -> String {
    let text = api.to_string();
    match text.rfind(" (code ") {
        Some(end) => text[..end].to_owned(),
        None => text,
    }
}

/// The JetStream API error anywhere in `error`'s chain of causes.
pub(crate) fn api_error<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a jetstream::Error> {
    let mut next = Some(error);
    while let Some(current) = next {
        if let Some(api) = current.downcast_ref::<jetstream::Error>() {
            return Some(api);
        }
        next = current.source();
    }
    None
}

/// How a request in `error`'s chain of causes failed, when one did.
pub(crate) fn request_kind(
    error: &(dyn StdError + 'static),
) -> Option<jetstream::context::RequestErrorKind> {
    use jetstream::context::RequestErrorKind as Request;
    let mut next = Some(error);
    while let Some(current) = next {
        if let Some(request) = current.downcast_ref::<jetstream::context::RequestError>() {
            return Some(request.kind());
        }
        if let Some(request) = current.downcast_ref::<async_nats::RequestError>() {
            return Some(match request.kind() {
                async_nats::RequestErrorKind::TimedOut => Request::TimedOut,
                async_nats::RequestErrorKind::NoResponders => Request::NoResponders,
                _ => Request::Other,
            });
        }
        next = current.source();
    }
    None
}

/// How an async-nats call in `error`'s chain of causes failed, for calls whose error carries no
/// JetStream code: a time-out, no responders, a dropped connection.
fn failure_of_call(error: &(dyn StdError + 'static)) -> LogErrorKind {
    use jetstream::context::{PublishErrorKind, RequestErrorKind as Request};
    use jetstream::stream::DirectGetErrorKind;
    let mut next = Some(error);
    while let Some(current) = next {
        if let Some(publish) = current.downcast_ref::<jetstream::context::PublishError>() {
            match publish.kind() {
                PublishErrorKind::TimedOut => return LogErrorKind::TimedOut,
                PublishErrorKind::MaxPayloadExceeded => return LogErrorKind::TooLarge,
                PublishErrorKind::StreamNotFound
                | PublishErrorKind::BrokenPipe
                | PublishErrorKind::MaxAckPending => return LogErrorKind::Unavailable,
                _ => {}
            }
        }
        if let Some(get) = current.downcast_ref::<jetstream::stream::DirectGetError>() {
            match get.kind() {
                DirectGetErrorKind::TimedOut => return LogErrorKind::TimedOut,
                DirectGetErrorKind::Request => return LogErrorKind::Unavailable,
                // No replica serves direct gets yet: a new or recovering stream.
                DirectGetErrorKind::ErrorResponse(status, _)
                    if status == async_nats::StatusCode::NO_RESPONDERS =>
                {
                    return LogErrorKind::Unavailable;
                }
                _ => {}
            }
        }
        if current.downcast_ref::<std::io::Error>().is_some() {
            return LogErrorKind::Unavailable;
        }
        next = current.source();
    }
    match request_kind(error) {
        Some(Request::TimedOut) => LogErrorKind::TimedOut,
        Some(Request::NoResponders) => LogErrorKind::Unavailable,
        _ => LogErrorKind::Unexpected,
    }
}

/// A failure of any async-nats call, classified by the JetStream error code in its chain of
/// causes, or else by how the call failed.
pub(crate) fn nats_failure(what: &str, error: crate::error::BoxError) -> LogError {
    let code = api_error(&*error).map(|api| api.error_code().0);
    let kind = match code.map(meaning) {
        Some(Failure(kind)) => kind,
        Some(Conflict | Duplicate) => LogErrorKind::Unexpected,
        None => failure_of_call(&*error),
    };
    let hint = if kind.is_retryable() {
        "; try again later"
    } else {
        ""
    };
    let reason = code
        .and_then(why)
        .map(|why| format!(": {why}"))
        .unwrap_or_default();
    let mut failure = LogError::new(kind, format!("{what}{reason}{hint}")).with_source(error);
    if let Some(code) = code {
        failure = failure.with_code(code);
    }
    failure
}

/// A failure of a request to the JetStream API (stream info, create, direct get), by the
/// code the server answered with or how the request failed; `what` says what was being done.
pub(crate) fn api_failure(
    code: Option<u64>,
    request: Option<jetstream::context::RequestErrorKind>,
) -> LogErrorKind {
    use jetstream::context::RequestErrorKind as Request;
    match (code.map(meaning), request) {
        (Some(Failure(kind)), _) => kind,
        (None, Some(Request::TimedOut)) => LogErrorKind::TimedOut,
        (None, Some(Request::NoResponders)) => LogErrorKind::Unavailable,
        // A conflict or a duplicate answers appends only.
        (Some(Conflict | Duplicate) | None, _) => LogErrorKind::Unexpected,
    }
}

/// A [`LogError`] for a failed JetStream API request, its cause kept.
pub(crate) fn api_error_of(
    what: &str,
    code: Option<u64>,
    request: Option<jetstream::context::RequestErrorKind>,
    source: impl Into<crate::error::BoxError>,
) -> LogError {
    let kind = api_failure(code, request);
    let hint = match kind {
        LogErrorKind::Unavailable | LogErrorKind::TimedOut => "; try again later",
        LogErrorKind::Config if code == Some(ErrorCode::JETSTREAM_NOT_ENABLED.0) => {
            "; start nats-server with JetStream enabled (-js, or a jetstream block in its config)"
        }
        _ => "",
    };
    let reason = code
        .and_then(why)
        .map(|why| format!(": {why}"))
        .unwrap_or_default();
    let mut error = LogError::new(kind, format!("{what}{reason}{hint}")).with_source(source);
    if let Some(code) = code {
        error = error.with_code(code);
    }
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each row of the table, as the commit client relies on it.
    #[test]
    fn each_code_has_the_meaning_the_protocol_needs() {
        let expected = [
            (10071, Conflict),
            (10164, Conflict),
            (10201, Duplicate),
            (10158, Failure(Unavailable)),
            (10163, Failure(Unavailable)),
            (10167, Failure(Unavailable)),
            (10008, Failure(Unavailable)),
            (10005, Failure(Unavailable)),
            (10077, Failure(Unavailable)),
            (10054, Failure(TooLarge)),
            (10199, Failure(TooLarge)),
            (10059, Failure(Config)),
            (10076, Failure(Config)),
            (10039, Failure(Config)),
            (10109, Failure(Config)),
            (10174, Failure(Config)),
            (10047, Failure(NoSpace)),
            (10023, Failure(NoSpace)),
            (99_999, Failure(LogErrorKind::Unexpected)),
        ];
        for (code, meaning_expected) in expected {
            assert_eq!(meaning(code), meaning_expected, "err_code {code}");
        }
        assert_eq!(
            TABLE.len(),
            expected.len() - 1,
            "every row is checked above"
        );
    }

    #[test]
    fn codes_that_may_still_land_are_retried() {
        for code in [10158, 10163] {
            let Failure(kind) = meaning(code) else {
                panic!("{code}")
            };
            assert!(kind.is_retryable() && kind.may_have_landed(), "{code}");
        }
    }

    #[test]
    fn the_description_is_read_from_the_api_error() {
        let api: jetstream::Error = serde_json::from_str(
            r#"{"code": 400, "err_code": 10071, "description": "wrong last sequence: 41"}"#,
        )
        .unwrap();
        assert_eq!(actual_position(&description(&api)), Some(Position::new(41)));
    }

    #[test]
    fn a_wrong_last_sequence_names_the_actual_position() {
        assert_eq!(
            actual_position("wrong last sequence: 41"),
            Some(Position::new(41))
        );
        assert_eq!(actual_position("wrong last sequence"), None);
    }

    #[test]
    fn requests_that_fail_without_a_code_are_classified_by_how_they_failed() {
        use jetstream::context::RequestErrorKind as Request;
        assert_eq!(
            api_failure(None, Some(Request::TimedOut)),
            LogErrorKind::TimedOut
        );
        assert_eq!(
            api_failure(None, Some(Request::NoResponders)),
            LogErrorKind::Unavailable
        );
        assert_eq!(
            api_failure(None, Some(Request::Other)),
            LogErrorKind::Unexpected
        );
        assert_eq!(api_failure(Some(10059), None), LogErrorKind::Config);
    }

    /// A KV read that no replica answered, as async-nats reports it: a retryable outage, not
    /// an unknown failure.
    #[test]
    fn a_direct_get_without_responders_is_unavailable() {
        use jetstream::stream::{DirectGetError, DirectGetErrorKind};
        let no_responders = DirectGetError::new(DirectGetErrorKind::ErrorResponse(
            async_nats::StatusCode::NO_RESPONDERS,
            "no responders".into(),
        ));
        let entry = jetstream::kv::EntryError::with_source(
            jetstream::kv::EntryErrorKind::Other,
            no_responders,
        );
        let error = nats_failure("reading a view", entry.into());
        assert_eq!(error.kind(), LogErrorKind::Unavailable, "{error}");
        assert!(error.to_string().contains("try again later"), "{error}");
    }
}

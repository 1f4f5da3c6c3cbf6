//! The JetStream backend: one stream (`WFSTATE`), one subject per case
//! (`wfstate.case.<case id>`), the commit id as `Nats-Msg-Id` and the expected position as
//! `Nats-Expected-Last-Subject-Sequence`.
//!
//! At start-up it checks the server version (2.12 or newer: older servers lack fixes to
//! expected-sequence checks and dedup that the commit protocol relies on) and the stream's
//! configuration, and refuses a stream whose limits could silently drop case events.

use std::error::Error as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, context::PublishErrorKind, stream};
use async_nats::{ConnectOptions, ServerAddr};
use bytes::Bytes;
use futures::StreamExt;
use wfstate_store::{CaseId, CommitId, SCHEMA_VERSION};

use crate::log::{Appended, EventLog, EventStream, LogError, StoredEvent};

/// The oldest server version the store accepts.
pub const SERVER_VERSION_MIN: (u64, u64, u64) = (2, 12, 0);

/// The `Wfstate-Schema` header of every event, written out once.
const SCHEMA_HEADER: &str = "1";
/// The names of the headers every event carries besides the ids, built once.
const CONTENT_TYPE: async_nats::HeaderName = async_nats::HeaderName::from_static("Content-Type");
const SCHEMA: async_nats::HeaderName = async_nats::HeaderName::from_static("Wfstate-Schema");
const _: () = assert!(
    SCHEMA_VERSION == 1,
    "SCHEMA_HEADER must spell SCHEMA_VERSION"
);

/// How many events of a case's history are read with direct gets before a consumer is used.
const DIRECT_READS: usize = 16;

/// Room left in `max_payload` for the headers the store adds.
const HEADER_ROOM_BYTES: usize = 512;

/// How to authenticate to the server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Auth {
    /// No credentials.
    #[default]
    None,
    /// User and password.
    UserPassword {
        /// The user.
        user: String,
        /// The password.
        password: String,
    },
    /// A token.
    Token(String),
    /// A `.creds` file (JWT and nkey seed).
    CredsFile(PathBuf),
    /// A file holding an nkey seed.
    NkeyFile(PathBuf),
}

/// TLS files; any one of them turns TLS on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tls {
    /// A CA certificate (PEM) to trust.
    pub ca: Option<PathBuf>,
    /// A client certificate (PEM), with `key`.
    pub cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    pub key: Option<PathBuf>,
}

/// Where the JetStream log is and how it is laid out.
#[derive(Debug, Clone)]
pub struct JetStreamConfig {
    /// Server URLs, comma-separated.
    pub urls: String,
    /// Credentials.
    pub auth: Auth,
    /// TLS files.
    pub tls: Tls,
    /// The stream's name.
    pub stream: String,
    /// Case subjects are `<subject_prefix>.<case id>`.
    pub subject_prefix: String,
    /// Replicas when the stream is created (1, or 3 on a cluster).
    pub replicas: usize,
    /// How long the server remembers commit ids for dedup.
    pub duplicate_window: Duration,
    /// The longest wait for the first connection.
    pub connect_timeout: Duration,
    /// The longest wait for one request (publish ack, read).
    pub request_timeout: Duration,
    /// Create the stream when it does not exist (needs stream-management permission).
    pub create_stream: bool,
}

impl JetStreamConfig {
    /// The defaults for `urls`: stream `WFSTATE`, subjects `wfstate.case.*`, one replica,
    /// a two-minute duplicate window, 5 s timeouts.
    pub fn new(urls: impl Into<String>) -> Self {
        JetStreamConfig {
            urls: urls.into(),
            auth: Auth::None,
            tls: Tls::default(),
            stream: "WFSTATE".into(),
            subject_prefix: "wfstate.case".into(),
            replicas: 1,
            duplicate_window: Duration::from_mins(2),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            create_stream: true,
        }
    }

    /// The stream configuration the store creates.
    fn stream_config(&self) -> stream::Config {
        stream::Config {
            name: self.stream.clone(),
            subjects: vec![format!("{}.*", self.subject_prefix)],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            num_replicas: self.replicas,
            duplicate_window: self.duplicate_window,
            max_messages: -1,
            max_bytes: -1,
            max_messages_per_subject: -1,
            max_age: Duration::ZERO,
            deny_delete: true,
            deny_purge: true,
            allow_direct: true,
            // Several events of one case in one round trip, all or nothing (2.12+).
            allow_atomic_publish: true,
            ..stream::Config::default()
        }
    }
}

/// The JetStream event log.
#[derive(Clone)]
pub struct JetStreamLog {
    client: async_nats::Client,
    context: jetstream::Context,
    stream: stream::Stream,
    subject_prefix: String,
    payload_size_max: usize,
    urls: String,
    violations: Violations,
}

impl std::fmt::Debug for JetStreamLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamLog")
            .field("urls", &self.urls)
            .field("subject_prefix", &self.subject_prefix)
            .finish_non_exhaustive()
    }
}

/// Parses `"2.15.1"` (and `"2.12.0-beta"`) into numbers.
fn parse_version(version: &str) -> Option<(u64, u64, u64)> {
    let mut parts = version.trim_start_matches('v').split(['.', '-', '+']);
    let mut next = || parts.next()?.parse().ok();
    Some((next()?, next()?, next()?))
}

/// Whether a connection failed in its TLS handshake (a certificate not trusted, one the server
/// requires and did not get): retrying cannot cure that. async-nats reports most of these as
/// an I/O error whose cause is invalid data, which is how the TLS layer reports them.
fn is_tls_failure(error: &async_nats::ConnectError) -> bool {
    matches!(error.kind(), async_nats::ConnectErrorKind::Tls)
        || std::error::Error::source(error)
            .and_then(|source| source.downcast_ref::<std::io::Error>())
            .is_some_and(|io| io.kind() == std::io::ErrorKind::InvalidData)
}

/// The last "Permissions Violation" the server reported on this connection. The server answers
/// a forbidden publish with an asynchronous error, not a reply, so a request that then times
/// out is matched against it.
type Violations = Arc<Mutex<Option<String>>>;

async fn connect_options(
    config: &JetStreamConfig,
    violations: Violations,
) -> Result<ConnectOptions, LogError> {
    let mut options = match &config.auth {
        Auth::None => ConnectOptions::new(),
        Auth::UserPassword { user, password } => {
            ConnectOptions::with_user_and_password(user.clone(), password.clone())
        }
        Auth::Token(token) => ConnectOptions::with_token(token.clone()),
        Auth::CredsFile(path) => {
            ConnectOptions::with_credentials_file(path)
                .await
                .map_err(|e| {
                    LogError::Config(format!("cannot read creds file {}: {e}", path.display()))
                })?
        }
        Auth::NkeyFile(path) => {
            let seed = tokio::fs::read_to_string(path).await.map_err(|e| {
                LogError::Config(format!("cannot read nkey file {}: {e}", path.display()))
            })?;
            ConnectOptions::with_nkey(seed.trim().to_owned())
        }
    };
    let tls = &config.tls;
    if let Some(ca) = &tls.ca {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            options = options
                .add_client_certificate(cert.clone(), key.clone())
                .require_tls(true);
        }
        (None, None) => {}
        _ => {
            return Err(LogError::Config(
                "a TLS client certificate needs both cert and key".into(),
            ));
        }
    }
    Ok(options
        .event_callback(move |event| {
            let violations = Arc::clone(&violations);
            async move {
                if let async_nats::Event::ServerError(async_nats::ServerError::Other(message)) =
                    event
                    && message.contains("Permissions Violation")
                    && let Ok(mut last) = violations.lock()
                {
                    *last = Some(message);
                }
            }
        })
        .name("wfstate")
        .connection_timeout(config.connect_timeout)
        .request_timeout(Some(config.request_timeout)))
}

impl JetStreamLog {
    /// Connects, checks the server version, and creates or checks the stream.
    ///
    /// # Errors
    /// [`LogError::Unavailable`] when no server answers within `connect_timeout`;
    /// [`LogError::Config`] for an old server or a stream that could drop events;
    /// [`LogError::PermissionDenied`] when the credentials are refused.
    pub async fn connect(config: &JetStreamConfig) -> Result<JetStreamLog, LogError> {
        let addresses: Vec<ServerAddr> = config
            .urls
            .split(',')
            .map(|url| {
                url.trim()
                    .parse()
                    .map_err(|e| LogError::Config(format!("invalid URL {url:?}: {e}")))
            })
            .collect::<Result<_, _>>()?;
        let violations = Violations::default();
        let options = connect_options(config, Arc::clone(&violations)).await?;
        let client = tokio::time::timeout(config.connect_timeout * 2, options.connect(addresses))
            .await
            .map_err(|_| {
                LogError::Unavailable(format!(
                    "no answer from {} within the connect timeout",
                    config.urls
                ))
            })?
            .map_err(|e| match e.kind() {
                async_nats::ConnectErrorKind::AuthorizationViolation
                | async_nats::ConnectErrorKind::Authentication => {
                    LogError::PermissionDenied(format!("{}: {e}", config.urls))
                }
                async_nats::ConnectErrorKind::ServerParse => {
                    LogError::Config(format!("{}: {e}", config.urls))
                }
                _ if is_tls_failure(&e) => {
                    LogError::Config(format!("TLS with {} failed: {e}", config.urls))
                }
                _ => LogError::Unavailable(format!("cannot connect to {}: {e}", config.urls)),
            })?;
        let info = client.server_info();
        let version = parse_version(&info.version);
        if version.is_none_or(|version| version < SERVER_VERSION_MIN) {
            return Err(LogError::Config(format!(
                "nats-server {} is too old; wfstate needs {}.{}.{} or newer",
                info.version, SERVER_VERSION_MIN.0, SERVER_VERSION_MIN.1, SERVER_VERSION_MIN.2
            )));
        }
        let context = jetstream::ContextBuilder::new()
            .timeout(config.request_timeout)
            .build(client.clone());
        let stream = open_stream(&context, config).await?;
        let stream_size_max = usize::try_from(stream.cached_info().config.max_message_size)
            .ok()
            .filter(|size| *size > 0)
            .unwrap_or(usize::MAX);
        let payload_size_max = info
            .max_payload
            .saturating_sub(HEADER_ROOM_BYTES)
            .min(stream_size_max);
        Ok(JetStreamLog {
            client,
            context,
            stream,
            subject_prefix: config.subject_prefix.clone(),
            payload_size_max,
            urls: config.urls.clone(),
            violations,
        })
    }

    /// A permission violation the server reported for `subject`, taken once.
    fn take_violation(&self, subject: &str) -> Option<String> {
        let mut last = self.violations.lock().ok()?;
        last.take_if(|message| message.contains(subject))
    }

    /// The server URLs this log connected to.
    pub fn urls(&self) -> &str {
        &self.urls
    }

    /// The same connection with another stream and subject layout (created or checked as in
    /// [`JetStreamLog::connect`]): for tools that keep their data apart, such as benchmarks.
    ///
    /// # Errors
    /// As [`JetStreamLog::connect`] for the stream.
    pub async fn with_layout(&self, config: &JetStreamConfig) -> Result<JetStreamLog, LogError> {
        let stream = open_stream(&self.context, config).await?;
        Ok(JetStreamLog {
            stream,
            subject_prefix: config.subject_prefix.clone(),
            ..self.clone()
        })
    }

    /// Appends several events of one case as one atomic batch (nats-server 2.12+, a stream
    /// with `allow_atomic`): all are stored, contiguously, or none. The first carries the
    /// expected position; every one its commit id. Returns the position of the last.
    ///
    /// # Errors
    /// [`LogError::Conflict`] (10071) when the case moved; [`LogError::TransientConflict`]
    /// when the server refuses the batch as holding commit ids it already has (10201: an
    /// earlier attempt landed; resolve by reading the case); [`LogError::Unavailable`];
    /// [`LogError::TooLarge`]; [`LogError::Config`] when the stream does not allow atomic
    /// batches.
    pub async fn append_batch(
        &self,
        case: &CaseId,
        events: &[(CommitId, Bytes)],
        expected_position: u64,
    ) -> Result<u64, LogError> {
        let total = events.len();
        if total == 0 {
            return Err(LogError::Other(
                "an atomic batch needs at least one event".into(),
            ));
        }
        if !self.stream.cached_info().config.allow_atomic_publish {
            return Err(LogError::Config(
                "the stream does not allow atomic batches; set allow_atomic on it".into(),
            ));
        }
        for (_, payload) in events {
            LogError::check_size(payload, self.payload_size_max)?;
        }
        let subject = self.subject(case);
        let batch_id = CommitId::generate().as_uuid().simple().to_string();
        let timeout = |error: &dyn std::fmt::Display| {
            LogError::Unavailable(format!("publishing a batch to {}: {error}", self.urls))
        };
        for (index, (commit_id, payload)) in events.iter().enumerate() {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Batch-Id", batch_id.as_str());
            headers.insert("Nats-Batch-Sequence", (index + 1).to_string().as_str());
            headers.insert(
                async_nats::header::NATS_MESSAGE_ID,
                commit_id.encode(&mut [0; CommitId::TEXT_LENGTH]),
            );
            headers.insert(CONTENT_TYPE, "application/cbor");
            headers.insert(SCHEMA, SCHEMA_HEADER);
            if index == 0 {
                headers.insert(
                    "Nats-Expected-Last-Subject-Sequence",
                    expected_position.to_string().as_str(),
                );
            }
            let last = index + 1 == total;
            if last {
                headers.insert("Nats-Batch-Commit", "1");
            }
            if index == 0 || last {
                // The first and the last are requests: the server answers the first only
                // with an error, the last with the batch's acknowledgement.
                let reply = self
                    .client
                    .request_with_headers(subject.clone(), headers, payload.clone())
                    .await
                    .map_err(|e| timeout(&e))?;
                if last || !reply.payload.is_empty() {
                    return batch_outcome(&reply.payload, expected_position, total);
                }
            } else {
                self.client
                    .publish_with_headers(subject.clone(), headers, payload.clone())
                    .await
                    .map_err(|e| timeout(&e))?;
            }
        }
        Err(LogError::Other(
            "the batch ended without an acknowledgement".into(),
        ))
    }

    /// The underlying client (for tests and tools that need raw access).
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The JetStream context.
    pub fn context(&self) -> &jetstream::Context {
        &self.context
    }

    /// The stream holding the events.
    pub fn stream(&self) -> &stream::Stream {
        &self.stream
    }

    /// Case subjects are `<subject_prefix>.<case id>`.
    pub fn subject_prefix(&self) -> &str {
        &self.subject_prefix
    }

    /// The subject of a case.
    pub fn subject(&self, case: &CaseId) -> String {
        // Once per commit: plain appends, without the formatting machinery.
        let mut subject =
            String::with_capacity(self.subject_prefix.len() + 1 + case.as_str().len());
        subject.push_str(&self.subject_prefix);
        subject.push('.');
        subject.push_str(case.as_str());
        subject
    }

    fn stored(&self, message: &async_nats::jetstream::message::StreamMessage) -> StoredEvent {
        stored_event(
            &self.subject_prefix,
            message.sequence,
            &message.subject,
            message
                .headers
                .get(async_nats::header::NATS_MESSAGE_ID)
                .map(async_nats::HeaderValue::as_str),
            message.payload.clone(),
        )
    }

    async fn direct_get(
        &self,
        get: impl Future<Output = Result<jetstream::message::StreamMessage, stream::DirectGetError>>,
    ) -> Result<Option<StoredEvent>, LogError> {
        match get.await {
            Ok(message) => Ok(Some(self.stored(&message))),
            Err(error) => match error.kind() {
                stream::DirectGetErrorKind::NotFound => Ok(None),
                stream::DirectGetErrorKind::TimedOut | stream::DirectGetErrorKind::Request => {
                    Err(match self.take_violation("$JS.API.DIRECT.GET") {
                        Some(violation) => LogError::PermissionDenied(format!(
                            "reading from {}: {violation}",
                            self.urls
                        )),
                        None => {
                            LogError::Unavailable(format!("reading from {}: {error}", self.urls))
                        }
                    })
                }
                _ => Err(LogError::Other(format!("direct get: {error}"))),
            },
        }
    }

    /// An ordered consumer over `filter` from `after + 1`, as a stream of events.
    async fn ordered(
        &self,
        filter: String,
        after: u64,
        name: Option<String>,
    ) -> Result<EventStream, LogError> {
        let deliver_policy = if after == 0 {
            consumer::DeliverPolicy::All
        } else {
            consumer::DeliverPolicy::ByStartSequence {
                start_sequence: after + 1,
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
            .map_err(|e| {
                LogError::Unavailable(format!("creating a reader on {}: {e}", self.urls))
            })?;
        let messages = consumer
            .messages()
            .await
            .map_err(|e| LogError::Unavailable(format!("reading from {}: {e}", self.urls)))?;
        let prefix = self.subject_prefix.clone();
        Ok(Box::pin(messages.map(move |message| {
            let message =
                message.map_err(|e| LogError::Unavailable(format!("reading events: {e}")))?;
            consumed_event(&prefix, &message)
        })))
    }
}

/// The event a message delivered by a consumer carries: its position from the message's
/// metadata, its commit id from `Nats-Msg-Id`, its case from its subject.
///
/// # Errors
/// [`LogError::Other`] when the message has no JetStream metadata.
pub fn consumed_event(prefix: &str, message: &jetstream::Message) -> Result<StoredEvent, LogError> {
    let info = message
        .info()
        .map_err(|e| LogError::Other(format!("message info: {e}")))?;
    let commit_id = message
        .headers
        .as_ref()
        .and_then(|headers| headers.get(async_nats::header::NATS_MESSAGE_ID))
        .map(async_nats::HeaderValue::as_str);
    Ok(stored_event(
        prefix,
        info.stream_sequence,
        &message.subject,
        commit_id,
        message.payload.clone(),
    ))
}

/// The event a message from the stream carries, its case taken from its subject.
pub fn stored_event(
    prefix: &str,
    position: u64,
    subject: &str,
    commit_id: Option<&str>,
    payload: Bytes,
) -> StoredEvent {
    let case_id = subject
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('.'))
        .unwrap_or(subject)
        .to_owned();
    StoredEvent {
        position,
        case_id,
        commit_id: commit_id.and_then(|id| id.parse().ok()),
        payload,
    }
}

async fn open_stream(
    context: &jetstream::Context,
    config: &JetStreamConfig,
) -> Result<stream::Stream, LogError> {
    match context.get_stream(&config.stream).await {
        Ok(stream) => {
            check_stream(&stream.cached_info().config, config)?;
            Ok(stream)
        }
        Err(error) => {
            let missing = matches!(error.kind(), jetstream::context::GetStreamErrorKind::JetStream(e)
                if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND);
            if !missing {
                return Err(map_api_error(&config.urls, &error.to_string(), &error));
            }
            if !config.create_stream {
                return Err(LogError::Config(format!(
                    "stream {} does not exist and this connection may not create it",
                    config.stream
                )));
            }
            context
                .create_stream(config.stream_config())
                .await
                .map_err(|e| {
                    map_api_error(
                        &config.urls,
                        &format!("creating stream {}", config.stream),
                        &e,
                    )
                })
        }
    }
}

fn map_api_error(urls: &str, what: &str, error: &dyn std::error::Error) -> LogError {
    let text = format!("{what}: {error}");
    if text.to_lowercase().contains("permission") || text.contains("authorization") {
        LogError::PermissionDenied(text)
    } else if text.contains("timed out")
        || text.contains("request error")
        || text.contains("no responders")
    {
        LogError::Unavailable(format!("{urls}: {text}"))
    } else {
        LogError::Other(text)
    }
}

/// Refuses a stream that could drop, lose or fail to serve case events, saying what to change.
fn check_stream(actual: &stream::Config, wanted: &JetStreamConfig) -> Result<(), LogError> {
    let mut problems = Vec::new();
    let subject = format!("{}.*", wanted.subject_prefix);
    if !actual.subjects.iter().any(|s| s == &subject) {
        problems.push(format!(
            "subjects {:?} must include {subject:?}",
            actual.subjects
        ));
    }
    if actual.retention != stream::RetentionPolicy::Limits {
        problems.push("retention must be limits (interest and work-queue retention delete events once consumed)".to_owned());
    }
    if actual.max_messages > 0 || actual.max_bytes > 0 || actual.max_messages_per_subject > 0 {
        problems.push("max_msgs, max_bytes and max_msgs_per_subject must be unlimited (-1): a limit drops old events".to_owned());
    }
    if actual.max_age > Duration::ZERO {
        problems.push(format!(
            "max_age must be 0 (unlimited), not {:?}: an age limit drops old events",
            actual.max_age
        ));
    }
    if actual.storage != stream::StorageType::File {
        problems.push(
            "storage must be file: memory storage loses every event when the server restarts"
                .to_owned(),
        );
    }
    if !actual.deny_delete || !actual.deny_purge {
        problems.push(
            "deny_delete and deny_purge must be true: deleted events break every case's chain"
                .to_owned(),
        );
    }
    if !actual.allow_direct {
        problems.push("allow_direct must be true: cases are read with direct gets".to_owned());
    }
    if actual.sealed {
        problems.push("the stream is sealed and takes no new events".to_owned());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(LogError::Config(format!(
            "stream {} could lose case events: {}; update the stream or use another stream name",
            actual.name,
            problems.join("; ")
        )))
    }
}

/// Reads the server's answer to an atomic batch.
fn batch_outcome(reply: &[u8], expected: u64, total: usize) -> Result<u64, LogError> {
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
        count: Option<usize>,
        #[serde(default)]
        error: Option<ApiError>,
    }
    let ack: Ack = serde_json::from_slice(reply)
        .map_err(|e| LogError::Other(format!("unreadable batch acknowledgement: {e}")))?;
    match ack.error {
        None if ack.count.unwrap_or(total) == total && ack.seq > 0 => Ok(ack.seq),
        None => Err(LogError::Other(format!(
            "the batch acknowledgement counts {:?} of {total} events",
            ack.count
        ))),
        Some(error) => Err(match error.err_code {
            10071 => LogError::Conflict {
                expected,
                actual: error
                    .description
                    .rsplit(' ')
                    .next()
                    .and_then(|n| n.parse().ok()),
            },
            10164 | 10201 => LogError::TransientConflict(error.description),
            10054 => LogError::TooLarge { size: 0, limit: 0 },
            _ => LogError::Other(format!(
                "batch refused ({}): {}",
                error.err_code, error.description
            )),
        }),
    }
}

fn map_publish_error(
    error: &jetstream::context::PublishError,
    expected: u64,
    urls: &str,
) -> LogError {
    let api_error = error
        .source()
        .and_then(|source| source.downcast_ref::<jetstream::Error>());
    match error.kind() {
        PublishErrorKind::WrongLastSequence => {
            // "wrong last sequence: <actual>"
            let actual = api_error.and_then(|e| {
                e.to_string().rsplit(':').next().and_then(|n| {
                    n.trim()
                        .trim_end_matches(|c: char| !c.is_ascii_digit())
                        .parse()
                        .ok()
                })
            });
            LogError::Conflict { expected, actual }
        }
        PublishErrorKind::MaxPayloadExceeded => LogError::TooLarge { size: 0, limit: 0 },
        PublishErrorKind::StreamNotFound
        | PublishErrorKind::TimedOut
        | PublishErrorKind::BrokenPipe
        | PublishErrorKind::MaxAckPending => {
            LogError::Unavailable(format!("publishing to {urls}: {error}"))
        }
        _ => match api_error.map(jetstream::Error::error_code) {
            Some(jetstream::ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT) => {
                LogError::TransientConflict(error.to_string())
            }
            Some(jetstream::ErrorCode::STREAM_WRONG_LAST_SEQUENCE) => LogError::Conflict {
                expected,
                actual: None,
            },
            Some(jetstream::ErrorCode(10054)) => LogError::TooLarge { size: 0, limit: 0 },
            Some(jetstream::ErrorCode(10008 | 10076)) => {
                LogError::Unavailable(format!("publishing to {urls}: {error}"))
            }
            _ => LogError::Other(format!("publish: {error}")),
        },
    }
}

impl EventLog for JetStreamLog {
    async fn append(
        &self,
        case: &CaseId,
        commit_id: CommitId,
        expected_position: u64,
        payload: Bytes,
    ) -> Result<Appended, LogError> {
        LogError::check_size(&payload, self.payload_size_max)?;
        let size = payload.len();
        let message = jetstream::message::PublishMessage::build()
            .payload(payload)
            .message_id(commit_id.encode(&mut [0; CommitId::TEXT_LENGTH]))
            .expected_last_subject_sequence(expected_position)
            .header(CONTENT_TYPE, "application/cbor")
            .header(SCHEMA, SCHEMA_HEADER);
        let subject = async_nats::Subject::from(self.subject(case));
        let refine = |error: LogError| match error {
            LogError::TooLarge { .. } => LogError::TooLarge {
                size,
                limit: self.payload_size_max,
            },
            LogError::Unavailable(_) if let Some(violation) = self.take_violation(&subject) => {
                LogError::PermissionDenied(format!("publishing to {subject}: {violation}"))
            }
            other => other,
        };
        let ack = self
            .context
            .send_publish(subject.clone(), message)
            .await
            .map_err(|e| refine(map_publish_error(&e, expected_position, &self.urls)))?
            .await
            .map_err(|e| refine(map_publish_error(&e, expected_position, &self.urls)))?;
        Ok(Appended {
            position: ack.sequence,
            duplicate: ack.duplicate,
        })
    }

    async fn append_batch(
        &self,
        case: &CaseId,
        events: &[(CommitId, Bytes)],
        expected_position: u64,
    ) -> Result<u64, LogError> {
        JetStreamLog::append_batch(self, case, events, expected_position).await
    }

    async fn last_event(&self, case: &CaseId) -> Result<Option<StoredEvent>, LogError> {
        self.direct_get(self.stream.direct_get_last_for_subject(self.subject(case)))
            .await
    }

    async fn event_after(
        &self,
        case: &CaseId,
        position: u64,
    ) -> Result<Option<StoredEvent>, LogError> {
        self.direct_get(
            self.stream
                .direct_get_next_for_subject(self.subject(case), Some(position + 1)),
        )
        .await
    }

    async fn event_at(&self, position: u64) -> Result<Option<StoredEvent>, LogError> {
        self.direct_get(self.stream.direct_get(position)).await
    }

    async fn history(&self, case: &CaseId, after_position: u64) -> Result<EventStream, LogError> {
        let Some(last) = self.last_event(case).await? else {
            return Ok(Box::pin(futures::stream::empty()));
        };
        let last = last.position;
        // Short histories (most loads) are read with direct gets: a consumer costs more round
        // trips than a few events. Long ones go on through an ordered consumer, which streams
        // them without a request per event.
        let mut head = Vec::new();
        let mut position = after_position;
        while head.len() < DIRECT_READS && position < last {
            match self.event_after(case, position).await? {
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
        let name = format!("wfstate-read-{}", CommitId::generate());
        let events = self
            .ordered(self.subject(case), position, Some(name.clone()))
            .await?;
        // The ordered consumer would wait for more: end right after the last event known at
        // the start, without asking it for another, and delete the consumer.
        let mut events = Some(events);
        let mut cleanup = Some((self.stream.clone(), name));
        let tail = futures::stream::poll_fn(move |cx| {
            let Some(reader) = events.as_mut() else {
                return std::task::Poll::Ready(None);
            };
            let event = std::task::ready!(reader.poll_next_unpin(cx));
            let done = match &event {
                Some(Ok(event)) => event.position >= last,
                Some(Err(_)) | None => true,
            };
            if done {
                events = None;
                if let Some((stream, name)) = cleanup.take() {
                    tokio::spawn(async move { stream.delete_consumer(&name).await });
                }
            }
            std::task::Poll::Ready(event)
        });
        Ok(Box::pin(futures::stream::iter(head).chain(tail)))
    }

    async fn follow(&self, after_position: u64) -> Result<EventStream, LogError> {
        self.ordered(format!("{}.*", self.subject_prefix), after_position, None)
            .await
    }

    async fn last_position(&self) -> Result<u64, LogError> {
        let info = self
            .stream
            .get_info()
            .await
            .map_err(|e| map_api_error(&self.urls, "stream info", &e))?;
        Ok(info.state.last_sequence)
    }

    fn payload_size_max(&self) -> usize {
        self.payload_size_max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_compare() {
        assert_eq!(parse_version("2.15.1"), Some((2, 15, 1)));
        assert_eq!(parse_version("v2.12.0-beta.1"), Some((2, 12, 0)));
        assert!(parse_version("2.9.10").unwrap() < SERVER_VERSION_MIN);
        assert_eq!(parse_version("garbage"), None);
    }

    #[test]
    fn the_created_stream_passes_its_own_check() {
        let config = JetStreamConfig::new("nats://127.0.0.1:4222");
        assert_eq!(check_stream(&config.stream_config(), &config), Ok(()));
    }

    #[test]
    fn streams_that_could_drop_events_are_refused_with_what_to_change() {
        let config = JetStreamConfig::new("nats://127.0.0.1:4222");
        let mut limited = config.stream_config();
        limited.max_messages_per_subject = 10;
        limited.max_age = Duration::from_mins(1);
        limited.storage = stream::StorageType::Memory;
        let LogError::Config(message) = check_stream(&limited, &config).unwrap_err() else {
            panic!("not a config error")
        };
        for expected in ["max_msgs_per_subject", "max_age", "memory storage"] {
            assert!(message.contains(expected), "{message}");
        }
        let mut interest = config.stream_config();
        interest.retention = stream::RetentionPolicy::Interest;
        assert!(check_stream(&interest, &config).is_err());
    }

    #[test]
    fn stored_events_carry_case_and_commit_id() {
        let commit = CommitId::generate();
        let event = stored_event(
            "wfstate.case",
            7,
            "wfstate.case.c1",
            Some(&commit.to_string()),
            Bytes::from_static(b"x"),
        );
        assert_eq!(
            (event.position, event.case_id.as_str(), event.commit_id),
            (7, "c1", Some(commit))
        );
    }
}

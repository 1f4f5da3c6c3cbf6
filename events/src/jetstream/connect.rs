//! Connecting: credentials, TLS, the server version check, and the permission violations the
//! server reports out of band.

use std::sync::{Arc, Mutex};

use async_nats::{ConnectOptions, ServerAddr, jetstream};

use super::config::{Auth, JetStreamConfig};
use super::stream::{open_stream, stream_partitions};
use super::{HEADER_ROOM_BYTES, JetStreamLog, SERVER_VERSION_MIN};
use crate::error::{LogError, LogErrorKind};

/// The last "Permissions Violation" the server reported on this connection. The server answers
/// a forbidden publish with an asynchronous error, not a reply, so a request that then times
/// out is matched against it.
pub(crate) type Violations = Arc<Mutex<Option<String>>>;

/// Parses `"2.15.1"` (and `"2.12.0-beta"`) into numbers.
pub(crate) fn parse_version(version: &str) -> Option<(u64, u64, u64)> {
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

fn config_error(message: String) -> LogError {
    LogError::new(LogErrorKind::Config, message)
}

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
                    config_error(format!(
                        "cannot read the creds file {}; check the path given with --creds",
                        path.display()
                    ))
                    .with_source(e)
                })?
        }
        Auth::NkeyFile(path) => {
            let seed = tokio::fs::read_to_string(path).await.map_err(|e| {
                config_error(format!(
                    "cannot read the nkey file {}; check the path given with --nkey",
                    path.display()
                ))
                .with_source(e)
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
            return Err(config_error(
                "a TLS client certificate needs both its certificate and its key (--tls-cert \
                 and --tls-key)"
                    .into(),
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

/// What a failed connection means: refused credentials and a failed TLS handshake are for the
/// user to fix; anything else may pass.
fn connect_failure(urls: &str, error: async_nats::ConnectError) -> LogError {
    let (kind, message) = match error.kind() {
        async_nats::ConnectErrorKind::AuthorizationViolation
        | async_nats::ConnectErrorKind::Authentication => (
            LogErrorKind::PermissionDenied,
            format!("{urls} refused the credentials; check the user, token, creds or nkey"),
        ),
        async_nats::ConnectErrorKind::ServerParse => (
            LogErrorKind::Config,
            format!("{urls} is not a NATS server, or a URL is malformed"),
        ),
        _ if is_tls_failure(&error) => (
            LogErrorKind::Config,
            format!("TLS with {urls} failed; check the certificates"),
        ),
        _ => (
            LogErrorKind::Unavailable,
            format!("cannot connect to {urls}; is the server running?"),
        ),
    };
    LogError::new(kind, message).with_source(error)
}

impl JetStreamLog {
    /// Connects, checks the server version, and creates or checks the stream.
    ///
    /// # Errors
    /// [`LogErrorKind::Unavailable`] when no server answers within `connect_timeout`;
    /// [`LogErrorKind::Config`] for a malformed URL, an old server or a stream that could
    /// drop events; [`LogErrorKind::PermissionDenied`] when the credentials are refused.
    pub async fn connect(config: &JetStreamConfig) -> Result<JetStreamLog, LogError> {
        let addresses: Vec<ServerAddr> = config
            .urls
            .split(',')
            .map(|url| {
                url.trim().parse().map_err(|e| {
                    config_error(format!(
                        "invalid server URL {url:?}; use nats://HOST:PORT (or tls://)"
                    ))
                    .with_source(e)
                })
            })
            .collect::<Result<_, _>>()?;
        let violations = Violations::default();
        let options = connect_options(config, Arc::clone(&violations)).await?;
        let client = tokio::time::timeout(config.connect_timeout * 2, options.connect(addresses))
            .await
            .map_err(|elapsed| {
                LogError::new(
                    LogErrorKind::TimedOut,
                    format!("no answer from {} within the connect timeout", config.urls),
                )
                .with_source(elapsed)
            })?
            .map_err(|e| connect_failure(&config.urls, e))?;
        let info = client.server_info();
        let version = parse_version(&info.version);
        if version.is_none_or(|version| version < SERVER_VERSION_MIN) {
            return Err(config_error(format!(
                "nats-server {} is too old; wfstate needs {}.{}.{} or newer",
                info.version, SERVER_VERSION_MIN.0, SERVER_VERSION_MIN.1, SERVER_VERSION_MIN.2
            )));
        }
        let context = jetstream::ContextBuilder::new()
            .timeout(config.request_timeout)
            .build(client.clone());
        // Three replicas survive the loss of one server; a single server has nowhere to put
        // more than one.
        let replicas = config
            .replicas
            .unwrap_or(if info.cluster.is_some() { 3 } else { 1 });
        let stream = match open_stream(&context, config, replicas, &violations).await {
            // A server without JetStream answers no JetStream request: that is for its
            // operator to change, not a wait. (A server that says it has none may still pass
            // requests on to others in its cluster; then the request succeeds.)
            Err(error) if !info.jetstream && error.kind() != LogErrorKind::Config => {
                tracing::debug!(%error, "the stream request failed on a server without JetStream");
                return Err(config_error(format!(
                    "the server at {} does not run JetStream, which wfstate stores its events \
                     in; start nats-server with -js (or a jetstream {{}} block in its \
                     configuration), or use the embedded store (no --nats)",
                    config.urls
                )));
            }
            stream => stream?,
        };
        let partitions = partitions_of(&stream, config)?;
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
            partitions,
            payload_size_max,
            request_timeout: config.request_timeout,
            consumers_refused: Arc::default(),
            replicas,
            urls: config.urls.clone(),
            violations,
        })
    }

    /// The same connection with another stream and subject layout (created or checked as in
    /// [`JetStreamLog::connect`]): for tools that keep their data apart, such as benchmarks.
    ///
    /// # Errors
    /// As [`JetStreamLog::connect`] for the stream.
    pub async fn with_layout(&self, config: &JetStreamConfig) -> Result<JetStreamLog, LogError> {
        let replicas = config.replicas.unwrap_or(self.replicas);
        let stream = open_stream(&self.context, config, replicas, &self.violations).await?;
        let partitions = partitions_of(&stream, config)?;
        Ok(JetStreamLog {
            stream,
            partitions,
            replicas,
            subject_prefix: config.subject_prefix.clone(),
            ..self.clone()
        })
    }

    /// A request failed or timed out where the store asked through async-nats (a KV bucket, a
    /// projector's consumer): the permission violation the server last reported on this
    /// connection, if there was one, as [`LogErrorKind::PermissionDenied`] for `what`.
    pub fn refusal(&self, what: &str) -> Option<LogError> {
        violation(&self.violations, Refused::Any, what)
    }

    /// A request to a subject failed or timed out: the permission violation the server
    /// reported for that very subject, if there was one.
    pub(crate) fn permission_error(&self, subject: Refused<'_>, what: &str) -> Option<LogError> {
        violation(&self.violations, subject, what)
    }
}

/// Which refused subject explains a failed request.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Refused<'a> {
    /// This subject, exactly: a publish.
    Exact(&'a str),
    /// This subject or one below it (`subject.…`): a JetStream API request, whose subject
    /// may go on with a consumer or a filter.
    Under(&'a str),
    /// Whatever the server refused last: where the request's subject is not known.
    Any,
}

impl Refused<'_> {
    /// Whether the server's violation `message` names a subject this request could have
    /// sent to. The message quotes it: `Permissions Violation for Publish to "x.y"`. A
    /// refusal of another subject never explains this request (a request that timed out may
    /// still have landed).
    fn explains(self, message: &str) -> bool {
        let refused = message
            .split_once('"')
            .and_then(|(_, rest)| rest.split_once('"'))
            .map(|(subject, _)| subject);
        match (self, refused) {
            (Refused::Any, _) => true,
            (_, None) => false,
            (Refused::Exact(subject), Some(refused)) => refused == subject,
            (Refused::Under(subject), Some(refused)) => {
                refused == subject
                    || refused
                        .strip_prefix(subject)
                        .is_some_and(|rest| rest.starts_with('.'))
            }
        }
    }
}

/// The permission violation the server reported for a request to `subject`, taken once.
pub(crate) fn violation(
    violations: &Violations,
    subject: Refused<'_>,
    what: &str,
) -> Option<LogError> {
    let violation = violations
        .lock()
        .ok()?
        .take_if(|message| subject.explains(message))?;
    Some(LogError::new(
        LogErrorKind::PermissionDenied,
        format!(
            "{what}: the server refused it ({violation}); the credentials in use may not do this"
        ),
    ))
}

/// The partitions of a stream that passed its check.
fn partitions_of(
    stream: &jetstream::stream::Stream,
    config: &JetStreamConfig,
) -> Result<Option<u32>, LogError> {
    stream_partitions(&stream.cached_info().config, &config.subject_prefix)
        .map_err(|problem| config_error(format!("stream {}: {problem}", config.stream)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_violation_explains_only_a_request_to_its_own_subject() {
        let refused = r#"Permissions Violation for Publish to "wfstate.case.ab""#;
        assert!(Refused::Exact("wfstate.case.ab").explains(refused));
        // A refusal of a longer subject is not why a publish to its prefix timed out: that
        // publish may have landed.
        assert!(!Refused::Exact("wfstate.case.a").explains(refused));
        assert!(!Refused::Exact("wfstate.case.abc").explains(refused));
        assert!(!Refused::Under("wfstate.case.a").explains(refused));
        assert!(Refused::Under("wfstate.case").explains(refused));
        assert!(Refused::Any.explains(refused));
        let api =
            r#"Permissions Violation for Publish to "$JS.API.DIRECT.GET.WFSTATE.wfstate.case.x""#;
        assert!(Refused::Under("$JS.API.DIRECT.GET.WFSTATE").explains(api));
        assert!(!Refused::Under("$JS.API.DIRECT.GET.WFSTATE2").explains(api));
        assert!(!Refused::Under("$JS.API.DIRECT.GET.WFS").explains(api));
        assert!(!Refused::Exact("x").explains("Permissions Violation without a subject"));
    }

    #[test]
    fn versions_parse_and_compare() {
        assert_eq!(parse_version("2.15.1"), Some((2, 15, 1)));
        assert_eq!(parse_version("v2.12.0-beta.1"), Some((2, 12, 0)));
        assert!(parse_version("2.9.10").unwrap() < SERVER_VERSION_MIN);
        assert_eq!(parse_version("garbage"), None);
    }
}

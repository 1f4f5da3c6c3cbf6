//! [`JetStreamConfig`]: where the JetStream log is, how to authenticate, and the stream the
//! store creates.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::stream;

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
#[non_exhaustive]
pub struct Tls {
    /// A CA certificate (PEM) to trust.
    pub ca: Option<PathBuf>,
    /// A client certificate (PEM), with `key`.
    pub cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    pub key: Option<PathBuf>,
}

/// Where the JetStream log is and how it is laid out. Start from [`JetStreamConfig::new`]
/// and set the fields that differ.
#[derive(Debug, Clone)]
#[non_exhaustive]
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
    /// Replicas of the stream (and of the projector's buckets). `None`: three when the server
    /// is part of a cluster, one on a single server. An existing stream with fewer is refused.
    pub replicas: Option<usize>,
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
    /// The defaults for `urls`: stream `WFSTATE`, subjects `wfstate.case.*`, three replicas on
    /// a cluster and one on a single server, a two-minute duplicate window, 5 s timeouts.
    pub fn new(urls: impl Into<String>) -> Self {
        JetStreamConfig {
            urls: urls.into(),
            auth: Auth::None,
            tls: Tls::default(),
            stream: "WFSTATE".into(),
            subject_prefix: "wfstate.case".into(),
            replicas: None,
            duplicate_window: Duration::from_mins(2),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            create_stream: true,
        }
    }

    /// The stream configuration the store creates, with `replicas` replicas.
    pub(crate) fn stream_config(&self, replicas: usize) -> stream::Config {
        stream::Config {
            name: self.stream.clone(),
            subjects: vec![format!("{}.*", self.subject_prefix)],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            num_replicas: replicas,
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

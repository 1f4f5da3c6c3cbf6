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
    /// Partitions of a stream this store creates: the server stores each case's events under
    /// `<subject_prefix>.<partition>.<case id>` (its `{{partition(P,1)}}` subject mapping), so
    /// that projectors sharing the work each read only their partitions. Fixed when the
    /// stream is created. `None`: what an existing stream has; a new one is not partitioned.
    pub partitions: Option<u32>,
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
            partitions: None,
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
            subject_transform: self
                .partitions
                .map(|count| partition_transform(&self.subject_prefix, count)),
            ..stream::Config::default()
        }
    }
}

/// The subject mapping of a stream of `count` partitions: `<prefix>.<id>` is stored as
/// `<prefix>.<partition>.<id>`.
pub(crate) fn partition_transform(prefix: &str, count: u32) -> stream::SubjectTransform {
    stream::SubjectTransform {
        source: format!("{prefix}.*"),
        destination: format!("{prefix}.{{{{partition({count},1)}}}}.{{{{wildcard(1)}}}}"),
    }
}

/// The partition the server stores a case id under in a stream of `count` partitions: its
/// `{{partition}}` mapping, 32-bit FNV-1a of the id's bytes modulo `count`. Fixed by the
/// server, and the same for every client.
pub fn partition_of(case_id: &str, count: u32) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in case_id.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash % count.max(1)
}

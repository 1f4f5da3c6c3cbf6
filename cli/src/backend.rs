//! Opens the store the arguments name: JetStream with `--nats`, else the embedded log.

use wfstate_events::{
    Auth, EmbeddedConfig, EmbeddedLog, EventLog, JetStreamConfig, JetStreamLog, LogErrorKind, Tls,
};
use wfstate_projector::{
    EmbeddedProjector, EmbeddedTree, EmbeddedViews, JetStreamProjector, JetStreamTree,
    KvViewReader, Projector, ProjectorConfig, ProjectorError, TreeStore, ViewScan, ViewSource,
};

use crate::StoreArgs;
use crate::error::CliError;

/// The log in use.
pub enum Store {
    Embedded(EmbeddedLog),
    JetStream(Box<JetStreamLog>),
}

/// A log with its projector.
pub trait Backend: EventLog + Clone {
    /// The projector over this log.
    type Projector: Projector + Send + Sync + 'static;

    /// The views as a reader that may not write sees them.
    type Views: ViewSource + ViewScan + Send + Sync + 'static;

    /// Opens the projector.
    fn projector(&self) -> impl Future<Output = Result<Self::Projector, ProjectorError>> + Send;

    /// Opens the views to read only, as the projector left them.
    fn views(&self) -> impl Future<Output = Result<Self::Views, ProjectorError>> + Send;

    /// Where the log's tree and checkpoints are kept.
    type Tree: TreeStore;

    /// Opens the log's tree, to extend it (`writable`) or to read it.
    fn tree(&self, writable: bool) -> impl Future<Output = Result<Self::Tree, CliError>> + Send;

    /// The store, named for a person: the file, or the stream and its server.
    fn name(&self) -> String;

    /// How many reads a server of many clients (`serve`) runs at once: each embedded read
    /// holds a blocking SQLite thread and its allocator's caches, so few; a JetStream read
    /// mostly waits on the network, so more.
    const CONCURRENT_READS: usize;
}

impl Backend for EmbeddedLog {
    type Projector = EmbeddedProjector;

    type Views = EmbeddedViews;

    async fn projector(&self) -> Result<EmbeddedProjector, ProjectorError> {
        EmbeddedProjector::open(self, "wfstate-projector", 512)
    }

    async fn views(&self) -> Result<EmbeddedViews, ProjectorError> {
        EmbeddedViews::open(self)
    }

    type Tree = EmbeddedTree;

    async fn tree(&self, writable: bool) -> Result<EmbeddedTree, CliError> {
        Ok(if writable {
            EmbeddedTree::open(self)?
        } else {
            EmbeddedTree::open_read_only(self)?
        })
    }

    fn name(&self) -> String {
        format!("the embedded store {}", self.path().display())
    }

    // Measured with examples/console_load at 100,000 cases: 8 against 32 kept the latencies
    // and took peak memory from 268-380 to 158-183 MiB; 4 doubled the p99.
    const CONCURRENT_READS: usize = 8;
}

impl Backend for JetStreamLog {
    type Projector = JetStreamProjector;

    type Views = KvViewReader;

    async fn projector(&self) -> Result<JetStreamProjector, ProjectorError> {
        JetStreamProjector::open(self, ProjectorConfig::for_stream(self.stream_name())).await
    }

    async fn views(&self) -> Result<KvViewReader, ProjectorError> {
        KvViewReader::open(self, &ProjectorConfig::for_stream(self.stream_name())).await
    }

    type Tree = JetStreamTree;

    async fn tree(&self, writable: bool) -> Result<JetStreamTree, CliError> {
        Ok(JetStreamTree::open(self, writable).await?)
    }

    fn name(&self) -> String {
        format!("the stream {} at {}", self.stream_name(), self.urls())
    }

    // Measured as above: 8 instead of 32 took the p99 of a case page from 0.36 to 0.6-0.8 s.
    const CONCURRENT_READS: usize = 32;
}

fn auth(args: &StoreArgs) -> Result<Auth, CliError> {
    Ok(
        match (
            &args.user,
            &args.password,
            &args.token,
            &args.creds,
            &args.nkey,
        ) {
            (None, None, None, None, None) => Auth::None,
            (Some(user), Some(password), None, None, None) => Auth::UserPassword {
                user: user.clone(),
                password: password.clone(),
            },
            (None, None, Some(token), None, None) => Auth::Token(token.clone()),
            (None, None, None, Some(creds), None) => Auth::CredsFile(creds.clone()),
            (None, None, None, None, Some(nkey)) => Auth::NkeyFile(nkey.clone()),
            (Some(_), None, ..) | (None, Some(_), ..) => {
                return Err(CliError::bad_input("--user and --password go together"));
            }
            _ => {
                return Err(CliError::bad_input(
                    "give one kind of credentials: --user/--password, --token, --creds or --nkey",
                ));
            }
        },
    )
}

/// What a command does with the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reads only: the embedded file is opened to read only.
    Read,
    /// Writes.
    Write,
    /// Writes when it may (a projector's catch-up first), else reads.
    WriteOrRead,
}

pub async fn open(args: &StoreArgs, access: Access) -> Result<Store, CliError> {
    // An empty URL (`WFSTATE_NATS_URL=`) is no URL: the embedded store.
    let Some(urls) = args.nats.as_ref().filter(|urls| !urls.trim().is_empty()) else {
        let mut config = EmbeddedConfig::new(&args.data_dir);
        // A command that reads never creates a store, even one that would catch views up.
        let exists = args.data_dir.join(wfstate_events::DATABASE_FILE).exists();
        config.read_only = access == Access::Read || (access == Access::WriteOrRead && !exists);
        let log = match EmbeddedLog::open(&config) {
            Err(error)
                if access == Access::WriteOrRead
                    && error.kind() == LogErrorKind::PermissionDenied =>
            {
                config.read_only = true;
                EmbeddedLog::open(&config)?
            }
            log => log?,
        };
        return Ok(Store::Embedded(log));
    };
    let mut config = JetStreamConfig::new(urls.clone());
    config.auth = auth(args)?;
    config.tls = Tls::default();
    config.tls.ca.clone_from(&args.tls_ca);
    config.tls.cert.clone_from(&args.tls_cert);
    config.tls.key.clone_from(&args.tls_key);
    config.connect_timeout = args.timeout;
    config.request_timeout = args.timeout;
    config.replicas = args.replicas.map(usize::from);
    config.partitions = args.stream_partitions;
    config.create_stream = access == Access::Write;
    if args.stream != config.stream {
        config.subject_prefix = format!("{}.case", args.stream.to_lowercase());
        config.stream.clone_from(&args.stream);
    }
    Ok(Store::JetStream(Box::new(
        JetStreamLog::connect(&config).await?,
    )))
}

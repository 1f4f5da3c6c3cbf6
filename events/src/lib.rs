//! The event log of wfstate: the [`EventLog`] trait, the JetStream and embedded backends (and
//! an in-memory one for tests), and the commit client ([`Workspace`]) that turns a case's buffered mutations into exactly one
//! stored event.
//!
//! ```no_run
//! use wfstate_events::{JetStreamConfig, JetStreamLog, Workspace};
//! use wfstate_store::{CaseId, Mutation};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let log = JetStreamLog::connect(&JetStreamConfig::new("nats://127.0.0.1:4222")).await?;
//! let workspace = Workspace::new(log);
//! let (mut case, receipt) =
//!     workspace.create(CaseId::generate(), [Mutation::set_key("order", 42)]).await?;
//! case.buffer(Mutation::IncrementStepCount);
//! let next = workspace.commit(&mut case).await?;
//! assert_eq!(next.version, receipt.version.next());
//! # Ok(())
//! # }
//! ```

mod client;
mod embedded;
mod error;
mod jetstream;
mod log;
mod memory;

pub use client::{
    CaseHandle, Draft, Environment, RetryPolicy, SystemEnvironment, Transacted, Workspace,
};
pub use embedded::{DATABASE_FILE, EmbeddedConfig, EmbeddedLog, SQLITE_SCHEMA_VERSION};
pub use error::{BoxError, CommitError, CommitErrorKind, LogError, LogErrorKind, Misuse};
pub use jetstream::{
    Auth, DirectEntry, JetStreamConfig, JetStreamLog, SERVER_VERSION_MIN, Tls, partition_of,
};
pub use log::{AppendOutcome, EventLog, EventStream, StoredEvent};
pub use memory::MemoryLog;

//! The event log of wfstate: the [`EventLog`] trait, the JetStream backend and the commit
//! client ([`Workspace`]) that turns a case's buffered mutations into exactly one stored event.
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
//! case.case_mut().buffer(Mutation::IncrementStepCount);
//! let next = workspace.commit(&mut case).await?;
//! assert_eq!(next.version, receipt.version + 1);
//! # Ok(())
//! # }
//! ```

pub mod client;
pub mod embedded;
pub mod jetstream;
pub mod log;

pub use client::{CaseHandle, CommitError, CommitErrorKind, RetryPolicy, Transacted, Workspace};
pub use embedded::{EmbeddedConfig, EmbeddedLog};
pub use jetstream::{Auth, JetStreamConfig, JetStreamLog, Tls};
pub use log::{Appended, EventLog, EventStream, LogError, StoredEvent};

//! The pure domain of wfstate: case state, mutations, validation, apply, events and hashes.
//!
//! No I/O, no async: every other part of wfstate (the event log, the projector, replay,
//! audit) folds events with the functions here, so a writer and a replay reach the same
//! bytes.
//!
//! ```
//! use wfstate_store::{Case, CaseId, CommitId, CommitMeta, Mutation, ScopeId, TokenId, Value};
//!
//! let mut case = Case::new(CaseId::new("order-42")?);
//! case.buffer(Mutation::set_key("amount", 42))
//!     .buffer(Mutation::add_token(TokenId::new("t1")?, 0, ScopeId::root(), Value::Null))
//!     .update_ctx(|ctx| {
//!         ctx.insert("paid".into(), Value::Bool(true));
//!     });
//! let meta = CommitMeta {
//!     commit_id: CommitId::generate(),
//!     committed_at_ms: 1_700_000_000_000,
//!     writer: "doc-example".into(),
//! };
//! let prepared = case.prepare_commit(meta)?;
//! // ... append `prepared.payload()` to the event log, then:
//! let payload = prepared.payload().to_vec();
//! case.complete(prepared)?;
//! assert_eq!(case.state().version, 1);
//!
//! // Replay folds the stored bytes and reaches the very same state.
//! let mut replayed = Case::new(CaseId::new("order-42")?);
//! replayed.apply_payload(&payload)?;
//! assert_eq!(replayed.state(), case.state());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod apply;
mod case;
pub mod checkpoint;
mod codec;
mod error;
mod event;
mod hash;
mod id;
mod limits;
pub mod merkle;
mod mutation;
mod position;
mod receipt;
mod state;
mod validate;
mod value;

#[cfg(test)]
mod rules_tests;

#[cfg(test)]
mod prop_tests;

#[cfg(test)]
mod vector_tests;

pub use case::{Case, CommitMeta, PreparedCommit, Tentative};
pub use error::{
    Code, DecodeError, FoldError, HashError, IdError, InvariantError, PrepareError, Reason,
    StaleCommit, UnknownCode, ValidationError, ValidationErrors,
};
pub use event::{Event, SCHEMA_VERSION};
pub use hash::Hash;
pub use id::{CaseId, CommitId, ID_LENGTH_MAX, ScopeId, TokenId};
pub use limits::Limits;
pub use mutation::{Mutation, TokenUpdate};
pub use position::{Position, Version};
pub use receipt::Receipt;
pub use state::{CaseState, CaseStatus, Scope, ScopeStatus, Token, TokenStatus};
pub use validate::validate;
pub use value::{Map, Value};

//! [`View`]: the materialised state of one case, as the projector stores it.

use serde::{Deserialize, Serialize};
use wfstate_store::{Case, CaseState, Code, Hash, InvariantError, Position};

/// The schema version of stored views.
pub const VIEW_SCHEMA: u64 = 1;

/// Why a case's view is not healthy: the first event of its history that could not be applied.
/// The case is halted there: its later events are held behind it (acknowledged, counted, not
/// applied) while every other case goes on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantine {
    /// The bad event's position.
    pub position: Position,
    /// What kind of problem it is.
    pub code: Code,
    /// What is wrong, in words.
    pub reason: String,
    /// Later events of the case held behind the bad one.
    #[serde(default)]
    pub held: u64,
    /// The position of the last event held (zero when none is).
    #[serde(default)]
    pub last_held: Position,
}

/// The materialised state of one case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct View {
    /// Always [`VIEW_SCHEMA`].
    pub schema: u64,
    /// The position of the last event applied to `state`. Events at or below it are skipped.
    pub position: Position,
    /// The hash of the last event applied.
    pub last_event_hash: Hash,
    /// The state after the last applied event.
    pub state: CaseState,
    /// Set once an event of the case could not be applied: the view is then not healthy.
    pub quarantine: Option<Quarantine>,
}

impl View {
    /// A view of `case` after the event at `position`.
    pub fn of(case: Case, position: Position) -> View {
        let (state, last_event_hash) = case.into_parts();
        View {
            schema: VIEW_SCHEMA,
            position,
            last_event_hash,
            state,
            quarantine: None,
        }
    }

    /// Whether every event of the case so far was applied.
    pub fn is_healthy(&self) -> bool {
        self.quarantine.is_none()
    }

    /// The case handle to fold further events into.
    pub fn to_case(&self) -> Case {
        Case::from_parts(self.state.clone(), self.last_event_hash)
    }

    /// The stored bytes.
    ///
    /// # Panics
    /// Never: a view always encodes into a `Vec`.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        ciborium::into_writer(self, &mut bytes).expect("a view always encodes");
        bytes
    }

    /// Decodes stored bytes, checking the schema and the state's invariants.
    ///
    /// # Errors
    /// [`ViewError`], naming what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<View, ViewError> {
        let view: View = ciborium::from_reader(bytes)
            .map_err(|error| ViewError::Undecodable(Box::new(error)))?;
        if view.schema != VIEW_SCHEMA {
            return Err(ViewError::UnknownSchema { found: view.schema });
        }
        view.state.check_invariants()?;
        Ok(view)
    }
}

/// Why stored bytes are not a usable view.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ViewError {
    /// The bytes are not CBOR of a view.
    #[error("the view cannot be decoded")]
    Undecodable(#[source] wfstate_events::BoxError),
    /// Written by a view schema this build does not know.
    #[error("unknown view schema {found}; this build reads version {VIEW_SCHEMA}")]
    UnknownSchema {
        /// The schema found.
        found: u64,
    },
    /// The state breaks an invariant every applied state keeps.
    #[error(transparent)]
    Inconsistent(#[from] InvariantError),
}

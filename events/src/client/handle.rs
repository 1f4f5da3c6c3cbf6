//! [`CaseHandle`]: a case loaded or created through a [`crate::Workspace`], the position of its
//! last event, and what it sent whose outcome is not known yet.

use std::collections::HashMap;

use bytes::Bytes;
use wfstate_store::{Case, CommitId, Event, Hash, Position, PreparedCommit, Tentative};

/// A case loaded or created through a [`crate::Workspace`]: the store's [`Case`] plus the
/// position of its last event.
#[derive(Debug)]
pub struct CaseHandle {
    pub(crate) case: Case,
    pub(crate) position: Position,
    /// What was sent and may have landed: the next commit resolves it before anything else.
    pub(crate) in_doubt: Option<InDoubt>,
    /// The commit ids of the events this handle folded from the log (loaded or refreshed),
    /// and where they are: a commit re-sent with one of them (by a process that restarted)
    /// already landed, whether or not the log still remembers the id.
    pub(crate) folded: HashMap<CommitId, Position>,
}

/// Events sent whose outcome is unknown: they are sent again, as they were, before the handle
/// takes another commit.
#[derive(Debug)]
pub(crate) enum InDoubt {
    /// One commit.
    One(PreparedCommit),
    /// Several events of one multi-event append (`commit_many`).
    Many(PendingMany),
}

/// The events of a multi-event append, each chained to the one before, and the case as they
/// leave it.
#[derive(Debug)]
pub(crate) struct PendingMany {
    pub events: Vec<(Event, Hash, Bytes)>,
    pub after: Case,
    pub expected: Position,
}

impl CaseHandle {
    pub(crate) fn new(case: Case, position: Position) -> Self {
        CaseHandle {
            case,
            position,
            in_doubt: None,
            folded: HashMap::new(),
        }
    }

    /// The case (state, buffer, closures).
    pub fn case(&self) -> &Case {
        &self.case
    }

    /// The case, to buffer mutations.
    pub fn case_mut(&mut self) -> &mut Case {
        &mut self.case
    }

    /// The position of the case's last event (0 before the first).
    pub fn position(&self) -> Position {
        self.position
    }

    /// The events sent whose outcome is unknown (after [`crate::CommitErrorKind::InDoubt`]),
    /// in order, with their commit ids: the next commit (or, for a multi-event append,
    /// [`crate::Workspace::commit_many`]) sends exactly these again. Empty when nothing is in
    /// doubt.
    pub fn in_doubt(&self) -> Vec<(CommitId, &[u8])> {
        match &self.in_doubt {
            None => Vec::new(),
            Some(InDoubt::One(prepared)) => {
                vec![(prepared.event().commit_id, prepared.payload())]
            }
            Some(InDoubt::Many(pending)) => pending
                .events
                .iter()
                .map(|(event, _, payload)| (event.commit_id, payload.as_ref()))
                .collect(),
        }
    }
}

/// A commit whose event is being appended, tried on its case: if the commit's future is
/// dropped (a time-out or a `select!` around it) or panics before the outcome is known, the
/// event may still land, so the commit is put in doubt in its handle instead of forgotten.
pub(crate) struct InFlight<'c, 'd> {
    tentative: Option<Tentative<'c>>,
    in_doubt: &'d mut Option<InDoubt>,
}

impl<'c, 'd> InFlight<'c, 'd> {
    pub(crate) fn new(tentative: Tentative<'c>, in_doubt: &'d mut Option<InDoubt>) -> Self {
        InFlight {
            tentative: Some(tentative),
            in_doubt,
        }
    }

    pub(crate) fn tentative(&self) -> &Tentative<'c> {
        self.tentative
            .as_ref()
            .expect("a commit in flight holds its tentative until it lands")
    }

    /// The outcome is known: the tentative goes back to the caller.
    pub(crate) fn landed(mut self) -> Tentative<'c> {
        self.tentative
            .take()
            .expect("a commit in flight holds its tentative until it lands")
    }
}

impl Drop for InFlight<'_, '_> {
    fn drop(&mut self) {
        if let Some(tentative) = self.tentative.take() {
            *self.in_doubt = Some(InDoubt::One(tentative.into_prepared()));
        }
    }
}

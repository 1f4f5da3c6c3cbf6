//! [`CaseHandle`]: a case loaded or created through a [`crate::Workspace`], the position of its
//! last event, the commit ids it knows, and what it sent whose outcome is not known yet.
//! [`Draft`]: what a [`crate::Workspace::transact`] closure may do to it.

use std::collections::HashMap;

use bytes::Bytes;
use wfstate_store::{
    Case, CaseId, CaseState, CommitId, Event, Hash, Map, Mutation, Position, PreparedCommit,
    Tentative, TokenId,
};

/// A case loaded or created through a [`crate::Workspace`]: its state, the mutations buffered
/// for its next commit, and the position of its last event.
///
/// The state changes only through the workspace, by a commit that landed or events folded from
/// the log: the handle hands out the case to read and a buffer to fill, nothing that changes
/// its state behind the client.
///
/// ```
/// # fn f(handle: &mut wfstate_events::CaseHandle) {
/// handle.buffer(wfstate_store::Mutation::IncrementStepCount);
/// let version = handle.case().state().version;
/// # let _ = version;
/// # }
/// ```
///
/// The case is lent to read only: what would change it behind the client does not compile.
///
/// ```compile_fail
/// # fn f(handle: &mut wfstate_events::CaseHandle, prepared: wfstate_store::PreparedCommit) {
/// handle.case().complete(prepared);
/// # }
/// ```
///
/// ```compile_fail
/// # fn f(handle: &mut wfstate_events::CaseHandle) {
/// handle.case_mut().rollback();
/// # }
/// ```
#[derive(Debug)]
pub struct CaseHandle {
    pub(crate) case: Case,
    pub(crate) position: Position,
    /// What was sent and may have landed: the next call resolves it before anything else.
    pub(crate) in_doubt: Option<InDoubt>,
    /// The commit ids of the case's events this handle holds (folded from the log or
    /// committed through it), and where they are: a commit sent again with one of them
    /// already landed, whether or not the log still remembers the id.
    pub(crate) known: HashMap<CommitId, Position>,
}

/// Events sent whose outcome is unknown: they are sent again, as they were, before the handle
/// takes another commit or folds another event.
#[derive(Debug)]
pub(crate) enum InDoubt {
    /// One commit, sent as the event after `expected`. It carries its own mutations: what
    /// the caller buffers meanwhile waits for the commit after it.
    One {
        prepared: PreparedCommit,
        expected: Position,
    },
    /// Several events of one multi-event append (`commit_many`).
    Many(PendingMany),
    /// A commit id the case holds, sent again: it landed at `position`, but its event could
    /// not be read yet to give its receipt.
    Landed {
        commit_id: CommitId,
        position: Position,
    },
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
            known: HashMap::new(),
        }
    }

    /// The case: its state, its last event's hash, the mutations buffered.
    pub fn case(&self) -> &Case {
        &self.case
    }

    /// The case's state as of its last event this handle holds.
    pub fn state(&self) -> &CaseState {
        self.case.state()
    }

    /// The case's id.
    pub fn id(&self) -> &CaseId {
        self.case.id()
    }

    /// The position of the case's last event this handle holds (0 before the first).
    pub fn position(&self) -> Position {
        self.position
    }

    /// Buffers a mutation for the next commit (see [`Case::buffer`]).
    pub fn buffer(&mut self, mutation: Mutation) -> &mut Self {
        self.case.buffer(mutation);
        self
    }

    /// Buffers a change of the ctx computed at commit time (see [`Case::update_ctx`]).
    pub fn update_ctx(&mut self, change: impl Fn(&mut Map) + Send + Sync + 'static) -> &mut Self {
        self.case.update_ctx(change);
        self
    }

    /// Buffers a change of a token computed at commit time (see [`Case::update_token`]).
    pub fn update_token(
        &mut self,
        id: TokenId,
        change: impl Fn(&mut wfstate_store::Token) + Send + Sync + 'static,
    ) -> &mut Self {
        self.case.update_token(id, change);
        self
    }

    /// How many mutations are buffered (not counting those of a commit in doubt, which it
    /// carries).
    pub fn buffered(&self) -> usize {
        self.case.buffered()
    }

    /// Discards the buffer. A commit in doubt keeps its own mutations.
    pub fn rollback(&mut self) {
        self.case.rollback();
    }

    /// Where the event with `commit_id` is, when the handle holds it (folded from the log, or
    /// committed through this handle).
    pub fn known(&self, commit_id: CommitId) -> Option<Position> {
        self.known.get(&commit_id).copied()
    }

    /// The events sent whose outcome is unknown (after [`crate::CommitErrorKind::InDoubt`]),
    /// in order, with their commit ids: the next call on the handle sends exactly these
    /// again, or reads the one that landed. Empty when nothing is in doubt.
    pub fn in_doubt(&self) -> Vec<(CommitId, &[u8])> {
        match &self.in_doubt {
            None => Vec::new(),
            Some(InDoubt::One { prepared, .. }) => {
                vec![(prepared.event().commit_id, prepared.payload())]
            }
            Some(InDoubt::Many(pending)) => pending
                .events
                .iter()
                .map(|(event, _, payload)| (event.commit_id, payload.as_ref()))
                .collect(),
            Some(InDoubt::Landed { commit_id, .. }) => vec![(*commit_id, &[][..])],
        }
    }

    /// The handle takes the stored event at `position` with `commit_id` as its newest.
    pub(crate) fn advance(&mut self, commit_id: CommitId, position: Position) {
        debug_assert!(position > self.position, "a case's positions increase");
        self.known.insert(commit_id, position);
        self.position = position;
    }
}

/// What a [`crate::Workspace::transact`] closure works on: the case's state to read and the
/// buffer of its next commit to fill. It cannot change the case's state, nor swap it for
/// another.
///
/// ```compile_fail
/// # fn f(draft: &mut wfstate_events::Draft<'_>, payload: &[u8]) {
/// draft.case_mut().apply_payload(payload);
/// # }
/// ```
pub struct Draft<'a> {
    case: &'a mut Case,
}

impl std::fmt::Debug for Draft<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Draft")
            .field("case", &self.case)
            .finish_non_exhaustive()
    }
}

impl<'a> Draft<'a> {
    pub(crate) fn new(case: &'a mut Case) -> Self {
        Draft { case }
    }

    /// The case's state, as the commit will validate against.
    pub fn state(&self) -> &CaseState {
        self.case.state()
    }

    /// The case's id.
    pub fn id(&self) -> &CaseId {
        self.case.id()
    }

    /// Buffers a mutation (see [`Case::buffer`]).
    pub fn buffer(&mut self, mutation: Mutation) -> &mut Self {
        self.case.buffer(mutation);
        self
    }

    /// Buffers a change of the ctx computed at commit time (see [`Case::update_ctx`]).
    pub fn update_ctx(&mut self, change: impl Fn(&mut Map) + Send + Sync + 'static) -> &mut Self {
        self.case.update_ctx(change);
        self
    }

    /// Buffers a change of a token computed at commit time (see [`Case::update_token`]).
    pub fn update_token(
        &mut self,
        id: TokenId,
        change: impl Fn(&mut wfstate_store::Token) + Send + Sync + 'static,
    ) -> &mut Self {
        self.case.update_token(id, change);
        self
    }

    /// How many mutations are buffered.
    pub fn buffered(&self) -> usize {
        self.case.buffered()
    }

    /// Discards the buffer.
    pub fn rollback(&mut self) {
        self.case.rollback();
    }
}

/// A commit whose event is being appended, tried on its case: if the commit's future is
/// dropped (a time-out or a `select!` around it) or panics before the outcome is known, the
/// event may still land, so the commit is put in doubt in its handle, with the position it
/// was sent after, instead of forgotten.
pub(crate) struct InFlight<'c, 'd> {
    tentative: Option<Tentative<'c>>,
    in_doubt: &'d mut Option<InDoubt>,
    expected: Position,
}

impl<'c, 'd> InFlight<'c, 'd> {
    pub(crate) fn new(
        tentative: Tentative<'c>,
        in_doubt: &'d mut Option<InDoubt>,
        expected: Position,
    ) -> Self {
        InFlight {
            tentative: Some(tentative),
            in_doubt,
            expected,
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
            *self.in_doubt = Some(InDoubt::One {
                prepared: tentative.set_aside(),
                expected: self.expected,
            });
        }
    }
}

//! [`Case`]: a handle on one case's state with a buffer of pending mutations.
//!
//! The commit protocol is `buffer` (O(1)) → [`Case::try_commit`] (resolve closures, validate
//! sequentially, apply on trial, encode one event) → the caller appends the payload durably →
//! [`Tentative::keep`]; dropping the [`Tentative`] instead undoes the trial. Or in two steps:
//! [`Case::prepare_commit`] (the same, undone at once) → append → [`Case::complete`]. Until the
//! commit is kept or completed, the handle's state is unchanged; on any error the buffer is
//! kept for the caller to fix or [`Case::rollback`].

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;

use crate::apply::{Trial, Undo, apply, apply_commit, forget, undo};
use crate::codec::{EventHead, state_hash_and_size, write_event_parts};
use crate::error::Reason;
use crate::error::{FoldError, PrepareError, StaleCommit};
use crate::event::{Event, SCHEMA_VERSION};
use crate::hash::Hash;
use crate::id::{CaseId, CommitId, TokenId};
use crate::limits::Limits;
use crate::mutation::{Mutation, TokenUpdate};
use crate::position::Position;
use crate::receipt::Receipt;
use crate::state::{CaseState, Token};
use crate::validate::{BatchEntry, apply_batch_logged};

mod fold;
use crate::value::Map;

type CtxClosure = Box<dyn Fn(&mut Map) + Send + Sync>;
type TokenClosure = Box<dyn Fn(&mut Token) + Send + Sync>;

/// One buffered change: plain data, or a closure resolved into data at commit time.
enum Pending {
    Mutation(Mutation),
    Closure(Closure),
}

/// A change computed at commit time, against the state the batch has reached.
enum Closure {
    UpdateCtx(CtxClosure),
    UpdateToken(TokenId, TokenClosure),
}

impl BatchEntry for Pending {
    fn kind(&self) -> &'static str {
        match self {
            Pending::Mutation(mutation) => mutation.kind(),
            Pending::Closure(Closure::UpdateCtx(_)) => "patch_ctx",
            Pending::Closure(Closure::UpdateToken(..)) => "update_token",
        }
    }

    fn resolve(&self, state: &CaseState) -> Result<Cow<'_, Mutation>, Reason> {
        match self {
            Pending::Mutation(mutation) => Ok(Cow::Borrowed(mutation)),
            Pending::Closure(closure) => resolve(state, closure).map(Cow::Owned),
        }
    }
}

/// What the writer adds to a commit: its idempotency key, clock and identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitMeta {
    /// Chosen before the first attempt and kept for every retry.
    pub commit_id: CommitId,
    /// The writer's clock, ms since the Unix epoch.
    pub committed_at_ms: u64,
    /// The writer's id (host/process, or given).
    pub writer: String,
}

/// A validated, encoded commit waiting for the log to acknowledge it.
#[derive(Debug, Clone)]
pub struct PreparedCommit {
    event: Event,
    payload: Bytes,
    event_hash: Hash,
    buffered: usize,
}

impl PreparedCommit {
    /// The event.
    pub fn event(&self) -> &Event {
        &self.event
    }
    /// The exact bytes to append.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }
    /// The exact bytes to append, shared (no copy).
    pub fn payload_bytes(&self) -> Bytes {
        self.payload.clone()
    }
    /// SHA-256 of the payload.
    pub fn event_hash(&self) -> Hash {
        self.event_hash
    }
}

/// A batch applied to its case on trial while its event is appended ([`Case::try_commit`]).
/// [`Tentative::keep`] makes it the case's; dropping it (an error, a cancelled future, a
/// panic) puts the case back as it was, buffer included.
#[must_use = "dropping a tentative commit undoes it"]
pub struct Tentative<'a> {
    case: &'a mut Case,
    payload: Bytes,
    event_hash: Hash,
    state_hash: Hash,
    meta: CommitMeta,
    /// What the batch's closures resolved to, in buffer order.
    resolved: Vec<Mutation>,
    buffered: usize,
}

impl fmt::Debug for Tentative<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tentative")
            .field("case_id", &self.case.state.case_id)
            .field("version", &self.case.state.version)
            .field("commit_id", &self.meta.commit_id)
            .field("event_hash", &self.event_hash)
            .finish_non_exhaustive()
    }
}

impl Tentative<'_> {
    /// The exact bytes to append.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }
    /// The exact bytes to append, shared (no copy).
    pub fn payload_bytes(&self) -> Bytes {
        self.payload.clone()
    }
    /// The commit's idempotency key.
    pub fn commit_id(&self) -> CommitId {
        self.meta.commit_id
    }
    /// SHA-256 of the payload.
    pub fn event_hash(&self) -> Hash {
        self.event_hash
    }
    /// The state the commit leaves.
    pub fn state(&self) -> &CaseState {
        &self.case.state
    }
    /// Whether `event` takes this commit's place: the case's next event, of the same case
    /// and version, linked to the case's last event.
    pub fn follows_as_this(&self, event: &Event) -> bool {
        event.case_id == self.case.state.case_id
            && event.version == self.case.state.version
            && event.prev_event_hash == self.case.last_event_hash
    }

    /// The commit's receipt, once the log stored the payload at `position`.
    pub fn receipt(&self, position: Position) -> Receipt {
        Receipt {
            commit_id: self.meta.commit_id,
            case_id: self.case.state.case_id.clone(),
            version: self.case.state.version,
            position,
            mutation_count: self.buffered,
            event_hash: self.event_hash,
            prev_event_hash: self.case.last_event_hash,
            state_hash: self.state_hash,
            committed_at_ms: self.meta.committed_at_ms,
        }
    }

    /// Makes the commit the case's, once the log has the payload, and drops the buffered
    /// mutations it was made of.
    pub fn keep(self) {
        let case = &mut *self.case;
        forget(&mut case.journal);
        case.last_event_hash = self.event_hash;
        case.buffer.drain(..self.buffered);
    }

    /// Puts the case back as it was and returns the commit as a [`PreparedCommit`], to
    /// [`Case::complete`] later (an append whose outcome is not known yet).
    pub fn into_prepared(self) -> PreparedCommit {
        self.prepared(false)
    }

    /// Puts the case back as it was and returns the commit as a [`PreparedCommit`] that
    /// carries its mutations from now on: they leave the buffer, and what was buffered after
    /// them stays for the next commit. For a commit whose outcome is not known yet: it is
    /// sent again as it was, never merged with what the caller buffers meanwhile.
    pub fn set_aside(self) -> PreparedCommit {
        self.prepared(true)
    }

    /// Puts the case back as it was and drops the batch's mutations from the buffer: the
    /// commit is stored, but not as the case's next event (the case is behind the log), so
    /// the case learns it by folding the log.
    pub fn drop_batch(self) {
        let buffered = self.buffered;
        undo(&mut self.case.state, &mut self.case.journal);
        self.case.buffer.drain(..buffered);
    }

    /// Puts the case back as it was and folds `payload` in place of the batch: the log holds
    /// other bytes under the same commit id (an earlier attempt of the same commit, made at
    /// another time), and those are the case's next event. The batch's mutations leave the
    /// buffer.
    ///
    /// # Errors
    /// [`FoldError`] when the payload does not fold onto the case; the case is then as it was
    /// before the commit, buffer included.
    pub fn replace(self, payload: &[u8]) -> Result<Event, FoldError> {
        let buffered = self.buffered;
        undo(&mut self.case.state, &mut self.case.journal);
        let event = self.case.apply_payload(payload)?;
        self.case.buffer.drain(..buffered);
        Ok(event)
    }

    /// The commit as a [`PreparedCommit`]; `set_aside`: its mutations leave the buffer.
    fn prepared(mut self, set_aside: bool) -> PreparedCommit {
        let resolved = std::mem::take(&mut self.resolved);
        let case = &*self.case;
        let event = Event {
            schema: SCHEMA_VERSION,
            commit_id: self.meta.commit_id,
            case_id: case.state.case_id.clone(),
            version: case.state.version,
            mutations: batch(&case.buffer, &resolved).cloned().collect(),
            committed_at_ms: self.meta.committed_at_ms,
            writer: std::mem::take(&mut self.meta.writer),
            state_hash: self.state_hash,
            prev_event_hash: case.last_event_hash,
        };
        let mut buffered = self.buffered;
        if set_aside {
            self.case.buffer.drain(..buffered);
            buffered = 0;
        }
        PreparedCommit {
            event,
            payload: std::mem::take(&mut self.payload),
            event_hash: self.event_hash,
            buffered,
        }
    }
}

impl Drop for Tentative<'_> {
    fn drop(&mut self) {
        undo(&mut self.case.state, &mut self.case.journal);
    }
}

/// The mutations of a batch: the buffered ones where they lie, the closures' from `resolved`.
fn batch<'a>(
    buffer: &'a [Pending],
    resolved: &'a [Mutation],
) -> impl ExactSizeIterator<Item = &'a Mutation> {
    let mut closures = resolved.iter();
    buffer.iter().map(move |pending| match pending {
        Pending::Mutation(mutation) => mutation,
        Pending::Closure(_) => closures
            .next()
            .expect("a batch resolves each of its closures once"),
    })
}

/// One case: its state, the hash of its last event, and a buffer of pending mutations.
pub struct Case {
    state: CaseState,
    last_event_hash: Hash,
    buffer: Vec<Pending>,
    limits: Limits,
    /// What a trial of a batch changed; empty between calls, kept for its room.
    journal: Vec<Undo>,
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Case")
            .field("state", &self.state)
            .field("last_event_hash", &self.last_event_hash)
            .field("buffered", &self.buffer.len())
            .finish_non_exhaustive()
    }
}

impl Case {
    /// A case that has no events yet (version 0).
    pub fn new(case_id: CaseId) -> Self {
        Case::from_parts(CaseState::new(case_id), Hash::ZERO)
    }

    /// A case at a known state: `last_event_hash` is the hash of the event that produced it.
    pub fn from_parts(state: CaseState, last_event_hash: Hash) -> Self {
        Case {
            state,
            last_event_hash,
            buffer: Vec::new(),
            limits: Limits::default(),
            journal: Vec::new(),
        }
    }

    /// Sets the limits commits are checked against.
    #[must_use]
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The committed state.
    pub fn state(&self) -> &CaseState {
        &self.state
    }

    /// The committed state and the hash of the last event, dropping the buffer.
    pub fn into_parts(self) -> (CaseState, Hash) {
        (self.state, self.last_event_hash)
    }

    /// The case's id.
    pub fn id(&self) -> &CaseId {
        &self.state.case_id
    }

    /// Whether `event` is this case's next event: of this case, the next version, linked to
    /// the case's last event.
    pub fn follows(&self, event: &Event) -> bool {
        event.case_id == self.state.case_id
            && event.version == self.state.version.next()
            && event.prev_event_hash == self.last_event_hash
    }

    /// The hash of the case's last event ([`Hash::ZERO`] before the first).
    pub fn last_event_hash(&self) -> Hash {
        self.last_event_hash
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// How many mutations are buffered.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// Buffers a mutation (O(1)); it is validated at commit time.
    pub fn buffer(&mut self, mutation: Mutation) -> &mut Self {
        self.buffer.push(Pending::Mutation(mutation));
        self
    }

    /// Buffers a change of the ctx computed at commit time, against the ctx as the earlier
    /// mutations of the batch leave it. It is stored as the `patch_ctx` it resolves to.
    pub fn update_ctx(&mut self, change: impl Fn(&mut Map) + Send + Sync + 'static) -> &mut Self {
        self.buffer
            .push(Pending::Closure(Closure::UpdateCtx(Box::new(change))));
        self
    }

    /// Buffers a change of a token computed at commit time; it is stored as the
    /// `update_token` it resolves to (only the fields that changed).
    pub fn update_token(
        &mut self,
        id: TokenId,
        change: impl Fn(&mut Token) + Send + Sync + 'static,
    ) -> &mut Self {
        self.buffer
            .push(Pending::Closure(Closure::UpdateToken(id, Box::new(change))));
        self
    }

    /// Discards the buffer.
    pub fn rollback(&mut self) {
        self.buffer.clear();
    }

    /// Resolves, validates and applies the buffer, and encodes the event. The mutations are
    /// tried on the case's own state and undone before this returns (also on error or panic),
    /// so the case is not changed: call [`Case::complete`] once the log has the payload.
    ///
    /// # Errors
    /// [`PrepareError`]: every invalid mutation, or a limit exceeded.
    pub fn prepare_commit(&mut self, meta: CommitMeta) -> Result<PreparedCommit, PrepareError> {
        Ok(self.try_commit(meta)?.into_prepared())
    }

    /// Resolves, validates and applies the buffer, and encodes the event, like
    /// [`Case::prepare_commit`], but leaves the mutations applied for as long as the returned
    /// [`Tentative`] lives: [`Tentative::keep`] once the log has the payload, or drop it to
    /// put the case back as it was. The borrow keeps anyone from reading the tried state as
    /// the case's own, and a commit that succeeds applies its mutations once, not twice.
    ///
    /// # Errors
    /// [`PrepareError`]: every invalid mutation, or a limit exceeded; the case is unchanged.
    pub fn try_commit(&mut self, meta: CommitMeta) -> Result<Tentative<'_>, PrepareError> {
        let Case {
            state,
            last_event_hash,
            buffer,
            limits,
            journal,
        } = self;
        if buffer.len() > limits.batch_mutations_max {
            return Err(PrepareError::TooManyMutations {
                count: buffer.len(),
                limit: limits.batch_mutations_max,
            });
        }
        if meta.writer.is_empty() || meta.writer.len() > limits.writer_length_max_bytes {
            return Err(PrepareError::InvalidWriter(format!(
                "{} bytes; use 1 to {}",
                meta.writer.len(),
                limits.writer_length_max_bytes
            )));
        }
        let mut trial = Trial::new(state, journal);
        // Buffered mutations are checked and applied where they lie; only what closures
        // resolve to is kept aside, in buffer order, for the event.
        let mut resolved = Vec::new();
        let (tried, log) = trial.parts();
        apply_batch_logged(
            tried,
            buffer,
            meta.committed_at_ms,
            limits,
            log,
            |mutation| {
                resolved.push(mutation);
            },
        )?;
        trial.apply_commit(meta.committed_at_ms);
        let tried = trial.state();
        let (state_hash, state_size) = state_hash_and_size(tried);
        if state_size > limits.state_size_max_bytes {
            return Err(PrepareError::StateTooLarge {
                size: state_size,
                limit: limits.state_size_max_bytes,
            });
        }
        let head = EventHead {
            schema: SCHEMA_VERSION,
            commit_id: meta.commit_id,
            case_id: &tried.case_id,
            version: tried.version,
            committed_at_ms: meta.committed_at_ms,
            writer: &meta.writer,
            state_hash,
            prev_event_hash: *last_event_hash,
        };
        // Room for the fixed fields (about 200 bytes) and a few mutations, so that most events
        // are written without growing the buffer.
        let mut payload = Vec::with_capacity(512);
        write_event_parts(&head, batch(buffer, &resolved), &mut payload);
        if payload.len() > limits.event_size_max_bytes {
            return Err(PrepareError::TooLarge {
                size: payload.len(),
                limit: limits.event_size_max_bytes,
            });
        }
        let payload = Bytes::from(payload);
        let event_hash = Hash::of(&payload);
        // From here the tentative undoes the trial when it is dropped.
        trial.hold();
        Ok(Tentative {
            buffered: self.buffer.len(),
            case: self,
            payload,
            event_hash,
            state_hash,
            meta,
            resolved,
        })
    }

    /// Applies the prepared commit to the case once the log acknowledged it, and drops the
    /// buffered mutations it was made of.
    ///
    /// # Errors
    /// [`StaleCommit`] when it was prepared against another version; nothing changes.
    pub fn complete(&mut self, prepared: PreparedCommit) -> Result<(), StaleCommit> {
        let PreparedCommit {
            event,
            event_hash,
            buffered,
            ..
        } = prepared;
        if !self.follows(&event) {
            return Err(StaleCommit {
                prepared: event.version,
                current: self.state.version,
            });
        }
        // The same mutations on the same state (same version, same last event) as when the
        // commit was prepared: they were validated then, and reach the same state again.
        for mutation in &event.mutations {
            apply(&mut self.state, mutation, event.committed_at_ms);
        }
        apply_commit(&mut self.state, event.committed_at_ms);
        debug_assert_eq!(self.state.hash(), event.state_hash);
        self.last_event_hash = event_hash;
        self.buffer.drain(..buffered.min(self.buffer.len()));
        Ok(())
    }

    /// Takes a stored payload in place of `prepared`, when the log holds other bytes under the
    /// same commit id (an earlier attempt of the same commit): folds them and drops the
    /// buffered mutations `prepared` was made of.
    ///
    /// # Errors
    /// [`FoldError`]; the case is unchanged.
    pub fn adopt(&mut self, prepared: &PreparedCommit, payload: &[u8]) -> Result<Event, FoldError> {
        let event = self.apply_payload(payload)?;
        self.buffer
            .drain(..prepared.buffered.min(self.buffer.len()));
        Ok(event)
    }
}

/// Turns a buffered closure into data, running it against the current working state.
fn resolve(state: &CaseState, closure: &Closure) -> Result<Mutation, Reason> {
    match closure {
        Closure::UpdateCtx(change) => {
            let mut ctx = state.ctx.clone();
            change(&mut ctx);
            let remove = state
                .ctx
                .keys()
                .filter(|key| !ctx.contains_key(*key))
                .cloned()
                .collect();
            let set = ctx
                .into_iter()
                .filter(|(key, value)| state.ctx.get(key) != Some(value))
                .collect();
            Ok(Mutation::PatchCtx { set, remove })
        }
        Closure::UpdateToken(id, change) => {
            let before = state
                .tokens
                .get(id)
                .ok_or_else(|| Reason::TokenNotFound { id: id.to_string() })?;
            let mut after = before.clone();
            change(&mut after);
            if after.id != before.id {
                return Err(Reason::TokenIdChanged {
                    id: id.to_string(),
                    new_id: after.id.to_string(),
                });
            }
            let mut update = TokenUpdate::new(id.clone());
            update.ip = (after.ip != before.ip).then_some(after.ip);
            update.scope = (after.scope != before.scope).then_some(after.scope);
            update.value = (after.value != before.value).then_some(after.value);
            update.status = (after.status != before.status).then_some(after.status);
            Ok(Mutation::UpdateToken(update))
        }
    }
}

//! The reader's side of [`Case`]: folding stored events, each checked to belong to the case,
//! follow its version, link to its last event, validate, and reach the state hash its writer
//! committed.

use crate::apply::{Journal, Trial, apply_commit_logged};
use crate::error::FoldError;
use crate::event::Event;
use crate::hash::Hash;
use crate::limits::Limits;
use crate::state::CaseState;
use crate::validate::apply_batch_logged;

use super::Case;

impl Case {
    /// Decodes a stored payload and folds it into the case (see [`Case::apply_event`]).
    ///
    /// # Errors
    /// [`FoldError`]; the case is unchanged.
    pub fn apply_payload(&mut self, payload: &[u8]) -> Result<Event, FoldError> {
        let event = Event::decode(payload)?;
        self.apply_event(&event, Hash::of(payload))?;
        Ok(event)
    }

    /// Folds a decoded event into the case, checking that it belongs to this case, follows
    /// its version, links to its last event, validates, and reaches the committed state hash.
    /// Replay never runs user code: closures were resolved to data before the event was made.
    ///
    /// The event is tried on the case's state and undone on error, so that the case is
    /// unchanged. Readers that give up on the first bad event fold without keeping what to
    /// undo: [`Case::fold`].
    ///
    /// # Errors
    /// [`FoldError`]; the case is unchanged.
    pub fn apply_event(&mut self, event: &Event, event_hash: Hash) -> Result<(), FoldError> {
        self.check_follows(event)?;
        let mut trial = Trial::new(&mut self.state, &mut self.journal);
        let (state, journal) = trial.parts();
        apply_checked(state, event, journal)?;
        trial.keep();
        self.last_event_hash = event_hash;
        Ok(())
    }

    /// Decodes a stored payload and folds it into the case like [`Case::apply_payload`], but
    /// without the journal that keeps a case unchanged on error: on error the case is gone.
    /// For readers that stop at the first bad event (replay, audit).
    ///
    /// # Errors
    /// [`FoldError`], with the case dropped.
    pub fn fold(self, payload: &[u8]) -> Result<(Case, Event), FoldError> {
        let event = Event::decode(payload)?;
        let case = self.fold_event(&event, Hash::of(payload))?;
        Ok((case, event))
    }

    /// Folds a decoded event like [`Case::apply_event`] but without its journal (see
    /// [`Case::fold`]).
    ///
    /// # Errors
    /// [`FoldError`], with the case dropped.
    pub fn fold_event(mut self, event: &Event, event_hash: Hash) -> Result<Case, FoldError> {
        self.check_follows(event)?;
        apply_checked(&mut self.state, event, &mut ())?;
        self.last_event_hash = event_hash;
        Ok(self)
    }

    /// Decodes a stored payload and folds it like [`Case::fold`], checking that it belongs to
    /// this case, follows its version and links to its last event, and applying its
    /// mutations, but without computing the state hash the writer committed. For readers that
    /// check the state hash now and then ([`Case::check_state_hash`]): the chain link of every
    /// event still proves the bytes are the ones written, and a later check proves the state.
    ///
    /// # Errors
    /// [`FoldError`], with the case dropped.
    pub fn fold_unhashed(self, payload: &[u8]) -> Result<(Case, Event), FoldError> {
        let event = Event::decode(payload)?;
        let case = self.fold_event_unhashed(&event, Hash::of(payload))?;
        Ok((case, event))
    }

    /// Folds a decoded event like [`Case::fold_unhashed`], for a reader that decoded it
    /// already: `event_hash` is the SHA-256 of its stored bytes.
    ///
    /// # Errors
    /// [`FoldError`], with the case dropped.
    pub fn fold_event_unhashed(
        mut self,
        event: &Event,
        event_hash: Hash,
    ) -> Result<Case, FoldError> {
        self.check_follows(event)?;
        apply_mutations(&mut self.state, event, &mut ())?;
        self.last_event_hash = event_hash;
        Ok(self)
    }

    /// Checks that the case's state hash is `expected`: the state hash of the last event
    /// folded, after [`Case::fold_unhashed`].
    ///
    /// # Errors
    /// [`FoldError::StateHashMismatch`].
    pub fn check_state_hash(&self, expected: Hash) -> Result<(), FoldError> {
        let actual = self.state.hash();
        if actual != expected {
            return Err(FoldError::StateHashMismatch { expected, actual });
        }
        Ok(())
    }

    /// Whether `event` is the next event of this case: same case, next version, linked to
    /// the case's last event.
    fn check_follows(&self, event: &Event) -> Result<(), FoldError> {
        if event.case_id != self.state.case_id {
            return Err(FoldError::WrongCase {
                expected: self.state.case_id.clone(),
                found: event.case_id.clone(),
            });
        }
        if event.version != self.state.version.next() {
            return Err(FoldError::VersionGap {
                expected: self.state.version.next(),
                found: event.version,
            });
        }
        if event.prev_event_hash != self.last_event_hash {
            return Err(FoldError::BrokenChain {
                expected: self.last_event_hash,
                found: event.prev_event_hash,
            });
        }
        Ok(())
    }
}

/// Applies the event's mutations and the commit to `state`, and checks the state hash the
/// writer committed. On error `state` is partly changed, as `journal` records.
fn apply_checked(
    state: &mut CaseState,
    event: &Event,
    journal: &mut impl Journal,
) -> Result<(), FoldError> {
    apply_mutations(state, event, journal)?;
    let actual = state.hash();
    if actual != event.state_hash {
        return Err(FoldError::StateHashMismatch {
            expected: event.state_hash,
            actual,
        });
    }
    Ok(())
}

/// Applies the event's mutations and the commit to `state`. On error `state` is partly
/// changed, as `journal` records.
fn apply_mutations(
    state: &mut CaseState,
    event: &Event,
    journal: &mut impl Journal,
) -> Result<(), FoldError> {
    // What the writer validated under its own limits is replayed whatever ours are.
    apply_batch_logged(
        state,
        &event.mutations,
        event.committed_at_ms,
        &Limits::unbounded(),
        journal,
        |_| unreachable!("stored mutations are data, not closures"),
    )
    .map_err(FoldError::Invalid)?;
    apply_commit_logged(state, event.committed_at_ms, journal);
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::id::{CaseId, CommitId};
    use crate::mutation::Mutation;
    use crate::{Case, CommitMeta, Event, FoldError, Hash};

    /// The payloads of two commits of case `c`.
    fn two_events() -> Vec<Vec<u8>> {
        let mut case = Case::new(CaseId::new("c").unwrap());
        (1..=2)
            .map(|n| {
                case.buffer(Mutation::set_key("n", n));
                let prepared = case
                    .prepare_commit(CommitMeta {
                        commit_id: CommitId::generate(),
                        committed_at_ms: n,
                        writer: "w".into(),
                    })
                    .unwrap();
                let payload = prepared.payload().to_vec();
                case.complete(prepared).unwrap();
                payload
            })
            .collect()
    }

    #[test]
    fn an_unhashed_fold_checks_the_chain_and_leaves_the_state_hash_to_a_later_check() {
        let events = two_events();
        let mut wrong = Event::decode(&events[0]).unwrap();
        wrong.state_hash = Hash::of(b"another state");
        let wrong = wrong.encode();
        let fresh = || Case::new(CaseId::new("c").unwrap());
        assert!(matches!(
            fresh().fold(&wrong),
            Err(FoldError::StateHashMismatch { .. })
        ));
        let (case, event) = fresh().fold_unhashed(&wrong).unwrap();
        assert!(matches!(
            case.check_state_hash(event.state_hash),
            Err(FoldError::StateHashMismatch { .. })
        ));
        // The chain link is checked on every event: the second event does not follow the
        // tampered first one.
        assert!(matches!(
            case.fold_unhashed(&events[1]),
            Err(FoldError::BrokenChain { .. })
        ));

        let (case, _) = fresh().fold_unhashed(&events[0]).unwrap();
        let (case, last) = case.fold_unhashed(&events[1]).unwrap();
        case.check_state_hash(last.state_hash).unwrap();
    }
}

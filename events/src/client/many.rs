//! Several commits of one case in one round trip: [`Workspace::commit_many`].

use bytes::Bytes;
use wfstate_store::{Case, CommitId, Mutation, Position, Receipt};

use super::Workspace;
use super::handle::{CaseHandle, InDoubt, PendingMany};
use super::retry::{Append, Resolved};
use crate::error::{CommitError, Misuse};
use crate::log::EventLog;

impl<L: EventLog> Workspace<L> {
    /// Commits several batches of mutations to one case in one round trip: each batch becomes
    /// its own event (one event per commit, each chained to the one before), and all are
    /// appended together ([`EventLog::append_many`]: on JetStream an atomic batch publish,
    /// nats-server 2.12+; on the embedded log one transaction), stored together or not at all,
    /// the first carrying the case's expected position. For a hot case that would otherwise
    /// take one round trip per commit.
    ///
    /// The handle must have nothing buffered and no single commit in doubt. On any error it
    /// is unchanged, except in doubt ([`CommitError::InDoubt`], also when this future is
    /// dropped while the events are sent): the handle keeps the events as they were sent.
    /// Then call `commit_many` with no batches: it sends the same events again (same commit
    /// ids, same expected position) and returns their receipts whether this attempt or the
    /// earlier one stored them, or [`CommitError::Conflict`] when another writer's event is
    /// there instead (they did not land). Until then the handle takes no other commit, so
    /// that a change is never applied twice.
    ///
    /// # Errors
    /// [`CommitError::Rejected`] for an invalid batch (by its index within that batch),
    /// [`CommitError::Conflict`], [`CommitError::InDoubt`], [`CommitError::Log`] (for example
    /// a stream that does not allow atomic batches), [`CommitError::Misuse`] for a busy
    /// handle, or events in doubt and `batches` not empty.
    pub async fn commit_many(
        &self,
        handle: &mut CaseHandle,
        batches: Vec<Vec<Mutation>>,
    ) -> Result<Vec<Receipt>, CommitError> {
        let may_have_landed = match &handle.in_doubt {
            Some(InDoubt::One { .. } | InDoubt::Landed { .. }) => {
                return Err(Misuse::HandleBusy.into());
            }
            Some(InDoubt::Many(_)) if !batches.is_empty() => {
                return Err(Misuse::ManyInDoubt.into());
            }
            Some(InDoubt::Many(pending)) => {
                // The handle's state does not move while events are in doubt: checked before
                // anything is sent.
                if pending.expected != handle.position {
                    let (first, _, _) = &pending.events[0];
                    return Err(Misuse::StaleInDoubt {
                        commit_id: first.commit_id,
                        prepared: first.version,
                        current: handle.case.state().version,
                    }
                    .into());
                }
                true
            }
            None if handle.case.buffered() > 0 => return Err(Misuse::HandleBusy.into()),
            None => match self.prepare_many(handle, batches)? {
                Some(pending) => {
                    // In doubt from the moment it is sent: a dropped future leaves it there.
                    handle.in_doubt = Some(InDoubt::Many(pending));
                    false
                }
                None => return Ok(Vec::new()),
            },
        };
        let Some(InDoubt::Many(pending)) = &handle.in_doubt else {
            unreachable!("the events to send are in the handle")
        };
        let events: Vec<(CommitId, Bytes)> = pending
            .events
            .iter()
            .map(|(event, _, payload)| (event.commit_id, payload.clone()))
            .collect();
        let (expected, count) = (pending.expected, events.len() as u64);
        let case_id = handle.case.id().clone();
        let append = Append {
            case_id: &case_id,
            commit_id: events[0].0,
            expected,
            may_have_landed,
        };
        let outcome = self
            .resolve(append, || self.log.append_many(&case_id, &events, expected))
            .await;
        let last = match outcome {
            Ok(Resolved::Ours { position }) => position,
            // Stored together: our first event there means all of them are.
            Ok(Resolved::Stored(first)) => Position::new(first.position.get() + count - 1),
            Err(error @ CommitError::InDoubt { .. }) => return Err(error),
            Err(error) => {
                handle.in_doubt = None;
                return Err(error);
            }
        };
        let Some(InDoubt::Many(pending)) = handle.in_doubt.take() else {
            unreachable!("the events sent are in the handle")
        };
        // Stored together, contiguously: the positions run up to the last one's.
        let first_position = last.get() + 1 - count;
        let receipts: Vec<Receipt> = pending
            .events
            .iter()
            .zip(first_position..)
            .map(|((event, hash, _), position)| Receipt::new(event, *hash, Position::new(position)))
            .collect();
        if handle.case.buffered() == 0 {
            handle.case = pending.after;
        } else {
            // Mutations buffered while the events were in doubt stay for the next commit:
            // the events are folded into the case that holds them.
            for ((_, _, payload), receipt) in pending.events.iter().zip(&receipts) {
                handle
                    .case
                    .apply_payload(payload)
                    .map_err(|source| CommitError::Corrupted {
                        case_id: case_id.clone(),
                        position: receipt.position,
                        source,
                    })?;
            }
        }
        for receipt in &receipts {
            handle.advance(receipt.commit_id, receipt.position);
        }
        Ok(receipts)
    }

    /// Prepares one chained event per batch on a copy of the handle's case; `None` for no
    /// batches.
    fn prepare_many(
        &self,
        handle: &CaseHandle,
        batches: Vec<Vec<Mutation>>,
    ) -> Result<Option<PendingMany>, CommitError> {
        let mut after =
            Case::from_parts(handle.case.state().clone(), handle.case.last_event_hash())
                .with_limits(self.limits);
        let mut events = Vec::with_capacity(batches.len());
        for batch in batches {
            for mutation in batch {
                after.buffer(mutation);
            }
            let commit = after.prepare_commit(self.meta())?;
            events.push((
                commit.event().clone(),
                commit.event_hash(),
                commit.payload_bytes(),
            ));
            after
                .complete(commit)
                .expect("a commit prepared on a case follows it");
        }
        Ok((!events.is_empty()).then_some(PendingMany {
            events,
            after,
            expected: handle.position,
        }))
    }
}

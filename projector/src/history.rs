//! What a [`Batch`] needs from the log: the events of a case's gap, or its whole history for
//! a retried case. Shared by both projectors.

use futures::TryStreamExt;
use wfstate_events::EventLog;
use wfstate_store::{CaseId, Position};

use crate::ProjectorError;
use crate::engine::{Batch, Gap};

/// Fills each gap from `log`: the case's events after the view and before the batch's event,
/// then the batch's events set aside.
pub(crate) async fn fill<L: EventLog>(
    log: &L,
    batch: &mut Batch,
    gaps: Vec<Gap>,
) -> Result<(), ProjectorError> {
    for gap in gaps {
        let mut history = log.history(&gap.case_id, gap.after).await?;
        while let Some(stored) = history.try_next().await? {
            if stored.position >= gap.before {
                break;
            }
            batch.fold_history(&gap.case_id, &stored);
        }
        batch.resume(&gap.case_id);
    }
    Ok(())
}

/// A batch holding `case_id`'s view folded again from its first event, to replace the view
/// at `revision`: a halted case is re-folded (after a writer fix, say), and halts again at
/// an event that still does not apply.
pub(crate) async fn refold<L: EventLog>(
    log: &L,
    case_id: &CaseId,
    revision: Option<u64>,
) -> Result<Batch, ProjectorError> {
    let mut batch = Batch::default();
    batch.insert(case_id.to_string(), None, revision);
    let mut history = log.history(case_id, Position::ZERO).await?;
    while let Some(stored) = history.try_next().await? {
        // Read in order from the log: a gap has nothing before it to fill it.
        for gap in batch.fold(std::slice::from_ref(&stored)) {
            batch.resume(&gap.case_id);
        }
    }
    batch.mark_changed(case_id);
    Ok(batch)
}

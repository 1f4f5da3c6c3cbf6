//! The projector's pure step: fold one stored event into a case's view.

use wfstate_events::StoredEvent;
use wfstate_store::{Case, CaseId, FoldError};

use crate::view::{Quarantine, View};

/// What became of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Applied to the case's view.
    Applied,
    /// At or below the view's position: already processed (a redelivery).
    Skipped,
    /// Could not be applied: recorded, and the case's view marked.
    Quarantined(QuarantineRecord),
    /// Its version is ahead of the view's: earlier events of the case may still be on their
    /// way (redelivered after a crash). The view is unchanged; the caller checks the log and
    /// either defers the event or quarantines it with [`quarantine`].
    Ahead(QuarantineRecord),
}

/// A quarantined event.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QuarantineRecord {
    /// The event's position.
    pub position: u64,
    /// The case named by its subject (possibly not a valid case id).
    pub case_key: String,
    /// A machine-readable reason.
    pub code: String,
    /// What is wrong, in words.
    pub reason: String,
}

/// Folds `stored` into `view` (the case's view, if it has one). The view comes back updated;
/// on a bad event it keeps its last good state and is marked quarantined. `case_id` is the
/// case the event's subject names, checked by the caller.
pub fn fold_event(
    view: Option<View>,
    case_id: &CaseId,
    stored: &StoredEvent,
) -> (Option<View>, Outcome) {
    if let Some(view) = &view
        && stored.position <= view.position
    {
        return (Some(view.clone()), Outcome::Skipped);
    }
    let mut case = view
        .as_ref()
        .map_or_else(|| Case::new(case_id.clone()), View::to_case);
    match case.apply_payload(&stored.payload) {
        Ok(_) => {
            let quarantine = view.and_then(|view| view.quarantine);
            let mut next = View::of(case, stored.position);
            next.quarantine = quarantine;
            (Some(next), Outcome::Applied)
        }
        Err(error) => {
            let record = QuarantineRecord {
                position: stored.position,
                case_key: stored.case_id.clone(),
                code: error.code().to_owned(),
                reason: error.to_string(),
            };
            if let FoldError::VersionGap { expected, found } = error
                && found > expected
            {
                return (view, Outcome::Ahead(record));
            }
            let marked = quarantine(view, case_id, &record);
            (Some(marked), Outcome::Quarantined(record))
        }
    }
}

/// Marks the case's view quarantined by `record` (keeping the first quarantine), creating an
/// empty view when the case has none. Its state and position stay at the last good event.
pub fn quarantine(view: Option<View>, case_id: &CaseId, record: &QuarantineRecord) -> View {
    let mut marked = view.unwrap_or_else(|| View::of(Case::new(case_id.clone()), 0));
    marked.quarantine.get_or_insert(Quarantine {
        position: record.position,
        code: record.code.clone(),
        reason: record.reason.clone(),
    });
    marked
}

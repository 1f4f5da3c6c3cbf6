//! The projector's pure step: fold one stored event into a case's view.

use wfstate_events::StoredEvent;
use wfstate_store::{Case, CaseId, Code, FoldError, Position};

use crate::view::{Quarantine, View};

/// What became of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Applied to the case's view.
    Applied,
    /// At or below the view's position: already processed (a redelivery).
    Skipped,
    /// Could not be applied: recorded, and the case's view marked; the case is halted.
    Quarantined(QuarantineRecord),
    /// A later event of a halted case: counted in its view's quarantine, not applied.
    Held,
    /// Its version is ahead of the view's: the view is missing or behind (earlier events
    /// redelivered later, a view deleted). The view is unchanged; the caller rebuilds it from
    /// the case's history, or quarantines the event when the history has nothing between.
    Ahead(QuarantineRecord),
}

/// A quarantined event.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QuarantineRecord {
    /// The event's position.
    pub position: Position,
    /// The case named by its subject or key (possibly not a valid case id).
    #[serde(alias = "case_key")]
    pub case_id: String,
    /// What kind of problem it is.
    pub code: Code,
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
    if view
        .as_ref()
        .is_some_and(|view| stored.position <= view.position)
    {
        return (view, Outcome::Skipped);
    }
    // A halted case: later events are held behind the bad one (a redelivered one is counted
    // once).
    let mut view = view;
    if let Some(quarantine) = view.as_mut().and_then(|view| view.quarantine.as_mut()) {
        let outcome = if stored.position <= quarantine.position.max(quarantine.last_held) {
            Outcome::Skipped
        } else {
            quarantine.held += 1;
            quarantine.last_held = stored.position;
            Outcome::Held
        };
        return (view, outcome);
    }
    // The view's state becomes the case's, uncopied; `apply_payload` leaves it unchanged on
    // error, so the view can be put back together as it was.
    let (mut case, position, quarantined, had_view) = match view {
        Some(view) => (
            Case::from_parts(view.state, view.last_event_hash),
            view.position,
            view.quarantine,
            true,
        ),
        None => (Case::new(case_id.clone()), Position::ZERO, None, false),
    };
    let rebuild = |case: Case, position: Position, quarantined: Option<Quarantine>| {
        let mut view = View::of(case, position);
        view.quarantine = quarantined;
        view
    };
    match case.apply_payload(&stored.payload) {
        Ok(_) => (
            Some(rebuild(case, stored.position, quarantined)),
            Outcome::Applied,
        ),
        Err(error) => {
            let record = QuarantineRecord {
                position: stored.position,
                case_id: stored.case_id.clone(),
                code: error.code(),
                reason: error.to_string(),
            };
            let view = had_view.then(|| rebuild(case, position, quarantined));
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
pub(crate) fn quarantine(view: Option<View>, case_id: &CaseId, record: &QuarantineRecord) -> View {
    let mut marked = view.unwrap_or_else(|| View::of(Case::new(case_id.clone()), Position::ZERO));
    marked.quarantine.get_or_insert(Quarantine {
        position: record.position,
        code: record.code,
        reason: record.reason.clone(),
        held: 0,
        last_held: Position::ZERO,
    });
    marked
}

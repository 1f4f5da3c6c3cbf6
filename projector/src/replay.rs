//! Replay: rebuild a case from its history; verify: compare replays with the views.

use futures::TryStreamExt;
use wfstate_events::EventLog;
use wfstate_store::{Case, CaseId, CaseState, Hash};

use crate::view::View;
use crate::{ProjectorError, ViewSource};

/// A case rebuilt from its history.
#[derive(Debug, Clone, PartialEq)]
pub struct Replayed {
    /// The state after the last event.
    pub state: CaseState,
    /// The hash of the last event.
    pub last_event_hash: Hash,
    /// The position of the last event.
    pub position: u64,
    /// How many events were folded (after the starting view, if any).
    pub events_folded: u64,
}

/// Rebuilds a case by folding its history, streaming: memory grows with the case's state, not
/// with its history. With a healthy `from` view it starts there and folds only later events.
///
/// # Errors
/// [`ProjectorError::CaseNotFound`] for a case with no events; [`ProjectorError::BadEvent`]
/// for an event that does not decode or fold (with its position);
/// [`ProjectorError::Unavailable`].
pub async fn replay<L: EventLog>(
    log: &L,
    case_id: &CaseId,
    from: Option<&View>,
) -> Result<Replayed, ProjectorError> {
    let (mut case, mut position) = match from.filter(|view| view.is_healthy()) {
        Some(view) => (view.to_case(), view.position),
        None => (Case::new(case_id.clone()), 0),
    };
    let mut events = log.history(case_id, position).await?;
    let mut events_folded = 0;
    while let Some(stored) = events.try_next().await? {
        case.apply_payload(&stored.payload)
            .map_err(|error| ProjectorError::BadEvent {
                case: case_id.to_string(),
                position: stored.position,
                code: error.code(),
                reason: error.to_string(),
            })?;
        position = stored.position;
        events_folded += 1;
    }
    if position == 0 {
        return Err(ProjectorError::CaseNotFound(case_id.to_string()));
    }
    let (state, last_event_hash) = case.into_parts();
    Ok(Replayed {
        state,
        last_event_hash,
        position,
        events_folded,
    })
}

/// A view that does not match its case's replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The case.
    pub case_id: CaseId,
    /// What differs.
    pub detail: String,
}

/// Replays each case from scratch and compares it with its view; lists every mismatch (a
/// missing view, an unhealthy view, another state hash, position or head).
///
/// # Errors
/// [`ProjectorError`] when the log or the views cannot be read.
pub async fn verify<L: EventLog, V: ViewSource>(
    log: &L,
    views: &V,
    cases: &[CaseId],
) -> Result<Vec<Mismatch>, ProjectorError> {
    let mut mismatches = Vec::new();
    for case_id in cases {
        let mismatch = |detail: String| Mismatch {
            case_id: case_id.clone(),
            detail,
        };
        let replayed = match replay(log, case_id, None).await {
            Ok(replayed) => replayed,
            Err(error @ (ProjectorError::BadEvent { .. } | ProjectorError::CaseNotFound(_))) => {
                mismatches.push(mismatch(format!("replay fails: {error}")));
                continue;
            }
            Err(error) => return Err(error),
        };
        let Some(view) = views.view(case_id).await? else {
            mismatches.push(mismatch("no view".into()));
            continue;
        };
        if let Some(quarantine) = &view.quarantine {
            mismatches.push(mismatch(format!(
                "the view is quarantined at position {}: {}",
                quarantine.position, quarantine.reason
            )));
        } else if view.state.hash() != replayed.state.hash() {
            mismatches.push(mismatch(format!(
                "state hash {} in the view, {} on replay",
                view.state.hash(),
                replayed.state.hash()
            )));
        } else if view.position != replayed.position
            || view.last_event_hash != replayed.last_event_hash
        {
            mismatches.push(mismatch(format!(
                "the view is at position {}, the history ends at {}",
                view.position, replayed.position
            )));
        }
    }
    Ok(mismatches)
}

//! Verify: compare views with their cases' histories, each up to the view's own position, so
//! that commits made since a view was written are no mismatch (how far views lag is the
//! projector's lag). [`verify`] replays the named cases one by one; [`verify_all`] reads the
//! log once, in order, for every case that has a view.

use futures::{StreamExt, TryStreamExt};
use wfstate_events::EventLog;
use wfstate_store::{Case, CaseId, CaseState, Hash, Position};

use crate::replay::replay_until;
use crate::spill::Cases;
use crate::view::View;
use crate::{ProjectorError, ViewSource};

/// A view that does not match its case's replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The case.
    pub case_id: CaseId,
    /// What differs.
    pub detail: String,
}

/// Compares each case's view with a replay from scratch up to the view's own position, so
/// that commits made since the view was written are no mismatch (how far views lag is the
/// projector's lag). Lists every mismatch: a missing view, an unhealthy view, a history that
/// does not reach the view's position, another state hash or last event hash.
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
        let Some(view) = views.view(case_id).await? else {
            mismatches.push(mismatch("no view".into()));
            continue;
        };
        if let Some(quarantine) = &view.quarantine {
            mismatches.push(mismatch(format!(
                "the view is quarantined at position {}: {}",
                quarantine.position, quarantine.reason
            )));
            continue;
        }
        let replayed = match replay_until(log, case_id, view.position).await {
            Ok(replayed) => replayed,
            Err(error @ (ProjectorError::BadEvent { .. } | ProjectorError::CaseNotFound(_))) => {
                mismatches.push(mismatch(format!("replay fails: {error}")));
                continue;
            }
            Err(error) => return Err(error),
        };
        let replayed = Ends {
            position: replayed.position,
            state_hash: replayed.state.hash(),
            last_event_hash: replayed.last_event_hash,
        };
        if let Some(detail) = differ(&Ends::of(&view), &replayed) {
            mismatches.push(mismatch(detail));
        }
    }
    Ok(mismatches)
}

/// Where a view or a replay ends: its position, state hash and last event hash.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct Ends {
    position: Position,
    state_hash: Hash,
    last_event_hash: Hash,
}

impl Ends {
    fn of(view: &View) -> Ends {
        Ends {
            position: view.position,
            state_hash: view.state.hash(),
            last_event_hash: view.last_event_hash,
        }
    }
}

/// What differs between a view and its case's replay up to the view's position, if anything.
fn differ(view: &Ends, replayed: &Ends) -> Option<String> {
    if replayed.position != view.position {
        Some(format!(
            "the view is at position {}, and the case's history has no event there (the last \
             before it is at {})",
            view.position, replayed.position
        ))
    } else if replayed.state_hash != view.state_hash {
        Some(format!(
            "state hash {} in the view, {} on replay to position {}",
            view.state_hash, replayed.state_hash, view.position
        ))
    } else if replayed.last_event_hash != view.last_event_hash {
        Some(format!(
            "last event hash {} in the view, {} in the history at position {}",
            view.last_event_hash, replayed.last_event_hash, view.position
        ))
    } else {
        None
    }
}

/// Views read at once while [`verify_all`] loads them.
const VIEWS_IN_FLIGHT: usize = 64;

/// One case of [`verify_all`]: its view's position and hashes, and its history folded so far.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Checked {
    case_id: CaseId,
    /// Where the view ends.
    view: Ends,
    /// The state folded so far (taken while an event folds) and the hash of the last event
    /// folded.
    state: Option<CaseState>,
    head: Hash,
    /// The position of the last event folded.
    folded: Position,
    /// Compared (or found different): later events are not read.
    done: bool,
}

/// What [`verify_all`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verified {
    /// Cases with a view.
    pub cases: usize,
    /// Events folded.
    pub events: u64,
    /// Every view that differs from its history, by case id.
    pub mismatches: Vec<Mismatch>,
}

/// Compares every view with its case's history up to the view's own position, as [`verify`]
/// does, reading the log once in order up to the furthest view instead of one history per
/// case. A bounded number of cases is kept in memory, the others in a temporary file.
///
/// # Errors
/// [`ProjectorError`] when the log or the views cannot be read.
pub async fn verify_all<L: EventLog, V: ViewSource>(
    log: &L,
    views: &V,
) -> Result<Verified, ProjectorError> {
    let ids = views.case_ids().await?;
    let mut verified = Verified {
        cases: ids.len(),
        ..Verified::default()
    };
    let mut cases: Cases<Checked> = Cases::default();
    let mut until = Position::ZERO;
    let mut loads = futures::stream::iter(ids)
        .map(|case_id| async move {
            let view = views.view(&case_id).await?;
            Ok::<_, ProjectorError>((case_id, view))
        })
        .buffer_unordered(VIEWS_IN_FLIGHT);
    while let Some((case_id, view)) = loads.try_next().await? {
        let mismatch = |detail: String| Mismatch {
            case_id: case_id.clone(),
            detail,
        };
        match view {
            None => verified.mismatches.push(mismatch("no view".into())),
            Some(View {
                quarantine: Some(quarantine),
                ..
            }) => verified.mismatches.push(mismatch(format!(
                "the view is quarantined at position {}: {}",
                quarantine.position, quarantine.reason
            ))),
            Some(view) => {
                until = until.max(view.position);
                let (state, head) = Case::new(case_id.clone()).into_parts();
                let checked = Checked {
                    case_id: case_id.clone(),
                    view: Ends::of(&view),
                    state: Some(state),
                    head,
                    folded: Position::ZERO,
                    done: false,
                };
                cases.get_or_insert_with(case_id.as_str(), || checked)?;
            }
        }
    }
    drop(loads);
    // A view may claim a position the log has not reached: reading stops at the log's end.
    let until = until.min(log.last_position().await?);
    if until > Position::ZERO {
        let mut events = log.follow(Position::ZERO).await?;
        while let Some(stored) = events.try_next().await? {
            if let Some(checked) = cases.get(&stored.case_id)?
                && !checked.done
            {
                verified.events += 1;
                if let Some(detail) = check(checked, &stored) {
                    verified.mismatches.push(Mismatch {
                        case_id: checked.case_id.clone(),
                        detail,
                    });
                }
            }
            if stored.position >= until {
                break;
            }
        }
    }
    // A view past its case's last event.
    cases.find_map(|_, checked| {
        if !checked.done {
            verified.mismatches.push(Mismatch {
                case_id: checked.case_id.clone(),
                detail: short_history(checked),
            });
        }
        None::<()>
    })?;
    verified
        .mismatches
        .sort_by(|a, b| a.case_id.cmp(&b.case_id));
    Ok(verified)
}

/// Folds one event of the case into `checked`; at the view's position, compares. Returns what
/// differs, once; the case is then done.
fn check(checked: &mut Checked, stored: &wfstate_events::StoredEvent) -> Option<String> {
    if stored.position > checked.view.position {
        checked.done = true;
        return Some(short_history(checked));
    }
    let state = checked.state.take()?;
    match Case::from_parts(state, checked.head).fold(&stored.payload) {
        Ok((case, _)) => {
            let (state, head) = case.into_parts();
            (checked.state, checked.head) = (Some(state), head);
            checked.folded = stored.position;
        }
        Err(error) => {
            checked.done = true;
            return Some(format!(
                "replay fails: the event at position {} does not fold: {error}",
                stored.position
            ));
        }
    }
    if stored.position < checked.view.position {
        return None;
    }
    checked.done = true;
    let replayed = Ends {
        position: checked.folded,
        state_hash: checked.state.as_ref()?.hash(),
        last_event_hash: checked.head,
    };
    differ(&checked.view, &replayed)
}

/// The mismatch of a view past its case's last event.
fn short_history(checked: &Checked) -> String {
    let replayed = Ends {
        position: checked.folded,
        ..checked.view
    };
    differ(&checked.view, &replayed).unwrap_or_default()
}

//! The batch fold, written once for both stores: a [`Batch`] takes the views of the cases a
//! batch of events touches, folds the events into them, and says what to write back. It does
//! no I/O: the JetStream and embedded projectors load the views, read a case's history when
//! the batch asks for it (a [`Gap`]), and write what it changed.
//!
//! One batch, by its driver:
//! 1. [`Batch::cases`]: the case ids to load; [`Batch::insert`] each view found.
//! 2. [`Batch::fold`]: folds the events in order; returns the gaps, cases whose view is behind
//!    one of their events (a missing view, a deleted key, a recreated store).
//! 3. For each gap, the case's events after `gap.after` and before `gap.before`, in order,
//!    through [`Batch::fold_history`], then [`Batch::resume`]: the case's events of the batch
//!    set aside at the gap are folded.
//! 4. [`Batch::finish`]: the quarantined events to record, the views to write (encoded, each
//!    within what the view store takes), the counters for the stats.

use std::collections::BTreeMap;

use wfstate_events::StoredEvent;
use wfstate_store::{CaseId, Code, Position};

use crate::fold::{Outcome, QuarantineRecord, fold_event, quarantine};
use crate::view::View;

/// One case's view during a batch.
#[derive(Debug, Default)]
struct Entry {
    /// The view, as loaded and then folded.
    view: Option<View>,
    /// The store's revision of the loaded view, for compare-and-set.
    revision: Option<u64>,
    /// Whether the batch changed the view (it must be written).
    changed: bool,
    /// Events applied to the view in this batch.
    applied: u64,
    /// Events of the batch set aside behind a gap, until the history before them is folded.
    pending: Vec<StoredEvent>,
}

/// A view a batch changed, to write.
#[derive(Debug)]
pub(crate) struct Changed {
    /// The case id.
    pub(crate) key: String,
    /// The view.
    pub(crate) view: View,
    /// Its encoding, as stored.
    pub(crate) bytes: Vec<u8>,
    /// The store's revision of the view the batch loaded (none: it had none).
    pub(crate) revision: Option<u64>,
    /// Events the batch applied to it.
    pub(crate) applied: u64,
}

/// A case whose view is behind an event of the batch: its events after `after` and before
/// `before` are to be read from the log and folded before the batch goes on with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Gap {
    /// The case.
    pub(crate) case_id: CaseId,
    /// The view's position (zero when it has none).
    pub(crate) after: Position,
    /// The position of the batch's first event of the case that was ahead of the view.
    pub(crate) before: Position,
}

/// What a batch's fold counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counts {
    /// Events at or below their view's position (redeliveries).
    pub(crate) skipped: u64,
    /// Events of halted cases, held.
    pub(crate) held: u64,
    /// Views caught up from their case's history.
    pub(crate) rebuilt: u64,
}

/// The views of one batch and what folding it did to them.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    entries: BTreeMap<String, Entry>,
    records: Vec<QuarantineRecord>,
    counts: Counts,
}

impl Batch {
    /// The valid case ids `events` touch, sorted, each once: the views to load.
    pub(crate) fn cases(events: &[StoredEvent]) -> Vec<String> {
        let mut keys: Vec<String> = events
            .iter()
            .filter(|stored| CaseId::new(&stored.case_id).is_ok())
            .map(|stored| stored.case_id.clone())
            .collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    /// Puts in the loaded view of `key` (none: the case has no view yet) and its revision.
    pub(crate) fn insert(&mut self, key: String, view: Option<View>, revision: Option<u64>) {
        self.entries.insert(
            key,
            Entry {
                view,
                revision,
                ..Entry::default()
            },
        );
    }

    /// Folds `events`, in order, into the inserted views; returns the gaps to fill.
    ///
    /// # Panics
    /// When the view of a valid case id among `events` was not inserted: loading every one of
    /// [`Batch::cases`] is the caller's part.
    pub(crate) fn fold(&mut self, events: &[StoredEvent]) -> Vec<Gap> {
        let mut gaps = Vec::new();
        for stored in events {
            let Ok(case_id) = CaseId::new(&stored.case_id) else {
                // A subject that names no valid case (published around the store): there is
                // no view to fold it into, but it is recorded.
                self.records.push(QuarantineRecord {
                    position: stored.position,
                    case_id: stored.case_id.clone(),
                    code: Code::InvalidCaseId,
                    reason: format!("{:?} names no valid case id", stored.case_id),
                });
                continue;
            };
            let entry = self
                .entries
                .get_mut(&stored.case_id)
                .expect("the caller inserts the view of every case the batch touches");
            if !entry.pending.is_empty() {
                entry.pending.push(stored.clone());
                continue;
            }
            if let Some(gap) = fold_into(
                entry,
                &case_id,
                stored,
                &mut self.records,
                &mut self.counts,
                true,
            ) {
                entry.pending.push(stored.clone());
                gaps.push(gap);
            }
        }
        gaps
    }

    /// Folds one event of `case_id`'s history, read for its gap, into its view.
    ///
    /// # Panics
    /// When `case_id` has no open gap.
    pub(crate) fn fold_history(&mut self, case_id: &CaseId, stored: &StoredEvent) {
        let entry = open_gap(&mut self.entries, case_id);
        fold_into(
            entry,
            case_id,
            stored,
            &mut self.records,
            &mut self.counts,
            false,
        );
    }

    /// Closes `case_id`'s gap: folds the batch's events set aside behind it. An event still
    /// ahead of the view now has nothing before it in the log: it is quarantined.
    ///
    /// # Panics
    /// When `case_id` has no open gap.
    pub(crate) fn resume(&mut self, case_id: &CaseId) {
        let entry = open_gap(&mut self.entries, case_id);
        self.counts.rebuilt += 1;
        entry.changed = true;
        for stored in std::mem::take(&mut entry.pending) {
            fold_into(
                entry,
                case_id,
                &stored,
                &mut self.records,
                &mut self.counts,
                false,
            );
        }
    }

    /// Marks `case_id`'s view to be written even if no event changed it.
    pub(crate) fn mark_changed(&mut self, case_id: &CaseId) {
        if let Some(entry) = self.entries.get_mut(case_id.as_str()) {
            entry.changed = true;
        }
    }

    /// What the batch did, with each changed view encoded. A view larger than
    /// `view_size_max` bytes (what the view store takes) is not written: its case is halted
    /// with [`Code::StateTooLarge`], in a view that keeps no state, while every other case
    /// goes on.
    ///
    /// # Panics
    /// When a gap is still open: its views are not complete.
    pub(crate) fn finish(self, view_size_max: usize) -> Finished {
        let Batch {
            entries,
            mut records,
            counts,
        } = self;
        let mut changed = Vec::new();
        for (key, entry) in entries {
            assert!(
                entry.pending.is_empty(),
                "the gap of case {key} is still open"
            );
            let (Some(mut view), true) = (entry.view, entry.changed) else {
                continue;
            };
            let mut applied = entry.applied;
            let mut bytes = view.encode();
            if bytes.len() > view_size_max {
                let record = QuarantineRecord {
                    position: view.position,
                    case_id: key.clone(),
                    code: Code::StateTooLarge,
                    reason: format!(
                        "the case's view is {} bytes at this event, over the {view_size_max} \
                         the view store takes; the case is halted and its view keeps no \
                         state: raise the server's max_payload, then project --retry",
                        bytes.len()
                    ),
                };
                let case_id = view.state.case_id.clone();
                view = quarantine(None, &case_id, &record);
                bytes = view.encode();
                records.push(record);
                applied = 0;
            }
            changed.push(Changed {
                key,
                view,
                bytes,
                revision: entry.revision,
                applied,
            });
        }
        Finished {
            records,
            counts,
            changed,
        }
    }
}

/// What a batch did: what to record and write, and what to count.
#[derive(Debug)]
pub(crate) struct Finished {
    /// The quarantined events, in the order they were met.
    pub(crate) records: Vec<QuarantineRecord>,
    /// What the fold counted.
    pub(crate) counts: Counts,
    /// The views to write, by case id.
    pub(crate) changed: Vec<Changed>,
}

fn open_gap<'a>(entries: &'a mut BTreeMap<String, Entry>, case_id: &CaseId) -> &'a mut Entry {
    let entry = entries
        .get_mut(case_id.as_str())
        .expect("a gap is of a case in the batch");
    assert!(
        !entry.pending.is_empty(),
        "the case {case_id} has no open gap"
    );
    entry
}

/// Folds one event into `entry`. With `gaps`, an event ahead of the view returns the gap to
/// fill (nothing is changed); without, it is quarantined: the log has nothing between.
fn fold_into(
    entry: &mut Entry,
    case_id: &CaseId,
    stored: &StoredEvent,
    records: &mut Vec<QuarantineRecord>,
    counts: &mut Counts,
    gaps: bool,
) -> Option<Gap> {
    let (view, outcome) = fold_event(entry.view.take(), case_id, stored);
    entry.view = view;
    match outcome {
        Outcome::Applied => {
            entry.changed = true;
            entry.applied += 1;
        }
        Outcome::Skipped => counts.skipped += 1,
        Outcome::Held => {
            entry.changed = true;
            counts.held += 1;
        }
        Outcome::Ahead(_) if gaps => {
            return Some(Gap {
                case_id: case_id.clone(),
                after: entry
                    .view
                    .as_ref()
                    .map_or(Position::ZERO, |view| view.position),
                before: stored.position,
            });
        }
        Outcome::Quarantined(record) | Outcome::Ahead(record) => {
            entry.view = Some(quarantine(entry.view.take(), case_id, &record));
            entry.changed = true;
            records.push(record);
        }
    }
    None
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;

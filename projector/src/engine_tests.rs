//! The batch fold, without I/O: events made by a real case, views kept in the batch.

use bytes::Bytes;
use wfstate_store::{Case, CaseId, Code, CommitId, CommitMeta, Mutation, Position};

use super::*;

/// The payloads of `count` commits of `case_id`, each setting `n` to its number.
fn payloads(case_id: &str, count: u64) -> Vec<Bytes> {
    padded(case_id, count, 0)
}

/// As [`payloads`], each commit also adding a key of `pad` bytes.
fn padded(case_id: &str, count: u64, pad: usize) -> Vec<Bytes> {
    let mut case = Case::new(CaseId::new(case_id).unwrap());
    (1..=count)
        .map(|n| {
            case.buffer(Mutation::set_key("n", n));
            if pad > 0 {
                case.buffer(Mutation::set_key(format!("pad{n}"), "x".repeat(pad)));
            }
            let prepared = case
                .prepare_commit(CommitMeta {
                    commit_id: CommitId::generate(),
                    committed_at_ms: 1000 + n,
                    writer: "test".into(),
                })
                .unwrap();
            let payload = prepared.payload_bytes();
            case.complete(prepared).unwrap();
            payload
        })
        .collect()
}

fn stored(position: u64, case_id: &str, payload: &Bytes) -> StoredEvent {
    StoredEvent {
        position: Position::new(position),
        case_id: case_id.into(),
        commit_id: None,
        payload: payload.clone(),
    }
}

fn id(text: &str) -> CaseId {
    CaseId::new(text).unwrap()
}

/// A batch over `events` with no views yet.
fn fresh(events: &[StoredEvent]) -> Batch {
    let mut batch = Batch::default();
    for key in Batch::cases(events) {
        batch.insert(key, None, None);
    }
    batch
}

/// No limit on a view's size.
const ANY: usize = usize::MAX;

fn written(batch: Batch) -> BTreeMap<String, View> {
    batch
        .finish(ANY)
        .changed
        .into_iter()
        .map(|changed| (changed.key, changed.view))
        .collect()
}

#[test]
fn events_of_several_cases_are_folded_each_into_its_own_view() {
    let (a, b) = (payloads("a", 2), payloads("b", 1));
    let events = [
        stored(1, "a", &a[0]),
        stored(2, "b", &b[0]),
        stored(3, "a", &a[1]),
    ];
    let mut batch = fresh(&events);
    assert_eq!(batch.fold(&events), vec![]);
    assert!(batch.records.is_empty());
    let views = written(batch);
    assert_eq!(views["a"].position, Position::new(3));
    assert_eq!(views["a"].state.version.get(), 2);
    assert_eq!(views["b"].position, Position::new(2));
}

#[test]
fn a_bad_event_halts_its_case_and_later_ones_are_held_while_others_go_on() {
    let (a, b) = (payloads("a", 3), payloads("b", 2));
    let tampered = Bytes::from_static(b"not an event");
    let events = [
        stored(1, "a", &a[0]),
        stored(2, "a", &tampered),
        stored(3, "b", &b[0]),
        stored(4, "a", &a[2]),
        stored(5, "b", &b[1]),
    ];
    let mut batch = fresh(&events);
    assert_eq!(batch.fold(&events), vec![]);
    assert_eq!(batch.records.len(), 1);
    assert_eq!(batch.records[0].position, Position::new(2));
    assert_eq!(batch.counts.held, 1);
    let views = written(batch);
    let halted = views["a"].quarantine.as_ref().unwrap();
    assert_eq!((halted.position, halted.held), (Position::new(2), 1));
    assert_eq!(halted.last_held, Position::new(4));
    assert_eq!(views["a"].position, Position::new(1));
    assert!(views["b"].is_healthy());
    assert_eq!(views["b"].position, Position::new(5));
}

#[test]
fn a_view_behind_an_event_asks_for_the_history_between_and_then_goes_on() {
    let a = payloads("a", 4);
    // The view is missing: the batch starts at the case's third event.
    let events = [stored(30, "a", &a[2]), stored(40, "a", &a[3])];
    let mut batch = fresh(&events);
    let gaps = batch.fold(&events);
    assert_eq!(
        gaps,
        vec![Gap {
            case_id: id("a"),
            after: Position::ZERO,
            before: Position::new(30)
        }]
    );
    batch.fold_history(&id("a"), &stored(10, "a", &a[0]));
    batch.fold_history(&id("a"), &stored(20, "a", &a[1]));
    batch.resume(&id("a"));
    assert!(batch.records.is_empty());
    assert_eq!(batch.counts.rebuilt, 1);
    let views = written(batch);
    assert_eq!(views["a"].position, Position::new(40));
    assert_eq!(views["a"].state.version.get(), 4);
    assert!(views["a"].is_healthy());
}

#[test]
fn a_gap_the_history_cannot_fill_quarantines_the_event_after_it() {
    let a = payloads("a", 3);
    let events = [stored(30, "a", &a[2])];
    let mut batch = fresh(&events);
    assert_eq!(batch.fold(&events).len(), 1);
    // The log holds only the first event: the second is missing.
    batch.fold_history(&id("a"), &stored(10, "a", &a[0]));
    batch.resume(&id("a"));
    assert_eq!(batch.records.len(), 1);
    assert_eq!(batch.records[0].code, Code::VersionGap);
    let views = written(batch);
    assert_eq!(views["a"].position, Position::new(10));
    assert_eq!(
        views["a"].quarantine.as_ref().unwrap().position,
        Position::new(30)
    );
}

#[test]
fn redelivered_events_are_skipped_and_change_nothing() {
    let a = payloads("a", 2);
    let first = [stored(1, "a", &a[0]), stored(2, "a", &a[1])];
    let mut batch = fresh(&first);
    batch.fold(&first);
    let view = written(batch).remove("a").unwrap();
    let mut again = Batch::default();
    again.insert("a".into(), Some(view), Some(7));
    assert_eq!(again.fold(&first), vec![]);
    assert_eq!(again.counts.skipped, 2);
    assert!(again.finish(ANY).changed.is_empty());
}

#[test]
fn an_invalid_case_id_is_recorded_without_a_view() {
    let a = payloads("a", 1);
    let events = [stored(1, "bad id!", &a[0])];
    let mut batch = fresh(&events);
    assert_eq!(batch.fold(&events), vec![]);
    assert_eq!(batch.records[0].code, Code::InvalidCaseId);
    assert!(batch.finish(ANY).changed.is_empty());
}

#[test]
#[should_panic(expected = "still open")]
fn views_with_an_open_gap_are_never_handed_out() {
    let a = payloads("a", 2);
    let events = [stored(2, "a", &a[1])];
    let mut batch = fresh(&events);
    batch.fold(&events);
    let _ = batch.finish(ANY);
}

#[test]
fn a_view_larger_than_the_store_takes_halts_its_case_and_no_other() {
    let (a, b) = (padded("a", 2, 600), payloads("b", 1));
    let events = [
        stored(1, "a", &a[0]),
        stored(2, "b", &b[0]),
        stored(3, "a", &a[1]),
    ];
    let mut batch = fresh(&events);
    batch.fold(&events);
    let large = batch.entries["a"].view.as_ref().unwrap().encode().len();
    assert!(large > 1200, "{large}");
    let limit = 1000;
    let finished = batch.finish(limit);
    assert_eq!(finished.records.len(), 1);
    let record = &finished.records[0];
    assert_eq!(
        (record.code, record.position),
        (Code::StateTooLarge, Position::new(3))
    );
    assert!(
        record.reason.contains("project --retry"),
        "{}",
        record.reason
    );
    let views: BTreeMap<_, _> = finished
        .changed
        .into_iter()
        .map(|changed| {
            assert_eq!(changed.bytes, changed.view.encode());
            assert!(changed.bytes.len() <= limit, "every view written fits");
            (changed.key, (changed.view, changed.applied))
        })
        .collect();
    let (halted, applied) = &views["a"];
    assert_eq!(
        halted.quarantine.as_ref().unwrap().code,
        Code::StateTooLarge
    );
    assert_eq!(*applied, 0);
    assert!(views["b"].0.is_healthy());
    assert_eq!(views["b"].1, 1);
}

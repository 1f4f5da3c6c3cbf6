//! The checks of a run, one failure class at a time, on made-up records and stream contents.

use std::collections::HashMap;

use crate::check::{Break, Stored, StreamContents};
use crate::record::Record;
use crate::report::{Injected, RunInput, analyze};
use crate::schedule::Fault;

const T0: u64 = 1_000_000;

fn stored(sequence: u64, case: &str, version: u64, hash: &str) -> Stored {
    Stored {
        sequence,
        case: case.into(),
        version,
        hash: hash.into(),
        committed_at_ms: T0 + sequence,
        commit_id: String::new(),
        n: None,
    }
}

/// An event setting the case's `n`.
fn counted(sequence: u64, case: &str, version: u64, n: u64) -> Stored {
    Stored {
        n: Some(n),
        ..stored(sequence, case, version, &format!("h{sequence}"))
    }
}

fn contents(events: Vec<(&str, Stored)>) -> StreamContents {
    let mut by_commit_id: HashMap<String, Vec<usize>> = HashMap::new();
    for (index, (id, _)) in events.iter().enumerate() {
        by_commit_id.entry((*id).into()).or_default().push(index);
    }
    StreamContents {
        events: events
            .into_iter()
            .map(|(id, event)| Stored {
                commit_id: id.into(),
                ..event
            })
            .collect(),
        by_commit_id,
        breaks: Vec::new(),
    }
}

fn transaction(id: &str, case: &str) -> Record {
    Record::Intent {
        id: id.into(),
        case: case.into(),
        key: "n".into(),
        value: 0,
        at: T0,
        transact: true,
    }
}

fn ack(id: &str, case: &str, version: u64, hash: &str, at: u64) -> Record {
    Record::Ack {
        id: id.into(),
        case: case.into(),
        version,
        hash: hash.into(),
        at,
        resent: false,
    }
}

fn input(records: Vec<Record>, contents: StreamContents) -> RunInput {
    RunInput {
        seed: 9,
        started_ms: T0,
        ended_ms: T0 + 10_000,
        injected: vec![Injected {
            fault: Fault::LeaderKill,
            detail: "node 0".into(),
            hit: true,
            start_ms: T0 + 1_000,
            end_ms: T0 + 3_000,
        }],
        records,
        contents,
        audit_problems: Vec::new(),
        auditor_problems: Vec::new(),
        mismatches: Vec::new(),
        process_failures: Vec::new(),
    }
}

#[test]
fn a_clean_run_passes_and_counts_its_gaps() {
    let records = vec![
        ack("a", "c", 1, "h1", T0 + 500),
        ack("b", "c", 2, "h2", T0 + 4_000),
        ack("d", "c", 3, "h3", T0 + 4_100),
    ];
    let stream = contents(vec![
        ("a", stored(1, "c", 1, "h1")),
        ("b", stored(2, "c", 2, "h2")),
        ("d", stored(3, "c", 3, "h3")),
    ]);
    let outcome = analyze(input(records, stream));
    assert!(outcome.passed(), "{:?}", outcome.failures);
    let row = &outcome.rows[&Some(Fault::LeaderKill)];
    assert_eq!((row.faults, row.acked), (1, 2));
    // From the last commit (4.1 s) to the run's end (10 s); the gap after the fault's
    // start (1 s to 4 s) is shorter.
    assert_eq!(row.unavailable_ms, vec![5_900]);
}

#[test]
fn a_stall_is_counted_in_the_window_it_falls_in() {
    let records = vec![
        ack("a", "c", 1, "h1", T0 + 500),
        ack("b", "c", 2, "h2", T0 + 1_200),
        ack("d", "c", 3, "h3", T0 + 9_000),
    ];
    let stream = contents(vec![
        ("a", stored(1, "c", 1, "h1")),
        ("b", stored(2, "c", 2, "h2")),
        ("d", stored(3, "c", 3, "h3")),
    ]);
    let mut input = input(records, stream);
    input.injected.push(Injected {
        fault: Fault::Partition,
        detail: "node 1".into(),
        hit: true,
        start_ms: T0 + 2_000,
        end_ms: T0 + 4_000,
    });
    let outcome = analyze(input);
    // The leader kill's window ends at 2 s; the partition's runs from 2 s to 10 s, with
    // no commit from 2 s to 9 s.
    assert_eq!(
        outcome.rows[&Some(Fault::LeaderKill)].unavailable_ms,
        vec![800]
    );
    assert_eq!(
        outcome.rows[&Some(Fault::Partition)].unavailable_ms,
        vec![7_000]
    );
}

#[test]
fn an_acknowledged_commit_missing_from_the_stream_is_lost() {
    let records = vec![ack("a", "c", 1, "h1", T0 + 2_000)];
    let outcome = analyze(input(records, contents(Vec::new())));
    assert!(!outcome.passed());
    assert_eq!(outcome.rows[&Some(Fault::LeaderKill)].lost, 1);
}

#[test]
fn a_commit_id_stored_twice_is_duplicated() {
    let records = vec![ack("a", "c", 1, "h1", T0 + 2_000)];
    let stream = contents(vec![
        ("a", stored(1, "c", 1, "h1")),
        ("a", stored(2, "c", 2, "h2")),
    ]);
    let outcome = analyze(input(records, stream));
    assert!(!outcome.passed());
    assert_eq!(outcome.rows[&None].duplicated, 1);
}

#[test]
fn a_broken_chain_or_a_receipt_of_another_event_is_forked() {
    let mut stream = contents(vec![("a", stored(1, "c", 1, "other"))]);
    stream.breaks.push(Break {
        sequence: 1,
        committed_at_ms: T0 + 2_000,
        detail: "version 3 follows version 1".into(),
    });
    let outcome = analyze(input(vec![ack("a", "c", 1, "h1", T0 + 2_000)], stream));
    assert!(!outcome.passed());
    assert_eq!(outcome.rows[&Some(Fault::LeaderKill)].forked, 2);
}

#[test]
fn an_unknown_outcome_resolved_against_the_stream_fails() {
    let records = vec![
        Record::Unknown {
            id: "a".into(),
            case: "c".into(),
            at: T0 + 2_000,
        },
        Record::Resolved {
            id: "a".into(),
            landed: false,
            at: T0 + 2_500,
        },
        Record::Unknown {
            id: "b".into(),
            case: "c".into(),
            at: T0 + 2_000,
        },
        ack("z", "c", 2, "h2", T0 + 3_000),
    ];
    let stream = contents(vec![
        ("a", stored(1, "c", 1, "h1")),
        ("z", stored(2, "c", 2, "h2")),
    ]);
    let outcome = analyze(input(records, stream));
    assert_eq!(outcome.failures.len(), 1, "{:?}", outcome.failures);
    let row = &outcome.rows[&Some(Fault::LeaderKill)];
    assert_eq!((row.unknown, row.resolved_at_end), (2, 1));
    assert_eq!(row.resolve_ms, vec![500]);
}

/// A commit the client reported failed (nothing stored) that is in the stream: the failure
/// the client must never report.
#[test]
fn a_commit_reported_failed_that_is_stored_fails_the_run() {
    let records = vec![Record::Failed {
        id: Some("a".into()),
        error: "refused".into(),
        at: T0 + 2_000,
    }];
    let outcome = analyze(input(
        records,
        contents(vec![("a", stored(1, "c", 1, "h1"))]),
    ));
    assert!(!outcome.passed());
    assert_eq!(outcome.rows[&Some(Fault::LeaderKill)].failed_stored, 1);
    let failed_read = vec![
        Record::Failed {
            id: None,
            error: "a read failed".into(),
            at: T0 + 2_000,
        },
        ack("a", "c", 1, "h1", T0 + 2_500),
    ];
    let outcome = analyze(input(
        failed_read,
        contents(vec![("a", stored(1, "c", 1, "h1"))]),
    ));
    assert!(outcome.passed(), "{:?}", outcome.failures);
}

/// A case's counter is its stored transactions: one set by another commit, or a transaction
/// whose increment is missing, fails the run.
#[test]
fn each_counter_is_its_stored_transactions() {
    let records = vec![
        transaction("t1", "c"),
        transaction("t2", "c"),
        ack("t2", "c", 3, "h3", T0 + 2_500),
    ];
    let good = contents(vec![
        ("setup", counted(1, "c", 1, 0)),
        ("t1", counted(2, "c", 2, 1)),
        ("t2", counted(3, "c", 3, 2)),
    ]);
    let outcome = analyze(input(records.clone(), good));
    assert!(outcome.passed(), "{:?}", outcome.failures);
    let lost_update = contents(vec![
        ("setup", counted(1, "c", 1, 0)),
        ("t1", counted(2, "c", 2, 1)),
        ("t2", counted(3, "c", 3, 1)),
    ]);
    assert!(!analyze(input(records.clone(), lost_update)).passed());
    let foreign = contents(vec![
        ("setup", counted(1, "c", 1, 0)),
        ("t1", counted(2, "c", 2, 1)),
        ("x", counted(3, "c", 3, 2)),
    ]);
    assert!(!analyze(input(records, foreign)).passed());
}

/// A run whose faults all missed (a node that was not running) fails.
#[test]
fn a_run_that_injected_no_fault_fails() {
    let mut input = input(Vec::new(), contents(Vec::new()));
    input.injected[0].hit = false;
    let outcome = analyze(input);
    assert!(
        outcome
            .failures
            .iter()
            .any(|failure| failure == "no fault was injected"),
        "{:?}",
        outcome.failures
    );
    assert!(!outcome.rows.contains_key(&Some(Fault::LeaderKill)));
}

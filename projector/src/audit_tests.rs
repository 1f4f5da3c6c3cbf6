//! The auditor keeps the same report whatever number of cases it keeps in memory.

use bytes::Bytes;
use wfstate_store::{Case, CaseId, CommitId, CommitMeta, Mutation};

use super::*;

/// Events of `cases` cases of `each` commits, interleaved case after case, one of them
/// replaced by garbage.
fn interleaved(cases: usize, each: u64) -> Vec<StoredEvent> {
    let mut handles: Vec<Case> = (0..cases)
        .map(|n| Case::new(CaseId::new(format!("c{n}")).unwrap()))
        .collect();
    let mut events = Vec::new();
    for version in 1..=each {
        for case in &mut handles {
            case.buffer(Mutation::set_key("v", version));
            let prepared = case
                .prepare_commit(CommitMeta {
                    commit_id: CommitId::generate(),
                    committed_at_ms: version,
                    writer: "w".into(),
                })
                .unwrap();
            let position = Position::new(events.len() as u64 + 1);
            let mut payload = prepared.payload_bytes();
            if case.id().as_str() == "c17" && version == 3 {
                payload = Bytes::from_static(b"\xff garbage");
            }
            events.push(StoredEvent {
                position,
                case_id: case.id().to_string(),
                commit_id: Some(prepared.event().commit_id),
                payload,
            });
            case.complete(prepared).unwrap();
        }
    }
    events
}

fn audit(auditor: &mut Auditor, events: &[StoredEvent]) -> u64 {
    let mut receipts = 0;
    for stored in events {
        receipts += u64::from(auditor.observe(stored).unwrap().is_some());
    }
    receipts
}

#[test]
fn cases_moved_out_of_memory_are_audited_as_those_kept_in_it() {
    let events = interleaved(50, 5);
    let mut everything = Auditor::new();
    let mut bounded = Auditor::with_cases_in_memory(4);
    assert_eq!(audit(&mut everything, &events), 249);
    assert_eq!(audit(&mut bounded, &events), 249);
    assert_eq!(bounded.chains.in_memory(), 4, "at most 4 cases in memory");
    let head = everything.head("c3").unwrap();
    assert_eq!(bounded.head("c3").unwrap(), head);
    let (everything, bounded) = (
        everything.finish(None).unwrap(),
        bounded.finish(None).unwrap(),
    );
    assert_eq!((bounded.cases, bounded.events), (50, 250));
    let codes: Vec<Code> = bounded.problems.iter().map(|p| p.code).collect();
    assert_eq!(
        codes,
        [Code::Undecodable, Code::VersionGap, Code::BrokenChain],
        "{:?}",
        bounded.problems
    );
    assert_eq!(bounded, everything);
}

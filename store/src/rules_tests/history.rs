//! Stored history: folding detects dropped, reordered, forged and foreign events; a tentative
//! commit writes the prepared event and applies it once.

use crate::Version;
use crate::{Case, CaseId, Mutation, ScopeId, Value};

use super::*;

/// Three committed payloads of one case, and the case that wrote them.
fn history() -> (Vec<Vec<u8>>, Case) {
    let mut case = new_case();
    let mut payloads = Vec::new();
    for batch in [
        vec![Mutation::set_key("a", 1)],
        vec![Mutation::add_token(
            tid("t1"),
            0,
            ScopeId::root(),
            Value::Null,
        )],
        vec![Mutation::IncrementStepCount],
    ] {
        for mutation in batch {
            case.buffer(mutation);
        }
        let prepared = case.prepare_commit(meta(7)).unwrap();
        payloads.push(prepared.payload().to_vec());
        case.complete(prepared).unwrap();
    }
    (payloads, case)
}

#[test]
fn fold_detects_dropped_reordered_forged_and_foreign_events() {
    use crate::{Event, FoldError, Hash};
    let (payloads, writer) = history();
    // Every history is folded twice, by the copying `apply_payload` and by the in-place
    // `Case::fold`: both reach the same state or stop with the same error.
    let fold = |order: &[&Vec<u8>]| {
        let mut case = new_case();
        let mut in_place = Ok(new_case());
        for payload in order {
            let step = case.apply_payload(payload).map(|_| ());
            in_place = in_place.and_then(|folded| folded.fold(payload).map(|(folded, _)| folded));
            assert_eq!(step.as_ref().err(), in_place.as_ref().err());
            step?;
        }
        let in_place = in_place.unwrap();
        assert_eq!(
            (in_place.state(), in_place.last_event_hash()),
            (case.state(), case.last_event_hash())
        );
        Ok::<Case, FoldError>(case)
    };
    assert_eq!(
        fold(&payloads.iter().collect::<Vec<_>>()).unwrap().state(),
        writer.state()
    );

    // Dropped: version 3 right after version 1.
    let dropped = fold(&[&payloads[0], &payloads[2]]).unwrap_err();
    assert_eq!(
        dropped,
        FoldError::VersionGap {
            expected: Version::new(2),
            found: Version::new(3)
        }
    );

    // Altered: same version, another prev_event_hash.
    let mut forged = Event::decode(&payloads[1]).unwrap();
    forged.prev_event_hash = Hash::of(b"forged");
    let forged = forged.encode();
    assert!(matches!(
        fold(&[&payloads[0], &forged]),
        Err(FoldError::BrokenChain { .. })
    ));

    // Altered mutations with the original state hash.
    let mut altered = Event::decode(&payloads[2]).unwrap();
    altered.mutations.push(Mutation::IncrementStepCount);
    let altered = altered.encode();
    let error = fold(&[&payloads[0], &payloads[1], &altered]).unwrap_err();
    assert!(matches!(error, FoldError::StateHashMismatch { .. }));

    // An event whose mutations do not apply.
    let mut invalid = Event::decode(&payloads[1]).unwrap();
    invalid.mutations = vec![Mutation::RemoveToken { id: tid("ghost") }];
    let invalid = invalid.encode();
    assert!(matches!(
        fold(&[&payloads[0], &invalid]),
        Err(FoldError::Invalid(_))
    ));

    // Another case's event.
    let mut foreign = Event::decode(&payloads[0]).unwrap();
    foreign.case_id = CaseId::new("other").unwrap();
    assert!(matches!(
        fold(&[&foreign.encode()]),
        Err(FoldError::WrongCase { .. })
    ));

    // Garbage.
    assert!(matches!(
        fold(&[&b"garbage".to_vec()]),
        Err(FoldError::Decode(_))
    ));

    // A failed fold leaves the case as it was.
    let mut case = new_case();
    case.apply_payload(&payloads[0]).unwrap();
    let before = case.state().clone();
    assert!(case.apply_payload(&payloads[2]).is_err());
    assert_eq!(case.state(), &before);
}

#[test]
fn a_tentative_commit_writes_the_prepared_event_and_applies_it_once() {
    let fill = |case: &mut Case| {
        case.buffer(Mutation::set_key("n", 1))
            .update_ctx(|ctx| {
                if let Some(Value::Integer(n)) = ctx.get_mut("n") {
                    *n += 1;
                }
            })
            .buffer(Mutation::add_token(
                tid("t1"),
                0,
                ScopeId::root(),
                Value::Null,
            ))
            .update_token(tid("t1"), |token| token.ip = 3);
    };
    let (mut prepared_case, mut tried) = (new_case(), new_case());
    fill(&mut prepared_case);
    fill(&mut tried);
    let meta = meta(1000);
    let prepared = prepared_case.prepare_commit(meta.clone()).unwrap();

    // Dropped: the case and its buffer are as they were.
    let tentative = tried.try_commit(meta.clone()).unwrap();
    assert_eq!(
        tentative.state().version,
        1,
        "the batch is applied on trial"
    );
    assert_eq!(tentative.payload(), prepared.payload());
    drop(tentative);
    assert_eq!(tried.state(), prepared_case.state());
    assert_eq!(tried.buffered(), 4);

    // Kept: the state the prepared event leaves, the closures resolved once.
    let tentative = tried.try_commit(meta).unwrap();
    assert_eq!(tentative.payload(), prepared.payload());
    assert_eq!(tentative.event_hash(), prepared.event_hash());
    tentative.keep();
    prepared_case.complete(prepared).unwrap();
    assert_eq!(tried.state(), prepared_case.state());
    assert_eq!(tried.state().ctx.get("n"), Some(&Value::Integer(2)));
    assert_eq!(tried.state().tokens[&tid("t1")].ip, 3);
    assert_eq!(tried.last_event_hash(), prepared_case.last_event_hash());
    assert_eq!(tried.buffered(), 0);
}

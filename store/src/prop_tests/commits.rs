//! Random batches against the reference model; folding, round trips and the state hash.

use proptest::prelude::*;

use crate::{Case, CaseId, CaseState, Event, FoldError, Hash, Map, Mutation, Value};

use super::*;

#[test]
fn random_batches_match_the_reference_model() {
    runner("random_batches_match_the_reference_model", 400)
        .run(&batches(), |batches| {
            run_against_model(&batches).map(|_| ())
        })
        .unwrap();
}

#[test]
fn an_event_that_fails_its_state_hash_is_undone_whole() {
    runner("an_event_that_fails_its_state_hash_is_undone_whole", 200)
        .run(&batches(), |batches| {
            let (payloads, writer) = run_against_model(&batches)?;
            let mut case = Case::new(CaseId::new("prop").unwrap());
            for payload in &payloads {
                // Every mutation of the event applies; only the final hash check fails, so
                // everything it changed must be put back.
                let mut forged = Event::decode(payload).unwrap();
                forged.state_hash = Hash::of(b"forged");
                let before = case.state().clone();
                let refused = case.apply_payload(&forged.encode());
                prop_assert!(
                    matches!(refused, Err(FoldError::StateHashMismatch { .. })),
                    "{refused:?}"
                );
                prop_assert_eq!(case.state(), &before);
                case.apply_payload(payload).unwrap();
            }
            prop_assert_eq!(case.state(), writer.state());
            Ok(())
        })
        .unwrap();
}

#[test]
fn folding_the_same_events_twice_gives_identical_bytes() {
    runner("folding_the_same_events_twice_gives_identical_bytes", 200)
        .run(&batches(), |batches| {
            let (payloads, writer) = run_against_model(&batches)?;
            let fold = || {
                let mut case = Case::new(CaseId::new("prop").unwrap());
                for payload in &payloads {
                    case.apply_payload(payload).unwrap();
                }
                case
            };
            // The second fold goes through the in-place `Case::fold` replay uses.
            let fold_in_place = || {
                let mut case = Case::new(CaseId::new("prop").unwrap());
                for payload in &payloads {
                    case = case.fold(payload).unwrap().0;
                }
                case
            };
            let (first, second) = (fold(), fold_in_place());
            prop_assert_eq!(
                first.state().canonical_bytes(),
                second.state().canonical_bytes()
            );
            prop_assert_eq!(
                first.state().canonical_bytes(),
                writer.state().canonical_bytes()
            );
            prop_assert_eq!(first.last_event_hash(), writer.last_event_hash());
            Ok(())
        })
        .unwrap();
}

#[test]
fn values_and_mutations_round_trip() {
    runner("values_and_mutations_round_trip", 500)
        .run(&prop::collection::vec(mutation(), 0..6), |mutations| {
            let mut cbor = Vec::new();
            ciborium::into_writer(&mutations, &mut cbor).unwrap();
            let decoded: Vec<Mutation> = ciborium::from_reader(cbor.as_slice()).unwrap();
            prop_assert_eq!(&decoded, &mutations);
            // JSON has no byte strings; other values round-trip through it as well.
            let json = serde_json::to_string(&mutations).unwrap();
            if !json_unfriendly(&mutations) {
                let decoded: Vec<Mutation> = serde_json::from_str(&json).unwrap();
                prop_assert_eq!(&decoded, &mutations);
            }
            Ok(())
        })
        .unwrap();
}

/// Whether the mutations hold a byte string, which JSON cannot carry.
fn json_unfriendly(mutations: &[Mutation]) -> bool {
    format!("{mutations:?}").contains("Bytes(")
}

#[test]
fn events_round_trip() {
    runner("events_round_trip", 200)
        .run(&batches(), |batches| {
            let (payloads, case) = run_against_model(&batches)?;
            for payload in &payloads {
                let event = crate::Event::decode(payload).unwrap();
                prop_assert_eq!(&event.encode(), payload);
            }
            prop_assert_eq!(case.state().check_invariants(), Ok(()));
            Ok(())
        })
        .unwrap();
}

#[test]
fn state_hash_ignores_insertion_order() {
    let entries = prop::collection::vec(("[a-h]{1,3}", value()), 0..12);
    runner("state_hash_ignores_insertion_order", 300)
        .run(&(entries, any::<u64>()), |(entries, shuffle)| {
            let mut forward = CaseState::new(CaseId::new("c").unwrap());
            for (key, value) in &entries {
                forward.ctx.insert(key.clone(), value.clone());
            }
            // The same final entries, inserted in another order.
            let last: Map = entries.iter().cloned().collect();
            let mut order: Vec<(String, Value)> = last.into_iter().collect();
            let n = order.len().max(1);
            order.rotate_left(usize::try_from(shuffle % n as u64).unwrap());
            order.reverse();
            let mut backward = CaseState::new(CaseId::new("c").unwrap());
            for (key, value) in order {
                backward.ctx.insert(key, value);
            }
            prop_assert_eq!(forward.hash(), backward.hash());
            Ok(())
        })
        .unwrap();
}

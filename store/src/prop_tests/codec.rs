//! The direct encoders and reader against ciborium and serde, on random states, events and
//! arbitrary CBOR.

use proptest::prelude::*;

use crate::Version;
use crate::{
    Case, CaseId, CaseState, CaseStatus, CommitId, Event, Hash, Mutation, Scope, ScopeStatus,
    Token, TokenId, Value,
};

use super::*;

/// Values for encoding: every float class and every integer header width, at its edges.
fn encoding_value() -> impl Strategy<Value = Value> {
    let edges: Vec<i128> = vec![
        0,
        23,
        24,
        255,
        256,
        65_535,
        65_536,
        u32::MAX.into(),
        i128::from(u32::MAX) + 1,
        u64::MAX.into(),
        -1,
        -24,
        -25,
        -256,
        -257,
        -65_537,
        i64::MIN.into(),
        i128::from(i64::MIN) + 1,
    ];
    let leaf = prop_oneof![
        value(),
        prop::sample::select(edges).prop_map(Value::Integer),
        any::<f64>().prop_map(Value::Float),
        any::<f32>().prop_map(|float| Value::Float(float.into())),
        prop::sample::select(vec![
            0.0,
            -0.0,
            0.5,
            1.5,
            65_504.0,
            1e-7,
            f64::NAN,
            f64::INFINITY
        ])
        .prop_map(Value::Float),
        "\\PC{20,30}".prop_map(Value::from),
        prop::collection::vec(any::<u8>(), 250..260).prop_map(Value::Bytes),
    ];
    leaf.prop_recursive(2, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map("\\PC{0,3}", inner, 0..3).prop_map(Value::Map),
        ]
    })
}

fn encoding_state() -> impl Strategy<Value = CaseState> {
    let status = prop::sample::select(vec![
        CaseStatus::Running,
        CaseStatus::Done,
        CaseStatus::Failed,
        CaseStatus::Cancelled,
    ]);
    let scope = (any::<u64>(), scope_id(), scope_id(), any::<bool>()).prop_map(
        |(entered_at_ms, id, parent, cancelled)| Scope {
            entered_at_ms,
            id,
            parent,
            status: if cancelled {
                ScopeStatus::Cancelled
            } else {
                ScopeStatus::Active
            },
        },
    );
    let token = (
        "[a-z]{1,30}",
        any::<u64>(),
        scope_id(),
        token_status(),
        encoding_value(),
    )
        .prop_map(|(id, ip, scope, status, value)| Token {
            id: TokenId::new(id).unwrap(),
            ip,
            scope,
            status,
            value,
        });
    (
        (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()),
        prop::collection::btree_map("\\PC{1,30}", encoding_value(), 0..30),
        encoding_value(),
        prop::collection::vec(scope, 0..4),
        prop::collection::vec(token, 0..30),
        status,
    )
        .prop_map(|(numbers, ctx, metadata, scopes, tokens, status)| {
            let mut state = CaseState::new(CaseId::new("c").unwrap());
            (state.created_at_ms, state.last_commit_at_ms) = (numbers.0, numbers.1);
            (state.step_count, state.version) = (numbers.2, Version::new(numbers.3));
            state.ctx = ctx;
            state.metadata = metadata;
            state.status = status;
            state
                .scopes
                .extend(scopes.into_iter().map(|s| (s.id.clone(), s)));
            state
                .tokens
                .extend(tokens.into_iter().map(|t| (t.id.clone(), t)));
            state
        })
}

#[test]
fn the_canonical_encoding_is_ciboriums_byte_for_byte() {
    runner("the_canonical_encoding_is_ciboriums_byte_for_byte", 300)
        .run(&encoding_state(), |state| {
            let mut reference = Vec::new();
            ciborium::into_writer(&state, &mut reference).unwrap();
            prop_assert_eq!(state.canonical_bytes(), reference);
            Ok(())
        })
        .unwrap();
}

fn any_event() -> impl Strategy<Value = Event> {
    (
        prop::collection::vec(mutation(), 0..20),
        (any::<u64>(), any::<u64>()),
        "\\PC{0,40}",
        (any::<[u8; 32]>(), any::<[u8; 32]>()),
    )
        .prop_map(|(mutations, (version, at), writer, (state, prev))| Event {
            schema: crate::SCHEMA_VERSION,
            commit_id: CommitId::generate(),
            case_id: CaseId::new("c-1").unwrap(),
            version: Version::new(version),
            mutations,
            committed_at_ms: at,
            writer,
            state_hash: Hash(state),
            prev_event_hash: Hash(prev),
        })
}

#[test]
fn the_event_encoding_is_ciboriums_byte_for_byte() {
    runner("the_event_encoding_is_ciboriums_byte_for_byte", 300)
        .run(&any_event(), |event| {
            let mut reference = Vec::new();
            ciborium::into_writer(&event, &mut reference).unwrap();
            prop_assert_eq!(event.encode(), reference);
            Ok(())
        })
        .unwrap();
}

/// What a decode gives, comparable even with NaN floats inside: the event's bytes again.
fn decoded(result: Result<Event, crate::DecodeError>) -> Result<Vec<u8>, crate::DecodeError> {
    result.map(|event| event.encode())
}

#[test]
fn the_direct_reader_decodes_what_serde_decodes() {
    // How (overwrite a byte, insert one, truncate, add a trailing byte), where, and what.
    let damage = (0..4_u8, any::<prop::sample::Index>(), any::<u8>());
    runner("the_direct_reader_decodes_what_serde_decodes", 600)
        .run(&(any_event(), damage), |(event, (how, at, byte))| {
            let payload = event.encode();
            // Writers' payloads take the direct path (floats of half width excepted).
            if !format!("{event:?}").contains("Float(") {
                prop_assert!(crate::codec::read_event(&payload).is_some());
            }
            prop_assert_eq!(
                decoded(Event::decode(&payload)),
                decoded(Event::decode_by_serde(&payload))
            );
            // A damaged payload decodes, or fails, exactly as through serde.
            let mut damaged = payload.clone();
            match how {
                0 => damaged[at.index(payload.len())] = byte,
                1 => damaged.insert(at.index(payload.len() + 1), byte),
                2 => damaged.truncate(at.index(payload.len())),
                _ => damaged.push(0),
            }
            prop_assert_eq!(
                decoded(Event::decode(&damaged)),
                decoded(Event::decode_by_serde(&damaged))
            );
            Ok(())
        })
        .unwrap();
}

/// Any CBOR item, well-formed or not: a random head (every major type and additional value,
/// its argument bytes), random bytes after it, or arrays and maps of such items.
fn cbor_item() -> impl Strategy<Value = Vec<u8>> {
    let leaf = (
        0..8_u8,
        0..32_u8,
        any::<u64>(),
        prop::collection::vec(any::<u8>(), 0..6),
    )
        .prop_map(|(major, additional, argument, tail)| {
            let mut item = vec![major << 5 | additional];
            let argument = argument.to_be_bytes();
            match additional {
                24 => item.push(argument[7]),
                25 => item.extend_from_slice(&argument[6..]),
                26 => item.extend_from_slice(&argument[4..]),
                27 => item.extend_from_slice(&argument),
                _ => {}
            }
            item.extend(tail);
            item
        });
    leaf.prop_recursive(3, 16, 4, |inner| {
        (any::<bool>(), prop::collection::vec(inner, 0..4)).prop_map(|(array, items)| {
            let count = u8::try_from(if array { items.len() } else { items.len() / 2 }).unwrap();
            let mut item = vec![if array { 0x80 } else { 0xa0 } | count];
            item.extend(items.into_iter().flatten());
            item
        })
    })
}

#[test]
fn the_direct_reader_agrees_with_serde_on_any_value_bytes() {
    // An event whose metadata value (a null, 0xf6) is replaced by arbitrary item bytes.
    let mut shell = Case::new(CaseId::new("c").unwrap());
    shell.buffer(Mutation::SetMetadata { value: Value::Null });
    let payload = shell.prepare_commit(meta(1)).unwrap().payload().to_vec();
    let at = payload.iter().position(|&byte| byte == 0xf6).unwrap();
    runner(
        "the_direct_reader_agrees_with_serde_on_any_value_bytes",
        1000,
    )
    .run(&cbor_item(), |item| {
        let mut bytes = payload[..at].to_vec();
        bytes.extend(&item);
        bytes.extend(&payload[at + 1..]);
        prop_assert_eq!(
            decoded(Event::decode(&bytes)),
            decoded(Event::decode_by_serde(&bytes))
        );
        Ok(())
    })
    .unwrap();
}

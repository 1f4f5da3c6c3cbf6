//! The CBOR encodings of a case state (canonical, what `state_hash` covers) and of an event,
//! written straight into a buffer.
//!
//! Both are on the hot path: every commit encodes an event and hashes its state, and every
//! folded event (projector, replay, audit) hashes the state again. Through serde, ciborium
//! spends most of its time dispatching per item; here each part is written with its minimal
//! CBOR header directly. The bytes are exactly those of ciborium's encoding of the serde
//! forms, which stay the reference: property tests compare the two on random states and
//! events, floats and integer edges included. Floats, rare in a state, are written by
//! ciborium itself (shortest exact width).

use std::cell::RefCell;
use std::collections::BTreeMap;

use crate::event::Event;
use crate::hash::Hash;
use crate::id::{CaseId, CommitId};
use crate::mutation::{Mutation, TokenUpdate};
use crate::position::Version;
use crate::state::{CaseState, Scope, Token};
use crate::value::{Map, Value};

const UNSIGNED: u8 = 0;
const NEGATIVE: u8 = 1 << 5;
const BYTES: u8 = 2 << 5;
const TEXT: u8 = 3 << 5;
const ARRAY: u8 = 4 << 5;
const MAP: u8 = 5 << 5;
const FALSE: u8 = 0xf4;
const TRUE: u8 = 0xf5;
const NULL: u8 = 0xf6;

/// The room for encodings a thread keeps between state hashes; one of a larger state is given
/// back.
const HASH_BUFFER_KEPT: usize = 64 * 1024;

/// SHA-256 of the canonical encoding of `state`. Every commit and every folded event hashes a
/// state: the encoding goes to a buffer the thread keeps (warm in cache, no allocation) rather
/// than to a new one each time.
pub(crate) fn state_hash(state: &CaseState) -> Hash {
    state_hash_and_size(state).0
}

/// The state hash and the size of the canonical encoding it is taken over.
pub(crate) fn state_hash_and_size(state: &CaseState) -> (Hash, usize) {
    thread_local! {
        static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }
    BUFFER.with_borrow_mut(|buffer| {
        buffer.clear();
        write_state(state, buffer);
        let hash = Hash::of(buffer);
        let size = buffer.len();
        if buffer.capacity() > HASH_BUFFER_KEPT {
            *buffer = Vec::new();
        }
        (hash, size)
    })
}

/// Appends the canonical encoding of `state` to `out`.
pub(crate) fn write_state(state: &CaseState, out: &mut Vec<u8>) {
    header(out, MAP, 10);
    text_field(out, "case_id", state.case_id.as_str());
    unsigned_field(out, "created_at_ms", state.created_at_ms);
    text(out, "ctx");
    map(out, &state.ctx);
    unsigned_field(out, "last_commit_at_ms", state.last_commit_at_ms);
    value_field(out, "metadata", &state.metadata);
    text(out, "scopes");
    entries(out, &state.scopes, |out, id, scope| {
        text(out, id.as_str());
        write_scope(out, scope);
    });
    text_field(out, "status", state.status.as_str());
    unsigned_field(out, "step_count", state.step_count);
    text(out, "tokens");
    entries(out, &state.tokens, |out, id, token| {
        text(out, id.as_str());
        write_token(out, token);
    });
    unsigned_field(out, "version", state.version.get());
}

/// Appends the encoding of `event` (the serde form of [`Event`]) to `out`.
pub(crate) fn write_event(event: &Event, out: &mut Vec<u8>) {
    let head = EventHead {
        schema: event.schema,
        commit_id: event.commit_id,
        case_id: &event.case_id,
        version: event.version,
        committed_at_ms: event.committed_at_ms,
        writer: &event.writer,
        state_hash: event.state_hash,
        prev_event_hash: event.prev_event_hash,
    };
    write_event_parts(&head, event.mutations.iter(), out);
}

/// The fields of an event besides its mutations, borrowed.
pub(crate) struct EventHead<'a> {
    pub(crate) schema: u64,
    pub(crate) commit_id: CommitId,
    pub(crate) case_id: &'a CaseId,
    pub(crate) version: Version,
    pub(crate) committed_at_ms: u64,
    pub(crate) writer: &'a str,
    pub(crate) state_hash: Hash,
    pub(crate) prev_event_hash: Hash,
}

/// Appends the encoding of the event made of `head` and `mutations`: the bytes of
/// [`write_event`] without an [`Event`] to own the mutations.
pub(crate) fn write_event_parts<'m>(
    head: &EventHead<'_>,
    mutations: impl ExactSizeIterator<Item = &'m Mutation>,
    out: &mut Vec<u8>,
) {
    let mut commit_id = [0; CommitId::TEXT_LENGTH];
    let commit_id = head.commit_id.encode(&mut commit_id);
    header(out, MAP, 9);
    unsigned_field(out, "schema", head.schema);
    text_field(out, "commit_id", commit_id);
    text_field(out, "case_id", head.case_id.as_str());
    unsigned_field(out, "version", head.version.get());
    text(out, "mutations");
    header(out, ARRAY, mutations.len() as u64);
    for mutation in mutations {
        write_mutation(out, mutation);
    }
    unsigned_field(out, "committed_at_ms", head.committed_at_ms);
    text_field(out, "writer", head.writer);
    text(out, "state_hash");
    bytes(out, &head.state_hash.0);
    text(out, "prev_event_hash");
    bytes(out, &head.prev_event_hash.0);
}

/// A mutation as serde writes it: a map tagged by `op` first, then the variant's fields in
/// declared order, without the ones serde skips when empty.
fn write_mutation(out: &mut Vec<u8>, mutation: &Mutation) {
    let op = |out: &mut Vec<u8>, fields: usize| {
        header(out, MAP, 1 + fields as u64);
        text_field(out, "op", mutation.kind());
    };
    match mutation {
        Mutation::SetCtx { ctx } => {
            op(out, 1);
            value_field(out, "ctx", ctx);
        }
        Mutation::PatchCtx { set, remove } => {
            op(
                out,
                usize::from(!set.is_empty()) + usize::from(!remove.is_empty()),
            );
            if !set.is_empty() {
                text(out, "set");
                map(out, set);
            }
            if !remove.is_empty() {
                text(out, "remove");
                header(out, ARRAY, remove.len() as u64);
                for key in remove {
                    text(out, key);
                }
            }
        }
        Mutation::AddToken {
            id,
            ip,
            scope,
            value: token_value,
        } => {
            op(out, 4);
            text_field(out, "id", id.as_str());
            unsigned_field(out, "ip", *ip);
            text_field(out, "scope", scope.as_str());
            value_field(out, "value", token_value);
        }
        Mutation::RemoveToken { id } => {
            op(out, 1);
            text_field(out, "id", id.as_str());
        }
        Mutation::UpdateToken(update) => write_token_update(out, mutation, update),
        Mutation::EnterScope { id, parent } => {
            op(out, 2);
            text_field(out, "id", id.as_str());
            text_field(out, "parent", parent.as_str());
        }
        Mutation::ExitScope { id } | Mutation::CancelScope { id } => {
            op(out, 1);
            text_field(out, "id", id.as_str());
        }
        Mutation::IncrementStepCount => op(out, 0),
        Mutation::SetMetadata { value: metadata } => {
            op(out, 1);
            value_field(out, "value", metadata);
        }
        Mutation::SetCaseStatus { status } => {
            op(out, 1);
            text_field(out, "status", status.as_str());
        }
    }
}

fn write_token_update(out: &mut Vec<u8>, mutation: &Mutation, update: &TokenUpdate) {
    let given = [
        update.ip.is_some(),
        update.scope.is_some(),
        update.value.is_some(),
        update.status.is_some(),
    ];
    header(
        out,
        MAP,
        2 + given.iter().filter(|&&given| given).count() as u64,
    );
    text_field(out, "op", mutation.kind());
    text_field(out, "id", update.id.as_str());
    if let Some(ip) = update.ip {
        unsigned_field(out, "ip", ip);
    }
    if let Some(scope) = &update.scope {
        text_field(out, "scope", scope.as_str());
    }
    if let Some(token_value) = &update.value {
        value_field(out, "value", token_value);
    }
    if let Some(status) = update.status {
        text_field(out, "status", status.as_str());
    }
}

fn write_scope(out: &mut Vec<u8>, scope: &Scope) {
    header(out, MAP, 4);
    unsigned_field(out, "entered_at_ms", scope.entered_at_ms);
    text_field(out, "id", scope.id.as_str());
    text_field(out, "parent", scope.parent.as_str());
    text_field(out, "status", scope.status.as_str());
}

fn write_token(out: &mut Vec<u8>, token: &Token) {
    header(out, MAP, 5);
    text_field(out, "id", token.id.as_str());
    unsigned_field(out, "ip", token.ip);
    text_field(out, "scope", token.scope.as_str());
    text_field(out, "status", token.status.as_str());
    value_field(out, "value", &token.value);
}

fn entries<K, V>(
    out: &mut Vec<u8>,
    entries: &BTreeMap<K, V>,
    mut entry: impl FnMut(&mut Vec<u8>, &K, &V),
) {
    header(out, MAP, entries.len() as u64);
    for (key, value) in entries {
        entry(out, key, value);
    }
}

fn map(out: &mut Vec<u8>, map: &Map) {
    entries(out, map, |out, key, item| {
        text(out, key);
        value(out, item);
    });
}

fn value(out: &mut Vec<u8>, item: &Value) {
    match item {
        Value::Null => out.push(NULL),
        Value::Bool(false) => out.push(FALSE),
        Value::Bool(true) => out.push(TRUE),
        Value::Integer(integer) => {
            if let Ok(unsigned) = u64::try_from(*integer) {
                header(out, UNSIGNED, unsigned);
            } else {
                // CBOR stores a negative n as -1 - n; a Value's integers end at i64::MIN.
                let below = u64::try_from(-1 - *integer)
                    .expect("a Value's integers are within i64::MIN..=u64::MAX");
                header(out, NEGATIVE, below);
            }
        }
        Value::Float(float) => {
            ciborium::into_writer(float, &mut *out).expect("a float always encodes");
        }
        Value::Text(string) => text(out, string),
        Value::Bytes(items) => bytes(out, items),
        Value::Array(items) => {
            header(out, ARRAY, items.len() as u64);
            for item in items {
                value(out, item);
            }
        }
        Value::Map(entries) => map(out, entries),
    }
}

/// A map entry with a text value.
fn text_field(out: &mut Vec<u8>, name: &str, string: &str) {
    text(out, name);
    text(out, string);
}

/// A map entry with a [`Value`].
fn value_field(out: &mut Vec<u8>, name: &str, item: &Value) {
    text(out, name);
    value(out, item);
}

/// A map entry with an unsigned integer value.
fn unsigned_field(out: &mut Vec<u8>, name: &str, integer: u64) {
    text(out, name);
    header(out, UNSIGNED, integer);
}

fn bytes(out: &mut Vec<u8>, items: &[u8]) {
    header(out, BYTES, items.len() as u64);
    out.extend_from_slice(items);
}

fn text(out: &mut Vec<u8>, string: &str) {
    header(out, TEXT, string.len() as u64);
    out.extend_from_slice(string.as_bytes());
}

/// A header in its shortest form: the major type with the argument in the same byte below
/// 24, else in the next 1, 2, 4 or 8 bytes (big-endian).
fn header(out: &mut Vec<u8>, major: u8, argument: u64) {
    const FOLLOWS_1: u8 = 0x18;
    const FOLLOWS_2: u8 = 0x19;
    const FOLLOWS_4: u8 = 0x1a;
    const FOLLOWS_8: u8 = 0x1b;
    let bytes = argument.to_be_bytes();
    match argument {
        0..0x18 => out.push(major | bytes[7]),
        0x18..=0xff => out.extend_from_slice(&[major | FOLLOWS_1, bytes[7]]),
        0x100..=0xffff => {
            out.push(major | FOLLOWS_2);
            out.extend_from_slice(&bytes[6..]);
        }
        0x1_0000..=0xffff_ffff => {
            out.push(major | FOLLOWS_4);
            out.extend_from_slice(&bytes[4..]);
        }
        _ => {
            out.push(major | FOLLOWS_8);
            out.extend_from_slice(&bytes);
        }
    }
}

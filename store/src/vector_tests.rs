//! The golden vectors of `docs/event-format.md`: cases whose events cover every mutation and
//! the edge values of the encoding, written to `store/tests/vectors/events.json` with each
//! event's payload, event hash and state hash, and each case's final canonical state.
//!
//! The test builds the vectors again and compares them with the file byte for byte, so any
//! change to an event's or a state's bytes fails it; it also folds every payload of the file
//! through the reader. After a deliberate change of the format (a new schema, with its
//! changelog entry), `WFSTATE_BLESS_VECTORS=1 cargo test -p wfstate-store vector` writes the
//! file again.

use serde_json::json;

use crate::{
    Case, CaseId, CaseStatus, CommitMeta, Hash, Map, Mutation, ScopeId, TokenId, TokenStatus,
    TokenUpdate, Value,
};

const FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/events.json");

fn scope(id: &str) -> ScopeId {
    ScopeId::new(id).expect("a valid id")
}

fn token(id: &str) -> TokenId {
    TokenId::new(id).expect("a valid id")
}

fn map(entries: impl IntoIterator<Item = (&'static str, Value)>) -> Map {
    entries
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect()
}

/// The edge values of the encoding, each under a key of its own.
fn edge_values() -> Map {
    map([
        ("int_zero", Value::Integer(0)),
        ("int_23", Value::Integer(23)),
        ("int_24", Value::Integer(24)),
        ("int_255", Value::Integer(255)),
        ("int_256", Value::Integer(256)),
        ("int_65535", Value::Integer(65_535)),
        ("int_65536", Value::Integer(65_536)),
        ("int_u32_max", Value::Integer(i128::from(u32::MAX))),
        (
            "int_u32_max_plus_1",
            Value::Integer(i128::from(u32::MAX) + 1),
        ),
        ("int_u64_max", Value::Integer(i128::from(u64::MAX))),
        ("int_minus_1", Value::Integer(-1)),
        ("int_minus_24", Value::Integer(-24)),
        ("int_minus_25", Value::Integer(-25)),
        ("int_i64_min", Value::Integer(i128::from(i64::MIN))),
        ("float_half", Value::Float(0.5)),
        ("float_minus_zero", Value::Float(-0.0)),
        ("float_100000", Value::Float(100_000.0)),
        ("float_1_1", Value::Float(1.1)),
        ("float_1e300", Value::Float(1e300)),
        ("float_infinity", Value::Float(f64::INFINITY)),
        ("float_min_positive", Value::Float(f64::MIN_POSITIVE)),
        ("bool_true", Value::Bool(true)),
        ("bool_false", Value::Bool(false)),
        ("null", Value::Null),
        ("text_empty", Value::Text(String::new())),
        ("text_non_ascii", Value::Text("grüße, 日本, 🦀".into())),
        ("bytes", Value::Bytes(vec![0, 1, 254, 255])),
        ("bytes_empty", Value::Bytes(Vec::new())),
        (
            "array",
            Value::Array(vec![
                Value::Integer(1),
                Value::Text("two".into()),
                Value::Array(Vec::new()),
            ]),
        ),
        (
            "nested",
            Value::Map(map([
                (
                    "b",
                    Value::Map(map([("z", Value::Null), ("a", Value::Integer(1))])),
                ),
                ("a", Value::Array(vec![Value::Map(Map::new())])),
            ])),
        ),
        (
            "long_text",
            Value::Text("a text longer than twenty-three bytes, and than 255: ".repeat(6)),
        ),
    ])
}

/// Keys that sort differently bytewise and by length first (CBOR's "canonical" order): the
/// state sorts them bytewise, by their UTF-8 bytes.
fn key_order() -> Map {
    map([
        ("b", Value::Integer(1)),
        ("aa", Value::Integer(2)),
        ("a", Value::Integer(3)),
        ("B", Value::Integer(4)),
        ("é", Value::Integer(5)),
        ("z", Value::Integer(6)),
        ("日本", Value::Integer(7)),
        ("_", Value::Integer(8)),
    ])
}

/// Each vector: its name, what it covers, and its commits (each a batch of mutations).
fn vectors() -> Vec<(&'static str, &'static str, Vec<Vec<Mutation>>)> {
    let set_ctx = |entries: Map| Mutation::SetCtx {
        ctx: Value::Map(entries),
    };
    let mut update = TokenUpdate::new(token("t1"));
    update.ip = Some(7);
    update.scope = Some(scope("s1"));
    update.value = Some(Value::Text("moved".into()));
    let mut complete = TokenUpdate::new(token("t2"));
    complete.status = Some(TokenStatus::Complete);
    vec![
        (
            "empty-batch",
            "a commit of no mutations: only the version and the times change",
            vec![Vec::new()],
        ),
        (
            "edge-values",
            "set_ctx with integers at each header width, i64::MIN and u64::MAX, floats of \
             16, 32 and 64 bits, -0.0 and infinity, empty and non-ASCII text, bytes, arrays \
             and nested maps",
            vec![vec![set_ctx(edge_values())]],
        ),
        (
            "key-order",
            "map keys sorted bytewise by their UTF-8 bytes, not length first",
            vec![
                vec![set_ctx(key_order())],
                vec![Mutation::SetMetadata {
                    value: Value::Map(key_order()),
                }],
            ],
        ),
        (
            "ctx-patches",
            "patch_ctx with set and remove, with set only and with remove only (a key not \
             there is no error)",
            vec![
                vec![set_ctx(map([
                    ("a", Value::Integer(1)),
                    ("b", Value::Integer(2)),
                ]))],
                vec![Mutation::PatchCtx {
                    set: map([("c", Value::Integer(3))]),
                    remove: vec!["a".into()],
                }],
                vec![Mutation::PatchCtx {
                    set: map([("b", Value::Text("replaced".into()))]),
                    remove: Vec::new(),
                }],
                vec![Mutation::PatchCtx {
                    set: Map::new(),
                    remove: vec!["c".into(), "never-set".into()],
                }],
            ],
        ),
        (
            "tokens-and-scopes",
            "enter_scope, add_token, update_token of each field, remove_token, exit_scope \
             (its finished tokens go with it), increment_step_count",
            vec![
                vec![
                    Mutation::EnterScope {
                        id: scope("s1"),
                        parent: ScopeId::root(),
                    },
                    Mutation::add_token(token("t1"), 0, ScopeId::root(), Value::Null),
                    Mutation::add_token(token("t2"), 3, scope("s1"), Value::Integer(-5)),
                    Mutation::IncrementStepCount,
                ],
                vec![
                    Mutation::UpdateToken(update),
                    Mutation::UpdateToken(complete),
                    Mutation::IncrementStepCount,
                ],
                vec![Mutation::RemoveToken { id: token("t1") }],
                vec![Mutation::ExitScope { id: scope("s1") }],
            ],
        ),
        (
            "cancel-cascade",
            "cancel_scope cancels the scope, its descendant scopes and their active tokens; \
             finished tokens keep their status",
            cancel_commits(),
        ),
        (
            "status-and-metadata",
            "set_metadata, set_case_status, and set_metadata on a finished case",
            vec![
                vec![Mutation::SetMetadata {
                    value: Value::Text("owner: billing".into()),
                }],
                vec![Mutation::SetCaseStatus {
                    status: CaseStatus::Done,
                }],
                vec![Mutation::SetMetadata {
                    value: Value::Integer(i128::from(i64::MIN)),
                }],
            ],
        ),
    ]
}

/// The commits of the cancel-cascade vector: nested scopes with tokens, one finished.
fn cancel_commits() -> Vec<Vec<Mutation>> {
    vec![
        vec![
            Mutation::EnterScope {
                id: scope("outer"),
                parent: ScopeId::root(),
            },
            Mutation::EnterScope {
                id: scope("inner"),
                parent: scope("outer"),
            },
            Mutation::add_token(token("a"), 1, scope("outer"), Value::Null),
            Mutation::add_token(token("b"), 2, scope("inner"), Value::Null),
            Mutation::add_token(token("c"), 3, scope("inner"), Value::Null),
            Mutation::add_token(token("d"), 4, ScopeId::root(), Value::Null),
        ],
        vec![Mutation::UpdateToken({
            let mut done = TokenUpdate::new(token("c"));
            done.status = Some(TokenStatus::Complete);
            done
        })],
        vec![Mutation::CancelScope { id: scope("outer") }],
    ]
}

/// The vectors as the file holds them.
fn build() -> serde_json::Value {
    let mut cases = Vec::new();
    for (number, (name, covers, commits)) in vectors().into_iter().enumerate() {
        let case_id = CaseId::new(format!("vector-{name}")).expect("a valid id");
        let mut case = Case::new(case_id.clone());
        let mut events = Vec::new();
        for (index, mutations) in commits.into_iter().enumerate() {
            for mutation in mutations {
                case.buffer(mutation);
            }
            let commit_id = format!("01890a5d-ac96-774b-bcce-b302099a{number:02x}{index:02x}");
            let prepared = case
                .prepare_commit(CommitMeta {
                    commit_id: commit_id.parse().expect("a valid commit id"),
                    committed_at_ms: 1_700_000_000_000 + 1000 * (index as u64),
                    writer: "vector-writer".into(),
                })
                .unwrap_or_else(|error| panic!("vector {name}, commit {index}: {error}"));
            let payload = prepared.payload().to_vec();
            case.complete(prepared).expect("nothing else commits");
            events.push(json!({
                "payload": hex::encode(&payload),
                "event_hash": Hash::of(&payload).to_hex(),
                "state_hash": case.state().hash().to_hex(),
            }));
        }
        cases.push(json!({
            "name": name,
            "covers": covers,
            "case_id": case_id.as_str(),
            "events": events,
            "state": hex::encode(case.state().canonical_bytes()),
        }));
    }
    json!({
        "format": "wfstate-vectors",
        "schema": 1,
        "about": "Events of schema 1 with their SHA-256 event hash and state hash, and each \
                  case's final canonical state (docs/event-format.md).",
        "cases": cases,
    })
}

#[test]
fn the_vectors_are_the_bytes_wfstate_writes() {
    let built = serde_json::to_string_pretty(&build()).expect("json encodes") + "\n";
    if std::env::var_os("WFSTATE_BLESS_VECTORS").is_some() {
        std::fs::write(FILE, &built).expect("the vectors file is writable");
    }
    let stored = std::fs::read_to_string(FILE).expect("store/tests/vectors/events.json");
    assert!(
        stored == built,
        "the events or states wfstate writes differ from the golden vectors in {FILE}: a \
         change of the format needs a new schema (see docs/event-format.md)"
    );
}

#[test]
fn every_vector_folds_to_its_hashes() {
    let stored: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(FILE).expect("the vectors file"))
            .expect("the vectors file is JSON");
    let text = |value: &serde_json::Value| value.as_str().expect("a text field").to_owned();
    let cases = stored["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), vectors().len());
    for vector in cases {
        let case_id = CaseId::new(text(&vector["case_id"])).expect("a valid id");
        let mut case = Case::new(case_id);
        for event in vector["events"].as_array().expect("events") {
            let payload = hex::decode(text(&event["payload"])).expect("hex");
            assert_eq!(Hash::of(&payload).to_hex(), text(&event["event_hash"]));
            let folded = case.apply_payload(&payload).expect("a vector folds");
            assert_eq!(folded.state_hash.to_hex(), text(&event["state_hash"]));
        }
        assert_eq!(
            hex::encode(case.state().canonical_bytes()),
            text(&vector["state"]),
            "{}",
            vector["name"]
        );
    }
}

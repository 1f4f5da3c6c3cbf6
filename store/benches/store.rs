//! Micro costs of the commit path: validate + apply of a 10-mutation batch, event encode and
//! decode, state hash, a whole `prepare_commit`, and prepare + complete.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use wfstate_store::{
    Case, CaseId, CommitId, CommitMeta, Event, Hash, Limits, Map, Mutation, ScopeId, TokenId,
    TokenUpdate, Value, validate,
};

/// A case with a realistic small state: 20 ctx keys, 3 scopes, 8 tokens.
fn warm_case() -> Case {
    let mut case = Case::new(CaseId::new("bench-case").expect("valid id"));
    for n in 0..20 {
        case.buffer(Mutation::set_key(
            format!("key{n}"),
            Value::from(format!("value {n}")),
        ));
    }
    let scope = ScopeId::new("s1").expect("valid id");
    case.buffer(Mutation::EnterScope {
        id: scope.clone(),
        parent: ScopeId::root(),
    });
    for n in 0..8 {
        let id = TokenId::new(format!("t{n}")).expect("valid id");
        case.buffer(Mutation::add_token(id, 0, scope.clone(), Value::Null));
    }
    let prepared = case.prepare_commit(meta()).expect("valid batch");
    case.complete(prepared).expect("fresh commit");
    case
}

fn meta() -> CommitMeta {
    CommitMeta {
        commit_id: CommitId::generate(),
        committed_at_ms: 1_700_000_000_000,
        writer: "bench".into(),
    }
}

/// Ten mutations of the kinds a workflow step commits.
fn batch() -> Vec<Mutation> {
    let mut update = TokenUpdate::new(TokenId::new("t1").expect("valid id"));
    update.ip = Some(9);
    let mut batch = vec![
        Mutation::set_key("amount", 42),
        Mutation::PatchCtx {
            set: Map::from([("paid".into(), Value::Bool(true))]),
            remove: vec!["key3".into()],
        },
        Mutation::UpdateToken(update),
        Mutation::add_token(TokenId::new("t9").expect("valid id"), 0, ScopeId::root(), 1),
        Mutation::EnterScope {
            id: ScopeId::new("s2").expect("valid id"),
            parent: ScopeId::root(),
        },
        Mutation::RemoveToken {
            id: TokenId::new("t2").expect("valid id"),
        },
        Mutation::SetMetadata {
            value: Value::from("step"),
        },
    ];
    batch.extend(std::iter::repeat_n(Mutation::IncrementStepCount, 3));
    batch
}

fn benches(c: &mut Criterion) {
    let case = warm_case();
    let mutations = batch();
    let limits = Limits::default();
    c.bench_function("validate_apply_10", |b| {
        // On a copy of the state, as `validate` works.
        b.iter(|| validate(case.state(), black_box(&mutations), &limits).expect("valid batch"));
    });

    let mut prepared_case = warm_case();
    for mutation in &mutations {
        prepared_case.buffer(mutation.clone());
    }
    c.bench_function("prepare_commit_10", |b| {
        b.iter(|| prepared_case.prepare_commit(meta()).expect("valid batch"));
    });

    // The commit of `wfstate bench` (1): a small state, a ctx key set and a step counted.
    let mut step_case = Case::new(CaseId::new("step-case").expect("valid id"));
    step_case.buffer(Mutation::set_key("step", 0));
    let created = step_case.prepare_commit(meta()).expect("valid batch");
    step_case.complete(created).expect("fresh commit");
    step_case
        .buffer(Mutation::set_key("step", 1))
        .buffer(Mutation::IncrementStepCount);
    c.bench_function("prepare_commit_step", |b| {
        b.iter(|| step_case.prepare_commit(meta()).expect("valid batch"));
    });
    // The whole client-side commit of (1), as `Workspace::commit` does it: buffer, apply on
    // trial and encode, and keep once appended.
    let mut step = 1_u64;
    c.bench_function("commit_step", |b| {
        b.iter(|| {
            step += 1;
            step_case
                .buffer(Mutation::set_key("step", step))
                .buffer(Mutation::IncrementStepCount);
            step_case.try_commit(meta()).expect("valid batch").keep();
        });
    });
    // The same in two steps (prepare, then complete): the mutations are applied twice.
    c.bench_function("commit_step_prepared", |b| {
        b.iter(|| {
            step += 1;
            step_case
                .buffer(Mutation::set_key("step", step))
                .buffer(Mutation::IncrementStepCount);
            let prepared = step_case.prepare_commit(meta()).expect("valid batch");
            step_case.complete(prepared).expect("fresh commit");
        });
    });

    let prepared = prepared_case.prepare_commit(meta()).expect("valid batch");
    let event = prepared.event().clone();
    let payload = prepared.payload().to_vec();
    println!("event payload: {} bytes", payload.len());
    c.bench_function("event_encode", |b| b.iter(|| black_box(&event).encode()));
    c.bench_function("event_decode", |b| {
        b.iter(|| Event::decode(black_box(&payload)).expect("valid payload"));
    });
    c.bench_function("event_hash", |b| b.iter(|| Hash::of(black_box(&payload))));
    prepared_case.complete(prepared).expect("fresh commit");
    let state = prepared_case.state().clone();
    c.bench_function("state_hash", |b| b.iter(|| black_box(&state).hash()));

    // Replay's inner loop: decode, link and version checks, validate + apply, state hash,
    // over the events `wfstate bench` replays (a ctx key of 16 set and a step count per event).
    let history = long_history(1000);
    let mut group = c.benchmark_group("replay_fold");
    group.throughput(criterion::Throughput::Elements(history.len() as u64));
    group.bench_function("1000_events", |b| {
        b.iter(|| {
            let mut case = Case::new(CaseId::new("long").expect("valid id"));
            for payload in &history {
                (case, _) = case.fold(black_box(payload)).expect("a valid history");
            }
            case
        });
    });
    group.finish();
}

/// The payloads of a case's first `events` commits, each setting one of 16 ctx keys and
/// counting a step.
fn long_history(events: u64) -> Vec<Vec<u8>> {
    let mut case = Case::new(CaseId::new("long").expect("valid id"));
    (0..events)
        .map(|n| {
            case.buffer(Mutation::set_key(format!("k{}", n % 16), Value::from(n)))
                .buffer(Mutation::IncrementStepCount);
            let prepared = case.prepare_commit(meta()).expect("valid batch");
            let payload = prepared.payload().to_vec();
            case.complete(prepared).expect("fresh commit");
            payload
        })
        .collect()
}

criterion_group!(store, benches);
criterion_main!(store);

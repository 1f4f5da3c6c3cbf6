//! Receipts and replay, dedup, racing writers, lost acknowledgements, invalid ids, oversized
//! events.

use bytes::Bytes;
use wfstate_events::{
    AppendOutcome, CommitError, CommitErrorKind, EventLog, JetStreamLog, LogErrorKind,
};
use wfstate_store::{
    CaseId, CommitId, CommitMeta, Hash, Mutation, Position, ScopeId, TokenId, Value,
};
use wfstate_tests::NatsServer;

use crate::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_returns_receipt_and_history_replays_to_the_writers_state() {
    let server = NatsServer::start().await;
    let workspace = workspace(&server).await;
    let (mut handle, first) = workspace
        .create(case("order-1"), [Mutation::set_key("amount", 42)])
        .await
        .unwrap();
    assert_eq!(
        (
            first.version.get(),
            first.prev_event_hash,
            first.mutation_count
        ),
        (1, Hash::ZERO, 1)
    );

    handle
        .buffer(Mutation::EnterScope {
            id: ScopeId::new("s1").unwrap(),
            parent: ScopeId::root(),
        })
        .buffer(Mutation::add_token(
            TokenId::new("t1").unwrap(),
            0,
            ScopeId::new("s1").unwrap(),
            Value::Null,
        ))
        .update_ctx(|ctx| {
            ctx.insert("paid".into(), Value::Bool(true));
        });
    let second = workspace.commit(&mut handle).await.unwrap();
    assert_eq!(second.version.get(), 2);
    assert_eq!(second.prev_event_hash, first.event_hash);
    assert!(second.position > first.position);
    assert_eq!(second.state_hash, handle.case().state().hash());
    assert_eq!(handle.position(), second.position.get());

    let loaded = workspace.load(&case("order-1")).await.unwrap();
    assert_eq!(loaded.case().state(), handle.case().state());
    assert_eq!(loaded.case().last_event_hash(), second.event_hash);
    assert_eq!(loaded.position(), second.position.get());
    assert_chain(workspace.log(), &case("order-1")).await;

    let missing = workspace.load(&case("nobody")).await.unwrap_err();
    assert_eq!(missing.kind(), CommitErrorKind::CaseNotFound);
    let exists = workspace.create(case("order-1"), []).await.unwrap_err();
    assert_eq!(exists.kind(), CommitErrorKind::CaseExists);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_commit_published_twice_stores_one_event() {
    let server = NatsServer::start().await;
    let workspace = workspace(&server).await;
    let meta = meta();
    let mut first = workspace.new_case(case("dedup"));
    first.buffer(Mutation::set_key("k", 1));
    let mut again = workspace.new_case(case("dedup"));
    again.buffer(Mutation::set_key("k", 1));

    let one = workspace
        .commit_with_meta(&mut first, meta.clone())
        .await
        .unwrap();
    let two = workspace.commit_with_meta(&mut again, meta).await.unwrap();
    assert_eq!(
        one, two,
        "the retry resolves to the first attempt's receipt"
    );
    assert_eq!(message_count(workspace.log()).await, 1);
    assert_eq!(again.case().state(), first.case().state());
    assert_eq!(again.case().buffered(), 0);

    // At the log level the second append is either a duplicate ack or a sequence conflict
    // (nats-server 2.14+ checks the expected sequence first); either way nothing is stored.
    let commit_id = CommitId::generate();
    let payload = Bytes::from_static(b"raw");
    let a = workspace
        .log()
        .append(&case("raw"), commit_id, Position::ZERO, payload.clone())
        .await
        .unwrap();
    let AppendOutcome::Appended { position } = a else {
        panic!("{a:?}")
    };
    let b = workspace
        .log()
        .append(&case("raw"), commit_id, Position::ZERO, payload)
        .await
        .unwrap();
    assert!(
        matches!(
            b,
            AppendOutcome::Duplicate { position: Some(p) } if p == position
        ) || matches!(b, AppendOutcome::Conflict { actual: Some(p) } if p == position),
        "{b:?}"
    );
    assert_eq!(message_count(workspace.log()).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_writers_one_wins_each_round_and_transact_retries() {
    let server = NatsServer::start().await;
    let workspace = workspace(&server).await;
    workspace
        .create(case("race"), [Mutation::set_key("n", 0)])
        .await
        .unwrap();

    for round in 0..5 {
        let mut a = workspace.load(&case("race")).await.unwrap();
        let mut b = workspace.load(&case("race")).await.unwrap();
        a.buffer(Mutation::set_key("winner", format!("a{round}")));
        b.buffer(Mutation::set_key("winner", format!("b{round}")));
        let (ra, rb) = tokio::join!(workspace.commit(&mut a), workspace.commit(&mut b));
        let outcomes = [ra.is_ok(), rb.is_ok()];
        assert_eq!(
            outcomes.iter().filter(|ok| **ok).count(),
            1,
            "round {round}: {outcomes:?}"
        );
        let loser = if ra.is_ok() { rb } else { ra }.unwrap_err();
        assert!(matches!(loser, CommitError::Conflict { .. }), "{loser:?}");
        // The loser's state and buffer are as they were.
        let losing = if outcomes[0] { &b } else { &a };
        assert_eq!(losing.case().buffered(), 1);
    }

    // Many writers incrementing through transact: every one lands exactly once.
    let writers = 8;
    let tasks: Vec<_> = (0..writers)
        .map(|_| {
            let workspace = workspace.clone();
            tokio::spawn(async move {
                workspace
                    .transact(&case("race"), |case| {
                        let Some(Value::Integer(n)) = case.state().ctx.get("n").cloned() else {
                            panic!("n is an integer")
                        };
                        case.buffer(Mutation::set_key("n", Value::Integer(n + 1)));
                    })
                    .await
            })
        })
        .collect();
    let mut conflicts = 0;
    for task in tasks {
        let transacted = task.await.unwrap().unwrap();
        conflicts += transacted.attempts - 1;
    }
    let state = workspace.load(&case("race")).await.unwrap();
    assert_eq!(state.case().state().ctx["n"], Value::from(writers));
    let events = assert_chain(workspace.log(), &case("race")).await;
    assert_eq!(events.len(), 1 + 5 + usize::try_from(writers).unwrap());
    eprintln!("transact conflicts retried: {conflicts}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_acknowledgement_is_resolved_to_one_event() {
    let server = NatsServer::start().await;
    let workspace = workspace(&server).await;
    let (mut handle, _) = workspace
        .create(case("lost"), [Mutation::set_key("a", 1)])
        .await
        .unwrap();
    handle.buffer(Mutation::IncrementStepCount);
    let meta = meta();
    // The first attempt lands, but its ack never reaches the writer.
    let prepared =
        wfstate_tests::prepare_next(&handle, [Mutation::IncrementStepCount], meta.clone());
    let raw = publish_raw(
        workspace.log(),
        "lost",
        &meta,
        handle.position(),
        prepared.payload(),
    )
    .await;

    let receipt = workspace.commit_with_meta(&mut handle, meta).await.unwrap();
    assert_eq!(receipt.position, raw);
    assert_eq!(message_count(workspace.log()).await, 2);
    assert_eq!(handle.case().state().step_count, 1);
    // The handle goes on from the stored event.
    handle.buffer(Mutation::IncrementStepCount);
    workspace.commit(&mut handle).await.unwrap();
    assert_eq!(assert_chain(workspace.log(), &case("lost")).await.len(), 3);
}

/// Publishes a payload the way the commit client does, through the raw client.
async fn publish_raw(
    log: &JetStreamLog,
    case_id: &str,
    meta: &CommitMeta,
    expected: Position,
    payload: &[u8],
) -> Position {
    let message = async_nats::jetstream::message::PublishMessage::build()
        .payload(Bytes::copy_from_slice(payload))
        .message_id(meta.commit_id.to_string())
        .expected_last_subject_sequence(expected.get());
    log.context()
        .send_publish(format!("wfstate.case.{case_id}"), message)
        .await
        .unwrap()
        .await
        .unwrap()
        .sequence
        .into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_case_ids_are_rejected_before_anything_is_published() {
    let server = NatsServer::start().await;
    let workspace = workspace(&server).await;
    let long = "x".repeat(65);
    for bad in [
        "a.b",
        "*",
        ">",
        "",
        " ",
        "a b",
        "$JS",
        "caf\u{e9}",
        long.as_str(),
    ] {
        let error = CaseId::new(bad).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("case id"), "{bad:?}: {message}");
        // The only way to a subject is through a CaseId: nothing reaches the server.
        let commit: Result<_, CommitError> = async {
            let id = CaseId::new(bad)?;
            workspace.create(id, [Mutation::set_key("k", 1)]).await
        }
        .await;
        assert_eq!(commit.unwrap_err().kind(), CommitErrorKind::InvalidId);
    }
    assert_eq!(message_count(workspace.log()).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_event_is_a_clear_error_and_the_connection_keeps_serving() {
    let server = NatsServer::start().await;
    let workspace = workspace(&server).await;
    let limit = workspace.log().payload_size_max();
    assert!(limit > 900_000 && limit < 1024 * 1024, "limit {limit}");
    let mut handle = workspace.new_case(case("big"));
    handle.buffer(Mutation::set_key("blob", "x".repeat(2 * 1024 * 1024)));
    let error = workspace.commit(&mut handle).await.unwrap_err();
    assert_eq!(error.kind(), CommitErrorKind::TooLarge);
    assert!(error.to_string().contains("limit"), "{error}");

    // Past the client's check, at the log: refused before publishing.
    let oversized = Bytes::from(vec![0u8; limit + 1]);
    let raw = workspace
        .log()
        .append(
            &case("big"),
            CommitId::generate(),
            Position::ZERO,
            oversized,
        )
        .await;
    let raw = raw.unwrap_err();
    assert_eq!(raw.kind(), LogErrorKind::TooLarge);
    assert!(raw.to_string().contains(&limit.to_string()), "{raw}");

    workspace
        .create(case("small"), [Mutation::set_key("k", 1)])
        .await
        .unwrap();
    assert_eq!(message_count(workspace.log()).await, 1);
}

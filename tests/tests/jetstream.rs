//! Guards the JetStream commit path against a real nats-server: receipts, replay to the
//! writer's state, dedup, racing writers, lost acknowledgements inside and outside the dedup
//! window, invalid ids, oversized events, a stopped and a restarted server, credentials
//! (user and password, token, nkey, creds file) and TLS with client certificates.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers stop the test at the first setup error"
)]

use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use wfstate_events::{
    AppendOutcome, CommitError, CommitErrorKind, EventLog, JetStreamConfig, JetStreamLog,
    LogErrorKind, RetryPolicy, Workspace,
};
use wfstate_store::{CaseId, CommitId, CommitMeta, Event, Hash, Mutation, ScopeId, TokenId, Value};
use wfstate_tests::NatsServer;

async fn connect(server: &NatsServer, tune: impl FnOnce(&mut JetStreamConfig)) -> JetStreamLog {
    let mut config = JetStreamConfig::new(server.url());
    tune(&mut config);
    JetStreamLog::connect(&config)
        .await
        .expect("connect to the test server")
}

async fn workspace(server: &NatsServer) -> Workspace<JetStreamLog> {
    Workspace::new(connect(server, |_| {}).await).with_writer("test-writer")
}

async fn message_count(log: &JetStreamLog) -> u64 {
    let mut stream = log
        .context()
        .get_stream("WFSTATE")
        .await
        .expect("the stream");
    stream.info().await.expect("stream info").state.messages
}

/// An error and every cause behind it, in words.
fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        text = format!("{text}: {cause}");
        next = cause.source();
    }
    text
}

fn case(id: &str) -> CaseId {
    CaseId::new(id).unwrap()
}

fn meta() -> CommitMeta {
    CommitMeta {
        commit_id: CommitId::generate(),
        committed_at_ms: 1_700_000_000_000,
        writer: "w".into(),
    }
}

/// Reads a case's stored payloads and checks they form one gap-free chain.
async fn assert_chain(log: &JetStreamLog, case_id: &CaseId) -> Vec<Event> {
    let stored: Vec<_> = log
        .history(case_id, 0)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let mut previous = Hash::ZERO;
    let mut events = Vec::new();
    for (n, stored) in stored.iter().enumerate() {
        let event = Event::decode(&stored.payload).unwrap();
        assert_eq!(event.version, n as u64 + 1, "versions are contiguous");
        assert_eq!(
            event.prev_event_hash, previous,
            "version {} links to its predecessor",
            event.version
        );
        assert_eq!(
            stored.commit_id,
            Some(event.commit_id),
            "Nats-Msg-Id is the commit id"
        );
        previous = Hash::of(&stored.payload);
        events.push(event);
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_returns_receipt_and_history_replays_to_the_writers_state() {
    let server = NatsServer::start().await;
    let workspace = workspace(&server).await;
    let (mut handle, first) = workspace
        .create(case("order-1"), [Mutation::set_key("amount", 42)])
        .await
        .unwrap();
    assert_eq!(
        (first.version, first.prev_event_hash, first.mutation_count),
        (1, Hash::ZERO, 1)
    );

    handle
        .case_mut()
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
    assert_eq!(second.version, 2);
    assert_eq!(second.prev_event_hash, first.event_hash);
    assert!(second.position > first.position);
    assert_eq!(second.state_hash, handle.case().state().hash());
    assert_eq!(handle.position(), second.position);

    let loaded = workspace.load(&case("order-1")).await.unwrap();
    assert_eq!(loaded.case().state(), handle.case().state());
    assert_eq!(loaded.case().last_event_hash(), second.event_hash);
    assert_eq!(loaded.position(), second.position);
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
    first.case_mut().buffer(Mutation::set_key("k", 1));
    let mut again = workspace.new_case(case("dedup"));
    again.case_mut().buffer(Mutation::set_key("k", 1));

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
        .append(&case("raw"), commit_id, 0, payload.clone())
        .await
        .unwrap();
    let AppendOutcome::Appended { position } = a else {
        panic!("{a:?}")
    };
    let b = workspace
        .log()
        .append(&case("raw"), commit_id, 0, payload)
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
        a.case_mut()
            .buffer(Mutation::set_key("winner", format!("a{round}")));
        b.case_mut()
            .buffer(Mutation::set_key("winner", format!("b{round}")));
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
    handle.case_mut().buffer(Mutation::IncrementStepCount);
    let meta = meta();
    // The first attempt lands, but its ack never reaches the writer.
    let prepared = handle.case_mut().prepare_commit(meta.clone()).unwrap();
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
    handle.case_mut().buffer(Mutation::IncrementStepCount);
    workspace.commit(&mut handle).await.unwrap();
    assert_eq!(assert_chain(workspace.log(), &case("lost")).await.len(), 3);
}

/// Publishes a payload the way the commit client does, through the raw client.
async fn publish_raw(
    log: &JetStreamLog,
    case_id: &str,
    meta: &CommitMeta,
    expected: u64,
    payload: &[u8],
) -> u64 {
    let message = async_nats::jetstream::message::PublishMessage::build()
        .payload(Bytes::copy_from_slice(payload))
        .message_id(meta.commit_id.to_string())
        .expected_last_subject_sequence(expected);
    log.context()
        .send_publish(format!("wfstate.case.{case_id}"), message)
        .await
        .unwrap()
        .await
        .unwrap()
        .sequence
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
    handle
        .case_mut()
        .buffer(Mutation::set_key("blob", "x".repeat(2 * 1024 * 1024)));
    let error = workspace.commit(&mut handle).await.unwrap_err();
    assert_eq!(error.kind(), CommitErrorKind::TooLarge);
    assert!(error.to_string().contains("limit"), "{error}");

    // Past the client's check, at the log: refused before publishing.
    let oversized = Bytes::from(vec![0u8; limit + 1]);
    let raw = workspace
        .log()
        .append(&case("big"), CommitId::generate(), 0, oversized)
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

fn quick_retry() -> RetryPolicy {
    RetryPolicy::default().with_deadline(Duration::from_secs(2))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_leaves_the_commit_in_doubt_and_refuses_connections() {
    let mut server = NatsServer::start().await;
    let log = connect(&server, |config| {
        config.request_timeout = Duration::from_millis(500);
    })
    .await;
    let workspace = Workspace::new(log).with_retry(quick_retry());
    let (mut handle, _) = workspace
        .create(case("down"), [Mutation::set_key("a", 1)])
        .await
        .unwrap();
    server.stop().await;

    // Bounds against a hang, not measurements: the deadline (2 s) and the connect timeout
    // (1 s) end these well before.
    let bound = Duration::from_mins(1);
    handle.case_mut().buffer(Mutation::IncrementStepCount);
    let error = tokio::time::timeout(bound, workspace.commit(&mut handle))
        .await
        .expect("the retry deadline ends the commit")
        .unwrap_err();
    assert_eq!(error.kind(), CommitErrorKind::InDoubt, "{error}");
    assert_eq!(handle.case().state().version, 1, "state unchanged");

    // A new connection to a stopped server fails too.
    let mut config = JetStreamConfig::new(server.url());
    config.connect_timeout = Duration::from_secs(1);
    let error = tokio::time::timeout(bound, JetStreamLog::connect(&config))
        .await
        .expect("the connect timeout ends the connection attempt")
        .unwrap_err();
    assert_eq!(error.kind(), LogErrorKind::Unavailable, "{error}");
    assert!(error.to_string().contains(server.url()), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_succeed_after_the_server_restarts() {
    let mut server = NatsServer::start().await;
    let log = connect(&server, |config| {
        config.request_timeout = Duration::from_millis(500);
    })
    .await;
    let workspace = Workspace::new(log).with_retry(quick_retry());
    let (mut handle, _) = workspace
        .create(case("phoenix"), [Mutation::set_key("a", 1)])
        .await
        .unwrap();

    server.stop().await;
    handle.case_mut().buffer(Mutation::IncrementStepCount);
    let in_doubt = workspace.commit(&mut handle).await.unwrap_err();
    assert_eq!(in_doubt.kind(), CommitErrorKind::InDoubt);
    server.restart().await;

    // The next commit re-sends the in-doubt event and resolves it, whether or not it landed.
    let workspace =
        workspace.with_retry(RetryPolicy::default().with_deadline(Duration::from_secs(20)));
    let receipt = workspace.commit(&mut handle).await.unwrap();
    assert_eq!((receipt.version, handle.case().state().step_count), (2, 1));
    for _ in 0..3 {
        handle.case_mut().buffer(Mutation::IncrementStepCount);
        workspace.commit(&mut handle).await.unwrap();
    }
    let events = assert_chain(workspace.log(), &case("phoenix")).await;
    assert_eq!(events.len(), 5);
    assert_eq!(
        workspace
            .load(&case("phoenix"))
            .await
            .unwrap()
            .case()
            .state()
            .step_count,
        4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_could_drop_events_is_refused() {
    let server = NatsServer::start().await;
    let client = async_nats::connect(server.url()).await.unwrap();
    let context = async_nats::jetstream::new(client);
    context
        .create_stream(async_nats::jetstream::stream::Config {
            name: "WFSTATE".into(),
            subjects: vec!["wfstate.case.*".into()],
            max_age: Duration::from_hours(1),
            max_messages_per_subject: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    let error = JetStreamLog::connect(&JetStreamConfig::new(server.url()))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), LogErrorKind::Config, "{error}");
    let message = error.to_string();
    assert!(
        message.contains("max_age") && message.contains("max_msgs_per_subject"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_used_and_bad_ones_are_permission_denied() {
    let server = NatsServer::start_with_config(
        "authorization { users = [ { user: writer, password: s3cret } ] }",
    );
    let mut config = JetStreamConfig::new(server.url());
    config.connect_timeout = Duration::from_secs(2);
    config.auth = wfstate_events::Auth::UserPassword {
        user: "writer".into(),
        password: "wrong".into(),
    };
    let error = JetStreamLog::connect(&config).await.unwrap_err();
    assert_eq!(error.kind(), LogErrorKind::PermissionDenied, "{error:?}");

    config.auth = wfstate_events::Auth::UserPassword {
        user: "writer".into(),
        password: "s3cret".into(),
    };
    commit_through(&config, "authed").await;

    let token_server = NatsServer::start_with_config("authorization { token: t0ken }");
    let mut config = JetStreamConfig::new(token_server.url());
    config.auth = wfstate_events::Auth::Token("t0ken".into());
    commit_through(&config, "tokened").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_nkey_seed_file_authenticates_and_a_stranger_key_is_permission_denied() {
    let user = nkeys::KeyPair::new_user();
    let server = NatsServer::start_with_config(&format!(
        "authorization {{ users = [ {{ nkey: {} }} ] }}",
        user.public_key()
    ));
    let dir = tempfile::tempdir().unwrap();
    let (ours, stranger) = (dir.path().join("user.nk"), dir.path().join("stranger.nk"));
    std::fs::write(&ours, user.seed().unwrap()).unwrap();
    std::fs::write(&stranger, nkeys::KeyPair::new_user().seed().unwrap()).unwrap();
    let missing = dir.path().join("missing.nk");
    check_auth(
        &server,
        [stranger, missing, ours].map(wfstate_events::Auth::NkeyFile),
    )
    .await;
}

/// Connects to `server` with three credentials of one kind: one the server does not know
/// (refused: permission denied), a file that does not exist (a configuration error naming
/// it), and the right one, which then commits.
async fn check_auth(server: &NatsServer, [stranger, missing, good]: [wfstate_events::Auth; 3]) {
    let mut config = JetStreamConfig::new(server.url());
    config.connect_timeout = Duration::from_secs(2);
    config.auth = stranger;
    let error = JetStreamLog::connect(&config).await.unwrap_err();
    assert_eq!(error.kind(), LogErrorKind::PermissionDenied, "{error:?}");

    let (wfstate_events::Auth::NkeyFile(path) | wfstate_events::Auth::CredsFile(path)) = &missing
    else {
        panic!("a credential file, not {missing:?}")
    };
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    config.auth = missing;
    let error = JetStreamLog::connect(&config).await.unwrap_err();
    assert_eq!(error.kind(), LogErrorKind::Config, "{error:?}");
    assert!(error.to_string().contains(&name), "{error}");

    config.auth = good;
    commit_through(&config, "authenticated").await;
}

/// Connects with `config` and creates a case: the connection works end to end.
async fn commit_through(config: &JetStreamConfig, id: &str) {
    let workspace = Workspace::new(JetStreamLog::connect(config).await.unwrap());
    let (_, receipt) = workspace
        .create(case(id), [Mutation::set_key("k", 1)])
        .await
        .unwrap();
    assert_eq!(receipt.version, 1);
}

/// A JWT of the NATS decentralised auth, signed by `issuer`: `nats` holds the entity's claims.
fn jwt(issuer: &nkeys::KeyPair, subject: &str, name: &str, nats: &serde_json::Value) -> String {
    use base64::Engine as _;
    let encode = |json: &serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json.to_string())
    };
    let header = encode(&serde_json::json!({"typ": "JWT", "alg": "ed25519-nkey"}));
    let claims = encode(&serde_json::json!({
        "jti": CommitId::generate().to_string(),
        "iat": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
        "iss": issuer.public_key(),
        "sub": subject,
        "name": name,
        "nats": nats,
    }));
    let signed = format!("{header}.{claims}");
    let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(issuer.sign(signed.as_bytes()).unwrap());
    format!("{signed}.{signature}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_creds_file_authenticates_and_one_signed_by_an_unknown_account_is_refused() {
    let (operator, account, user) = (
        nkeys::KeyPair::new_operator(),
        nkeys::KeyPair::new_account(),
        nkeys::KeyPair::new_user(),
    );
    let operator_jwt = jwt(
        &operator,
        &operator.public_key(),
        "wfstate-test",
        &serde_json::json!({"type": "operator", "version": 2}),
    );
    let unlimited = serde_json::json!({
        "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
        "wildcards": true, "conn": -1, "leaf": -1,
        "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1,
    });
    let account_jwt = jwt(
        &operator,
        &account.public_key(),
        "writers",
        &serde_json::json!({"type": "account", "version": 2, "limits": unlimited}),
    );
    let user_claims = serde_json::json!({
        "type": "user", "version": 2, "pub": {}, "sub": {},
        "subs": -1, "data": -1, "payload": -1,
    });
    // JetStream needs a system account besides the one the user belongs to.
    let system = nkeys::KeyPair::new_account();
    let system_jwt = jwt(
        &operator,
        &system.public_key(),
        "SYS",
        &serde_json::json!({"type": "account", "version": 2}),
    );
    let server = NatsServer::start_with_config(&format!(
        "operator: {operator_jwt}\nsystem_account: {system}\nresolver: MEMORY\n\
         resolver_preload: {{ {system}: {system_jwt}, {account}: {account_jwt} }}\n",
        system = system.public_key(),
        account = account.public_key(),
    ));
    let dir = tempfile::tempdir().unwrap();
    // A creds file: the user's JWT, signed by `signer`, and the user's seed.
    let creds = |name: &str, signer: &nkeys::KeyPair| {
        let path = dir.path().join(name);
        let user_jwt = jwt(signer, &user.public_key(), "writer", &user_claims);
        let seed = user.seed().unwrap();
        std::fs::write(
            &path,
            format!(
                "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
                 -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
            ),
        )
        .unwrap();
        path
    };
    // The stranger's JWT is signed by an account the operator never signed.
    let stranger = creds("stranger.creds", &nkeys::KeyPair::new_account());
    let missing = dir.path().join("missing.creds");
    let good = creds("writer.creds", &account);
    check_auth(
        &server,
        [stranger, missing, good].map(wfstate_events::Auth::CredsFile),
    )
    .await;
}

/// Runs `openssl` in `dir`; the TLS test needs the command (the CI script installs it).
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let status = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap_or_else(|e| {
            panic!("the TLS test runs openssl, which did not start ({e}): install openssl")
        });
    assert!(status.success(), "openssl {args:?} failed");
}

/// A CA, and a server and a client certificate it signed (P-256 keys, valid for a day).
fn certificates(dir: &std::path::Path) {
    let new_key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let subject = ["-days", "1", "-subj", "/CN=wfstate test CA"];
    let ca = [
        &["req", "-x509", "-keyout", "ca.key", "-out", "ca.pem"][..],
        &new_key,
        &subject,
    ];
    openssl(dir, &ca.concat());
    for (name, extensions) in [
        (
            "server",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        ),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ] {
        let file = |suffix: &str| format!("{name}.{suffix}");
        std::fs::write(dir.join(file("ext")), extensions).unwrap();
        let subject = format!("/CN=wfstate test {name}");
        let (key, csr) = (file("key"), file("csr"));
        let request = [
            &["req", "-keyout", &key, "-out", &csr, "-subj", &subject][..],
            &new_key,
        ];
        openssl(dir, &request.concat());
        let (pem, ext) = (file("pem"), file("ext"));
        openssl(
            dir,
            &[
                "x509", "-req", "-in", &csr, "-CA", "ca.pem", "-CAkey", "ca.key", "-out", &pem,
                "-days", "1", "-extfile", &ext,
            ],
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_client_certificate_connects_and_an_untrusted_server_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let file = |name: &str| dir.path().join(name);
    // The server presents its certificate and requires one from the client.
    let server = NatsServer::start_with_config(&format!(
        "tls {{ cert_file: {:?}, key_file: {:?}, ca_file: {:?}, verify: true }}",
        file("server.pem"),
        file("server.key"),
        file("ca.pem")
    ));
    let mut config = JetStreamConfig::new(server.url());
    config.connect_timeout = Duration::from_secs(2);

    // Without the CA the server's certificate is not trusted.
    config.tls.cert = Some(file("client.pem"));
    config.tls.key = Some(file("client.key"));
    let untrusted = JetStreamLog::connect(&config).await.unwrap_err();
    assert_eq!(untrusted.kind(), LogErrorKind::Config, "{untrusted:?}");
    assert!(
        causes(&untrusted).contains("UnknownIssuer"),
        "{untrusted:?}"
    );

    // Without a client certificate the server refuses the connection.
    config.tls = wfstate_events::Tls::default();
    config.tls.ca = Some(file("ca.pem"));
    let refused = JetStreamLog::connect(&config).await.unwrap_err();
    assert_eq!(refused.kind(), LogErrorKind::Config, "{refused:?}");
    assert!(
        causes(&refused).contains("CertificateRequired"),
        "{refused:?}"
    );

    // A certificate without its key is a configuration error, before any connection.
    config.tls.cert = Some(file("client.pem"));
    let half = JetStreamLog::connect(&config).await.unwrap_err();
    assert_eq!(half.kind(), LogErrorKind::Config, "{half:?}");

    config.tls.key = Some(file("client.key"));
    commit_through(&config, "over-tls").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transact_on_after_an_unknown_outcome_applies_the_change_once() {
    let mut server = NatsServer::start().await;
    let log = connect(&server, |config| {
        config.request_timeout = Duration::from_millis(500);
    })
    .await;
    let workspace = Workspace::new(log).with_retry(quick_retry());
    let (mut handle, _) = workspace
        .create(case("once"), [Mutation::set_key("n", 0)])
        .await
        .unwrap();
    let increment = |case: &mut wfstate_store::Case| {
        let Some(Value::Integer(n)) = case.state().ctx.get("n").cloned() else {
            panic!("n")
        };
        case.buffer(Mutation::set_key("n", Value::Integer(n + 1)));
    };

    server.stop().await;
    let unknown = workspace
        .transact_on(&mut handle, increment)
        .await
        .unwrap_err();
    assert_eq!(unknown.kind(), CommitErrorKind::InDoubt);
    server.restart().await;

    // The same call again resolves the in-doubt event instead of adding a second increment,
    // whether the client's buffered publish reached the server after the restart or not.
    let workspace =
        workspace.with_retry(RetryPolicy::default().with_deadline(Duration::from_secs(20)));
    workspace.transact_on(&mut handle, increment).await.unwrap();
    assert_eq!(handle.case().state().ctx["n"], Value::from(1));
    let stored = workspace.load(&case("once")).await.unwrap();
    assert_eq!(
        (
            stored.case().state().version,
            stored.case().state().ctx["n"].clone()
        ),
        (2, Value::from(1))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_case_commits_several_batches_in_one_atomic_round_trip() {
    let server = NatsServer::start().await;
    let workspace = workspace(&server).await;
    let (mut handle, _) = workspace
        .create(case("hot"), [Mutation::set_key("n", 0)])
        .await
        .unwrap();
    let batches: Vec<Vec<Mutation>> = (1..=10)
        .map(|n| vec![Mutation::set_key("n", n), Mutation::IncrementStepCount])
        .collect();
    let receipts = workspace.commit_many(&mut handle, batches).await.unwrap();

    // One event per batch, contiguous, each chained to the one before.
    let versions: Vec<u64> = receipts.iter().map(|r| r.version).collect();
    assert_eq!(versions, (2..=11).collect::<Vec<_>>());
    for pair in receipts.windows(2) {
        assert_eq!(pair[1].prev_event_hash, pair[0].event_hash);
        assert_eq!(pair[1].position, pair[0].position + 1);
    }
    assert_eq!(assert_chain(workspace.log(), &case("hot")).await.len(), 11);
    assert_eq!(handle.case().state().step_count, 10);
    assert_eq!(handle.position(), receipts[9].position);
    let loaded = workspace.load(&case("hot")).await.unwrap();
    assert_eq!(loaded.case().state(), handle.case().state());
    // The handle goes on with ordinary commits.
    handle.case_mut().buffer(Mutation::IncrementStepCount);
    assert_eq!(workspace.commit(&mut handle).await.unwrap().version, 12);
}

/// An atomic batch whose outcome is unknown stays in the handle, blocks other commits on it,
/// and is resolved by sending the very same events again: stored once, whether the earlier
/// attempt had landed or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_atomic_batch_in_doubt_is_resolved_and_never_applied_twice() {
    let mut server = NatsServer::start().await;
    let log = connect(&server, |config| {
        config.request_timeout = Duration::from_millis(500);
    })
    .await;
    let quick = Workspace::new(log).with_retry(quick_retry());
    let patient = quick
        .clone()
        .with_retry(RetryPolicy::default().with_deadline(Duration::from_secs(20)));
    let (mut handle, _) = quick
        .create(case("doubt"), [Mutation::set_key("n", 0)])
        .await
        .unwrap();
    let batches = || vec![vec![Mutation::IncrementStepCount]; 3];

    // Sent while the server is down.
    server.stop().await;
    let error = quick.commit_many(&mut handle, batches()).await.unwrap_err();
    assert_eq!(error.kind(), CommitErrorKind::InDoubt, "{error}");
    assert_eq!(handle.in_doubt().len(), 3);
    assert_eq!(handle.case().state().version, 1, "the state waits");
    // Nothing else is committed on the handle while the batch is in doubt.
    let refused = quick.commit_many(&mut handle, batches()).await.unwrap_err();
    assert!(refused.to_string().contains("in doubt"), "{refused}");
    handle.case_mut().buffer(Mutation::IncrementStepCount);
    let refused = quick.commit(&mut handle).await.unwrap_err();
    assert!(refused.to_string().contains("in doubt"), "{refused}");
    handle.case_mut().rollback();
    server.restart().await;
    let receipts = patient.commit_many(&mut handle, Vec::new()).await.unwrap();
    let versions: Vec<u64> = receipts.iter().map(|r| r.version).collect();
    assert_eq!(versions, [2, 3, 4]);
    assert!(handle.in_doubt().is_empty());
    assert_eq!(assert_chain(patient.log(), &case("doubt")).await.len(), 4);

    // Again, and this time the earlier attempt had stored the batch (its answer lost): the
    // events sent again are refused whole, and the stored ones are recognised as ours.
    server.stop().await;
    let error = quick.commit_many(&mut handle, batches()).await.unwrap_err();
    assert_eq!(error.kind(), CommitErrorKind::InDoubt, "{error}");
    server.restart().await;
    let pending: Vec<(CommitId, Bytes)> = handle
        .in_doubt()
        .into_iter()
        .map(|(commit_id, payload)| (commit_id, Bytes::copy_from_slice(payload)))
        .collect();
    // (Refused if the client's buffered publish already stored it after the reconnect.)
    let _ = patient
        .log()
        .append_many(&case("doubt"), &pending, handle.position())
        .await;
    let receipts = patient.commit_many(&mut handle, Vec::new()).await.unwrap();
    let versions: Vec<u64> = receipts.iter().map(|r| r.version).collect();
    assert_eq!(versions, [5, 6, 7]);
    let stored = assert_chain(patient.log(), &case("doubt")).await;
    assert_eq!(stored.len(), 7, "each event stored once");
    assert_eq!(handle.case().state().step_count, 6);
    let loaded = patient.load(&case("doubt")).await.unwrap();
    assert_eq!(loaded.case().state(), handle.case().state());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_atomic_batch_is_all_or_nothing() {
    let server = NatsServer::start().await;
    let workspace = workspace(&server).await;
    workspace
        .create(case("atom"), [Mutation::set_key("n", 0)])
        .await
        .unwrap();
    let mut stale = workspace.load(&case("atom")).await.unwrap();
    let mut fresh = workspace.load(&case("atom")).await.unwrap();
    workspace
        .commit_many(&mut fresh, vec![vec![Mutation::IncrementStepCount]; 3])
        .await
        .unwrap();
    let before = message_count(workspace.log()).await;

    // A stale expected position: the whole batch is refused, nothing of it stored.
    let error = workspace
        .commit_many(&mut stale, vec![vec![Mutation::IncrementStepCount]; 4])
        .await
        .unwrap_err();
    assert!(
        matches!(error, CommitError::Conflict { expected: 1, .. }),
        "{error:?}"
    );
    assert_eq!(message_count(workspace.log()).await, before);
    assert_eq!(stale.case().state().version, 1, "the handle is unchanged");

    // An invalid batch: nothing is sent.
    let invalid = vec![
        vec![Mutation::IncrementStepCount],
        vec![Mutation::RemoveToken {
            id: TokenId::new("ghost").unwrap(),
        }],
    ];
    let error = workspace
        .commit_many(&mut fresh, invalid)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), CommitErrorKind::Validation);
    assert_eq!(message_count(workspace.log()).await, before);

    // The same batch sent again (a retry after a lost acknowledgement) is refused whole.
    let events: Vec<(CommitId, Bytes)> = (0..3)
        .map(|n| (CommitId::generate(), Bytes::from(vec![n])))
        .collect();
    let position = workspace
        .log()
        .last_event(&case("raw-batch"))
        .await
        .unwrap()
        .map_or(0, |e| e.position);
    let first = workspace
        .log()
        .append_many(&case("raw-batch"), &events, position)
        .await
        .unwrap();
    assert!(matches!(first, AppendOutcome::Appended { .. }), "{first:?}");
    let again = workspace
        .log()
        .append_many(&case("raw-batch"), &events, position)
        .await
        .unwrap();
    assert!(
        matches!(
            again,
            AppendOutcome::Duplicate { .. } | AppendOutcome::Conflict { .. }
        ),
        "{again:?}"
    );
    assert_eq!(message_count(workspace.log()).await, before + 3);
}

/// An event the server refuses as over the stream's `max_msg_size` (err 10054), set after the
/// client connected so that its own check passes: the error is "too large" and says how large,
/// on the single and the multi-event path alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_over_the_streams_message_size_is_too_large_with_its_size() {
    let server = NatsServer::start().await;
    let workspace = workspace(&server).await;
    let (mut handle, _) = workspace
        .create(case("grown"), [Mutation::set_key("n", 0)])
        .await
        .unwrap();
    let log = workspace.log();
    let mut config = log.stream().cached_info().config.clone();
    config.max_message_size = 1024;
    log.context().update_stream(config).await.unwrap();
    let big = || Mutation::set_key("blob", "x".repeat(2000));

    let error = workspace
        .commit_many(&mut handle, vec![vec![big()], vec![big()]])
        .await
        .unwrap_err();
    assert_eq!(error.kind(), CommitErrorKind::TooLarge, "{error}");
    assert!(error.to_string().contains(" bytes"), "{error}");
    assert!(!error.to_string().contains(" 0 bytes"), "{error}");
    assert_eq!(
        error.log_error().and_then(wfstate_events::LogError::code),
        Some(10054)
    );

    handle.case_mut().buffer(big());
    let error = workspace.commit(&mut handle).await.unwrap_err();
    assert_eq!(error.kind(), CommitErrorKind::TooLarge, "{error}");
    assert_eq!(
        error.log_error().and_then(wfstate_events::LogError::code),
        Some(10054)
    );
    assert_eq!(message_count(log).await, 1, "nothing stored");
}

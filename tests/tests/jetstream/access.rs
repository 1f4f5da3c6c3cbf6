//! Stream checks, credentials and TLS.

use std::time::Duration;

use wfstate_events::{JetStreamConfig, JetStreamLog, LogErrorKind, Workspace};
use wfstate_store::{CommitId, Mutation};
use wfstate_tests::NatsServer;

use crate::*;

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
    assert_eq!(receipt.version.get(), 1);
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

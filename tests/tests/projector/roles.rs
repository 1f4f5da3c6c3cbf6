//! The four roles of the README's table, each with exactly the permissions it lists: each
//! does its job, and none can do another's (an auditor cannot publish, purge, write a view or
//! delete the projector's consumer).

use std::time::Duration;

use futures::TryStreamExt;
use wfstate_events::{EventLog, JetStreamConfig, JetStreamLog, Workspace};
use wfstate_projector::{
    JetStreamProjector, KvViewReader, KvViews, Projector, ProjectorConfig, ViewSource, audit_all,
    export, replay, verify, verify_all,
};
use wfstate_store::Mutation;
use wfstate_tests::{NatsServer, ROLES_CONFIG};

use crate::*;

/// A connection of `user`, which creates the stream only as the operator; a refused request
/// is known after a second.
async fn as_role(server: &NatsServer, user: &str, password: &str) -> JetStreamLog {
    let mut config = JetStreamConfig::new(server.url());
    config.auth = wfstate_events::Auth::UserPassword {
        user: user.into(),
        password: password.into(),
    };
    config.create_stream = user == "operator";
    config.request_timeout = Duration::from_secs(1);
    JetStreamLog::connect(&config).await.unwrap()
}

/// The stream's message count and the projector's consumer, as the operator sees them.
async fn stream_state(operator: &JetStreamLog) -> (u64, bool) {
    let mut stream = operator.context().get_stream("WFSTATE").await.unwrap();
    let messages = stream.info().await.unwrap().state.messages;
    let consumers: Vec<String> = stream.consumer_names().try_collect().await.unwrap();
    (
        messages,
        consumers.contains(&"wfstate-projector".to_owned()),
    )
}

/// What a role may not do to the stream and the projector's consumer: each is refused, and
/// the operator sees nothing changed. (The stream also denies purges by its configuration,
/// whatever the rights.)
async fn cannot_touch(role: &JetStreamLog, operator: &JetStreamLog) {
    let before = stream_state(operator).await;
    let stream = role.context().get_stream("WFSTATE").await.unwrap();
    assert!(stream.purge().await.is_err(), "purged the stream");
    assert!(
        stream.delete_consumer("wfstate-projector").await.is_err(),
        "deleted the projector's consumer"
    );
    assert!(
        role.context().delete_stream("WFSTATE").await.is_err(),
        "deleted the stream"
    );
    assert_eq!(stream_state(operator).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_does_its_job_and_no_other() {
    let server = NatsServer::start_with_config(ROLES_CONFIG);
    // The operator makes the stream and the projector's buckets.
    let operator = as_role(&server, "operator", "opass").await;
    let config = ProjectorConfig::default();
    KvViews::open(&operator, &config).await.unwrap();

    // The writer commits, and reads back a case longer than the first direct reads.
    let writer = Workspace::new(as_role(&server, "writer", "wpass").await);
    let (mut long, _) = writer
        .create(case("long"), [Mutation::set_key("n", 0)])
        .await
        .unwrap();
    for _ in 0..40 {
        long.buffer(Mutation::IncrementStepCount);
        writer.commit(&mut long).await.unwrap();
    }
    for n in 0..3 {
        writer
            .create(case(&format!("c{n}")), [Mutation::set_key("n", n)])
            .await
            .unwrap();
    }
    let loaded = writer.load(&case("long")).await.unwrap();
    assert_eq!(loaded.case().state(), long.case().state());

    // The projector folds every event into views.
    let projector_log = as_role(&server, "projector", "ppass").await;
    let mut projector = JetStreamProjector::open(&projector_log, config.clone())
        .await
        .unwrap();
    projector.catch_up().await.unwrap();
    assert_eq!(projector.lag().await.unwrap(), 0);
    assert!(projector.quarantined().await.unwrap().is_empty());

    // The auditor audits, replays, exports and verifies the views, with read rights only.
    let auditor = as_role(&server, "auditor", "apass").await;
    let audited = audit_all(&auditor, |_| {}).await.unwrap();
    assert!(audited.is_clean(), "{:?}", audited.problems);
    assert_eq!((audited.cases, audited.events), (4, 44));
    let replayed = replay(&auditor, &case("long"), None).await.unwrap();
    assert_eq!(&replayed.state, long.case().state());
    let file = tempfile::NamedTempFile::new().unwrap();
    let exported = export(&auditor, file.path()).await.unwrap();
    assert_eq!(exported.events, 44);
    let views = KvViewReader::open(&auditor, &config).await.unwrap();
    let verified = verify_all(&auditor, &views).await.unwrap();
    assert_eq!((verified.cases, verified.mismatches), (4, Vec::new()));
    let one = verify(&auditor, &views, &[case("long")]).await.unwrap();
    assert!(one.is_empty(), "{one:?}");

    // Nobody but the writer commits.
    for role in [&auditor, &projector_log] {
        assert_cannot_commit(role).await;
    }
    // Nobody but the projector runs the projector.
    for role in [&auditor, writer.log()] {
        let refused = JetStreamProjector::open(role, config.clone()).await;
        assert!(refused.is_err(), "opened the projector");
    }
    // Nobody but the projector writes a view.
    for role in [&auditor, writer.log()] {
        let put = async {
            role.context()
                .publish("$KV.WFSTATE_VIEWS.c0", "forged".into())
                .await?
                .await
        };
        assert!(put.await.is_err(), "wrote a view");
    }
    let view = views.view(&case("c0")).await.unwrap().unwrap();
    assert_eq!(view.position.get(), 42);
    // Nobody but the operator purges or deletes the stream or the projector's consumer.
    for role in [&auditor, writer.log(), &projector_log] {
        cannot_touch(role, &operator).await;
    }
    assert_eq!(operator.last_position().await.unwrap().get(), 44);
}

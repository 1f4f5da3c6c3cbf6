//! On a real three-node cluster: the stream and the projector's buckets get three replicas
//! when nothing is asked for, an existing stream with fewer replicas than asked is refused
//! with what to change, and commits and loads work through any node.

use std::time::Duration;

use wfstate_events::{JetStreamConfig, JetStreamLog, LogErrorKind, Workspace};
use wfstate_projector::{JetStreamProjector, Projector, ProjectorConfig, ViewSource};
use wfstate_store::Mutation;
use wfstate_tests::NatsCluster;

use crate::case;

async fn connect(urls: &str, tune: impl FnOnce(&mut JetStreamConfig)) -> JetStreamLog {
    let mut config = JetStreamConfig::new(urls);
    config.request_timeout = Duration::from_secs(10);
    tune(&mut config);
    JetStreamLog::connect(&config).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_the_stream_and_buckets_get_three_replicas() {
    let cluster = NatsCluster::start(3);
    let log = connect(&cluster.urls(), |_| {}).await;
    assert_eq!(log.replicas(), 3);
    let stream = log.context().get_stream(log.stream_name()).await.unwrap();
    assert_eq!(stream.cached_info().config.num_replicas, 3);

    let workspace = Workspace::new(log.clone());
    let (mut handle, _) = workspace
        .create(case("replicated"), [Mutation::set_key("n", 1)])
        .await
        .unwrap();
    handle.buffer(Mutation::IncrementStepCount);
    workspace.commit(&mut handle).await.unwrap();
    let loaded = workspace.load(&case("replicated")).await.unwrap();
    assert_eq!(loaded.case().state(), handle.case().state());

    let mut config = ProjectorConfig::default();
    config.fetch_wait = Duration::from_millis(200);
    let mut projector = JetStreamProjector::open(&log, config.clone())
        .await
        .unwrap();
    projector.catch_up().await.unwrap();
    let view = projector.view(&case("replicated")).await.unwrap().unwrap();
    assert_eq!(&view.state, handle.case().state());
    for bucket in [&config.views_bucket, &config.quarantine_bucket] {
        let store = log.context().get_key_value(bucket).await.unwrap();
        let status = store.status().await.unwrap();
        assert_eq!(status.info.config.num_replicas, 3, "{bucket}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_with_fewer_replicas_than_asked_is_refused_on_a_cluster() {
    let cluster = NatsCluster::start(3);
    // Made by hand with one replica, as an earlier default did.
    let single = connect(&cluster.urls(), |config| {
        config.stream = "SINGLE".into();
        config.subject_prefix = "single.case".into();
        config.replicas = Some(1);
    })
    .await;
    assert_eq!(single.replicas(), 1);

    let mut config = JetStreamConfig::new(cluster.urls());
    config.stream = "SINGLE".into();
    config.subject_prefix = "single.case".into();
    // As the other cluster tests: a three-node cluster on two busy cores may take longer
    // than the default to answer.
    config.request_timeout = Duration::from_secs(10);
    let error = JetStreamLog::connect(&config).await.unwrap_err();
    assert_eq!(error.kind(), LogErrorKind::Config, "{error}");
    assert!(
        error.to_string().contains("fewer than the 3 asked for")
            && error.to_string().contains("--replicas 3"),
        "{error}"
    );
    // Asking for what it has is accepted.
    config.replicas = Some(1);
    JetStreamLog::connect(&config).await.unwrap();
}

/// A stream that cannot be placed (three replicas asked of two servers) is retried for the
/// connect timeout, as a forming cluster would place it soon, then refused as unavailable,
/// saying both what may pass and what to change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_with_more_replicas_than_servers_is_unavailable_and_says_why() {
    let cluster = NatsCluster::start(2);
    let mut config = JetStreamConfig::new(cluster.urls());
    config.replicas = Some(3);
    config.connect_timeout = Duration::from_secs(1);
    let error = JetStreamLog::connect(&config).await.unwrap_err();
    assert_eq!(error.kind(), LogErrorKind::Unavailable, "{error}");
    assert_eq!(error.code(), Some(10005), "{error}");
    assert!(
        error
            .to_string()
            .contains("fewer servers with JetStream than replicas")
            && error.to_string().contains("--replicas"),
        "{error}"
    );
    config.replicas = Some(2);
    JetStreamLog::connect(&config).await.unwrap();
}

/// With every server's URL, a client survives the death (SIGKILL) of the server it is
/// connected to: it reconnects to another, and a commit sent around the kill is resolved to
/// exactly one stored event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_survives_the_death_of_the_connected_server() {
    let mut cluster = NatsCluster::start(3);
    let log = connect(&cluster.urls(), |config| {
        config.request_timeout = Duration::from_secs(2);
    })
    .await;
    let workspace = Workspace::new(log.clone())
        .with_retry(wfstate_events::RetryPolicy::default().with_deadline(Duration::from_mins(1)));
    let (mut handle, _) = workspace
        .create(case("failover"), [Mutation::set_key("n", 0)])
        .await
        .unwrap();
    for _ in 0..3 {
        handle.buffer(Mutation::IncrementStepCount);
        workspace.commit(&mut handle).await.unwrap();
    }
    let connected = log.context().client().server_info().server_name;
    let node = (0..3)
        .find(|&n| cluster.name(n) == connected)
        .expect("the client is connected to a node of the cluster");

    // A commit sent, and the server it went to killed while it is in flight.
    handle.buffer(Mutation::IncrementStepCount);
    let committing = {
        let workspace = workspace.clone();
        tokio::spawn(async move {
            let receipt = workspace.commit(&mut handle).await;
            (handle, receipt)
        })
    };
    assert!(cluster.kill(node), "the connected server was running");
    let (mut handle, receipt) = committing.await.unwrap();
    assert_eq!(receipt.unwrap().version, 5, "resolved, not failed");
    // And the client goes on through the other servers.
    handle.buffer(Mutation::IncrementStepCount);
    assert_eq!(workspace.commit(&mut handle).await.unwrap().version, 6);
    assert_ne!(log.context().client().server_info().server_name, connected);

    // Every commit stored exactly once (a load may have to wait for a new stream leader).
    let loaded = load_within_a_minute(&workspace, "failover").await;
    assert_eq!(loaded.case().state(), handle.case().state());
    assert_eq!(loaded.case().state().step_count, 5);
}

/// Loads a case, asking again every half second for up to a minute: after a fault the
/// cluster may need a new stream leader first.
async fn load_within_a_minute(
    workspace: &Workspace<JetStreamLog>,
    id: &str,
) -> wfstate_events::CaseHandle {
    for _ in 0..120 {
        if let Ok(handle) = workspace.load(&case(id)).await {
            return handle;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("case {id} does not load within a minute");
}

/// The node index of the stream's leader.
async fn stream_leader(cluster: &NatsCluster, log: &JetStreamLog) -> usize {
    for _ in 0..100 {
        let mut stream = log.context().get_stream(log.stream_name()).await.unwrap();
        let info = stream.info().await.unwrap();
        let leader = info
            .cluster
            .as_ref()
            .and_then(|cluster| cluster.leader.clone());
        if let Some(n) = leader.and_then(|leader| (0..3).find(|&n| cluster.name(n) == leader)) {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the stream has no leader after 10 s");
}

/// A replica cut off from the leader still answers direct gets with what it has, so a load
/// through it would miss the events acknowledged since. The store's loads ask the leader: from
/// behind the cut they fail (and may be tried again), and never show a shorter history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_replica_never_makes_a_case_look_older() {
    let cluster = NatsCluster::start_partitionable(3);
    let log = connect(&cluster.urls(), |_| {}).await;
    let workspace = Workspace::new(log.clone());
    let (mut handle, _) = workspace
        .create(case("lagging"), [Mutation::set_key("n", 0)])
        .await
        .unwrap();
    let leader = stream_leader(&cluster, &log).await;
    let follower = (leader + 1) % 3;
    let through_follower = connect(&cluster.url(follower), |config| {
        config.request_timeout = Duration::from_secs(2);
    })
    .await;
    let stream = through_follower
        .context()
        .get_stream(through_follower.stream_name())
        .await
        .unwrap();
    let subject = through_follower.subject(&case("lagging"));
    // The follower has the first event, and answers direct gets itself: a replica starts to
    // once it is current, checked on a two-second tick.
    for _ in 0..100 {
        if stream.direct_get_last_for_subject(&subject).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;

    // Cut off from the others, the follower still answers direct gets; the leader and the
    // other follower make a majority that goes on acknowledging commits.
    cluster.isolate(follower);
    let through_leader = connect(&cluster.url(leader), |_| {}).await;
    let leader_side = Workspace::new(through_leader);
    handle.buffer(Mutation::IncrementStepCount);
    leader_side.commit(&mut handle).await.unwrap();

    // A plain direct get through the lagging replica is stale ...
    let stale = stream.direct_get_last_for_subject(&subject).await.unwrap();
    assert_eq!(
        stale.sequence, 1,
        "the lagging replica answers with its old last event"
    );
    // ... while a load through it fails rather than show the case as it was (or, had the
    // leader's answer come through, shows it as it is).
    let follower_side = Workspace::new(through_follower);
    match follower_side.load(&case("lagging")).await {
        Ok(loaded) => assert_eq!(loaded.case().state(), handle.case().state()),
        Err(error) => assert_eq!(
            error.kind(),
            wfstate_events::CommitErrorKind::Unavailable,
            "{error}"
        ),
    }

    cluster.heal();
    let loaded = load_within_a_minute(&follower_side, "lagging").await;
    assert_eq!(loaded.case().state(), handle.case().state());
}

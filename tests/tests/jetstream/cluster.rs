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
    handle.case_mut().buffer(Mutation::IncrementStepCount);
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

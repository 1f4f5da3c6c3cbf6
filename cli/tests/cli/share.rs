//! Four `wfstate project --follow` processes share a real server's cases while a writer
//! commits; one is killed; the others take its partitions, and every view ends equal to its
//! case's history, with no event applied twice. On a stream of 8 partitions the processes
//! share them unasked, each reading only its own; on a plain stream they are asked to
//! (`--partitions 8`) and read every event.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use wfstate_events::{EventLog, JetStreamConfig, JetStreamLog, Workspace};
use wfstate_projector::{JetStreamProjector, ProjectorConfig, verify_all};
use wfstate_store::{CaseId, Mutation};
use wfstate_tests::NatsServer;

const PARTITIONS: u32 = 8;

/// The processes the test started, killed by their ids when it ends, however it ends.
struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Who holds each partition's lease: the member ids, by partition.
async fn holders(log: &JetStreamLog) -> Vec<Option<String>> {
    let leases = log.context().get_key_value("WFSTATE_LEASES").await;
    let Ok(leases) = leases else {
        return vec![None; PARTITIONS as usize];
    };
    let mut holders = Vec::new();
    for index in 0..PARTITIONS {
        let value = leases
            .get(format!("partition.{index}"))
            .await
            .ok()
            .flatten();
        holders.push(value.map(|bytes| String::from_utf8_lossy(&bytes).into_owned()));
    }
    holders
}

/// Waits (at most a minute) until `done` holds; returns how long it took.
async fn wait_until<F: Future<Output = bool>>(what: &str, mut done: impl FnMut() -> F) -> Duration {
    let started = Instant::now();
    for _ in 0..600 {
        if done().await {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: not within a minute");
}

/// Whether every partition's consumer has acknowledged every event it was given, with none
/// left to give (the writer is done: the stream ends at `last`).
async fn caught_up(log: &JetStreamLog, last: u64) -> bool {
    assert_eq!(log.last_position().await.unwrap().get(), last);
    let stream = log.context().get_stream(log.stream_name()).await.unwrap();
    for index in 0..PARTITIONS {
        let name = format!("wfstate-projector-{index}-of-{PARTITIONS}");
        let Ok(mut consumer) = stream
            .get_consumer::<async_nats::jetstream::consumer::pull::Config>(&name)
            .await
        else {
            return false;
        };
        let info = consumer.info().await.unwrap();
        if info.num_pending > 0 || info.num_ack_pending > 0 {
            return false;
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_processes_share_a_partitioned_stream_and_one_dies() {
    Box::pin(four_processes_share_the_partitions_and_one_dies(
        Some(PARTITIONS),
        &[],
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_processes_asked_to_share_a_plain_stream_and_one_dies() {
    Box::pin(four_processes_share_the_partitions_and_one_dies(
        None,
        &["--partitions", "8"],
    ))
    .await;
}

/// The filter of each partition's consumer: its own subjects on a partitioned stream, every
/// case's on a plain one.
async fn filters(log: &JetStreamLog) -> Vec<String> {
    let stream = log.context().get_stream(log.stream_name()).await.unwrap();
    let mut filters = Vec::new();
    for index in 0..PARTITIONS {
        let name = format!("wfstate-projector-{index}-of-{PARTITIONS}");
        let mut consumer = stream
            .get_consumer::<async_nats::jetstream::consumer::pull::Config>(&name)
            .await
            .unwrap();
        filters.push(consumer.info().await.unwrap().config.filter_subject.clone());
    }
    filters
}

async fn four_processes_share_the_partitions_and_one_dies(
    stream_partitions: Option<u32>,
    share: &[&str],
) {
    let server = NatsServer::start().await;
    let mut config = JetStreamConfig::new(server.url());
    config.partitions = stream_partitions;
    let log = JetStreamLog::connect(&config).await.unwrap();
    let workspace = Workspace::new(log.clone());
    let mut handles = Vec::new();
    for n in 0..40 {
        let (handle, _) = workspace
            .create(
                CaseId::new(format!("shared-{n}")).unwrap(),
                [Mutation::set_key("n", n)],
            )
            .await
            .unwrap();
        handles.push(handle);
    }
    let dir = tempfile::tempdir().unwrap();
    let mut processes = Processes(Vec::new());
    for _ in 0..4 {
        let child = Command::new(env!("CARGO_BIN_EXE_wfstate"))
            .args(["--nats", server.url(), "project", "--follow"])
            .args(share)
            .env("WFSTATE_DATA_DIR", dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        processes.0.push(child);
    }
    wait_until("every partition held", || async {
        holders(&log).await.iter().all(Option::is_some)
    })
    .await;

    let writer = {
        let workspace = workspace.clone();
        let mut handles = std::mem::take(&mut handles);
        tokio::spawn(async move {
            for _ in 0..10 {
                for handle in &mut handles {
                    handle.buffer(Mutation::IncrementStepCount);
                    workspace.commit(handle).await.unwrap();
                }
            }
            handles
        })
    };
    let victim = processes.0[0].id();
    processes.0[0].kill().unwrap();
    processes.0[0].wait().unwrap();
    let marker = format!("-{victim}-");
    let handover = wait_until("the dead process's partitions taken over", || async {
        holders(&log)
            .await
            .iter()
            .all(|holder| holder.as_ref().is_some_and(|id| !id.contains(&marker)))
    })
    .await;
    eprintln!("hand-over after a kill: {:.2} s", handover.as_secs_f64());
    let handles = writer.await.unwrap();

    let last = log.last_position().await.unwrap();
    wait_until("every partition caught up", || caught_up(&log, last.get())).await;

    let expected: Vec<String> = (0..PARTITIONS)
        .map(|index| match stream_partitions {
            Some(_) => format!("wfstate.case.{index}.*"),
            None => "wfstate.case.*".to_owned(),
        })
        .collect();
    assert_eq!(filters(&log).await, expected);

    let mut config = ProjectorConfig::default();
    config.name = "checker".into();
    let checker = JetStreamProjector::open(&log, config).await.unwrap();
    let verified = verify_all(&log, &checker).await.unwrap();
    assert_eq!(verified.cases, 40);
    assert!(verified.mismatches.is_empty(), "{verified:?}");
    assert!(checker.quarantined().await.unwrap().is_empty());
    // Every event folded once: each view is at its case's last event, and equal to its
    // replay (an event folded twice would have broken its case's chain).
    for handle in &handles {
        let view = wfstate_projector::ViewSource::view(&checker, handle.case().id())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&view.state, handle.case().state());
    }
}

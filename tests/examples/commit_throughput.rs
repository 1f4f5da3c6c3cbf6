//! Commits/s of the commit client for many cases in flight at once, next to a raw async-nats
//! publish of the same bytes, with the same headers and the same number in flight, on the same
//! server. Run: `cargo run --release -p wfstate-tests --example commit_throughput [CASES] [COMMITS]`
//! (a server from the test fixture: `WFSTATE_TEST_NATS_URL` or `nats-server` on PATH).

use std::time::Instant;

use bytes::Bytes;
use wfstate_events::{JetStreamConfig, JetStreamLog, Workspace};
use wfstate_store::{CaseId, CommitId, Mutation, Value};
use wfstate_tests::NatsServer;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let cases: usize = args.next().map_or(Ok(1000), |n| n.parse())?;
    let commits: usize = args.next().map_or(Ok(5), |n| n.parse())?;
    let server = NatsServer::start().await;
    let mut config = JetStreamConfig::new(server.url());
    config.stream = "BENCH".into();
    config.subject_prefix = "bench.wf".into();
    let workspace = Workspace::new(JetStreamLog::connect(&config).await?).with_writer("bench");

    // wfstate: each case's commits in order, all cases at once.
    let started = Instant::now();
    let mut payloads = Vec::new();
    let tasks: Vec<_> = (0..cases)
        .map(|n| {
            let workspace = workspace.clone();
            tokio::spawn(async move {
                let id = CaseId::new(format!("case-{n}"))?;
                let (mut handle, _) = workspace
                    .create(id, [Mutation::set_key("order", Value::from(n as u64))])
                    .await?;
                for step in 1..commits {
                    handle
                        .case_mut()
                        .buffer(Mutation::set_key("step", Value::from(step as u64)))
                        .buffer(Mutation::IncrementStepCount);
                    workspace.commit(&mut handle).await?;
                }
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(handle.case().last_event_hash())
            })
        })
        .collect();
    for task in tasks {
        task.await?.map_err(|e| e.to_string())?;
    }
    let elapsed = started.elapsed();
    let total = cases * commits;
    let wfstate_rate = total as f64 / elapsed.as_secs_f64();

    // The same payload bytes, read back, published raw on other subjects.
    let log = workspace.log();
    for n in 0..cases.min(1) {
        let id = CaseId::new(format!("case-{n}"))?;
        let mut history = wfstate_events::EventLog::history(log, &id, 0).await?;
        while let Some(event) = futures::TryStreamExt::try_next(&mut history).await? {
            payloads.push(event.payload);
        }
    }
    let context = log.context().clone();
    let started = Instant::now();
    let tasks: Vec<_> = (0..cases)
        .map(|n| {
            let context = context.clone();
            let payloads = payloads.clone();
            tokio::spawn(async move {
                let mut expected = 0;
                for step in 0..commits {
                    let payload: Bytes = payloads[step % payloads.len()].clone();
                    let message = async_nats::jetstream::message::PublishMessage::build()
                        .payload(payload)
                        .message_id(CommitId::generate().to_string())
                        .expected_last_subject_sequence(expected)
                        .header("Content-Type", "application/cbor")
                        .header("Wfstate-Schema", "1");
                    let ack = context
                        .send_publish(format!("bench.wf.raw-{n}"), message)
                        .await?
                        .await?;
                    expected = ack.sequence;
                }
                Ok::<_, async_nats::Error>(())
            })
        })
        .collect();
    for task in tasks {
        task.await?.map_err(|e| e.to_string())?;
    }
    let raw_rate = total as f64 / started.elapsed().as_secs_f64();
    println!(
        "cases {cases}, commits per case {commits}, payload {} bytes",
        payloads[0].len()
    );
    println!("wfstate commits/s {wfstate_rate:.0}");
    println!("raw publish/s     {raw_rate:.0}");
    println!("ratio             {:.2}", wfstate_rate / raw_rate);
    Ok(())
}

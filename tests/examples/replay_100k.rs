//! Replay of one long case next to a raw ordered-consumer read of the same messages: time and
//! peak memory, each phase in its own process so its peak resident size is its own.
//! Run: `cargo run --release -p wfstate-tests --example replay_100k [EVENTS]`.

use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use wfstate_events::{JetStreamConfig, JetStreamLog};
use wfstate_store::{Case, CaseId, CommitId, CommitMeta, Mutation, Value};
use wfstate_tests::NatsServer;

const CASE: &str = "long-case";

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if let [_, phase, url, events] = args.as_slice() {
        let log = JetStreamLog::connect(&JetStreamConfig::new(url.as_str())).await?;
        return run_phase(&log, phase, events.parse()?).await;
    }
    let events: u64 = args.get(1).map_or(Ok(100_000), |n| n.parse())?;
    let server = NatsServer::start().await;
    for phase in ["write", "raw", "replay", "raw", "replay"] {
        let output = std::process::Command::new(&args[0])
            .args([phase, server.url(), &events.to_string()])
            .output()?;
        print!("{}", String::from_utf8_lossy(&output.stdout));
        eprint!("{}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(())
}

async fn run_phase(
    log: &JetStreamLog,
    phase: &str,
    events: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    let case_id = CaseId::new(CASE)?;
    let started = Instant::now();
    match phase {
        "write" => {
            // A writer's commits, published pipelined (the fixture, not what is measured).
            let mut case = Case::new(case_id.clone());
            let mut acks = futures::stream::FuturesOrdered::new();
            for n in 0..events {
                case.buffer(Mutation::set_key(format!("k{}", n % 16), Value::from(n)))
                    .buffer(Mutation::IncrementStepCount);
                let meta = CommitMeta {
                    commit_id: CommitId::generate(),
                    committed_at_ms: n,
                    writer: "bench".into(),
                };
                let prepared = case.prepare_commit(meta)?;
                let message = async_nats::jetstream::message::PublishMessage::build()
                    .payload(Bytes::copy_from_slice(prepared.payload()))
                    .message_id(prepared.event().commit_id.to_string());
                acks.push_back(std::future::IntoFuture::into_future(
                    log.context()
                        .send_publish(format!("wfstate.case.{CASE}"), message)
                        .await?,
                ));
                case.complete(prepared)?;
                if acks.len() >= 512 {
                    acks.next().await.transpose()?;
                }
            }
            while let Some(ack) = acks.next().await {
                ack?;
            }
            println!(
                "wrote {events} events in {:.2} s",
                started.elapsed().as_secs_f64()
            );
        }
        "raw" => {
            let stream = log.stream();
            let consumer = stream
                .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
                    filter_subject: format!("wfstate.case.{CASE}"),
                    ..Default::default()
                })
                .await?;
            let mut messages = consumer.messages().await?;
            let (mut count, mut bytes) = (0u64, 0usize);
            while count < events {
                let message = messages.next().await.ok_or("stream ended")??;
                bytes += message.payload.len();
                count += 1;
            }
            let seconds = started.elapsed().as_secs_f64();
            println!(
                "raw ordered read: {count} events, {bytes} bytes in {seconds:.2} s ({:.0} events/s), peak RSS {} KiB",
                count as f64 / seconds,
                peak_rss_kib()
            );
        }
        _ => {
            let replayed = wfstate_projector::replay(log, &case_id, None).await?;
            let seconds = started.elapsed().as_secs_f64();
            println!(
                "replay: {} events to version {} in {seconds:.2} s ({:.0} events/s), peak RSS {} KiB",
                replayed.events_folded,
                replayed.state.version,
                replayed.events_folded as f64 / seconds,
                peak_rss_kib()
            );
        }
    }
    Ok(())
}

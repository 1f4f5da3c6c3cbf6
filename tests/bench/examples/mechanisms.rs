//! The JetStream mechanisms a shared projector could stand on, measured side by side on one
//! server with raw async-nats (no folding, so each figure is the mechanism's own cost):
//!
//! 1. **Delivery of P partitions**, with 1, 2 and 4 members draining them:
//!    - *client-filtered*: one consumer per partition over the whole stream; each reads every
//!      event and acknowledges the other partitions' unread (what `Shared` does);
//!    - *subject-mapped*: the stream stores each event under its partition
//!      (`{{partition(P,1)}}`), and each partition's consumer reads only its own;
//!    - the baseline: one consumer of every event.
//! 2. **Hand-over of a pinned client** (a priority group with `pinned_client`): the pinned
//!    member's connection is dropped (as a SIGKILL would), and the time until the standby
//!    receives is measured. The KV lease's hand-over is measured by the `share` example.
//!
//! Run against a fresh server:
//! `cargo run --release -p wfstate-bench --example mechanisms -- NATS_URL [EVENTS] [KILLS]`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;

type Error = Box<dyn std::error::Error + Send + Sync>;

const PARTITIONS: usize = 4;
const CASES: u64 = 10_000;
const BATCH: usize = 4096;
/// How long any one wait of this run may last.
const PATIENCE: Duration = Duration::from_mins(2);

/// A JetStream context on a connection of its own.
async fn connect(url: &str) -> Result<jetstream::Context, Error> {
    Ok(jetstream::new(async_nats::connect(url).await?))
}

/// Publishes `events` events of 200 bytes, round robin over the cases, to `prefix.case.<id>`,
/// with at most 1,024 acknowledgements outstanding.
async fn fill(js: &jetstream::Context, prefix: &str, events: u64) -> Result<(), Error> {
    let payload = bytes::Bytes::from(vec![7_u8; 200]);
    let mut pending = futures::stream::FuturesUnordered::new();
    for n in 0..events {
        let subject = format!("{prefix}.case.case-{}", n % CASES);
        pending.push(js.publish(subject, payload.clone()).await?.into_future());
        if pending.len() >= 1024 {
            pending.next().await.ok_or("no pending publish")??;
        }
    }
    while let Some(ack) = pending.next().await {
        ack?;
    }
    Ok(())
}

/// The streams of the delivery runs: the same layout as the store's, and one storing each
/// event under its partition.
async fn streams(js: &jetstream::Context) -> Result<(), Error> {
    for name in ["MECH", "MECHP"] {
        let _ = js.delete_stream(name).await;
    }
    js.create_stream(stream::Config {
        name: "MECH".into(),
        subjects: vec!["mech.case.*".into()],
        ..Default::default()
    })
    .await?;
    js.create_stream(stream::Config {
        name: "MECHP".into(),
        subjects: vec!["mechp.case.*".into()],
        subject_transform: Some(stream::SubjectTransform {
            source: "mechp.case.*".into(),
            destination: format!(
                "mechp.{{{{partition({PARTITIONS},1)}}}}.case.{{{{wildcard(1)}}}}"
            ),
        }),
        ..Default::default()
    })
    .await?;
    Ok(())
}

/// A durable pull consumer of `stream` named `name`, reading `filter` (everything if empty).
async fn pull(
    js: &jetstream::Context,
    stream: &str,
    name: &str,
    filter: &str,
) -> Result<consumer::PullConsumer, Error> {
    let stream = js.get_stream(stream).await?;
    let _ = stream.delete_consumer(name).await;
    Ok(stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some(name.into()),
            filter_subject: filter.into(),
            ack_policy: consumer::AckPolicy::Explicit,
            max_ack_pending: -1,
            ..Default::default()
        })
        .await?)
}

/// Reads and acknowledges every event of `consumers`, a batch of each in turn, as a member
/// holding those partitions does. Returns the events read.
async fn drain(mut consumers: Vec<consumer::PullConsumer>) -> Result<u64, Error> {
    let mut left = Vec::new();
    for consumer in &mut consumers {
        left.push(consumer.info().await?.num_pending);
    }
    let started = Instant::now();
    let mut read = 0;
    while left.iter().any(|n| *n > 0) {
        if started.elapsed() > PATIENCE {
            return Err("draining took longer than two minutes".into());
        }
        for (consumer, left) in consumers.iter().zip(&mut left) {
            if *left == 0 {
                continue;
            }
            let mut batch = consumer
                .fetch()
                .max_messages(BATCH)
                .expires(Duration::from_millis(250))
                .messages()
                .await?;
            while let Some(message) = batch.next().await {
                message?.ack().await?;
                *left -= 1;
                read += 1;
            }
        }
    }
    Ok(read)
}

/// Drains the partitions' consumers with `members` members, each on its own connection and
/// holding an equal share; returns the seconds it took and the events read.
async fn deliver(
    url: &str,
    stream: &str,
    members: usize,
    filter: impl Fn(usize) -> String,
) -> Result<(f64, u64), Error> {
    let js = connect(url).await?;
    let mut shares: Vec<Vec<consumer::PullConsumer>> = (0..members).map(|_| Vec::new()).collect();
    for partition in 0..PARTITIONS {
        let name = format!("{stream}-{members}-{partition}");
        let consumer = pull(&js, stream, &name, &filter(partition)).await?;
        shares[partition % members].push(consumer);
    }
    let started = Instant::now();
    let tasks: Vec<_> = shares
        .into_iter()
        .map(|share| tokio::spawn(drain(share)))
        .collect();
    let mut read = 0;
    for task in tasks {
        read += task.await??;
    }
    Ok((started.elapsed().as_secs_f64(), read))
}

/// A member of the pinned group: receives and acknowledges until its connection is dropped,
/// recording the time of its first message.
fn pinned_member(
    url: String,
    received: Arc<AtomicU64>,
    first: Arc<std::sync::Mutex<Option<Instant>>>,
) -> tokio::task::JoinHandle<Result<(), Error>> {
    tokio::spawn(async move {
        let js = connect(&url).await?;
        let consumer: consumer::PullConsumer =
            js.get_stream("MECH").await?.get_consumer("pinned").await?;
        let mut messages = consumer
            .stream()
            .group("wfstate")
            .expires(Duration::from_secs(1))
            .heartbeat(Duration::from_millis(500))
            .messages()
            .await?;
        while let Some(message) = messages.next().await {
            message?.ack().await?;
            first
                .lock()
                .expect("not poisoned")
                .get_or_insert_with(Instant::now);
            received.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    })
}

/// Polls `done` every 5 ms for at most [`PATIENCE`].
async fn until(what: &str, done: impl Fn() -> bool) -> Result<(), Error> {
    let started = Instant::now();
    while !done() {
        if started.elapsed() > PATIENCE {
            return Err(format!("{what}: not within two minutes").into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Kills the pinned member `kills` times; returns each hand-over time, and how many messages
/// a standby received while another was pinned (the pin's promise is none).
async fn handover(
    url: &str,
    timeout: Duration,
    kills: usize,
) -> Result<(Vec<Duration>, u64), Error> {
    let js = connect(url).await?;
    let stream = js.get_stream("MECH").await?;
    let _ = stream.delete_consumer("pinned").await;
    stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("pinned".into()),
            filter_subject: "mech.case.beat".into(),
            deliver_policy: consumer::DeliverPolicy::New,
            ack_policy: consumer::AckPolicy::Explicit,
            priority_policy: consumer::PriorityPolicy::PinnedClient,
            priority_groups: vec!["wfstate".into()],
            priority_timeout: timeout,
            ..Default::default()
        })
        .await?;
    // A beat every 10 ms, so that a member receives as soon as it is pinned.
    let beats = {
        let js = js.clone();
        tokio::spawn(async move {
            for _ in 0..200_000 {
                if js.publish("mech.case.beat", "b".into()).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let member = |received: &Arc<AtomicU64>| {
        let first = Arc::new(std::sync::Mutex::new(None));
        (
            pinned_member(url.to_owned(), Arc::clone(received), Arc::clone(&first)),
            first,
        )
    };
    let mut pinned_received = Arc::new(AtomicU64::new(0));
    let (mut pinned, _) = member(&pinned_received);
    until("the first pin", || {
        pinned_received.load(Ordering::Relaxed) > 0
    })
    .await?;
    let mut times = Vec::new();
    let mut standby_while_pinned = 0;
    for _ in 0..kills {
        let standby_received = Arc::new(AtomicU64::new(0));
        let (standby, standby_first) = member(&standby_received);
        // Both pull for a while: only the pinned one may receive.
        tokio::time::sleep(Duration::from_secs(2)).await;
        standby_while_pinned += standby_received.load(Ordering::Relaxed);
        let before = pinned_received.load(Ordering::Relaxed);
        until("the pinned member receiving", || {
            pinned_received.load(Ordering::Relaxed) > before
        })
        .await?;
        pinned.abort();
        let _ = pinned.await;
        let killed = Instant::now();
        until("the hand-over", || {
            standby_first
                .lock()
                .expect("not poisoned")
                .is_some_and(|t| t > killed)
        })
        .await?;
        let first = standby_first
            .lock()
            .expect("not poisoned")
            .expect("checked above");
        times.push(first - killed);
        (pinned, pinned_received) = (standby, standby_received);
    }
    pinned.abort();
    beats.abort();
    Ok((times, standby_while_pinned))
}

fn quantiles(mut times: Vec<Duration>) -> String {
    times.sort_unstable();
    let at = |permille: usize| times[((times.len() - 1) * permille).div_ceil(1000)].as_secs_f64();
    format!(
        "p50 {:.2} s, p99 {:.2} s, max {:.2} s ({} kills)",
        at(500),
        at(990),
        at(1000),
        times.len()
    )
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let url = args.next().ok_or("NATS_URL [EVENTS] [KILLS]")?;
    let events: u64 = args.next().map_or(Ok(200_000), |n| n.parse())?;
    let kills: usize = args.next().map_or(Ok(10), |n| n.parse())?;
    let js = connect(&url).await?;
    streams(&js).await?;
    fill(&js, "mech", events).await?;
    fill(&js, "mechp", events).await?;
    println!("{events} events of 200 bytes over {CASES} cases, {PARTITIONS} partitions");

    let baseline = {
        let js = connect(&url).await?;
        let consumer = pull(&js, "MECH", "MECH-all", "").await?;
        let started = Instant::now();
        let read = drain(vec![consumer]).await?;
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "baseline, one consumer of every event: {seconds:.2} s, {:.0} events/s",
            read as f64 / seconds
        );
        seconds
    };
    for members in [1, 2, 4] {
        let (filtered, filtered_read) = deliver(&url, "MECH", members, |_| String::new()).await?;
        let (mapped, mapped_read) =
            deliver(&url, "MECHP", members, |p| format!("mechp.{p}.case.*")).await?;
        println!(
            "{members} member(s): client-filtered {filtered:.2} s ({filtered_read} read, {:.0} \
             events/s, {:.2}x the baseline's time); subject-mapped {mapped:.2} s ({mapped_read} \
             read, {:.0} events/s, {:.2}x)",
            events as f64 / filtered,
            filtered / baseline,
            events as f64 / mapped,
            mapped / baseline,
        );
    }

    for timeout in [Duration::from_secs(5), Duration::from_secs(2)] {
        let (times, leaked) = handover(&url, timeout, kills).await?;
        println!(
            "pinned client, priority_timeout {:.0} s: hand-over {}; messages to a standby \
             while another was pinned: {leaked}",
            timeout.as_secs_f64(),
            quantiles(times)
        );
    }
    Ok(())
}

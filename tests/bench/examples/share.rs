//! Projectors sharing partitions (`Shared`, what `project --follow --partitions` runs): the
//! catch-up rate with 1, 2 and 4 members over the same events, and the hand-over time when a
//! member stops without giving its partitions back. Each member has a connection of its own,
//! in this process. With `partitioned`, the stream is created with as many partitions as the
//! members share, so each reads only its own. Run against a fresh server:
//! `cargo run --release -p wfstate-bench --example share -- NATS_URL [CASES] [EVENTS] [KILLS]
//! [partitioned]`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use wfstate_events::{EventLog, JetStreamConfig, JetStreamLog};
use wfstate_projector::{JetStreamProjector, Projector, ProjectorConfig, ShareConfig, Shared};
use wfstate_store::Mutation;

type Error = Box<dyn std::error::Error + Send + Sync>;

const PARTITIONS: u32 = 4;

/// Writes `cases` cases of `events` events each.
async fn fill(log: &JetStreamLog, cases: u64, events: u64) -> Result<(), Error> {
    wfstate_bench::fill(log, cases, move |n| {
        let mut commits = vec![vec![Mutation::set_key("n", n)]];
        commits.extend((1..events).map(|_| vec![Mutation::IncrementStepCount]));
        (format!("case-{n}"), commits)
    })
    .await?;
    Ok(())
}

/// The configuration of a run named `run`: consumers, views and leases of its own.
fn configs(run: &str) -> (ProjectorConfig, ShareConfig) {
    let mut base = ProjectorConfig::default();
    base.name = format!("share-{run}");
    base.views_bucket = format!("SHARE_VIEWS_{run}");
    base.quarantine_bucket = format!("SHARE_Q_{run}");
    let mut share = ShareConfig::new(PARTITIONS);
    share.bucket = format!("SHARE_LEASES_{run}");
    (base, share)
}

/// A member running rounds on a connection of its own until `stop`, or until aborted.
fn member(
    url: &str,
    run: &str,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Result<(), Error>> {
    let (url, (base, mut share)) = (url.to_owned(), configs(run));
    share.member = format!("{}-{}", share.member, wfstate_store::CommitId::generate());
    tokio::spawn(async move {
        let log = JetStreamLog::connect(&JetStreamConfig::new(url)).await?;
        let mut shared = Shared::open(&log, base, share).await?;
        while !stop.load(Ordering::Relaxed) {
            if let Err(error) = shared.round().await {
                eprintln!("a round failed, run again: {error:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Box::pin(shared.leave()).await?;
        Ok(())
    })
}

/// Whether every partition's consumer of `run` has acknowledged every event it was given,
/// with none left to give (the stream ends at `last`).
async fn caught_up(log: &JetStreamLog, run: &str, last: u64) -> Result<bool, Error> {
    assert_eq!(log.last_position().await?.get(), last);
    let stream = log.context().get_stream(log.stream_name()).await?;
    for index in 0..PARTITIONS {
        let name = format!("share-{run}-{index}-of-{PARTITIONS}");
        let Ok(mut consumer) = stream
            .get_consumer::<async_nats::jetstream::consumer::pull::Config>(&name)
            .await
        else {
            return Ok(false);
        };
        let info = consumer.info().await?;
        if info.num_pending > 0 || info.num_ack_pending > 0 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The members holding each partition of `run`.
async fn holders(log: &JetStreamLog, run: &str) -> Result<Vec<Option<String>>, Error> {
    let Ok(leases) = log
        .context()
        .get_key_value(format!("SHARE_LEASES_{run}"))
        .await
    else {
        // No member has made the bucket yet.
        return Ok(vec![None; PARTITIONS as usize]);
    };
    let mut holders = Vec::new();
    for index in 0..PARTITIONS {
        let value = leases.get(format!("partition.{index}")).await?;
        holders.push(value.map(|bytes| String::from_utf8_lossy(&bytes).into_owned()));
    }
    Ok(holders)
}

/// Polls `done` every 20 ms for at most two minutes; returns how long it took.
async fn wait<F: Future<Output = Result<bool, Error>>>(
    what: &str,
    mut done: impl FnMut() -> F,
) -> Result<Duration, Error> {
    let started = Instant::now();
    for _ in 0..6000 {
        if done().await? {
            return Ok(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(format!("{what}: not within two minutes").into())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let url = args.next().ok_or("NATS_URL [CASES] [EVENTS] [KILLS]")?;
    let cases: u64 = args.next().map_or(Ok(10_000), |n| n.parse())?;
    let events: u64 = args.next().map_or(Ok(10), |n| n.parse())?;
    let kills: usize = args.next().map_or(Ok(10), |n| n.parse())?;
    let partitioned = args.next().is_some_and(|arg| arg == "partitioned");
    let mut config = JetStreamConfig::new(url.clone());
    config.partitions = partitioned.then_some(PARTITIONS);
    let log = JetStreamLog::connect(&config).await?;
    fill(&log, cases, events).await?;
    let last = log.last_position().await?.get();
    println!(
        "{cases} cases x {events} events ({last} events), {PARTITIONS} partitions, {}",
        if partitioned {
            "a partitioned stream (each member reads its own partitions)"
        } else {
            "a plain stream (each member reads every event)"
        }
    );

    // The baseline: one projector of every case, no partitions.
    let (base, _) = configs("single");
    let started = Instant::now();
    let mut single = JetStreamProjector::open(&log, base).await?;
    single.catch_up().await?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "catch-up of one projector without partitions: {seconds:.2} s, {:.0} events/s",
        last as f64 / seconds
    );

    for members in [1_usize, 2, 4] {
        let run = format!("catchup{members}");
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let tasks: Vec<_> = (0..members)
            .map(|_| member(&url, &run, Arc::clone(&stop)))
            .collect();
        wait("catching up", || caught_up(&log, &run, last)).await?;
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "catch-up with {members} member(s): {:.2} s, {:.0} events/s",
            seconds,
            last as f64 / seconds
        );
        stop.store(true, Ordering::Relaxed);
        for task in tasks {
            task.await??;
        }
    }

    let run = "handover";
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks: Vec<_> = (0..4)
        .map(|_| member(&url, run, Arc::clone(&stop)))
        .collect();
    let mut times = Vec::new();
    for _ in 0..kills {
        // Each member holds one partition once the shares settle.
        wait("the shares settling", || async {
            let holders = holders(&log, run).await?;
            let mut distinct: Vec<_> = holders.iter().flatten().collect();
            distinct.sort_unstable();
            distinct.dedup();
            Ok(holders.iter().all(Option::is_some) && distinct.len() == 4)
        })
        .await?;
        let victim = tasks.remove(0);
        victim.abort();
        let _ = victim.await;
        // Taken over: every partition held again, by the three members left (the victim's
        // lease, not renewed, expires first).
        let taken = wait("the hand-over", || async {
            let now = holders(&log, run).await?;
            let mut distinct: Vec<_> = now.iter().flatten().collect();
            distinct.sort_unstable();
            distinct.dedup();
            Ok(now.iter().all(Option::is_some) && distinct.len() == 3)
        })
        .await?;
        times.push(taken);
        tasks.push(member(&url, run, Arc::clone(&stop)));
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await??;
    }
    times.sort_unstable();
    // The nearest rank at or above the quantile, in per mille.
    let at = |permille: usize| times[((times.len() - 1) * permille).div_ceil(1000)].as_secs_f64();
    println!(
        "hand-over after a member stops ({} times): p50 {:.2} s, p99 {:.2} s, max {:.2} s",
        times.len(),
        at(500),
        at(990),
        at(1000)
    );
    Ok(())
}

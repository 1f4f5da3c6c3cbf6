//! What `wfstate list` costs: a scan of every view, decoded and filtered, next to a raw read
//! of the same stored views (the bytes only), side by side in one run.
//!
//! Run: `cargo run --release -p wfstate-bench --example list -- CASES DIR [NATS_URL]`. The
//! embedded store in DIR is filled with CASES cases (two commits each) and projected, unless
//! it is there already; with a NATS URL the same is done in the stream `WFSTATE_LISTBENCH` on
//! that server. DIR is kept, so that `wfstate --data-dir DIR list ...` can be timed on it.

use std::path::Path;
use std::time::{Duration, Instant};

use wfstate_events::{EmbeddedConfig, EmbeddedLog, EventLog, JetStreamConfig, JetStreamLog};
use wfstate_projector::{
    EmbeddedProjector, EmbeddedViews, JetStreamProjector, KvViewReader, Projector, ProjectorConfig,
    ScanCursor, ViewScan,
};
use wfstate_store::{CaseStatus, Mutation, Value};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The stream the JetStream side is written to.
const STREAM: &str = "WFSTATE_LISTBENCH";

/// Writes `cases` cases: a ctx with a region, then a step; every third case is done.
async fn fill<L: EventLog + Clone>(log: &L, cases: usize) -> Result<(), Error> {
    wfstate_bench::fill(log, cases as u64, |n| {
        let region = if n % 2 == 0 { "eu" } else { "us" };
        let mut step = vec![Mutation::IncrementStepCount];
        if n % 3 == 0 {
            step.push(Mutation::SetCaseStatus {
                status: CaseStatus::Done,
            });
        }
        let create = vec![
            Mutation::set_key("region", region),
            Mutation::set_key("customer", format!("c-{n}")),
        ];
        (format!("case-{n:06}"), vec![create, step])
    })
    .await?;
    Ok(())
}

/// Every view of `views`, decoded; returns how many hold `region = eu` (what a filtered list
/// does with each view).
async fn scan(views: &impl ViewScan) -> Result<u64, Error> {
    let (mut cursor, mut matched) = (ScanCursor::default(), 0);
    for _ in 0..1_000_000 {
        let (page, next) = views.scan_page(&cursor).await?;
        matched += page
            .iter()
            .filter(|view| view.state.ctx.get("region") == Some(&Value::from("eu")))
            .count() as u64;
        match next {
            Some(next) => cursor = next,
            None => return Ok(matched),
        }
    }
    Err("the scan did not end".into())
}

/// The raw read of the embedded views: every stored view's bytes, nothing decoded.
fn raw_embedded(log: &EmbeddedLog) -> Result<u64, Error> {
    let connection = log.read_connection()?;
    let mut statement = connection.prepare("SELECT view FROM views")?;
    let mut rows = statement.query([])?;
    let mut bytes = 0_u64;
    while let Some(row) = rows.next()? {
        bytes += row.get_ref(0)?.as_blob()?.len() as u64;
    }
    Ok(bytes)
}

/// The raw read of the views bucket: every message's bytes, in batched direct gets.
async fn raw_jetstream(log: &JetStreamLog, bucket: &str) -> Result<u64, Error> {
    let (mut next, mut bytes) = (1, 0_u64);
    for _ in 0..1_000_000 {
        let page = log
            .direct_page(&format!("KV_{bucket}"), &format!("$KV.{bucket}.>"), next)
            .await?;
        let Some(last) = page.last() else {
            return Ok(bytes);
        };
        next = last.sequence + 1;
        bytes += page
            .iter()
            .map(|entry| entry.payload.len() as u64)
            .sum::<u64>();
    }
    Err("the raw read did not end".into())
}

/// Runs the raw read and the scan three times each, alternating, and prints the best of each.
async fn compare<R, S>(name: &str, mut raw: R, mut scanned: S) -> Result<(), Error>
where
    R: AsyncFnMut() -> Result<u64, Error>,
    S: AsyncFnMut() -> Result<u64, Error>,
{
    let (mut best_raw, mut best_scan) = (Duration::MAX, Duration::MAX);
    let (mut bytes, mut matched) = (0, 0);
    for _ in 0..3 {
        let started = Instant::now();
        bytes = raw().await?;
        best_raw = best_raw.min(started.elapsed());
        let started = Instant::now();
        matched = scanned().await?;
        best_scan = best_scan.min(started.elapsed());
    }
    println!(
        "{name}: raw read of the views {:.3} s ({:.1} MiB); scan, decode and filter {:.3} s \
         ({matched} match); scan / raw {:.2}",
        best_raw.as_secs_f64(),
        bytes as f64 / 1_048_576.0,
        best_scan.as_secs_f64(),
        best_scan.as_secs_f64() / best_raw.as_secs_f64()
    );
    Ok(())
}

async fn embedded(cases: usize, dir: &Path) -> Result<(), Error> {
    let log = EmbeddedLog::open(&EmbeddedConfig::new(dir))?;
    if log.last_position().await?.get() == 0 {
        let started = Instant::now();
        fill(&log, cases).await?;
        let mut projector = EmbeddedProjector::open(&log, "wfstate-projector", 512)?;
        projector.catch_up().await?;
        println!(
            "embedded: {cases} cases written and projected in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    let views = EmbeddedViews::open(&log)?;
    compare(
        "embedded",
        async || raw_embedded(&log),
        async || scan(&views).await,
    )
    .await
}

async fn jetstream(cases: usize, url: String) -> Result<(), Error> {
    let mut config = JetStreamConfig::new(url);
    config.stream = STREAM.into();
    config.subject_prefix = format!("{}.case", STREAM.to_lowercase());
    let log = JetStreamLog::connect(&config).await?;
    let projector_config = ProjectorConfig::for_stream(STREAM);
    if log.last_position().await?.get() == 0 {
        let started = Instant::now();
        fill(&log, cases).await?;
        let mut projector = JetStreamProjector::open(&log, projector_config.clone()).await?;
        projector.catch_up().await?;
        println!(
            "jetstream: {cases} cases written and projected in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    let views = KvViewReader::open(&log, &projector_config).await?;
    let bucket = projector_config.views_bucket.clone();
    compare(
        "jetstream",
        async || raw_jetstream(&log, &bucket).await,
        async || scan(&views).await,
    )
    .await
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(cases), Some(dir)) = (args.first(), args.get(1)) else {
        return Err("usage: list CASES DIR [NATS_URL]".into());
    };
    let cases: usize = cases.parse()?;
    embedded(cases, Path::new(dir)).await?;
    if let Some(url) = args.get(2) {
        Box::pin(jetstream(cases, url.clone())).await?;
    }
    Ok(())
}

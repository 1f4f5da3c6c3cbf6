//! The end-to-end benchmarks behind `wfstate bench`: figures, each next to a raw baseline on the same server with the
//! same payloads and headers. It starts nothing itself: the JetStream phases run against
//! `--nats` (in a stream of their own, deleted at the end), the embedded phase in a temporary
//! directory.
//!
//! 1. commits across many cases in flight vs raw publishes with `Nats-Msg-Id` and
//!    `Nats-Expected-Last-Subject-Sequence`, as many in flight;
//! 2. sequential commits on one case vs raw publish-and-await-ack;
//! 3. replay of a long case vs a raw ordered-consumer read of the same messages;
//! 4. projector catch-up over every event of the run vs the commit rate of (1);
//! 5. the embedded log's commit rate at the concurrency of (1), vs the rate of (1).

mod figure;
mod fill;
mod replay;
mod tree;

pub use fill::fill;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;
use clap::Args;
use serde_json::{Value as Json, json};
use wfstate_events::{
    EmbeddedConfig, EmbeddedLog, EventLog, JetStreamConfig, JetStreamLog, Workspace,
};
use wfstate_projector::{JetStreamProjector, Projector, ProjectorConfig};
use wfstate_store::{Case, CaseId, CommitId, CommitMeta, Mutation, Value};

use crate::figure::{Figure, Reporter, Started, best, finish, phase_start, ratio};

/// Sizes of the benchmark.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Cases committed concurrently in the many-cases phase (1) and the embedded phase (5).
    #[arg(long, default_value_t = 1000)]
    cases: usize,
    /// Commits per case in the many-cases phase (1) and the embedded phase (5).
    #[arg(long, default_value_t = 100)]
    commits: usize,
    /// Sequential commits on one case in the one-case phase (2).
    #[arg(long, default_value_t = 5000)]
    sequential: usize,
    /// Batches per atomic round trip for the hot single case, next to (2).
    #[arg(long, default_value_t = 100)]
    hot_batch: usize,
    /// Events of the long case replayed in the replay phase (3).
    #[arg(long, default_value_t = 100_000)]
    replay_events: usize,
}

/// Why the benchmark stopped.
#[derive(Debug, thiserror::Error)]
#[error("bench: {message}")]
pub struct BenchError {
    message: String,
}

macro_rules! from_errors {
    ($($error:ty),*) => {
        $(
            impl From<$error> for BenchError {
                fn from(error: $error) -> Self {
                    bench_error(error)
                }
            }
        )*
    };
}

from_errors!(
    wfstate_store::IdError,
    wfstate_events::CommitError,
    wfstate_events::LogError,
    wfstate_projector::ProjectorError
);

fn bench_error(error: impl std::fmt::Display) -> BenchError {
    BenchError {
        message: error.to_string(),
    }
}

/// Realistic payloads: the events of a few prepared commits (for the raw baselines).
fn sample_payloads(count: usize) -> Result<Vec<Bytes>, BenchError> {
    let mut case = Case::new(CaseId::new("sample").map_err(bench_error)?);
    let mut payloads = Vec::new();
    for n in 0..count {
        case.buffer(Mutation::set_key("step", Value::from(n as u64)))
            .buffer(Mutation::IncrementStepCount);
        let meta = CommitMeta {
            commit_id: CommitId::generate(),
            committed_at_ms: 1_700_000_000_000,
            writer: "bench".into(),
        };
        let prepared = case.prepare_commit(meta).map_err(bench_error)?;
        payloads.push(prepared.payload_bytes());
        case.complete(prepared).map_err(bench_error)?;
    }
    Ok(payloads)
}

async fn wfstate_commits<L: EventLog + Clone>(
    workspace: &Workspace<L>,
    prefix: &str,
    cases: usize,
    commits: usize,
) -> Result<Figure, BenchError> {
    let started = phase_start();
    let tasks: Vec<_> = (0..cases)
        .map(|n| {
            let workspace = workspace.clone();
            let id = CaseId::new(format!("{prefix}{n}"));
            tokio::spawn(async move {
                let id = id?;
                let mut latencies = Vec::with_capacity(commits);
                let begun = Instant::now();
                let (mut handle, _) = workspace.create(id, [Mutation::set_key("step", 0)]).await?;
                latencies.push(begun.elapsed());
                for step in 1..commits {
                    handle
                        .buffer(Mutation::set_key("step", Value::from(step as u64)))
                        .buffer(Mutation::IncrementStepCount);
                    let begun = Instant::now();
                    workspace.commit(&mut handle).await?;
                    latencies.push(begun.elapsed());
                }
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(latencies)
            })
        })
        .collect();
    join_latencies(started, tasks).await
}

async fn raw_commits(
    log: &JetStreamLog,
    prefix: &str,
    cases: usize,
    commits: usize,
    payloads: &Arc<Vec<Bytes>>,
) -> Result<Figure, BenchError> {
    let started = phase_start();
    let tasks: Vec<_> = (0..cases)
        .map(|n| {
            let (context, payloads) = (log.context().clone(), Arc::clone(payloads));
            let subject = format!("{prefix}{n}");
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(commits);
                let mut expected = 0;
                for step in 0..commits {
                    let begun = Instant::now();
                    let message = PublishMessage::build()
                        .payload(payloads[step % payloads.len()].clone())
                        .message_id(CommitId::generate().to_string())
                        .expected_last_subject_sequence(expected)
                        .header("Content-Type", "application/cbor")
                        .header("Wfstate-Schema", "1");
                    expected = context
                        .send_publish(subject.clone(), message)
                        .await?
                        .await?
                        .sequence;
                    latencies.push(begun.elapsed());
                }
                Ok::<_, async_nats::Error>(latencies)
            })
        })
        .collect();
    join_latencies(started, tasks).await
}

/// Waits for every task of a phase and gathers their latencies into the phase's figure.
async fn join_latencies<E: std::fmt::Display>(
    started: Started,
    tasks: Vec<tokio::task::JoinHandle<Result<Vec<Duration>, E>>>,
) -> Result<Figure, BenchError> {
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.map_err(bench_error)?.map_err(bench_error)?);
    }
    Ok(finish(started, latencies.len(), latencies))
}

async fn sequential<L: EventLog + Clone>(
    workspace: &Workspace<L>,
    name: &str,
    commits: usize,
) -> Result<Figure, BenchError> {
    let (workspace, id) = (workspace.clone(), CaseId::new(name)?);
    let started = phase_start();
    // In a task, like the raw baseline: the same scheduling for both sides.
    let latencies = tokio::spawn(async move {
        let (mut handle, _) = workspace.create(id, []).await?;
        let mut latencies = Vec::with_capacity(commits);
        for step in 0..commits {
            handle.buffer(Mutation::set_key("step", Value::from(step as u64)));
            let begun = Instant::now();
            workspace.commit(&mut handle).await?;
            latencies.push(begun.elapsed());
        }
        Ok::<_, wfstate_events::CommitError>(latencies)
    })
    .await
    .map_err(bench_error)??;
    Ok(finish(started, commits, latencies))
}

/// Runs every phase: the JetStream ones against `nats` when given, the embedded one in a
/// temporary directory; returns the figures to print (one JSON object with `json_out`).
///
/// # Errors
/// [`BenchError`] when a phase cannot run; the streams it made are deleted first.
pub async fn run(
    nats: Option<&JetStreamLog>,
    args: &BenchArgs,
    json_out: bool,
) -> Result<String, BenchError> {
    let mut report = serde_json::Map::new();
    let mut lines = Vec::new();
    let mut commit_rate = None;
    if let Some(base) = nats {
        let run_id = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let mut config = JetStreamConfig::new(base_urls(base));
        config.stream = format!("WFSTATE_BENCH_{run_id}");
        config.subject_prefix = format!("wfstate-bench-{run_id}.case");
        let log = base.with_layout(&config).await.map_err(bench_error)?;
        // The raw baselines publish to a twin stream (same settings, same server), so the
        // projector of (4) reads only wfstate's events.
        let mut raw_config = config.clone();
        raw_config.stream = format!("WFSTATE_BENCH_RAW_{run_id}");
        raw_config.subject_prefix = format!("wfstate-bench-raw-{run_id}.case");
        let raw_log = base.with_layout(&raw_config).await.map_err(bench_error)?;
        let result = jetstream_phases(&log, &raw_log, args, &mut report, &mut lines, run_id).await;
        let _ = log.context().delete_stream(&config.stream).await;
        let _ = log.context().delete_stream(&raw_config.stream).await;
        for stream in tree::tree_streams(&log) {
            let _ = log.context().delete_stream(&stream).await;
        }
        for bucket in [
            format!("WFSTATE_BENCH_VIEWS_{run_id}"),
            format!("WFSTATE_BENCH_Q_{run_id}"),
        ] {
            let _ = log.context().delete_key_value(&bucket).await;
        }
        commit_rate = Some(result?);
    } else {
        lines.push(
            "JetStream phases (1)-(4) need --nats URL; running the embedded phase only".to_owned(),
        );
    }

    let dir = tempfile::tempdir().map_err(bench_error)?;
    let embedded =
        Workspace::new(EmbeddedLog::open(&EmbeddedConfig::new(dir.path())).map_err(bench_error)?)
            .with_writer("bench");
    let figure = best(
        wfstate_commits(&embedded, "e", args.cases, args.commits).await?,
        wfstate_commits(&embedded, "f", args.cases, args.commits).await?,
    );
    lines.push(format!(
        "(5) embedded commits, {} cases x {} in flight",
        args.cases, args.commits
    ));
    lines.push(figure.line("embedded"));
    let mut phase = json!({"embedded": figure.json()});
    if let Some(rate) = &commit_rate {
        let value = figure.rate() / rate;
        lines.push(format!(
            "  ratio     {value:.2} of (1) wfstate (target >= 1.0)"
        ));
        phase["ratio_to_1"] = json!(value);
    }
    report.insert("embedded_commits".into(), phase);

    Ok(if json_out {
        Json::Object(report).to_string()
    } else {
        lines.join("\n")
    })
}

/// The wfstate side of (1) alone on `log`: `cases` cases committed concurrently, `commits`
/// commits each, the cases named `<tag><n>`; returns commits per second. For comparing
/// deployments of one store (replicas, server sync settings) side by side in one run.
///
/// # Errors
/// [`BenchError`] when a commit fails.
pub async fn commit_rate(
    log: &JetStreamLog,
    tag: &str,
    cases: usize,
    commits: usize,
) -> Result<f64, BenchError> {
    let workspace = Workspace::new(log.clone()).with_writer("bench");
    Ok(wfstate_commits(&workspace, tag, cases, commits)
        .await?
        .rate())
}

fn base_urls(log: &JetStreamLog) -> String {
    log.urls().to_owned()
}

/// Runs each side twice, alternating (raw, ours, raw, ours), and keeps each side's better
/// run, so that neither gains from running second on a warmer server. Each run gets its own
/// tag (`a`, `b`) to name its cases.
async fn alternating(
    raw: impl AsyncFn(&str) -> Result<Figure, BenchError>,
    ours: impl AsyncFn(&str) -> Result<Figure, BenchError>,
) -> Result<(Figure, Figure), BenchError> {
    let raw_first = raw("a").await?;
    let ours_first = ours("a").await?;
    let raw = best(raw_first, raw("b").await?);
    let ours = best(ours_first, ours("b").await?);
    Ok((ours, raw))
}

/// (1): many cases in flight.
async fn many_cases(
    workspace: &Workspace<JetStreamLog>,
    raw_log: &JetStreamLog,
    args: &BenchArgs,
    payloads: &Arc<Vec<Bytes>>,
) -> Result<(Figure, Figure), BenchError> {
    let prefix = format!("{}.", raw_log.subject_prefix());
    alternating(
        async |tag| {
            let prefix = format!("{prefix}{tag}");
            raw_commits(raw_log, &prefix, args.cases, args.commits, payloads).await
        },
        async |tag| wfstate_commits(workspace, tag, args.cases, args.commits).await,
    )
    .await
}

/// (2): one case, sequential.
async fn one_case(
    workspace: &Workspace<JetStreamLog>,
    raw_log: &JetStreamLog,
    args: &BenchArgs,
    payloads: &Arc<Vec<Bytes>>,
) -> Result<(Figure, Figure), BenchError> {
    let prefix = format!("{}.seq-", raw_log.subject_prefix());
    alternating(
        async |tag| {
            let prefix = format!("{prefix}{tag}");
            raw_commits(raw_log, &prefix, 1, args.sequential, payloads).await
        },
        async |tag| sequential(workspace, &format!("seq-{tag}"), args.sequential).await,
    )
    .await
}

/// (2b): the hot single case, several batches per atomic round trip; the latency is that of
/// one round trip (of `hot_batch` commits).
async fn hot_case(
    workspace: &Workspace<JetStreamLog>,
    args: &BenchArgs,
) -> Result<Figure, BenchError> {
    let (workspace, size) = (workspace.clone(), args.hot_batch.max(1));
    let rounds = args.sequential.div_ceil(size);
    let started = phase_start();
    let latencies = tokio::spawn(async move {
        let (mut handle, _) = workspace.create(CaseId::new("hot")?, []).await?;
        let mut latencies = Vec::with_capacity(rounds);
        for round in 0..rounds {
            let batches = (0..size)
                .map(|n| {
                    vec![Mutation::set_key(
                        "step",
                        Value::from((round * size + n) as u64),
                    )]
                })
                .collect();
            let begun = Instant::now();
            workspace.commit_many(&mut handle, batches).await?;
            latencies.push(begun.elapsed());
        }
        Ok::<_, wfstate_events::CommitError>(latencies)
    })
    .await
    .map_err(bench_error)??;
    Ok(finish(started, rounds * size, latencies))
}

/// (4): a new projector catching up over every event of the run.
async fn projector_catch_up(log: &JetStreamLog, run_id: u128) -> Result<Figure, BenchError> {
    let events = log.last_position().await?;
    let mut projector_config = ProjectorConfig::default();
    projector_config.name = format!("bench-{run_id}");
    projector_config.views_bucket = format!("WFSTATE_BENCH_VIEWS_{run_id}");
    projector_config.quarantine_bucket = format!("WFSTATE_BENCH_Q_{run_id}");
    let mut projector = JetStreamProjector::open(log, projector_config).await?;
    let started = phase_start();
    projector.catch_up().await?;
    Ok(finish(
        started,
        usize::try_from(events.get()).unwrap_or(0),
        Vec::new(),
    ))
}

async fn jetstream_phases(
    log: &JetStreamLog,
    raw_log: &JetStreamLog,
    args: &BenchArgs,
    report: &mut serde_json::Map<String, Json>,
    lines: &mut Vec<String>,
    run_id: u128,
) -> Result<f64, BenchError> {
    let mut reporter = Reporter { report, lines };
    let workspace = Workspace::new(log.clone()).with_writer("bench");
    let payloads = Arc::new(sample_payloads(16)?);

    let (ours, raw) = many_cases(&workspace, raw_log, args, &payloads).await?;
    let title = format!(
        "(1) commits, {} cases x {} in flight, {} B payloads",
        args.cases,
        args.commits,
        payloads[1].len()
    );
    reporter.pair("many_cases", title, ["wfstate", "raw"], &ours, &raw);
    let commit_rate = ours.rate();

    let (ours, raw) = one_case(&workspace, raw_log, args, &payloads).await?;
    let title = format!("(2) sequential commits on one case ({})", args.sequential);
    reporter.pair("one_case", title, ["wfstate", "raw"], &ours, &raw);

    let hot = hot_case(&workspace, args).await?;
    let value = hot.rate() / ours.rate();
    reporter.lines.push(format!(
        "(2b) hot single case, {} batches per atomic round trip",
        args.hot_batch
    ));
    reporter.lines.push(hot.line("wfstate"));
    reporter.lines.push(format!(
        "  ratio     {value:.2} of (2) wfstate (one commit per round trip)"
    ));
    reporter.report.insert(
        "hot_case".into(),
        json!({"wfstate": hot.json(), "ratio_to_2": value}),
    );

    let (ours, strict, raw) = replay::long_replay(log, args).await?;
    let title = format!("(3) replay of one case of {} events", args.replay_events);
    reporter.pair("replay", title, ["replay", "raw read"], &ours, &raw);
    let value = ratio(&strict, &raw);
    reporter.lines.push(strict.line("strict"));
    reporter.lines.push(format!(
        "  ratio     {value:.2} of the raw read (every state hash checked; no target)"
    ));
    if let Some(Json::Object(replay)) = reporter.report.get_mut("replay") {
        replay.insert("strict".into(), strict.json());
        replay.insert("strict_ratio".into(), json!(value));
    }

    let ours = projector_catch_up(log, run_id).await?;
    let value = ours.rate() / commit_rate;
    reporter.lines.push(format!(
        "(4) projector catch-up over {} events",
        ours.operations
    ));
    reporter.lines.push(ours.line("projector"));
    reporter.lines.push(format!(
        "  ratio     {value:.2} of (1) wfstate (target >= 1.0)"
    ));
    reporter.report.insert(
        "projector".into(),
        json!({"wfstate": ours.json(), "ratio_to_1": value}),
    );
    tree::tree_upkeep(log, &ours, &mut reporter).await?;
    Ok(commit_rate)
}

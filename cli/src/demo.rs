//! `wfstate demo`, the main job: W concurrent workers drive C workflow cases through
//! realistic steps while racers touch random cases and the projector runs alongside; then every
//! case is replayed and verified against its view, and every chain is audited.
//!
//! One case's workflow (each line one commit, through `transact`):
//! 1. create: the order in ctx;
//! 2. fork: scope `main`, tokens `a` and `b` in it, nested scope `review` with token `r`;
//! 3. `steps` times: a ctx patch, both branch tokens advance, the step count;
//! 4. the review region is cancelled (its token with it);
//! 5. join: both branches complete, the scopes are exited, the case is done.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use wfstate_events::{Draft, Transacted, Workspace};
use wfstate_projector::{Projector, audit_all, verify_all};
use wfstate_store::{CaseId, CaseStatus, Map, Mutation, ScopeId, TokenId, TokenStatus, Value};

use crate::backend::Backend;
use crate::error::{CHECK_FAILED, CliError};
use crate::stdout::out;

/// Sizes of the demo.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Concurrent workers.
    #[arg(long, default_value_t = 8)]
    workers: usize,
    /// Workflow cases.
    #[arg(long, default_value_t = 200)]
    cases: usize,
    /// Work steps per case (each one commit).
    #[arg(long, default_value_t = 4)]
    steps: usize,
    /// Racers: tasks that commit to random cases while the workers run, so workers and racers
    /// collide and resolve it with `transact`.
    #[arg(long, default_value_t = 2)]
    racers: usize,
    /// On a server, write into the stream --stream names (WFSTATE by default), with the real
    /// cases, where they stay: that stream denies deletes. Without it the demo writes into
    /// a stream of its own, named in its output, that can be removed whole.
    #[arg(long)]
    pub into_main_stream: bool,
}

/// The stream the demo writes into on a server, unless given --into-main-stream.
pub const STREAM: &str = "WFSTATE_DEMO";

fn id<T: TryFrom<&'static str>>(text: &'static str) -> T
where
    T::Error: std::fmt::Debug,
{
    T::try_from(text).expect("a valid literal id")
}

fn set(key: &str, value: impl Into<Value>) -> Mutation {
    Mutation::set_key(key, value)
}

/// The buffered mutations of one phase of the workflow.
fn phase(case: &mut Draft<'_>, phase: usize, steps: usize) {
    let main: ScopeId = id("main");
    let review: ScopeId = id("review");
    let (a, b, r): (TokenId, TokenId, TokenId) = (id("a"), id("b"), id("r"));
    match phase {
        0 => {
            case.buffer(Mutation::EnterScope {
                id: main.clone(),
                parent: ScopeId::root(),
            })
            .buffer(Mutation::add_token(a, 0, main.clone(), "branch-a"))
            .buffer(Mutation::add_token(b, 0, main.clone(), "branch-b"))
            .buffer(Mutation::EnterScope {
                id: review.clone(),
                parent: main,
            })
            .buffer(Mutation::add_token(r, 0, review, "review"))
            .buffer(set("stage", "forked"));
        }
        n if n <= steps => {
            case.update_ctx(move |ctx| {
                ctx.insert("progress".into(), Value::from(n as u64));
            })
            .update_token(a, |token| token.ip += 1)
            .update_token(b, |token| token.ip += 2)
            .buffer(Mutation::IncrementStepCount);
        }
        n if n == steps + 1 => {
            case.buffer(Mutation::CancelScope { id: review })
                .buffer(set("stage", "review cancelled"));
        }
        _ => {
            for token in [a, b] {
                case.update_token(token, |token| token.status = TokenStatus::Complete);
            }
            case.buffer(Mutation::ExitScope { id: review })
                .buffer(Mutation::ExitScope { id: main })
                .buffer(set("stage", "done"))
                .buffer(Mutation::SetCaseStatus {
                    status: CaseStatus::Done,
                });
        }
    }
}

fn bar(length: u64, message: &'static str) -> ProgressBar {
    let bar = ProgressBar::new(length).with_message(message);
    if let Ok(style) =
        ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

struct Counters {
    commits: AtomicU64,
    conflicts: AtomicU64,
}

impl Counters {
    fn count(&self, transacted: &Transacted) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.conflicts
            .fetch_add(u64::from(transacted.attempts - 1), Ordering::Relaxed);
    }
}

/// Drives every case through its workflow with `workers` tasks.
async fn drive<L: Backend>(
    workspace: &Workspace<L>,
    ids: &Arc<Vec<CaseId>>,
    args: &DemoArgs,
    counters: &Arc<Counters>,
    progress: &ProgressBar,
) -> Result<(), CliError> {
    let next = Arc::new(AtomicUsize::new(0));
    let steps = args.steps;
    let tasks: Vec<_> = (0..args.workers.max(1))
        .map(|_| {
            let (workspace, ids, next, counters, progress) = (
                workspace.clone(),
                Arc::clone(ids),
                Arc::clone(&next),
                Arc::clone(counters),
                progress.clone(),
            );
            tokio::spawn(async move {
                while let Some(case_id) = ids.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let order = Map::from([("order".to_owned(), Value::from(case_id.as_str()))]);
                    workspace
                        .create(
                            case_id.clone(),
                            [Mutation::SetCtx {
                                ctx: Value::Map(order),
                            }],
                        )
                        .await?;
                    counters.commits.fetch_add(1, Ordering::Relaxed);
                    progress.inc(1);
                    for n in 0..=steps + 2 {
                        let done = workspace
                            .transact(case_id, |case| phase(case, n, steps))
                            .await?;
                        counters.count(&done);
                        progress.inc(1);
                    }
                }
                Ok::<(), wfstate_events::CommitError>(())
            })
        })
        .collect();
    for task in tasks {
        task.await
            .map_err(|e| CliError::new(CHECK_FAILED, format!("a worker failed: {e}")))??;
    }
    crate::stdout::stored(format!("the demo's {} cases are committed", ids.len()));
    Ok(())
}

/// Racers: touch the metadata of random started cases until told to stop.
fn race<L: Backend>(
    workspace: &Workspace<L>,
    ids: &Arc<Vec<CaseId>>,
    racers: usize,
    counters: &Arc<Counters>,
    running: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Result<(), wfstate_events::CommitError>>> {
    (0..racers)
        .map(|racer| {
            let (workspace, ids, counters, running) = (
                workspace.clone(),
                Arc::clone(ids),
                Arc::clone(counters),
                Arc::clone(running),
            );
            tokio::spawn(async move {
                let mut seed = 0x9e37_79b9_7f4a_7c15_u64 ^ (racer as u64 + 1);
                while running.load(Ordering::Relaxed) {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let case_id = &ids[usize::try_from(seed % ids.len() as u64).unwrap_or(0)];
                    let touched = Value::Map(Map::from([(
                        "touched_by".to_owned(),
                        Value::from(racer as u64),
                    )]));
                    match workspace
                        .transact(case_id, |case| {
                            case.buffer(Mutation::SetMetadata {
                                value: touched.clone(),
                            });
                        })
                        .await
                    {
                        Ok(done) => counters.count(&done),
                        // Not created yet by its worker: pick another.
                        Err(error)
                            if error.kind() == wfstate_events::CommitErrorKind::CaseNotFound => {}
                        Err(error) => return Err(error),
                    }
                }
                Ok(())
            })
        })
        .collect()
}

pub async fn run<L: Backend>(log: &L, args: &DemoArgs, json: bool) -> Result<u8, CliError> {
    if args.cases == 0 {
        return Err(CliError::bad_input("--cases must be at least 1"));
    }
    let workspace = Workspace::new(log.clone()).with_writer("wfstate-demo");
    let ids: Arc<Vec<CaseId>> = Arc::new((0..args.cases).map(|_| CaseId::generate()).collect());
    let counters = Arc::new(Counters {
        commits: AtomicU64::new(0),
        conflicts: AtomicU64::new(0),
    });
    let running = Arc::new(AtomicBool::new(true));

    // The projector runs alongside the writers.
    let mut projector = log.projector().await?;
    let projecting = Arc::clone(&running);
    let projector_task = tokio::spawn(async move {
        while projecting.load(Ordering::Relaxed) {
            if projector.run_batch().await? == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok::<_, wfstate_projector::ProjectorError>(projector)
    });

    let progress = bar((args.cases * (args.steps + 4)) as u64, "commits");
    let started = Instant::now();
    let racers = race(&workspace, &ids, args.racers, &counters, &running);
    let driven = drive(&workspace, &ids, args, &counters, &progress).await;
    running.store(false, Ordering::Relaxed);
    for racer in racers {
        racer
            .await
            .map_err(|e| CliError::new(CHECK_FAILED, format!("a racer failed: {e}")))??;
    }
    driven?;
    let commit_seconds = started.elapsed().as_secs_f64();
    progress.finish_and_clear();

    let mut projector = projector_task
        .await
        .map_err(|e| CliError::new(CHECK_FAILED, format!("the projector failed: {e}")))??;
    projector.catch_up().await?;
    let quarantined = projector.quarantined().await?.len();

    // Every case of the store: one read of the log in order for the replays, one for the audit.
    let started = Instant::now();
    let mismatches = verify_all(log, &projector).await?.mismatches;
    let replay_seconds = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let problems = audit_all(log, |_| {}).await?.problems.len();
    let audit_seconds = started.elapsed().as_secs_f64();

    let commits = counters.commits.load(Ordering::Relaxed);
    let conflicts = counters.conflicts.load(Ordering::Relaxed);
    let all_verified = mismatches.is_empty() && problems == 0 && quarantined == 0;
    if json {
        out!(
            "{}",
            json!({
                "cases": ids.len(), "workers": args.workers, "racers": args.racers,
                "commits": commits, "conflicts_retried": conflicts,
                "commits_per_second": commits as f64 / commit_seconds,
                "replay_verify_seconds": replay_seconds,
                "audit_seconds": audit_seconds,
                "mismatches": mismatches.len(), "audit_problems": problems,
                "quarantined": quarantined, "all_verified": all_verified,
                "store": log.name(),
            })
        );
    } else {
        out!("store            {}", log.name());
        out!("cases            {}", ids.len());
        out!("workers/racers   {}/{}", args.workers, args.racers);
        out!(
            "commits          {commits} in {commit_seconds:.2} s ({:.0} commits/s)",
            commits as f64 / commit_seconds
        );
        out!("conflicts        {conflicts} retried by transact");
        out!(
            "replay + verify  {} cases in {replay_seconds:.2} s",
            ids.len()
        );
        out!(
            "audit            {problems} problem(s) in {audit_seconds:.2} s; quarantined \
             {quarantined}"
        );
        out!(
            "all verified     {}",
            if all_verified { "yes" } else { "NO" }
        );
    }
    for mismatch in &mismatches {
        eprintln!(
            "wfstate: MISMATCH {}: {}",
            mismatch.case_id, mismatch.detail
        );
    }
    if log.name().contains(STREAM) {
        eprintln!(
            "wfstate: the demo wrote into a stream of its own, {STREAM}, with its buckets \
             {STREAM}_VIEWS and {STREAM}_QUARANTINE: read it with --stream {STREAM}, remove \
             them when done (`nats stream rm {STREAM}`, `nats kv rm {STREAM}_VIEWS`), or give \
             --into-main-stream to write into the main stream"
        );
    }
    Ok(if all_verified { 0 } else { CHECK_FAILED })
}

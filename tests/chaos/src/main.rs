//! `wfstate-chaos`: the fault suite. Starts three real nats-server processes on loopback with
//! every route through a proxy it controls, an R3 stream, W worker processes, a projector and
//! an auditor, injects faults on a seeded schedule, and checks at the end, with a reader of its
//! own, that nothing acknowledged was lost, nothing stored twice and no chain forked.
//!
//! ```text
//! cargo run --release -p wfstate-chaos -- --runs 20 --seconds 60 --seed 1
//! ```
//!
//! The same binary runs the workers, the projector and the auditor (hidden subcommands), so
//! that each is a process the suite can kill. `wfstate-chaos deployments` compares the commit
//! rate of one server with a three-node cluster's, with and without `sync_interval: always`.

mod check;
mod deployments;
mod record;
mod report;
#[cfg(test)]
mod report_tests;
mod roles;
mod run;
mod schedule;
mod worker;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use wfstate_events::{JetStreamConfig, JetStreamLog};
use wfstate_store::CaseId;

use crate::record::now_ms;

/// The fault suite of wfstate on a real three-node JetStream cluster.
#[derive(Debug, Parser)]
#[command(name = "wfstate-chaos", version)]
struct Cli {
    /// How many runs (each on a new cluster).
    #[arg(long, default_value_t = 1)]
    runs: u64,
    /// How long each run commits, in seconds.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// The suite's seed; each run's own seed is printed, and `--seed <it> --runs 1` replays it.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Worker processes.
    #[arg(long, default_value_t = 16)]
    workers: usize,
    /// Where the runs' records go (a directory per run).
    #[arg(long, default_value = "target/chaos")]
    out: PathBuf,
    #[command(subcommand)]
    role: Option<Role>,
}

#[derive(Debug, Subcommand)]
enum Role {
    /// Commit rates of one server (R1) and a three-node cluster (R3, default sync and
    /// `sync_interval: always`), side by side in one run.
    Deployments(deployments::DeploymentArgs),
    /// A worker process (started by the suite).
    #[command(hide = true)]
    Worker(worker::WorkerArgs),
    /// The projector process (started by the suite).
    #[command(hide = true)]
    Project(roles::RoleArgs),
    /// The auditor process (started by the suite).
    #[command(hide = true)]
    Follow(roles::RoleArgs),
}

/// The cases the workers commit to: a few hot ones every worker shares, many cold ones.
///
/// # Panics
/// Never: the names are valid case ids.
pub fn cases() -> (Vec<CaseId>, Vec<CaseId>) {
    let id = |name: String| CaseId::new(name).expect("a valid case id");
    let hot = (0..4).map(|n| id(format!("hot-{n}"))).collect();
    let cold = (0..64).map(|n| id(format!("cold-{n:02}"))).collect();
    (hot, cold)
}

/// Exits this process when the suite that started it is gone (its end of the stdin pipe
/// closed), so that no worker outlives a suite killed with SIGKILL.
pub fn exit_with_the_suite() {
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(3);
    });
}

/// Connects to the cluster's stream (made by the suite), trying again until `until`: a
/// process may start while a node is down.
///
/// # Panics
/// When no connection is made by then.
pub async fn connect_log(urls: &str, until: u64) -> JetStreamLog {
    let mut config = JetStreamConfig::new(urls);
    config.create_stream = false;
    config.request_timeout = Duration::from_secs(2);
    config.connect_timeout = Duration::from_secs(10);
    loop {
        match JetStreamLog::connect(&config).await {
            Ok(log) => return log,
            Err(error) if now_ms() < until => {
                eprintln!("connect: {error}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => panic!("no connection to {urls} before the deadline: {error}"),
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.role {
        Some(Role::Worker(args)) => Box::pin(worker::run(args)).await,
        Some(Role::Project(args)) => Box::pin(roles::project(args)).await,
        Some(Role::Follow(args)) => Box::pin(roles::follow(args)).await,
        Some(Role::Deployments(args)) => {
            return if Box::pin(deployments::run(&args)).await {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
        }
        None => {
            let suite = run::Suite {
                runs: cli.runs,
                run_for: Duration::from_secs(cli.seconds),
                seed: cli.seed,
                workers: cli.workers,
                out: cli.out,
            };
            return if Box::pin(suite.run()).await {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
        }
    }
    ExitCode::SUCCESS
}

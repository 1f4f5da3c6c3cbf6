//! `wfstate-chaos deployments`: the commit rate of `wfstate bench`'s phase (1) (many cases in
//! flight) on three deployments side by side in one run: one server (R1), a three-node cluster
//! (R3) with the server's default sync interval, and the same with `sync_interval: always`.
//! The deployments take turns, round after round, so that none gains from running later on a
//! warmer machine; each one's best round is compared.

use std::fmt::Write as _;
use std::time::Duration;

use wfstate_events::{JetStreamConfig, JetStreamLog};
use wfstate_tests::NatsCluster;

/// The sizes of the comparison.
#[derive(Debug, clap::Args)]
pub struct DeploymentArgs {
    /// Cases committed concurrently.
    #[arg(long, default_value_t = 1000)]
    pub cases: usize,
    /// Commits per case.
    #[arg(long, default_value_t = 20)]
    pub commits: usize,
    /// Rounds (each deployment runs once per round).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
}

/// Runs the comparison and prints its table; `false` when a deployment failed.
pub async fn run(args: &DeploymentArgs) -> bool {
    let deployments = [
        ("one server, R1", NatsCluster::start(1)),
        ("three nodes, R3, default sync", NatsCluster::start(3)),
        (
            "three nodes, R3, sync_interval: always",
            NatsCluster::start_sync_always(3),
        ),
    ];
    let synced = deployments[2].1.monitor(0, "/varz").unwrap_or_default();
    let sync_always = synced
        .lines()
        .find(|line| line.contains("\"sync_always\""))
        .map_or("(not reported)", str::trim);
    println!("the third deployment's servers report {sync_always}");
    let mut logs = Vec::new();
    for (name, cluster) in &deployments {
        let mut config = JetStreamConfig::new(cluster.urls());
        config.request_timeout = Duration::from_secs(10);
        match JetStreamLog::connect(&config).await {
            Ok(log) => {
                println!("{name}: stream with {} replica(s)", log.replicas());
                logs.push(log);
            }
            Err(error) => {
                eprintln!("{name}: {error}");
                return false;
            }
        }
    }
    let mut rates = vec![Vec::new(); deployments.len()];
    for round in 0..args.rounds {
        for turn in 0..deployments.len() {
            let n = (turn + round) % deployments.len();
            let tag = format!("r{round}-");
            match wfstate_bench::commit_rate(&logs[n], &tag, args.cases, args.commits).await {
                Ok(rate) => rates[n].push(rate),
                Err(error) => {
                    eprintln!("{}: {error}", deployments[n].0);
                    return false;
                }
            }
        }
    }
    let best = |rates: &[f64]| rates.iter().copied().fold(0.0, f64::max);
    let baseline = best(&rates[0]);
    let mut table = format!(
        "commit rate, {} cases x {} commits in flight, {} rounds (commits/s)\n\n\
         | deployment | each round | best | ratio to one server |\n\
         | --- | --- | ---: | ---: |\n",
        args.cases, args.commits, args.rounds
    );
    for ((name, _), rates) in deployments.iter().zip(&rates) {
        let each: Vec<String> = rates.iter().map(|rate| format!("{rate:.0}")).collect();
        let _ = writeln!(
            table,
            "| {name} | {} | {:.0} | {:.2} |",
            each.join(", "),
            best(rates),
            best(rates) / baseline
        );
    }
    println!("{table}");
    true
}

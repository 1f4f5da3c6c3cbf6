//! `wfstate-sim`: runs the simulator and prints one JSON line; exit 1 on a violation, with the
//! shrunk case on stderr.

use std::process::ExitCode;

use clap::Parser;

// The simulation allocates for every event it encodes, decodes and folds; mimalloc takes a
// share of that off, as it does for the wfstate binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The deterministic simulator of wfstate's commit client and projector.
#[derive(Debug, Parser)]
#[command(name = "wfstate-sim")]
struct Args {
    /// The seed (default: `WFSTATE_SEED`, else the clock); the same seed, the same run.
    #[arg(long, env = "WFSTATE_SEED")]
    seed: Option<u64>,
    /// Operations to run, over as many episodes as they take.
    #[arg(long, default_value_t = 100_000)]
    ops: u64,
    /// Operations per episode (a fresh world each).
    #[arg(long, default_value_t = 100)]
    episode_ops: usize,
    /// Threads running episodes side by side (default: the machine's cores).
    #[arg(long)]
    threads: Option<usize>,
    /// One JSON line on stdout.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |since| since.as_secs() % 1_000_000_000)
    });
    eprintln!("simulation: WFSTATE_SEED={seed}");
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZero::get));
    let summary = wfstate_sim::simulate(seed, args.ops, args.episode_ops, threads);
    let violations = summary
        .failed
        .as_ref()
        .map_or(0, |(_, _, violations)| violations.len());
    let ops_per_s = summary.ops as f64 / summary.seconds.max(1e-9);
    let trace_hash = hex::encode(summary.trace_hash);
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "seed": seed,
                "ops": summary.ops,
                "faults": summary.faults,
                "violations": violations,
                "trace_hash": trace_hash,
                "ops_per_s": ops_per_s.round(),
            })
        );
    } else {
        println!(
            "seed {seed}: {} ops, {} events, {} faults, {violations} violations, trace {trace_hash}, \
             {ops_per_s:.0} ops/s",
            summary.ops, summary.events, summary.faults
        );
    }
    let Some((world, ops, violations)) = summary.failed else {
        return ExitCode::SUCCESS;
    };
    for violation in &violations {
        eprintln!("violation: {violation:?}");
    }
    let rule = violations[0].rule;
    eprintln!("shrinking {} ops that break {rule:?}...", ops.len());
    let shrunk = wfstate_sim::shrink(world, &ops, rule);
    let report = wfstate_sim::run(world, &shrunk);
    eprintln!("shrunk to {} ops; they break:", shrunk.len());
    for violation in &report.violations {
        eprintln!("  {violation:?}");
    }
    eprintln!(
        "\nPaste into tests/sim/tests/found.rs:\n\n{}",
        wfstate_sim::as_test(&world, &shrunk)
    );
    ExitCode::FAILURE
}

//! Peak memory of the passes over a whole log: the projector's catch-up, `audit --all`,
//! `audit --follow`, `export` and `import`, on a log of CASES cases of EVENTS events each.
//! Run: `cargo run --release -p wfstate-bench --example memory -- CASES EVENTS [NATS_URL]`.
//! The embedded log is written in a temporary directory under the current one; with a NATS
//! URL the same events are also written to that server's `WFSTATE` stream (which must not
//! exist) and the JetStream projector and audit are measured too.
//!
//! Each phase runs in a process of its own, which reports its peak resident size (`VmHWM`,
//! about 6 MiB of it the runtime and the binary).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use wfstate_events::{EmbeddedConfig, EmbeddedLog, EventLog, JetStreamConfig, JetStreamLog};
use wfstate_projector::{
    AuditReport, EmbeddedProjector, JetStreamProjector, Projector, ProjectorConfig, audit_all,
    audit_follow, export, import,
};
use wfstate_store::Mutation;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|line| line.starts_with(field))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

/// Writes `cases` cases of `events` events each.
async fn fill<L: EventLog + Clone>(log: &L, cases: usize, events: usize) -> Result<(), Error> {
    wfstate_bench::fill(log, cases as u64, move |n| {
        let mut commits = vec![vec![Mutation::set_key("customer", format!("c-{n}"))]];
        commits.extend((1..events).map(|step| {
            vec![
                Mutation::set_key("step", step as u64),
                Mutation::IncrementStepCount,
            ]
        }));
        (format!("case-{n}"), commits)
    })
    .await?;
    Ok(())
}

/// `audit --follow` until it has seen every event of the log.
async fn follow_all<L: EventLog + Clone>(log: &L) -> Result<(), Error> {
    let total = log.last_position().await?.get();
    let seen = Arc::new(AtomicU64::new(0));
    let follower = {
        let (log, seen) = (log.clone(), Arc::clone(&seen));
        tokio::spawn(async move {
            audit_follow(
                &log,
                |_| {
                    seen.fetch_add(1, Ordering::Relaxed);
                },
                |_| {},
            )
            .await
        })
    };
    // Bounded: a follower that stops short fails the phase after ten minutes.
    for _ in 0..60_000 {
        if seen.load(Ordering::Relaxed) >= total || follower.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    follower.abort();
    let seen = seen.load(Ordering::Relaxed);
    if seen < total {
        return Err(format!("the follower saw {seen} of {total} events").into());
    }
    Ok(())
}

/// The phases run each in a process of its own, in this order, on the log `fill` wrote.
const PHASES: [&str; 5] = ["project", "audit-all", "audit-follow", "export", "import"];

/// Runs one phase in this process, on the log in `dir` (and on the server at `nats`).
async fn run_phase(name: &str, dir: &Path, nats: Option<String>) -> Result<(), Error> {
    let file = dir.join("export.cbor");
    match nats {
        None => {
            let log = EmbeddedLog::open(&EmbeddedConfig::new(dir.join("log")))?;
            match name {
                "project" => {
                    let mut projector = EmbeddedProjector::open(&log, "memory", 512)?;
                    projector.catch_up().await?;
                }
                "audit-all" => check(&audit_all(&log, |_| {}).await?)?,
                "audit-follow" => follow_all(&log).await?,
                "export" => check(&export(&log, &file).await?)?,
                "import" => {
                    let mut fresh = EmbeddedConfig::new(dir.join("imported"));
                    fresh.fsync = false;
                    check(&import(&EmbeddedLog::open(&fresh)?, &file).await?.report)?;
                }
                _ => return Err(format!("no phase {name}").into()),
            }
        }
        Some(url) => {
            let log = JetStreamLog::connect(&JetStreamConfig::new(url)).await?;
            match name {
                "project" => {
                    let config = ProjectorConfig::default();
                    let mut projector = Box::pin(JetStreamProjector::open(&log, config)).await?;
                    Box::pin(projector.catch_up()).await?;
                }
                "audit-all" => check(&audit_all(&log, |_| {}).await?)?,
                "audit-follow" => follow_all(&log).await?,
                "export" => check(&export(&log, &dir.join("export-js.cbor")).await?)?,
                _ => return Err(format!("no phase {name} on JetStream").into()),
            }
        }
    }
    Ok(())
}

fn check(report: &AuditReport) -> Result<(), Error> {
    match report.problems.first() {
        None => Ok(()),
        Some(problem) => Err(format!("the audit found a problem: {problem:?}").into()),
    }
}

/// Runs `phase` in a child process; prints its time and the child's peak resident size.
fn child(phase: &str, dir: &Path, nats: Option<&str>) -> Result<(), Error> {
    let started = Instant::now();
    let mut command = std::process::Command::new(std::env::current_exe()?);
    command.args(["--phase", phase]).arg(dir);
    if let Some(url) = nats {
        command.arg(url);
    }
    let output = command.output()?;
    if !output.status.success() {
        return Err(format!(
            "phase {phase} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    let peak = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    println!(
        "{:<14} {:<10} {:>8.2} s   peak {peak} MiB",
        phase,
        if nats.is_some() {
            "JetStream"
        } else {
            "embedded"
        },
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--phase") {
        let [_, phase, dir, rest @ ..] = args.as_slice() else {
            return Err("--phase NAME DIR [NATS_URL]".into());
        };
        run_phase(phase, Path::new(dir), rest.first().cloned()).await?;
        // The parent reads this process's peak resident size from its output.
        println!("{:.1}", status_kib("VmHWM:") as f64 / 1024.0);
        return Ok(());
    }
    let cases: usize = args.first().map_or(Ok(100_000), |n| n.parse())?;
    let events: usize = args.get(1).map_or(Ok(10), |n| n.parse())?;
    let nats = args.get(2).cloned();
    println!("{cases} case(s) of {events} event(s); each phase in a process of its own");

    let dir = tempfile::tempdir_in(".")?;
    let mut config = EmbeddedConfig::new(dir.path().join("log"));
    config.fsync = false;
    let started = Instant::now();
    fill(&EmbeddedLog::open(&config)?, cases, events).await?;
    println!("fill (embedded) {:.2} s", started.elapsed().as_secs_f64());
    for phase in PHASES {
        child(phase, dir.path(), None)?;
    }
    if let Some(url) = &nats {
        let started = Instant::now();
        fill(
            &JetStreamLog::connect(&JetStreamConfig::new(url)).await?,
            cases,
            events,
        )
        .await?;
        println!("fill (JetStream) {:.2} s", started.elapsed().as_secs_f64());
        for phase in &PHASES[..4] {
            child(phase, dir.path(), Some(url))?;
        }
    }
    Ok(())
}

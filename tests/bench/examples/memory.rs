//! Peak memory of the passes over a whole log: the projector's catch-up, `audit --all`,
//! `audit --follow`, `export` and `import`, on a log of CASES cases of EVENTS events each.
//! Run: `cargo run --release -p wfstate-bench --example memory -- CASES EVENTS [NATS_URL]`.
//! The embedded log is written in a temporary directory under the current one; with a NATS
//! URL the same events are also written to that server's `WFSTATE` stream (which must not
//! exist) and the JetStream projector and audit are measured too.
//!
//! Each phase resets the process's peak resident size (`/proc/self/clear_refs`) and reports
//! the peak it reached (`VmHWM`) and the resident size it started from.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::Future;
use wfstate_events::{
    EmbeddedConfig, EmbeddedLog, EventLog, JetStreamConfig, JetStreamLog, Workspace,
};
use wfstate_projector::{
    EmbeddedProjector, JetStreamProjector, Projector, ProjectorConfig, audit_all, audit_follow,
    export, import,
};
use wfstate_store::{CaseId, Mutation};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Writers in flight while the log is filled.
const WRITERS: usize = 64;

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|line| line.starts_with(field))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

/// Runs one phase and prints its time, the resident size it started from and its peak.
async fn phase<T>(name: &str, work: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
    // "5" resets the peak resident size to the current one.
    std::fs::write("/proc/self/clear_refs", "5")?;
    let before = status_kib("VmRSS:");
    let started = Instant::now();
    let result = work.await?;
    let peak = status_kib("VmHWM:");
    println!(
        "{name:<28} {:>7.2} s   start {:>6.1} MiB   peak {:>6.1} MiB   (+{:.1} MiB)",
        started.elapsed().as_secs_f64(),
        before as f64 / 1024.0,
        peak as f64 / 1024.0,
        peak.saturating_sub(before) as f64 / 1024.0
    );
    Ok(result)
}

/// Writes `cases` cases of `events` events each, `WRITERS` cases at a time.
async fn fill<L: EventLog + Clone>(log: &L, cases: usize, events: usize) -> Result<(), Error> {
    let workspace = Workspace::new(log.clone());
    let next = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..WRITERS.min(cases))
        .map(|_| {
            let (workspace, next) = (workspace.clone(), Arc::clone(&next));
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= cases as u64 {
                        return Ok::<_, Error>(());
                    }
                    let id = CaseId::new(format!("case-{n}"))?;
                    let (mut handle, _) = workspace
                        .create(id, [Mutation::set_key("customer", format!("c-{n}"))])
                        .await?;
                    for step in 1..events {
                        handle
                            .case_mut()
                            .buffer(Mutation::set_key("step", step as u64))
                            .buffer(Mutation::IncrementStepCount);
                        workspace.commit(&mut handle).await?;
                    }
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await??;
    }
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

#[tokio::main]
async fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let cases: usize = args.next().map_or(Ok(100_000), |n| n.parse())?;
    let events: usize = args.next().map_or(Ok(10), |n| n.parse())?;
    let nats = args.next();
    println!("{cases} case(s) of {events} event(s)");

    let dir = tempfile::tempdir_in(".")?;
    let mut config = EmbeddedConfig::new(dir.path().join("log"));
    config.fsync = false;
    let log = EmbeddedLog::open(&config)?;
    phase("fill (embedded)", fill(&log, cases, events)).await?;
    phase("project (embedded)", async {
        let mut projector = EmbeddedProjector::open(&log, "memory", 512)?;
        projector.catch_up().await?;
        Ok(())
    })
    .await?;
    phase("audit --all (embedded)", async {
        let report = audit_all(&log, |_| {}).await?;
        assert!(report.is_clean(), "{:?}", report.problems.first());
        Ok(())
    })
    .await?;
    phase("audit --follow (embedded)", follow_all(&log)).await?;
    let file = dir.path().join("export.cbor");
    phase("export (embedded)", async {
        export(&log, &file).await?;
        Ok(())
    })
    .await?;
    phase("import (embedded)", async {
        let mut fresh = EmbeddedConfig::new(dir.path().join("imported"));
        fresh.fsync = false;
        import(&EmbeddedLog::open(&fresh)?, &file).await?;
        Ok(())
    })
    .await?;

    if let Some(url) = nats {
        let log = JetStreamLog::connect(&JetStreamConfig::new(url)).await?;
        phase("fill (JetStream)", fill(&log, cases, events)).await?;
        phase(
            "project (JetStream)",
            Box::pin(async {
                let mut projector =
                    JetStreamProjector::open(&log, ProjectorConfig::default()).await?;
                projector.catch_up().await?;
                Ok(())
            }),
        )
        .await?;
        phase("audit --all (JetStream)", async {
            audit_all(&log, |_| {}).await?;
            Ok(())
        })
        .await?;
    }
    Ok(())
}

//! Commits/s of the embedded log (fsync on commit) with 1 and with 64 concurrent writers, each
//! writer on its own case. Run: `cargo run --release -p wfstate-bench --example
//! embedded_throughput [COMMITS_PER_WRITER]`; the log is created in a temporary directory
//! under the current one (so on the same disk as the work tree).

use std::time::Instant;

use wfstate_events::{EmbeddedConfig, EmbeddedLog, Workspace};
use wfstate_store::{CaseId, Mutation, Value};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let commits: usize = std::env::args().nth(1).map_or(Ok(2000), |n| n.parse())?;
    for writers in [1usize, 64] {
        let dir = tempfile::tempdir_in(".")?;
        let workspace = Workspace::new(EmbeddedLog::open(&EmbeddedConfig::new(dir.path()))?);
        let per_writer = if writers == 1 {
            commits
        } else {
            commits.div_ceil(8)
        };
        let started = Instant::now();
        let tasks: Vec<_> = (0..writers)
            .map(|n| {
                let workspace = workspace.clone();
                tokio::spawn(async move {
                    let (mut handle, _) = workspace
                        .create(CaseId::new(format!("case-{n}"))?, [])
                        .await?;
                    for step in 1..per_writer {
                        handle
                            .buffer(Mutation::set_key("step", Value::from(step as u64)))
                            .buffer(Mutation::IncrementStepCount);
                        workspace.commit(&mut handle).await?;
                    }
                    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
                })
            })
            .collect();
        for task in tasks {
            task.await?.map_err(|e| e.to_string())?;
        }
        let total = writers * per_writer;
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "{writers:>3} writer(s): {total} commits in {seconds:.2} s = {:.0} commits/s",
            total as f64 / seconds
        );
    }
    Ok(())
}

//! A writer for the crash-safety test: commits to 16 cases of an embedded log in a loop, from
//! 16 concurrent tasks, and prints `<case> <version> <event hash>` for every acknowledged
//! commit, until it is killed. Usage: `crash_writer DATA_DIR`.

use std::io::Write;

use wfstate_events::{CommitErrorKind, EmbeddedConfig, EmbeddedLog, Workspace};
use wfstate_store::{CaseId, Mutation};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let data_dir = std::env::args()
        .nth(1)
        .ok_or("usage: crash_writer DATA_DIR")?;
    let workspace = Workspace::new(EmbeddedLog::open(&EmbeddedConfig::new(data_dir))?);
    let tasks: Vec<_> = (0..16)
        .map(|n| {
            let workspace = workspace.clone();
            tokio::spawn(async move {
                let id = CaseId::new(format!("crash-{n}"))?;
                let mut handle = match workspace.load(&id).await {
                    Ok(handle) => handle,
                    Err(error) if error.kind() == CommitErrorKind::CaseNotFound => {
                        workspace.new_case(id.clone())
                    }
                    Err(error) => return Err(error.into()),
                };
                loop {
                    handle
                        .buffer(Mutation::set_key("payload", "x".repeat(64)))
                        .buffer(Mutation::IncrementStepCount);
                    let receipt = workspace.commit(&mut handle).await?;
                    let mut out = std::io::stdout().lock();
                    writeln!(
                        out,
                        "{} {} {}",
                        receipt.case_id, receipt.version, receipt.event_hash
                    )?;
                    out.flush()?;
                }
                #[expect(unreachable_code, reason = "gives the task its error type")]
                Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
            })
        })
        .collect();
    for task in tasks {
        task.await?.map_err(|e| e.to_string())?;
    }
    Ok(())
}

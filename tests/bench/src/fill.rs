//! Filling a log with many cases for the examples and the tests that measure or load it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use wfstate_events::{EventLog, Workspace};
use wfstate_store::{CaseId, Mutation};

use crate::BenchError;

/// Cases written at once.
const WRITERS: u64 = 64;

/// Writes `cases` cases, 64 at a time. Case `n` is `shape(n)`: its id and the
/// mutations of its commits in order, the first commit creating it (an empty list of
/// commits writes nothing for it).
///
/// # Errors
/// The first commit or id that fails.
pub async fn fill<L, F>(log: &L, cases: u64, shape: F) -> Result<(), BenchError>
where
    L: EventLog + Clone,
    F: Fn(u64) -> (String, Vec<Vec<Mutation>>) + Send + Sync + 'static,
{
    let workspace = Workspace::new(log.clone());
    let (next, shape) = (Arc::new(AtomicU64::new(0)), Arc::new(shape));
    let writers: Vec<_> = (0..WRITERS.min(cases))
        .map(|_| {
            let (workspace, next, shape) =
                (workspace.clone(), Arc::clone(&next), Arc::clone(&shape));
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= cases {
                        return Ok::<_, BenchError>(());
                    }
                    let (id, commits) = shape(n);
                    let mut commits = commits.into_iter();
                    let Some(first) = commits.next() else {
                        continue;
                    };
                    let (mut handle, _) = workspace.create(CaseId::new(id)?, first).await?;
                    for mutations in commits {
                        for mutation in mutations {
                            handle.buffer(mutation);
                        }
                        workspace.commit(&mut handle).await?;
                    }
                }
            })
        })
        .collect();
    for writer in writers {
        writer
            .await
            .map_err(|error| crate::bench_error(format!("a writer stopped: {error}")))??;
    }
    Ok(())
}

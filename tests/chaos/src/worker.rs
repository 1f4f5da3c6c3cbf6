//! A worker process: commits until its deadline, half through `transact_on_with_meta` (read,
//! add one, commit, retried on conflicts) and half with `commit_with_meta`, each with a commit
//! id of its own written down first, on a few hot cases shared by every worker and many cold
//! ones. Every acknowledged commit, every unknown outcome and every failure (with the commit
//! id the client said stored nothing) is written to its record file as it happens. A commit
//! that failed is never sent again under its id: a retry gets a new one.
//!
//! A worker started with `--recover` takes over the file of a worker that was killed: every
//! commit of its own id that was sent and not acknowledged is in doubt, and is sent again with
//! the same commit id (on a freshly loaded case, as a restarted process would) until it is
//! acknowledged, before the new worker goes on. Transactions are not sent again: whether they
//! landed is the stream's to say.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use wfstate_events::{CommitError, Draft, JetStreamLog, Workspace};
use wfstate_store::{CaseId, CommitId, CommitMeta, Map, Mutation, Receipt, Value};

use crate::record::{self, Record, Recorder, now_ms};
use crate::schedule::Rng;
use crate::{cases, connect_log};

/// How long after its deadline a worker goes on resolving a commit in doubt.
const RESOLVE_GRACE_MS: u64 = 20_000;

/// The worker's arguments.
#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// The cluster's client URLs.
    #[arg(long)]
    pub urls: String,
    /// The worker's number.
    #[arg(long)]
    pub id: usize,
    /// The record file.
    #[arg(long)]
    pub out: PathBuf,
    /// When to stop starting commits, ms since the epoch.
    #[arg(long)]
    pub until: u64,
    /// The seed of the worker's choices.
    #[arg(long)]
    pub seed: u64,
    /// Take over the record of a worker that was killed.
    #[arg(long)]
    pub recover: bool,
}

struct Worker {
    workspace: Workspace<JetStreamLog>,
    handles: HashMap<CaseId, wfstate_events::CaseHandle>,
    out: Recorder,
    name: String,
    until: u64,
}

/// Runs a worker to its deadline.
pub async fn run(args: WorkerArgs) {
    crate::exit_with_the_suite();
    let log = connect_log(&args.urls, args.until).await;
    let name = format!("chaos-w{}", args.id);
    let workspace = Workspace::new(log)
        .with_writer(name.clone())
        .with_retry(wfstate_events::RetryPolicy::default().with_deadline(Duration::from_secs(10)));
    let previous = if args.recover {
        record::read(&args.out)
    } else {
        Vec::new()
    };
    let mut worker = Worker {
        workspace,
        handles: HashMap::new(),
        out: Recorder::open(&args.out).expect("open the worker's record"),
        name,
        until: args.until,
    };
    worker.recover(&previous).await;

    let mut rng = Rng::new(args.seed);
    let (hot, cold) = cases();
    // The sequence numbers of this worker's keys go on from those of the process before.
    let mut sequence = previous.len() as u64;
    while now_ms() < args.until {
        let case = if rng.chance(30) {
            hot[rng.index(hot.len())].clone()
        } else {
            cold[rng.index(cold.len())].clone()
        };
        if rng.chance(50) {
            worker.transact(&case).await;
        } else {
            sequence += 1;
            let key = format!("{}-{}-{sequence}", worker.name, std::process::id());
            let meta = worker.intent(&case, &key, sequence, false);
            worker.own(&case, &key, sequence, meta, false).await;
        }
    }
}

impl Worker {
    fn meta(&self, commit_id: CommitId, at: u64) -> CommitMeta {
        CommitMeta {
            commit_id,
            committed_at_ms: at,
            writer: self.name.clone(),
        }
    }

    /// A new commit id for a commit on `case`, written down before it is sent.
    fn intent(&mut self, case: &CaseId, key: &str, value: u64, transact: bool) -> CommitMeta {
        let meta = self.meta(CommitId::generate(), now_ms());
        self.out.write(&Record::Intent {
            id: meta.commit_id.to_string(),
            case: case.to_string(),
            key: key.to_owned(),
            value,
            at: meta.committed_at_ms,
            transact,
        });
        meta
    }

    /// Sends again every commit of its own id the killed worker had sent and not seen
    /// acknowledged.
    async fn recover(&mut self, previous: &[Record]) {
        let settled: HashSet<&str> = previous
            .iter()
            .filter_map(|record| match record {
                Record::Ack { id, .. }
                | Record::Resolved { id, .. }
                | Record::Failed { id: Some(id), .. } => Some(id.as_str()),
                _ => None,
            })
            .collect();
        for record in previous {
            let Record::Intent {
                id,
                case,
                key,
                value,
                at,
                transact: false,
            } = record
            else {
                continue;
            };
            if settled.contains(id.as_str()) {
                continue;
            }
            let (Ok(commit_id), Ok(case)) = (CommitId::from_str(id), CaseId::new(case)) else {
                continue;
            };
            // The first process may have been killed after the event landed: in doubt.
            self.out.write(&Record::Unknown {
                id: id.clone(),
                case: case.to_string(),
                at: now_ms(),
            });
            let meta = self.meta(commit_id, *at);
            self.own(&case, key, *value, meta, true).await;
        }
    }

    /// The handle of `case`, loaded when there is none.
    async fn handle(&mut self, case: &CaseId) -> Option<&mut wfstate_events::CaseHandle> {
        if !self.handles.contains_key(case) {
            match self.workspace.load(case).await {
                Ok(handle) => {
                    self.handles.insert(case.clone(), handle);
                }
                Err(error) => {
                    self.failed(&error, None);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    return None;
                }
            }
        }
        self.handles.get_mut(case)
    }

    /// A call failed; `commit`: the commit the client said stored nothing.
    fn failed(&mut self, error: &CommitError, commit: Option<CommitId>) {
        self.out.write(&Record::Failed {
            id: commit.map(|id| id.to_string()),
            error: error.to_string(),
            at: now_ms(),
        });
    }

    /// Commits in doubt in `pending` that a call settled without landing them (another
    /// writer's event is in their place): no longer in the handle, and not the receipt's.
    fn settled_elsewhere(
        &mut self,
        pending: &[CommitId],
        still: &[CommitId],
        landed: Option<CommitId>,
    ) {
        for id in pending {
            if Some(*id) == landed {
                self.resolved(*id, true);
            } else if !still.contains(id) {
                self.resolved(*id, false);
            }
        }
    }

    fn ack(&mut self, receipt: &Receipt, resent: bool) {
        self.out.write(&Record::Ack {
            id: receipt.commit_id.to_string(),
            case: receipt.case_id.to_string(),
            version: receipt.version.get(),
            hash: receipt.event_hash.to_hex(),
            at: now_ms(),
            resent,
        });
    }

    fn resolved(&mut self, id: CommitId, landed: bool) {
        self.out.write(&Record::Resolved {
            id: id.to_string(),
            landed,
            at: now_ms(),
        });
    }

    /// Commits `key = value` until it is acknowledged (or the deadline passes), with the
    /// given commit id while nothing says it failed: after a conflict on the case caught up,
    /// after an unknown outcome sent again as it was, after a failure (nothing stored) under
    /// a new commit id, on the case loaded again.
    async fn own(
        &mut self,
        case: &CaseId,
        key: &str,
        value: u64,
        mut meta: CommitMeta,
        resent: bool,
    ) {
        let mut in_doubt = resent;
        while now_ms() < self.until + RESOLVE_GRACE_MS {
            let workspace = self.workspace.clone();
            let Some(handle) = self.handle(case).await else {
                continue;
            };
            let pending = doubt(handle);
            handle.rollback();
            handle.buffer(Mutation::PatchCtx {
                set: Map::from([(key.to_owned(), Value::from(value))]),
                remove: Vec::new(),
            });
            let outcome = workspace.commit_with_meta(handle, meta.clone()).await;
            handle.rollback();
            let still = doubt(handle);
            let landed = outcome.as_ref().ok().map(|receipt| receipt.commit_id);
            self.settled_elsewhere(
                &pending
                    .iter()
                    .copied()
                    .filter(|id| *id != meta.commit_id)
                    .collect::<Vec<_>>(),
                &still,
                landed,
            );
            match outcome {
                // The handle had another commit in doubt: that one is settled, ours is next.
                Ok(receipt) if receipt.commit_id != meta.commit_id => {
                    self.ack(&receipt, false);
                }
                Ok(receipt) => {
                    if in_doubt {
                        self.resolved(meta.commit_id, true);
                    }
                    self.ack(&receipt, resent);
                    return;
                }
                // Another writer came first: caught up, the same commit is sent again under
                // its id (an earlier attempt of it may land yet; the id keeps it once).
                Err(CommitError::Conflict { .. }) => {
                    if let Err(error) = workspace
                        .refresh(self.handles.get_mut(case).expect("the handle"))
                        .await
                    {
                        self.failed(&error, None);
                        self.handles.remove(case);
                    }
                }
                Err(CommitError::InDoubt { .. }) => {
                    if !in_doubt && still.contains(&meta.commit_id) {
                        in_doubt = true;
                        self.out.write(&Record::Unknown {
                            id: meta.commit_id.to_string(),
                            case: case.to_string(),
                            at: now_ms(),
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => {
                    if !matches!(error, CommitError::Log(_)) {
                        self.handles.remove(case);
                    }
                    if in_doubt || still.contains(&meta.commit_id) {
                        // This attempt stored nothing, but an earlier one may land yet (one
                        // the handle or the killed process before this one sent): the commit
                        // goes on under its id.
                        self.failed(&error, None);
                    } else {
                        // Nothing of it was stored, nor will be: written down as failed, and
                        // sent again as a new commit.
                        self.failed(&error, Some(meta.commit_id));
                        meta = self.intent(case, key, value, false);
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// One transaction adding one to the case's `n`, under a commit id written down first;
    /// an unknown outcome is settled by calling it again on the same handle, which sends the
    /// commit in doubt first.
    async fn transact(&mut self, case: &CaseId) {
        let meta = self.intent(case, "n", 0, true);
        let mut in_doubt = false;
        loop {
            let workspace = self.workspace.clone();
            let Some(handle) = self.handle(case).await else {
                return;
            };
            let pending = doubt(handle);
            let outcome = workspace
                .transact_on_with_meta(handle, meta.clone(), add_one)
                .await;
            let still = doubt(handle);
            let landed = outcome.as_ref().ok().map(|(receipt, _)| receipt.commit_id);
            self.settled_elsewhere(&pending, &still, landed);
            if in_doubt && !pending.contains(&meta.commit_id) {
                in_doubt = false;
            }
            match outcome {
                Ok((receipt, _)) => {
                    self.ack(&receipt, false);
                    if receipt.commit_id == meta.commit_id {
                        return;
                    }
                }
                Err(CommitError::InDoubt { commit_id, .. }) => {
                    if commit_id == meta.commit_id && !in_doubt {
                        in_doubt = true;
                        self.out.write(&Record::Unknown {
                            id: commit_id.to_string(),
                            case: case.to_string(),
                            at: now_ms(),
                        });
                    }
                    if now_ms() >= self.until + RESOLVE_GRACE_MS {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => {
                    let ours = (!still.contains(&meta.commit_id)).then_some(meta.commit_id);
                    self.failed(&error, ours);
                    if ours.is_some()
                        && !matches!(error, CommitError::Log(_) | CommitError::Conflict { .. })
                    {
                        self.handles.remove(case);
                    }
                    if ours.is_some() || now_ms() >= self.until + RESOLVE_GRACE_MS {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// The commit ids a handle has in doubt.
fn doubt(handle: &wfstate_events::CaseHandle) -> Vec<CommitId> {
    handle.in_doubt().iter().map(|(id, _)| *id).collect()
}

fn add_one(case: &mut Draft<'_>) {
    let n = match case.state().ctx.get("n") {
        Some(Value::Integer(n)) => *n,
        _ => 0,
    };
    case.buffer(Mutation::set_key("n", Value::Integer(n + 1)));
}

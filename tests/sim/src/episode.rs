//! One episode: a world, its workers and projector on one paused clock, the ops on their
//! schedule, then the world healed, every commit in doubt settled, the projector caught up,
//! and the oracle's checks of the whole log.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wfstate_events::{EventLog, RetryPolicy, Workspace};
use wfstate_events::{LogError, LogErrorKind};
use wfstate_projector::{
    Acknowledged, MemoryProjector, MemoryViews, Projector, ProjectorError, QuarantineRecord, View,
    ViewSource, ViewStore,
};
use wfstate_store::{Case, CaseId, Position};

use crate::env::SimEnvironment;
use crate::journal::{Journal, Outcome, Violation};
use crate::log::{CALL, Call, SimLog};
use crate::program::{Act, Op, World};
use crate::rng::{Rng, derive};
use crate::worker::{Worker, read_log};

/// What an episode found.
#[derive(Debug, Clone)]
pub struct Report {
    /// Every broken promise.
    pub violations: Vec<Violation>,
    /// The hash of the trace: the same world and ops give the same hash.
    pub trace_hash: [u8; 32],
    /// Faults the log answered with.
    pub faults: u64,
    /// Events stored.
    pub events: u64,
}

/// Runs `ops` in `world`, on a runtime of its own with a paused clock.
///
/// # Panics
/// When the runtime cannot be built.
pub fn run(world: World, ops: &[Op]) -> Report {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, episode(world, ops))
}

/// A view store whose next write crashes after storing, when armed: the projector dies
/// between writing its views and acknowledging its events.
#[derive(Debug, Clone)]
struct Crashing {
    inner: MemoryViews,
    armed: Arc<AtomicBool>,
}

impl ViewStore for Crashing {
    async fn load(&self, case_id: &str) -> Result<Option<(View, u64)>, ProjectorError> {
        self.inner.load(case_id).await
    }

    async fn revision(&self, case_id: &str) -> Result<Option<u64>, ProjectorError> {
        self.inner.revision(case_id).await
    }

    async fn write(
        &self,
        case_id: &str,
        bytes: Vec<u8>,
        revision: Option<u64>,
    ) -> Result<u64, ProjectorError> {
        let written = self.inner.write(case_id, bytes, revision).await?;
        if self.armed.swap(false, Ordering::SeqCst) {
            return Err(ProjectorError::Log(LogError::new(
                LogErrorKind::Unexpected,
                "the projector crashed after writing a view",
            )));
        }
        Ok(written)
    }

    async fn record_quarantine(&self, record: &QuarantineRecord) -> Result<(), ProjectorError> {
        self.inner.record_quarantine(record).await
    }

    async fn clear_quarantine(&self, case_id: &str) -> Result<(), ProjectorError> {
        self.inner.clear_quarantine(case_id).await
    }

    async fn quarantined(&self) -> Result<Vec<QuarantineRecord>, ProjectorError> {
        self.inner.quarantined().await
    }

    async fn case_ids(&self) -> Result<Vec<CaseId>, ProjectorError> {
        self.inner.case_ids().await
    }
}

type SimProjector = MemoryProjector<SimLog, Crashing>;

/// The world's own side: the projector (replaced after a crash), the log's window and lag.
struct Surroundings {
    log: SimLog,
    views: Crashing,
    acknowledged: Acknowledged,
    projector: SimProjector,
    journal: Rc<RefCell<Journal>>,
}

impl Surroundings {
    fn new_projector(log: &SimLog, views: &Crashing, acknowledged: &Acknowledged) -> SimProjector {
        MemoryProjector::new(log.clone(), views.clone(), acknowledged.clone(), 64)
    }

    async fn act(&mut self, index: usize, act: Act) {
        match act {
            Act::Project { crash } => {
                self.views.armed.store(crash, Ordering::SeqCst);
                let ran = CALL
                    .scope(Call::new(0, 0), self.projector.run_batch())
                    .await;
                // Armed and no longer: it fired.
                let crashed = crash && !self.views.armed.swap(false, Ordering::SeqCst);
                match ran {
                    Ok(_) => {}
                    // The crash: a new projector goes on from what was acknowledged.
                    Err(_) if crashed => {
                        self.projector =
                            Self::new_projector(&self.log, &self.views, &self.acknowledged);
                    }
                    Err(error) => self.journal.borrow_mut().violation(
                        Some(index),
                        "the projector folds every event",
                        format!("a batch failed: {error}"),
                    ),
                }
            }
            Act::Forget => self.log.forget(),
            Act::Lag { ms } => {
                let last = self
                    .log
                    .inner()
                    .last_position()
                    .await
                    .unwrap_or(Position::ZERO);
                self.log.lag(u64::from(ms), last);
            }
            _ => unreachable!("only the world's acts"),
        }
    }
}

async fn episode(world: World, ops: &[Op]) -> Report {
    let start = tokio::time::Instant::now();
    let log = SimLog::new();
    let journal = Rc::new(RefCell::new(Journal::default()));
    let mut rng = Rng::new(derive(world.seed, 1));
    let retry = RetryPolicy::default()
        .with_deadline(Duration::from_millis(20 + rng.below(300)))
        .with_backoff(
            Duration::from_millis(1 + rng.below(4)),
            Duration::from_millis(5 + rng.below(50)),
        )
        .with_transact_attempts(2 + u32::try_from(rng.below(6)).expect("a few"));
    let workers: Vec<Worker> = (0..world.workers)
        .map(|n| {
            let env = SimEnvironment::new(derive(world.seed, 100 + u64::from(n)), start);
            let workspace = Workspace::new(log.clone())
                .with_writer(format!("sim-w{n}"))
                .with_retry(retry)
                .with_environment(env);
            Worker::new(workspace, Rc::clone(&journal))
        })
        .collect();
    let views = Crashing {
        inner: MemoryViews::new(),
        armed: Arc::default(),
    };
    let acknowledged = Acknowledged::new();
    let surroundings = Surroundings {
        projector: Surroundings::new_projector(&log, &views, &acknowledged),
        log: log.clone(),
        views,
        acknowledged,
        journal: Rc::clone(&journal),
    };

    // Each worker and the world run their ops in order, at their times, concurrently.
    let mut tasks = Vec::new();
    for (n, mut worker) in workers.into_iter().enumerate() {
        let mine: Vec<(usize, Op)> = ops
            .iter()
            .copied()
            .enumerate()
            .filter(|(_, op)| !is_world(op.act) && usize::from(op.worker) == n)
            .collect();
        tasks.push(tokio::task::spawn_local(async move {
            for (index, op) in mine {
                tokio::time::sleep_until(start + Duration::from_millis(u64::from(op.at_ms))).await;
                worker.run(index, &op).await;
            }
            worker
        }));
    }
    let theirs: Vec<(usize, Op)> = ops
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, op)| is_world(op.act))
        .collect();
    let world_task = tokio::task::spawn_local(async move {
        let mut surroundings = surroundings;
        for (index, op) in theirs {
            tokio::time::sleep_until(start + Duration::from_millis(u64::from(op.at_ms))).await;
            surroundings.act(index, op.act).await;
        }
        surroundings
    });
    let mut workers = Vec::new();
    for task in tasks {
        workers.push(task.await.expect("a worker's task ends"));
    }
    let mut surroundings = world_task.await.expect("the world's task ends");

    // The world heals; what is still in the network lands (or not) meanwhile.
    log.heal();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let last = ops.len();
    for worker in &mut workers {
        worker.settle(last).await;
    }
    let projector = &mut surroundings.projector;
    if let Err(error) = CALL.scope(Call::new(0, 0), projector.catch_up()).await {
        journal.borrow_mut().violation(
            None,
            "the projector folds every event",
            format!("catching up failed: {error}"),
        );
    }
    let cases = check_log(&log, &mut journal.borrow_mut());
    let views = check_views(projector, &cases).await;
    let mut journal = journal.borrow_mut();
    journal.violations.extend(views);
    let events = journal.events.len() as u64;
    journal.trace(&events.to_le_bytes());
    Report {
        violations: std::mem::take(&mut journal.violations),
        trace_hash: journal.trace_hash(),
        faults: log.injected(),
        events,
    }
}

fn is_world(act: Act) -> bool {
    matches!(act, Act::Project { .. } | Act::Forget | Act::Lag { .. })
}

/// The oracle's checks of the whole log, from the stored bytes alone: every case's events
/// are versions 1, 2, ... in order, each linked to the one before and folding onto it; no
/// commit id is stored twice; every receipt a call was given is of a stored event, as
/// stored; a call that answered an error other than in doubt stored nothing; a commit said
/// not to have landed is not stored. Returns every case as its events leave it.
fn check_log(log: &SimLog, journal: &mut Journal) -> BTreeMap<String, (Case, Position)> {
    read_log(journal, log);
    let mut broken = std::mem::take(&mut journal.broken);
    let mut folded = BTreeMap::new();
    for (id, entry) in std::mem::take(&mut journal.cases) {
        let Some(case) = entry.case else { continue };
        if let Err(error) = case.check_state_hash(entry.state_hash) {
            broken.push(("every case loads", format!("case {id}: {error}")));
        }
        folded.insert(id, (case, entry.position));
    }
    for (rule, detail) in broken {
        journal.violation(None, rule, detail);
    }
    check_calls(log, journal);
    folded
}

/// The oracle's checks of what the calls said against the log: no commit id stored twice,
/// every receipt of its stored event, an error other than in doubt stored nothing, a commit
/// said not to have landed not stored as it was sent.
fn check_calls(log: &SimLog, journal: &mut Journal) {
    let mut broken = Vec::new();
    let events = &journal.events;
    for (id, positions) in &journal.stored {
        if positions.len() > 1 {
            broken.push((
                "no commit id is stored twice",
                format!("{id} at {positions:?}"),
            ));
        }
    }
    let origins = log.origins();
    let refused: HashSet<u64> = origins.iter().copied().collect();
    let mut found = Vec::new();
    for (n, call) in journal.calls.iter().enumerate() {
        let id = n as u64 + 1;
        match &call.outcome {
            Outcome::Ok(receipts) => {
                for receipt in receipts {
                    let stored = usize::try_from(receipt.position.get())
                        .ok()
                        .and_then(|position| events.get(position.wrapping_sub(1)));
                    let same = stored.is_some_and(|read| {
                        read.hash == receipt.event_hash
                            && read.event.as_ref().is_some_and(|head| {
                                head.commit_id == receipt.commit_id
                                    && head.version == receipt.version
                                    && head.case_id == receipt.case_id
                            })
                    });
                    if !same {
                        found.push((
                            call.op,
                            "every receipt is of its stored event",
                            format!("{receipt:?}"),
                        ));
                    }
                }
            }
            Outcome::Err(kind)
                if *kind != wfstate_events::CommitErrorKind::InDoubt && refused.contains(&id) =>
            {
                let at: Vec<usize> = (0..origins.len())
                    .filter(|&p| origins[p] == id)
                    .map(|p| p + 1)
                    .collect();
                found.push((
                    call.op,
                    "an error other than in doubt stored nothing",
                    format!("the call answered {kind:?} and stored the events at {at:?}"),
                ));
            }
            _ => {}
        }
    }
    for (op, id, sent) in &journal.not_landed {
        if let Some(position) = events.iter().position(|read| read.hash == *sent) {
            found.push((
                *op,
                "a commit settled as not landed is not stored",
                format!("commit {id} is stored at {} as it was sent", position + 1),
            ));
        }
    }
    for (rule, detail) in broken {
        journal.violation(None, rule, detail);
    }
    for (op, rule, detail) in found {
        journal.violation(Some(op), rule, detail);
    }
}

/// Every case's view, once the projector caught up, is its case as its events leave it.
async fn check_views(
    projector: &SimProjector,
    cases: &BTreeMap<String, (Case, Position)>,
) -> Vec<Violation> {
    let mut broken = Vec::new();
    for (id, (case, position)) in cases {
        let view = CALL.scope(Call::new(0, 0), projector.view(case.id())).await;
        let same = matches!(&view, Ok(Some(view))
            if view.is_healthy() && view.position == *position && view.state == *case.state());
        if !same {
            broken.push(Violation {
                op: None,
                rule: "every view equals its replay",
                detail: format!(
                    "case {id}: view {view:?}, replay at {position} of version {}",
                    case.state().version
                ),
            });
        }
    }
    broken
}

//! A simulated worker: its workspace, its handles, and its record of the commit ids it chose
//! (kept across restarts, as a real worker keeps it on disk). It makes each op's calls and
//! judges each answer as it comes: a call on a handle with a commit in doubt settles that
//! commit (or says it is still in doubt, or refuses without sending), a commit id already
//! stored is answered with its receipt, no stored event is called corrupted, and the handle's
//! state is always its case's state at the handle's position.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::pin::pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use wfstate_events::{CaseHandle, CommitError, CommitErrorKind, Draft, EventLog, Workspace};
use wfstate_store::{CaseId, CommitId, CommitMeta, Event, Hash, Mutation, Receipt, Value};

use crate::journal::{Folded, Journal, Outcome, Read};
use crate::log::{CALL, Call, SimLog};
use crate::program::{Act, Change, Op};

/// How many times a restarted worker sends one commit of its record again before it leaves
/// it for its next restart.
const RESENDS_MAX: usize = 6;

/// The id of case number `case`.
///
/// # Panics
/// Never: the id is valid.
pub fn case_id(case: u8) -> CaseId {
    CaseId::new(format!("case-{case}")).expect("a valid case id")
}

/// A commit the worker chose the id of, as its record keeps it.
#[derive(Debug, Clone)]
struct Intent {
    commit_id: CommitId,
    case: u8,
    change: Change,
    /// Acknowledged with its receipt.
    acked: bool,
    /// Refused for good (its change no longer validates): not sent again.
    abandoned: bool,
}

/// What a call is, for judging what it settles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `commit`, `commit_with_meta`: settles one commit in doubt and returns its receipt.
    Commit,
    /// `commit_many`: settles the events in doubt and returns their receipts.
    Many,
    /// `transact_on`: settles what is in doubt, then may commit anew.
    Transact,
    /// `refresh`: settles what is in doubt, then folds.
    Refresh,
}

/// What the oracle knows before a call.
struct Before {
    call: u64,
    op: usize,
    case: u8,
    /// The handle's commits in doubt.
    doubt: Vec<(CommitId, Option<Hash>)>,
    /// The commit id the caller gave, and whether the log held it already.
    explicit: Option<(CommitId, bool)>,
}

/// One simulated worker process.
pub struct Worker {
    workspace: Workspace<SimLog>,
    handles: BTreeMap<u8, CaseHandle>,
    intents: Vec<Intent>,
    journal: Rc<RefCell<Journal>>,
    /// Per case, the handle's last event (position and hash) whose state the oracle hashed
    /// and found the stored event's: hashed again when the handle moves. A state changed
    /// without moving shows in the state hash of the handle's next commit, which the end's
    /// fold of the log checks.
    verified: BTreeMap<u8, (wfstate_store::Position, Hash)>,
}

/// The commits a handle has in doubt: their ids and the hashes of the bytes sent (none for
/// a commit that landed and whose receipt is not read yet).
fn doubt(handle: Option<&CaseHandle>) -> Vec<(CommitId, Option<Hash>)> {
    handle.map_or_else(Vec::new, |handle| {
        handle
            .in_doubt()
            .iter()
            .map(|(id, bytes)| (*id, (!bytes.is_empty()).then(|| Hash::of(bytes))))
            .collect()
    })
}

/// Adds one to the case's `n`: what `transact` does.
fn add_one(case: &mut Draft<'_>) {
    let n = match case.state().ctx.get("n") {
        Some(Value::Integer(n)) => *n,
        _ => 0,
    };
    case.buffer(Mutation::set_key("n", Value::Integer(n + 1)));
}

impl Worker {
    /// A worker committing through `workspace`, writing what it sees to `journal`.
    pub fn new(workspace: Workspace<SimLog>, journal: Rc<RefCell<Journal>>) -> Self {
        Worker {
            workspace,
            handles: BTreeMap::new(),
            intents: Vec::new(),
            journal,
            verified: BTreeMap::new(),
        }
    }

    fn log(&self) -> &SimLog {
        self.workspace.log()
    }

    /// Makes the calls of op number `index`.
    pub async fn run(&mut self, index: usize, op: &Op) {
        let faults = op.faults;
        match op.act {
            Act::Create { case } => self.create(index, case, faults).await,
            Act::Load { case } => {
                self.handles.remove(&case);
                self.ensure(case).await;
            }
            Act::Commit { case, change } => {
                self.ensure(case).await;
                self.buffer(case, change);
                // Judged by the oracle as it ends; the worker goes on either way.
                let _ = self.commit(index, case, faults, None).await;
            }
            Act::CommitOwn {
                case,
                change,
                again,
            } => self.commit_own(index, case, change, again, faults).await,
            Act::CommitMany { case, batches } => {
                self.many(index, case, batches, faults).await;
            }
            Act::Transact { case } => self.transact(index, case, faults).await,
            Act::TransactLoaded { case } => self.transact_loaded(index, case, faults).await,
            Act::Refresh { case } => self.refresh(index, case, faults).await,
            Act::Buffer { case, change } => {
                self.ensure(case).await;
                self.buffer(case, change);
            }
            Act::Rollback { case } => {
                if let Some(handle) = self.handles.get_mut(&case) {
                    handle.rollback();
                }
            }
            Act::DropCommit {
                case,
                change,
                polls,
            } => self.drop_commit(index, case, change, polls, faults).await,
            Act::Restart => self.restart(index, faults).await,
            Act::Project { .. } | Act::Forget | Act::Lag { .. } => {
                unreachable!("the world's acts are the world's")
            }
        }
    }

    /// A handle on `case`: loaded, or new when the case has no events.
    async fn ensure(&mut self, case: u8) {
        if self.handles.contains_key(&case) {
            return;
        }
        let id = case_id(case);
        let handle = match CALL.scope(Call::new(0, 0), self.workspace.load(&id)).await {
            Ok(handle) => handle,
            Err(error) => {
                if error.kind() != CommitErrorKind::CaseNotFound {
                    self.journal.borrow_mut().violation(
                        None,
                        "a case loads",
                        format!("case {id} does not load: {error}"),
                    );
                }
                self.workspace.new_case(id)
            }
        };
        self.handles.insert(case, handle);
    }

    fn buffer(&mut self, case: u8, change: Change) {
        if let Some(handle) = self.handles.get_mut(&case) {
            handle.buffer(change.mutation());
        }
    }

    /// What the oracle knows before a call of op `op` on `case`'s handle.
    fn before(&mut self, op: usize, case: u8, explicit: Option<CommitId>) -> Before {
        let doubt = doubt(self.handles.get(&case));
        let mut journal = self.journal.borrow_mut();
        let call = journal.begin(op);
        let explicit = explicit.map(|id| {
            read_log(&mut journal, self.workspace.log());
            (id, journal.stored.contains_key(&id))
        });
        Before {
            call,
            op,
            case,
            doubt,
            explicit,
        }
    }

    /// Judges the answer of a call on `before.case`'s handle and writes it down.
    fn after(&mut self, before: &Before, kind: Kind, outcome: Outcome) {
        let after = doubt(self.handles.get(&before.case));
        let mut journal = self.journal.borrow_mut();
        let op = Some(before.op);
        let mut broken = |rule: &'static str, detail: String| {
            journal
                .violations
                .push(crate::Violation { op, rule, detail });
        };
        if let Outcome::Err(CommitErrorKind::Corrupted) = outcome {
            broken(
                "no stored event is corrupted",
                "a call reported a corrupted event; the simulation stores none".into(),
            );
        }
        let mut not_landed = false;
        if !before.doubt.is_empty() {
            not_landed = settles(&before.doubt, &after, kind, &outcome, &mut broken);
        }
        if let Some((id, true)) = before.explicit {
            let answered = match &outcome {
                Outcome::Ok(receipts) => {
                    receipts.iter().any(|receipt| receipt.commit_id == id)
                        || !before.doubt.is_empty()
                }
                Outcome::Err(kind) => matches!(
                    kind,
                    CommitErrorKind::InDoubt | CommitErrorKind::Conflict | CommitErrorKind::Misuse
                ),
                Outcome::Dropped => true,
            };
            if !answered {
                broken(
                    "a stored commit id is answered with its receipt",
                    format!("commit {id} is stored, sent again it was answered {outcome:?}"),
                );
            }
        }
        if not_landed {
            let events = before
                .doubt
                .iter()
                .filter_map(|(id, hash)| Some((before.op, *id, (*hash)?)));
            journal.not_landed.extend(events);
        }
        drop(journal);
        self.check_in_step(before);
        self.journal.borrow_mut().end(before.call, outcome);
    }

    /// The handle's state is its case's state at the handle's position, by the stored event.
    fn check_in_step(&mut self, before: &Before) {
        let Some(handle) = self.handles.get(&before.case) else {
            return;
        };
        let position = handle.position();
        let at = (position, handle.case().last_event_hash());
        let mut moved = self.verified.get(&before.case) != Some(&at);
        let mut journal = self.journal.borrow_mut();
        let problem = if position.get() == 0 {
            (handle.state().version.get() != 0)
                .then(|| "a handle at position 0 past version 0".to_owned())
        } else {
            read_log(&mut journal, self.log());
            // At its case's newest event, the handle is the oracle's own fold of the log:
            // compared whole, which proves its state hash too.
            if moved
                && let Some(Folded {
                    case: Some(folded),
                    position: newest,
                    ..
                }) = journal.cases.get(handle.id().as_str())
                && *newest == position
            {
                if folded.state() != handle.state()
                    || folded.last_event_hash() != handle.case().last_event_hash()
                {
                    journal.violation(
                        Some(before.op),
                        "a handle is its case at its position",
                        format!(
                            "the handle of {} at position {position} is not the case the log \
                             folds to there",
                            handle.id()
                        ),
                    );
                    return;
                }
                moved = false;
            }
            let read = usize::try_from(position.get() - 1)
                .ok()
                .and_then(|index| journal.events.get(index));
            match read {
                None => Some(format!("no event at the handle's position {position}")),
                Some(Read { event: None, .. }) => {
                    Some(format!("the event at {position} does not decode"))
                }
                Some(Read {
                    event: Some(head),
                    hash,
                }) => (head.case_id != *handle.id()
                    || head.version != handle.state().version
                    || *hash != handle.case().last_event_hash()
                    || (moved && head.state_hash != handle.state().hash()))
                .then(|| {
                    format!(
                        "the handle of {} is at version {} position {position}; the event \
                         there is version {} of {}, or another state",
                        handle.id(),
                        handle.state().version,
                        head.version,
                        head.case_id
                    )
                }),
            }
        };
        if let Some(detail) = problem {
            journal.violation(
                Some(before.op),
                "a handle is its case at its position",
                detail,
            );
        } else {
            self.verified.insert(before.case, at);
        }
    }

    async fn create(&mut self, index: usize, case: u8, faults: u64) {
        let before = self.before(index, case, None);
        let created = CALL
            .scope(
                Call::new(before.call, faults),
                self.workspace
                    .create(case_id(case), [Mutation::set_key("n", 0)]),
            )
            .await;
        let outcome = match created {
            Ok((handle, receipt)) => {
                // The worker's own handle of the case, if it has one in doubt, is kept.
                if doubt(self.handles.get(&case)).is_empty() {
                    self.handles.insert(case, handle);
                }
                Outcome::Ok(vec![receipt])
            }
            Err(error) => Outcome::Err(error.kind()),
        };
        // A new handle: nothing of the old one's is settled by this call.
        let before = Before {
            doubt: Vec::new(),
            ..before
        };
        self.after(&before, Kind::Commit, outcome);
    }

    /// Commits the handle of `case` (`meta`: with the caller's commit id).
    async fn commit(
        &mut self,
        index: usize,
        case: u8,
        faults: u64,
        meta: Option<CommitMeta>,
    ) -> Result<Receipt, CommitErrorKind> {
        let before = self.before(index, case, meta.as_ref().map(|meta| meta.commit_id));
        let call = Call::new(before.call, faults);
        let handle = self.handles.get_mut(&case).expect("a handle was made");
        let result = match meta {
            Some(meta) => {
                CALL.scope(call, self.workspace.commit_with_meta(handle, meta))
                    .await
            }
            None => CALL.scope(call, self.workspace.commit(handle)).await,
        };
        let result = result.map_err(|error| {
            // A user fixes a batch the store refused before committing again.
            if matches!(error, CommitError::Rejected(_)) {
                handle.rollback();
            }
            error.kind()
        });
        let outcome = match &result {
            Ok(receipt) => Outcome::Ok(vec![receipt.clone()]),
            Err(kind) => Outcome::Err(*kind),
        };
        self.after(&before, Kind::Commit, outcome);
        result
    }

    async fn commit_own(
        &mut self,
        index: usize,
        case: u8,
        change: Change,
        again: Option<u8>,
        faults: u64,
    ) {
        let earlier: Vec<usize> = (0..self.intents.len())
            .filter(|&n| self.intents[n].case == case)
            .collect();
        let intent = match again {
            Some(pick) if !earlier.is_empty() => earlier[usize::from(pick) % earlier.len()],
            _ => {
                // Written down before it is sent: a restart sends it again.
                self.intents.push(Intent {
                    commit_id: self.workspace.meta().commit_id,
                    case,
                    change,
                    acked: false,
                    abandoned: false,
                });
                self.intents.len() - 1
            }
        };
        self.ensure(case).await;
        let _ = self.send_intent(index, intent, faults).await;
    }

    /// Sends intent `n` with its commit id; returns how the call ended.
    async fn send_intent(
        &mut self,
        index: usize,
        n: usize,
        faults: u64,
    ) -> Result<Receipt, CommitErrorKind> {
        let Intent {
            commit_id,
            case,
            change,
            ..
        } = self.intents[n];
        let handle = self.handles.get_mut(&case).expect("a handle was made");
        handle.rollback();
        handle.buffer(change.mutation());
        let mut meta = self.workspace.meta();
        meta.commit_id = commit_id;
        let result = self.commit(index, case, faults, Some(meta)).await;
        if let Some(handle) = self.handles.get_mut(&case) {
            handle.rollback();
        }
        match &result {
            Ok(receipt) if receipt.commit_id == commit_id => self.intents[n].acked = true,
            Err(CommitErrorKind::Validation) => self.intents[n].abandoned = true,
            _ => {}
        }
        result
    }

    async fn many(&mut self, index: usize, case: u8, batches: u8, faults: u64) {
        self.ensure(case).await;
        let before = self.before(index, case, None);
        let handle = self.handles.get_mut(&case).expect("a handle was made");
        let batches = (0..batches)
            .map(|n| vec![Change::Set { key: n, value: n }.mutation()])
            .collect();
        let result = CALL
            .scope(
                Call::new(before.call, faults),
                self.workspace.commit_many(handle, batches),
            )
            .await;
        let outcome = match result {
            Ok(receipts) => Outcome::Ok(receipts),
            Err(error) => Outcome::Err(error.kind()),
        };
        self.after(&before, Kind::Many, outcome);
    }

    async fn transact(&mut self, index: usize, case: u8, faults: u64) {
        self.ensure(case).await;
        let before = self.before(index, case, None);
        let handle = self.handles.get_mut(&case).expect("a handle was made");
        let result = CALL
            .scope(
                Call::new(before.call, faults),
                self.workspace.transact_on(handle, add_one),
            )
            .await;
        let outcome = match result {
            Ok((receipt, _)) => Outcome::Ok(vec![receipt]),
            Err(error) => {
                if matches!(error, CommitError::Rejected(_)) {
                    handle.rollback();
                }
                Outcome::Err(error.kind())
            }
        };
        self.after(&before, Kind::Transact, outcome);
    }

    async fn transact_loaded(&mut self, index: usize, case: u8, faults: u64) {
        let before = self.before(index, case, None);
        let result = CALL
            .scope(
                Call::new(before.call, faults),
                self.workspace.transact(&case_id(case), add_one),
            )
            .await;
        let outcome = match result {
            Ok(transacted) => {
                if doubt(self.handles.get(&case)).is_empty() {
                    self.handles.insert(case, transacted.case);
                }
                Outcome::Ok(vec![transacted.receipt])
            }
            Err(error) => Outcome::Err(error.kind()),
        };
        // Its own handle: nothing of the worker's is settled by it.
        let before = Before {
            doubt: Vec::new(),
            ..before
        };
        self.after(&before, Kind::Transact, outcome);
    }

    async fn refresh(&mut self, index: usize, case: u8, faults: u64) {
        if !self.handles.contains_key(&case) {
            return;
        }
        let before = self.before(index, case, None);
        let handle = self.handles.get_mut(&case).expect("a handle is there");
        let result = CALL
            .scope(
                Call::new(before.call, faults),
                self.workspace.refresh(handle),
            )
            .await;
        let outcome = match result {
            Ok(receipts) => Outcome::Ok(receipts),
            Err(error) => Outcome::Err(error.kind()),
        };
        self.after(&before, Kind::Refresh, outcome);
    }

    /// A commit whose future is dropped after `polls` polls 1 ms apart, unless it ends first.
    async fn drop_commit(
        &mut self,
        index: usize,
        case: u8,
        change: Change,
        polls: u8,
        faults: u64,
    ) {
        self.ensure(case).await;
        self.buffer(case, change);
        let before = self.before(index, case, None);
        let handle = self.handles.get_mut(&case).expect("a handle was made");
        let call = Call::new(before.call, faults);
        let outcome = {
            let mut commit = pin!(CALL.scope(call, self.workspace.commit(handle)));
            let mut outcome = Outcome::Dropped;
            for _ in 0..=polls {
                if let Poll::Ready(result) = futures::poll!(commit.as_mut()) {
                    outcome = match result {
                        Ok(receipt) => Outcome::Ok(vec![receipt]),
                        Err(error) => Outcome::Err(error.kind()),
                    };
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            outcome
        };
        if let Some(handle) = self.handles.get_mut(&case) {
            handle.rollback();
        }
        self.after(&before, Kind::Commit, outcome);
    }

    /// The process restarts: its handles (and what they had in doubt) are gone; it sends
    /// again every commit its record says was sent and not acknowledged.
    async fn restart(&mut self, index: usize, faults: u64) {
        self.handles.clear();
        for n in 0..self.intents.len() {
            for _ in 0..RESENDS_MAX {
                let intent = &self.intents[n];
                if intent.acked || intent.abandoned {
                    break;
                }
                let case = intent.case;
                self.ensure(case).await;
                match self.send_intent(index, n, faults).await {
                    Ok(_) | Err(CommitErrorKind::InDoubt) => {}
                    Err(CommitErrorKind::Conflict) => self.refresh(index, case, faults).await,
                    Err(_) => {
                        self.handles.remove(&case);
                    }
                }
            }
        }
    }

    /// Settles, with the world healed, what every handle still has in doubt: a refresh, which
    /// must settle it now.
    pub async fn settle(&mut self, index: usize) {
        let cases: Vec<u8> = self
            .handles
            .iter()
            .filter(|(_, handle)| !handle.in_doubt().is_empty())
            .map(|(case, _)| *case)
            .collect();
        for case in cases {
            self.refresh(index, case, 0).await;
            if !doubt(self.handles.get(&case)).is_empty() {
                self.journal.borrow_mut().violation(
                    Some(index),
                    "every commit in doubt is settled",
                    format!(
                        "case {}: still in doubt with the world healed",
                        case_id(case)
                    ),
                );
            }
        }
    }
}

/// Whether a call on a handle with `doubt` in doubt settled it, by its kind and answer: it
/// returns the receipts of what landed, a conflict for what did not, the same commits still
/// in doubt, or a refusal that sent nothing. Reports a broken promise through `broken`;
/// returns whether the call said the commits in doubt did not land.
fn settles(
    doubt: &[(CommitId, Option<Hash>)],
    after: &[(CommitId, Option<Hash>)],
    kind: Kind,
    outcome: &Outcome,
    broken: &mut impl FnMut(&'static str, String),
) -> bool {
    let rule = "the next call settles a commit in doubt";
    match outcome {
        Outcome::Ok(receipts) => {
            if !after.is_empty() {
                broken(
                    rule,
                    format!("answered {receipts:?} and still in doubt: {after:?}"),
                );
            }
            let settled: Vec<CommitId> = receipts
                .iter()
                .map(|receipt| receipt.commit_id)
                .filter(|id| doubt.iter().any(|(doubted, _)| doubted == id))
                .collect();
            let doubted: Vec<CommitId> = doubt.iter().map(|(id, _)| *id).collect();
            match kind {
                // A transaction whose commit in doubt met a conflict commits anew.
                Kind::Transact => settled.is_empty(),
                Kind::Refresh if receipts.is_empty() => true,
                Kind::Refresh | Kind::Many
                    if settled != doubted || receipts.len() != doubt.len() =>
                {
                    broken(rule, format!("in doubt {doubt:?}, answered {receipts:?}"));
                    false
                }
                Kind::Commit if settled.is_empty() => {
                    broken(rule, format!("in doubt {doubt:?}, answered {receipts:?}"));
                    false
                }
                _ => false,
            }
        }
        Outcome::Err(CommitErrorKind::Conflict | CommitErrorKind::CaseExists) => {
            if !after.is_empty() {
                broken(rule, format!("a conflict, and still in doubt: {after:?}"));
            }
            true
        }
        // A transaction whose commit in doubt met a conflict (it did not land) commits anew,
        // and that commit may fail or be in doubt in turn.
        Outcome::Err(answer)
            if kind == Kind::Transact
                && *answer != CommitErrorKind::Misuse
                && after.iter().all(|entry| !doubt.contains(entry)) =>
        {
            true
        }
        Outcome::Err(CommitErrorKind::InDoubt | CommitErrorKind::Misuse) | Outcome::Dropped => {
            if after != doubt {
                broken(
                    rule,
                    format!("in doubt {doubt:?}, then {outcome:?} with {after:?} in doubt"),
                );
            }
            false
        }
        Outcome::Err(other) => {
            broken(rule, format!("in doubt {doubt:?}, answered {other:?}"));
            false
        }
    }
}

/// Reads what the log stored since the journal last read it into its index, and folds each
/// event into its case as the oracle keeps it: every case's events are versions 1, 2, ...
/// each linked to the one before and folding onto it (the state hash is checked against the
/// last event's at the end, and against handles as they move).
pub fn read_log(journal: &mut Journal, log: &SimLog) {
    let last = futures::FutureExt::now_or_never(log.inner().last_position())
        .expect("the memory log answers at once")
        .map_or(0, wfstate_store::Position::get);
    while (journal.events.len() as u64) < last {
        let position = wfstate_store::Position::new(journal.events.len() as u64 + 1);
        let stored = futures::FutureExt::now_or_never(log.inner().event_at(position))
            .expect("the memory log answers at once")
            .ok()
            .flatten()
            .expect("positions of the memory log have no gaps");
        if let Some(id) = stored.commit_id {
            journal.stored.entry(id).or_default().push(position);
        }
        let read = Read {
            hash: Hash::of(&stored.payload),
            event: Event::decode(&stored.payload).ok(),
        };
        fold_read(journal, &read, position);
        journal.events.push(read);
    }
}

/// Folds one event the oracle read into its case.
fn fold_read(journal: &mut Journal, read: &Read, position: wfstate_store::Position) {
    let Some(event) = &read.event else {
        journal
            .broken
            .push(("every event decodes", format!("position {position}")));
        return;
    };
    let folded = journal
        .cases
        .entry(event.case_id.to_string())
        .or_insert_with(|| Folded {
            case: Some(wfstate_store::Case::new(event.case_id.clone())),
            position: wfstate_store::Position::ZERO,
            state_hash: Hash::ZERO,
        });
    let Some(case) = folded.case.take() else {
        return;
    };
    if case.state().version.next() != event.version {
        journal.broken.push((
            "no case holds two events of one version",
            format!(
                "case {}: version {} at position {position} after version {}",
                event.case_id,
                event.version,
                case.state().version
            ),
        ));
        folded.case = Some(case);
        return;
    }
    match case.fold_event_unhashed(event, read.hash) {
        Ok(case) => {
            folded.case = Some(case);
            folded.position = position;
            folded.state_hash = event.state_hash;
        }
        Err(error) => journal.broken.push((
            "every case loads",
            format!("case {} at position {position}: {error}", event.case_id),
        )),
    }
}

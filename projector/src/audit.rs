//! Audit: rebuild every receipt from the stored events and verify each case's chain: every
//! `prev_event_hash` is the SHA-256 of the previous stored payload, versions are contiguous,
//! and folding reaches every `state_hash`. Audit needs only read access to the log. An audit
//! of every case keeps a bounded number of cases in memory ([`Cases`]).

use std::collections::HashSet;

use futures::TryStreamExt;
use serde::Serialize;
use wfstate_events::{EventLog, StoredEvent};
use wfstate_store::{
    Case, CaseId, CaseState, Code, CommitId, Event, Hash, Position, Receipt, Version,
};

use crate::ProjectorError;
use crate::spill::Cases;

/// One broken link or check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The case, as its subject or key names it (perhaps not a valid case id).
    pub case_id: String,
    /// The event's position (for `head_mismatch`, the last position read).
    pub position: Position,
    /// What kind of problem it is.
    pub code: Code,
    /// What is wrong, in words.
    pub detail: String,
}

/// The chain of one case as read so far.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Chain {
    /// The state the events fold to while they verify; `None` after the first that does not.
    state: Option<CaseState>,
    /// Hash of the last stored payload (whatever it held).
    head: Hash,
    /// Version of the last decodable event.
    version: Version,
    events: u64,
    /// The commit ids of the case's events so far.
    commit_ids: HashSet<CommitId>,
}

/// Checks events as they are read, across any number of cases: a bounded number of them in
/// memory, the others in a temporary file.
#[derive(Debug, Default)]
pub struct Auditor {
    chains: Cases<Chain>,
    events: u64,
    problems: Vec<Problem>,
}

/// The result of an audit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AuditReport {
    /// Cases read.
    pub cases: usize,
    /// Events read.
    pub events: u64,
    /// Every problem found, in log order.
    pub problems: Vec<Problem>,
}

impl AuditReport {
    /// Whether every chain verified.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

impl Auditor {
    /// A new auditor with no cases seen, keeping up to 10,000 cases in memory.
    pub fn new() -> Self {
        Auditor::default()
    }

    /// A new auditor keeping up to `cases` cases in memory (at least 2).
    pub fn with_cases_in_memory(cases: usize) -> Self {
        Auditor {
            chains: Cases::new(cases),
            ..Auditor::default()
        }
    }

    /// Observes `stored` and hands its receipt and the problems it shows to the callbacks; the
    /// problems are then forgotten, so that memory grows with the cases seen, not with the
    /// problems reported.
    fn report(
        &mut self,
        stored: &StoredEvent,
        on_receipt: &mut impl FnMut(&Receipt),
        on_problem: &mut impl FnMut(&Problem),
    ) -> Result<(), ProjectorError> {
        let known = self.problems.len();
        if let Some(receipt) = self.observe(stored)? {
            on_receipt(&receipt);
        }
        self.problems[known..].iter().for_each(on_problem);
        self.problems.clear();
        Ok(())
    }

    /// Checks one stored event; returns its receipt when it decodes.
    ///
    /// # Errors
    /// [`ProjectorError::Log`] when the temporary file of cases out of memory fails.
    pub fn observe(&mut self, stored: &StoredEvent) -> Result<Option<Receipt>, ProjectorError> {
        self.events += 1;
        let Ok(case_id) = CaseId::new(&stored.case_id) else {
            self.problem(
                stored,
                Code::InvalidCaseId,
                format!("subject names {:?}", stored.case_id),
            );
            return Ok(None);
        };
        let chain = self.chains.get_or_insert_with(&stored.case_id, || Chain {
            state: Some(Case::new(case_id).into_parts().0),
            head: Hash::ZERO,
            version: Version::ZERO,
            events: 0,
            commit_ids: HashSet::new(),
        })?;
        let event_hash = Hash::of(&stored.payload);
        let previous_head = std::mem::replace(&mut chain.head, event_hash);
        chain.events += 1;
        let event = match Event::decode(&stored.payload) {
            Ok(event) => event,
            Err(error) => {
                chain.state = None;
                let code = wfstate_store::FoldError::Decode(error.clone()).code();
                self.problem(stored, code, error.to_string());
                return Ok(None);
            }
        };
        let mut found = Vec::new();
        // A commit id stored again is a problem of its own; the chain itself may still hold,
        // and is checked on.
        let duplicate = !chain.commit_ids.insert(event.commit_id);
        if event.version != chain.version.next() {
            found.push((
                Code::VersionGap,
                format!(
                    "version {} follows version {}",
                    event.version, chain.version
                ),
            ));
        }
        if event.prev_event_hash != previous_head {
            found.push((
                Code::BrokenChain,
                format!(
                    "prev_event_hash {} but the previous stored event hashes to {previous_head}",
                    event.prev_event_hash
                ),
            ));
        }
        chain.version = event.version;
        if found.is_empty()
            && let Some(state) = chain.state.take()
        {
            match Case::from_parts(state, previous_head).fold_event(&event, event_hash) {
                Ok(case) => chain.state = Some(case.into_parts().0),
                Err(error) => found.push((error.code(), error.to_string())),
            }
        }
        if !found.is_empty() {
            chain.state = None;
        }
        if duplicate {
            let detail = format!(
                "commit {} is stored again (version {}): a retry stored after the log forgot the \
                 commit id",
                event.commit_id, event.version
            );
            self.problem(stored, Code::DuplicateCommitId, detail);
        }
        for (code, detail) in found {
            self.problem(stored, code, detail);
        }
        Ok(Some(Receipt::new(&event, event_hash, stored.position)))
    }

    fn problem(&mut self, stored: &StoredEvent, code: Code, detail: String) {
        self.problems.push(Problem {
            case_id: stored.case_id.clone(),
            position: stored.position,
            code,
            detail,
        });
    }

    /// The head (hash of the last stored event) of a case, if seen.
    ///
    /// # Errors
    /// [`ProjectorError::Log`] when the temporary file of cases out of memory fails.
    pub fn head(&mut self, case_id: &str) -> Result<Option<Hash>, ProjectorError> {
        Ok(self.chains.get(case_id)?.map(|chain| chain.head))
    }

    /// Ends the audit. With `expected_head` for a case, a different head (a truncated or
    /// diverged history) is a problem.
    ///
    /// # Errors
    /// [`ProjectorError::Log`] when the temporary file of cases out of memory fails.
    pub fn finish(
        mut self,
        expected_head: Option<(&CaseId, Hash)>,
    ) -> Result<AuditReport, ProjectorError> {
        if let Some((case_id, expected)) = expected_head {
            let actual = self.head(case_id.as_str())?.unwrap_or(Hash::ZERO);
            if actual != expected {
                self.problems.push(Problem {
                    case_id: case_id.to_string(),
                    position: Position::ZERO,
                    code: Code::HeadMismatch,
                    detail: format!(
                        "the last stored event hashes to {actual}, the expected head is {expected}: events are missing or differ"
                    ),
                });
            }
        }
        Ok(AuditReport {
            cases: self.chains.len(),
            events: self.events,
            problems: self.problems,
        })
    }
}

/// Audits one case's whole history.
///
/// # Errors
/// [`ProjectorError::Log`] when the log cannot be read.
pub async fn audit_case<L: EventLog>(
    log: &L,
    case_id: &CaseId,
    expected_head: Option<Hash>,
    mut on_receipt: impl FnMut(&Receipt),
) -> Result<AuditReport, ProjectorError> {
    let mut auditor = Auditor::new();
    let mut events = log.history(case_id, Position::ZERO).await?;
    while let Some(stored) = events.try_next().await? {
        if let Some(receipt) = auditor.observe(&stored)? {
            on_receipt(&receipt);
        }
    }
    auditor.finish(expected_head.map(|head| (case_id, head)))
}

/// Audits every case, reading the whole log up to its last position at the start.
///
/// # Errors
/// [`ProjectorError::Log`] when the log cannot be read.
pub async fn audit_all<L: EventLog>(
    log: &L,
    mut on_receipt: impl FnMut(&Receipt),
) -> Result<AuditReport, ProjectorError> {
    let mut auditor = Auditor::new();
    let last = log.last_position().await?;
    if last > Position::ZERO {
        let mut events = log.follow(Position::ZERO).await?;
        while let Some(stored) = events.try_next().await? {
            if let Some(receipt) = auditor.observe(&stored)? {
                on_receipt(&receipt);
            }
            if stored.position >= last {
                break;
            }
        }
    }
    auditor.finish(None)
}

/// Audits every case from the start of the log and goes on with new events as they are
/// appended, calling `on_receipt` for each event that decodes and `on_problem` for each problem
/// as it is found. Returns only when the log's stream ends or fails.
///
/// # Errors
/// [`ProjectorError::Log`] when the log cannot be read.
pub async fn audit_follow<L: EventLog>(
    log: &L,
    mut on_receipt: impl FnMut(&Receipt),
    mut on_problem: impl FnMut(&Problem),
) -> Result<(), ProjectorError> {
    let mut auditor = Auditor::new();
    let mut events = log.follow(Position::ZERO).await?;
    while let Some(stored) = events.try_next().await? {
        auditor.report(&stored, &mut on_receipt, &mut on_problem)?;
    }
    Ok(())
}

/// Audits one case: its history, then its new events as they are appended to the log, calling
/// `on_receipt` and `on_problem` as [`audit_follow`] does. The history is read on its own; the
/// log is then followed from the case's last event, and other cases' events are passed over.
///
/// # Errors
/// [`ProjectorError::Log`] when the log cannot be read.
pub async fn audit_follow_case<L: EventLog>(
    log: &L,
    case_id: &CaseId,
    mut on_receipt: impl FnMut(&Receipt),
    mut on_problem: impl FnMut(&Problem),
) -> Result<(), ProjectorError> {
    let mut auditor = Auditor::new();
    let mut last = Position::ZERO;
    let mut history = log.history(case_id, Position::ZERO).await?;
    while let Some(stored) = history.try_next().await? {
        last = stored.position;
        auditor.report(&stored, &mut on_receipt, &mut on_problem)?;
    }
    drop(history);
    let mut events = log.follow(last).await?;
    while let Some(stored) = events.try_next().await? {
        if stored.case_id == case_id.as_str() {
            auditor.report(&stored, &mut on_receipt, &mut on_problem)?;
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "audit_tests.rs"]
mod tests;

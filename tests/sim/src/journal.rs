//! [`Journal`]: what the workers saw, call by call, for the oracle: each call's answer, the
//! receipts it was given, the commits whose outcome it said; and the violations found while
//! the run goes on. It also hashes the trace, so that one seed can be shown to give one run.

use std::collections::{BTreeMap, HashMap};

use sha2::{Digest, Sha256};
use wfstate_events::CommitErrorKind;
use wfstate_store::{Case, CommitId, Event, Hash, Position, Receipt};

/// A broken promise, found by the oracle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The index in the program of the op whose call broke it (`None`: found at the end).
    pub op: Option<usize>,
    /// Which promise.
    pub rule: &'static str,
    /// What was seen.
    pub detail: String,
}

/// How a call ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Receipts (none for a load, a refresh that settled nothing, a buffer).
    Ok(Vec<Receipt>),
    /// An error of this kind.
    Err(CommitErrorKind),
    /// The call's future was dropped before it ended.
    Dropped,
}

/// An event as the oracle read it from the log's stored bytes.
#[derive(Debug, Clone)]
pub struct Read {
    /// SHA-256 of the stored bytes.
    pub hash: Hash,
    /// What they say (`None`: they do not decode).
    pub event: Option<Event>,
}

/// A case as the oracle folds it, event by event, from the stored bytes.
#[derive(Debug)]
pub struct Folded {
    /// The case after its events so far (`None` after one that did not fold).
    pub case: Option<Case>,
    /// The position of its last event folded.
    pub position: Position,
    /// The state hash that event committed.
    pub state_hash: Hash,
}

/// One call, as the oracle keeps it.
#[derive(Debug, Clone)]
pub struct CallRecord {
    /// The op that made it.
    pub op: usize,
    /// How it ended.
    pub outcome: Outcome,
}

/// Everything the oracle checks at the end, and what it found on the way.
#[derive(Debug, Default)]
pub struct Journal {
    /// Calls by id (id `n` at index `n - 1`).
    pub calls: Vec<CallRecord>,
    /// Events a call said did not land (a conflict settling a commit in doubt), by the op,
    /// the commit id and the hash of the bytes sent: those bytes may never be stored (the
    /// same commit id may, sent again later as a new event).
    pub not_landed: Vec<(usize, CommitId, wfstate_store::Hash)>,
    /// Violations found during the run.
    pub violations: Vec<Violation>,
    /// Where each commit id is stored, as far as the oracle has read the log.
    pub stored: HashMap<CommitId, Vec<Position>>,
    /// Every event the oracle has read, by position from 1.
    pub events: Vec<Read>,
    /// Each case as the oracle folded it from the stored bytes, as far as it has read.
    pub cases: BTreeMap<String, Folded>,
    /// What the oracle found wrong with the log as it read it, reported at the end.
    pub broken: Vec<(&'static str, String)>,
    trace: Sha256,
}

impl Journal {
    /// A new call of op `op`; returns its id (from 1).
    pub fn begin(&mut self, op: usize) -> u64 {
        self.calls.push(CallRecord {
            op,
            outcome: Outcome::Dropped,
        });
        self.calls.len() as u64
    }

    /// Call `id` ended with `outcome`.
    pub fn end(&mut self, id: u64, outcome: Outcome) {
        self.trace.update(id.to_le_bytes());
        match &outcome {
            Outcome::Ok(receipts) => {
                for receipt in receipts {
                    self.trace.update(receipt.position.get().to_le_bytes());
                    self.trace.update(receipt.event_hash.0);
                }
            }
            Outcome::Err(kind) => self.trace.update(format!("{kind:?}").as_bytes()),
            Outcome::Dropped => self.trace.update(b"dropped"),
        }
        let index = usize::try_from(id - 1).expect("a call id in memory");
        self.calls[index].outcome = outcome;
    }

    /// Records a violation.
    pub fn violation(&mut self, op: Option<usize>, rule: &'static str, detail: String) {
        self.violations.push(Violation { op, rule, detail });
    }

    /// Adds `bytes` to the trace.
    pub fn trace(&mut self, bytes: &[u8]) {
        self.trace.update(bytes);
    }

    /// The trace's hash so far.
    pub fn trace_hash(&self) -> [u8; 32] {
        self.trace.clone().finalize().into()
    }
}

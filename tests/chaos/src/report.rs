//! The checks of a run and the table over runs. Every commit, unknown outcome and broken
//! link is counted against the fault whose window holds it: from the fault's start to the
//! next fault's (or the run's end); before the first fault, against none.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use crate::check::StreamContents;
use crate::record::Record;
use crate::schedule::Fault;

/// A fault as it was injected.
#[derive(Debug, Clone)]
pub struct Injected {
    /// What it was.
    pub fault: Fault,
    /// What it hit.
    pub detail: String,
    /// Whether it was injected (a node that was not running was not hit).
    pub hit: bool,
    /// When it started and ended (healed), ms since the epoch.
    pub start_ms: u64,
    /// See `start_ms`.
    pub end_ms: u64,
}

/// What one run leaves for the checks.
pub struct RunInput {
    /// The run's seed.
    pub seed: u64,
    /// When the workers started and were told to stop, ms since the epoch.
    pub started_ms: u64,
    /// See `started_ms`.
    pub ended_ms: u64,
    /// The faults, in order.
    pub injected: Vec<Injected>,
    /// Every worker's records.
    pub records: Vec<Record>,
    /// The stream as the independent reader found it.
    pub contents: StreamContents,
    /// Problems of `audit` over the whole stream after the run.
    pub audit_problems: Vec<String>,
    /// Problems the auditor that followed the stream reported.
    pub auditor_problems: Vec<String>,
    /// Views that differ from their case's replay.
    pub mismatches: Vec<String>,
    /// Workers that crashed or hung, a projector or auditor that stopped on its own.
    pub process_failures: Vec<String>,
}

/// The counts of one fault kind (or of none).
#[derive(Debug, Default, Clone)]
pub struct Row {
    /// Faults injected.
    pub faults: u64,
    /// Distinct commits acknowledged.
    pub acked: u64,
    /// Acknowledged commits not in the stream.
    pub lost: u64,
    /// Commit ids stored more than once (counted once per extra copy).
    pub duplicated: u64,
    /// Broken chain links, and acknowledgements that disagree with the stored event.
    pub forked: u64,
    /// Commits reported failed (nothing stored) that are stored.
    pub failed_stored: u64,
    /// Commits whose outcome was unknown.
    pub unknown: u64,
    /// How long each unknown outcome the worker resolved took, ms.
    pub resolve_ms: Vec<u64>,
    /// Unknown outcomes resolved only by the end-of-run reader.
    pub resolved_at_end: u64,
    /// Per fault: the longest time with no acknowledged commit, ms.
    pub unavailable_ms: Vec<u64>,
}

/// The outcome of one run.
pub struct RunOutcome {
    /// The run's seed.
    pub seed: u64,
    /// When the workers started, ms since the epoch.
    pub started_ms: u64,
    /// The faults as injected.
    pub injected: Vec<Injected>,
    /// Rows by fault kind; `None` is the time before the first fault.
    pub rows: BTreeMap<Option<Fault>, Row>,
    /// Events in the stream.
    pub events: usize,
    /// Every failed check, in words.
    pub failures: Vec<String>,
}

impl RunOutcome {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// One paragraph: the seed, the faults as injected, the totals and any failure.
    pub fn summary(&self) -> String {
        let total = self.rows.values().fold(Row::default(), |mut sum, row| {
            sum.acked += row.acked;
            sum.unknown += row.unknown;
            sum
        });
        let mut text = format!(
            "seed {}: {} events, {} commits acknowledged, {} unknown outcomes, {}",
            self.seed,
            self.events,
            total.acked,
            total.unknown,
            if self.passed() { "PASSED" } else { "FAILED" }
        );
        let mut unavailable: HashMap<Fault, std::slice::Iter<'_, u64>> = self
            .rows
            .iter()
            .filter_map(|(fault, row)| Some(((*fault)?, row.unavailable_ms.iter())))
            .collect();
        for fault in &self.injected {
            let seconds = |ms: u64| ms as f64 / 1000.0;
            if !fault.hit {
                let _ = write!(
                    text,
                    "\n  at {:5.1}s {} ({})",
                    seconds(fault.start_ms.saturating_sub(self.started_ms)),
                    fault.fault.name(),
                    fault.detail,
                );
                continue;
            }
            let gap = unavailable
                .get_mut(&fault.fault)
                .and_then(Iterator::next)
                .copied()
                .unwrap_or(0);
            let _ = write!(
                text,
                "\n  at {:5.1}s {} ({}) for {:.1}s: no commit for {:.2}s",
                seconds(fault.start_ms.saturating_sub(self.started_ms)),
                fault.fault.name(),
                fault.detail,
                seconds(fault.end_ms - fault.start_ms),
                seconds(gap),
            );
        }
        for failure in self.failures.iter().take(20) {
            let _ = write!(text, "\n  FAILED: {failure}");
        }
        if self.failures.len() > 20 {
            let _ = write!(text, "\n  ... and {} more", self.failures.len() - 20);
        }
        text
    }
}

/// Runs every check of a run.
pub fn analyze(input: RunInput) -> RunOutcome {
    let mut run = Analysis {
        injected: &input.injected,
        rows: BTreeMap::new(),
        failures: Vec::new(),
    };
    run.rows.entry(None).or_default();
    for fault in input.injected.iter().filter(|fault| fault.hit) {
        run.rows.entry(Some(fault.fault)).or_default().faults += 1;
    }
    if !input.injected.iter().any(|fault| fault.hit) {
        run.failures.push("no fault was injected".into());
    }
    let failures = &mut run.failures;
    failures.extend(input.audit_problems.iter().map(|p| format!("audit: {p}")));
    failures.extend(
        input
            .auditor_problems
            .iter()
            .map(|p| format!("audit --follow: {p}")),
    );
    failures.extend(input.mismatches.iter().map(|m| format!("view: {m}")));
    failures.extend(input.process_failures.iter().cloned());
    run.chains(&input.contents);
    let first_ack = run.acks(&input.records, &input.contents);
    run.unknowns(&input.records, &input.contents, &first_ack);
    run.failed(&input.records, &input.contents);
    run.counters(&input.records, &input.contents);
    let mut acks: Vec<u64> = first_ack.values().copied().collect();
    acks.sort_unstable();
    run.availability(&acks, input.ended_ms);
    if acks.iter().all(|&at| at < input.started_ms) {
        run.failures.push("no commit was acknowledged".into());
    }
    RunOutcome {
        seed: input.seed,
        started_ms: input.started_ms,
        rows: run.rows,
        failures: run.failures,
        events: input.contents.events.len(),
        injected: input.injected,
    }
}

struct Analysis<'a> {
    injected: &'a [Injected],
    rows: BTreeMap<Option<Fault>, Row>,
    failures: Vec<String>,
}

impl Analysis<'_> {
    /// The row of the fault whose window holds `at`.
    fn row(&mut self, at: u64) -> &mut Row {
        let fault = self
            .injected
            .iter()
            .rev()
            .find(|fault| fault.hit && fault.start_ms <= at)
            .map(|fault| fault.fault);
        self.rows.entry(fault).or_default()
    }

    /// Broken links, and commit ids stored more than once.
    fn chains(&mut self, contents: &StreamContents) {
        for broken in &contents.breaks {
            self.row(broken.committed_at_ms).forked += 1;
            self.failures.push(format!(
                "chain at sequence {}: {}",
                broken.sequence, broken.detail
            ));
        }
        for (id, copies) in &contents.by_commit_id {
            if copies.len() > 1 {
                let first = &contents.events[copies[0]];
                self.row(first.committed_at_ms).duplicated += copies.len() as u64 - 1;
                let sequences: Vec<u64> = copies
                    .iter()
                    .map(|&index| contents.events[index].sequence)
                    .collect();
                self.failures
                    .push(format!("commit {id} stored at sequences {sequences:?}"));
            }
        }
    }

    /// Each acknowledged commit is in the stream, as acknowledged. Returns when each commit
    /// id was first acknowledged.
    fn acks<'r>(
        &mut self,
        records: &'r [Record],
        contents: &StreamContents,
    ) -> HashMap<&'r str, u64> {
        let mut first_ack: HashMap<&str, u64> = HashMap::new();
        for record in records {
            let Record::Ack {
                id,
                case,
                version,
                hash,
                at,
                ..
            } = record
            else {
                continue;
            };
            let is_first = !first_ack.contains_key(id.as_str());
            first_ack.entry(id.as_str()).or_insert(*at);
            if is_first {
                self.row(*at).acked += 1;
            }
            match contents
                .by_commit_id
                .get(id)
                .and_then(|copies| copies.first())
            {
                None if is_first => {
                    self.row(*at).lost += 1;
                    self.failures
                        .push(format!("acknowledged commit {id} of {case} is not stored"));
                }
                None => {}
                Some(&index) => {
                    let stored = &contents.events[index];
                    if (&stored.case, stored.version, &stored.hash) != (case, *version, hash) {
                        self.row(*at).forked += 1;
                        self.failures.push(format!(
                            "commit {id} acknowledged as {case} v{version} {hash}, stored at \
                             sequence {} as {} v{} {}",
                            stored.sequence, stored.case, stored.version, stored.hash
                        ));
                    }
                }
            }
        }
        first_ack
    }

    /// Unknown outcomes: resolved by the worker (and then as the stream has it), or by the
    /// stream at the end.
    fn unknowns(
        &mut self,
        records: &[Record],
        contents: &StreamContents,
        first_ack: &HashMap<&str, u64>,
    ) {
        let mut unknown: HashMap<&str, u64> = HashMap::new();
        let mut resolved: HashMap<&str, (bool, u64)> = HashMap::new();
        for record in records {
            match record {
                Record::Unknown { id, at, .. } => {
                    unknown.entry(id.as_str()).or_insert(*at);
                }
                Record::Resolved { id, landed, at } => {
                    resolved.entry(id.as_str()).or_insert((*landed, *at));
                }
                _ => {}
            }
        }
        for (id, at) in unknown {
            let stored = contents.by_commit_id.get(id).map_or(0, Vec::len);
            let row = self.row(at);
            row.unknown += 1;
            match resolved.get(id) {
                Some(&(landed, resolved_at)) => {
                    row.resolve_ms.push(resolved_at.saturating_sub(at));
                    if landed != (stored > 0) {
                        self.failures.push(format!(
                            "commit {id} was resolved as {}, and is stored {stored} times",
                            if landed { "landed" } else { "not landed" }
                        ));
                    }
                }
                None => match first_ack.get(id) {
                    Some(acked) => row.resolve_ms.push(acked.saturating_sub(at)),
                    // Neither acknowledged nor resolved by its worker: the stream says which.
                    None => row.resolved_at_end += 1,
                },
            }
        }
    }

    /// A commit the client reported failed (nothing stored) is not stored.
    fn failed(&mut self, records: &[Record], contents: &StreamContents) {
        for record in records {
            if let Record::Failed {
                id: Some(id),
                error,
                at,
            } = record
                && let Some(copies) = contents.by_commit_id.get(id)
            {
                self.row(*at).failed_stored += 1;
                let sequences: Vec<u64> = copies
                    .iter()
                    .map(|&index| contents.events[index].sequence)
                    .collect();
                self.failures.push(format!(
                    "commit {id} was reported failed ({error}) and is stored at sequences \
                     {sequences:?}"
                ));
            }
        }
    }

    /// Each case's counter `n` is what its stored transactions made it: each stored
    /// transaction (a commit id a worker wrote down as one) added one, and nothing else
    /// touched it.
    fn counters(&mut self, records: &[Record], contents: &StreamContents) {
        let transactions: std::collections::HashSet<&str> = records
            .iter()
            .filter_map(|record| match record {
                Record::Intent {
                    id, transact: true, ..
                } => Some(id.as_str()),
                _ => None,
            })
            .collect();
        // Per case: the last value of n, and how many stored events set it by a transaction
        // or otherwise (the setup's first commit sets it to 0).
        let mut cases: BTreeMap<&str, (u64, u64, u64)> = BTreeMap::new();
        for event in &contents.events {
            let Some(n) = event.n else { continue };
            let (last, by_transaction, other) = cases.entry(&event.case).or_default();
            *last = n;
            if transactions.contains(event.commit_id.as_str()) {
                *by_transaction += 1;
            } else {
                *other += 1;
            }
        }
        for (case, (last, by_transaction, other)) in cases {
            if last != by_transaction || other != 1 {
                self.failures.push(format!(
                    "case {case}: n is {last}, after {by_transaction} stored transactions and \
                     {other} other commits setting it (the setup's one)"
                ));
            }
        }
    }

    /// Per fault, the longest time with no acknowledged commit from its start to the next
    /// fault's (or the run's end). A stall that runs past the window counts only up to its
    /// end: the rest belongs to the next fault's window.
    fn availability(&mut self, acks: &[u64], ended_ms: u64) {
        for (n, fault) in self
            .injected
            .iter()
            .enumerate()
            .filter(|(_, fault)| fault.hit)
        {
            let until = self
                .injected
                .get(n + 1)
                .map_or(ended_ms, |next| next.start_ms)
                .max(fault.start_ms);
            let mut longest = 0;
            let mut previous = fault.start_ms;
            for &at in acks.iter().filter(|&&at| at >= fault.start_ms) {
                let at = at.min(until);
                longest = longest.max(at - previous);
                previous = at;
                if at == until {
                    break;
                }
            }
            longest = longest.max(until - previous);
            self.rows
                .entry(Some(fault.fault))
                .or_default()
                .unavailable_ms
                .push(longest);
        }
    }
}

/// The `p`th percentile (nearest rank) of `values`, if any.
fn percentile(values: &mut [u64], p: f64) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let rank = ((p / 100.0) * values.len() as f64).ceil().max(1.0);
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let rank = rank as usize;
    Some(values[rank.min(values.len()) - 1])
}

fn ms(value: Option<u64>) -> String {
    value.map_or("-".into(), |ms| format!("{:.2}", ms as f64 / 1000.0))
}

/// The table over every run, in Markdown: one row per fault kind.
pub fn table(outcomes: &[RunOutcome]) -> String {
    let mut rows: BTreeMap<Option<Fault>, Row> = BTreeMap::new();
    for outcome in outcomes {
        for (fault, row) in &outcome.rows {
            let sum = rows.entry(*fault).or_default();
            sum.faults += row.faults;
            sum.acked += row.acked;
            sum.lost += row.lost;
            sum.duplicated += row.duplicated;
            sum.forked += row.forked;
            sum.failed_stored += row.failed_stored;
            sum.unknown += row.unknown;
            sum.resolve_ms.extend(&row.resolve_ms);
            sum.resolved_at_end += row.resolved_at_end;
            sum.unavailable_ms.extend(&row.unavailable_ms);
        }
    }
    let mut text = String::from(
        "| fault | injected | acknowledged | lost | duplicated | forked | failed, yet stored | \
         unknown | resolved p50 / p99 (s) | resolved at end | no commit, p50 / p99 / max (s) |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for (fault, row) in &mut rows {
        let name = fault.map_or("(before any fault)", Fault::name);
        let mut resolve = row.resolve_ms.clone();
        let mut unavailable = row.unavailable_ms.clone();
        let _ = writeln!(
            text,
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} / {} | {} | {} / {} / {} |",
            row.faults,
            row.acked,
            row.lost,
            row.duplicated,
            row.forked,
            row.failed_stored,
            row.unknown,
            ms(percentile(&mut resolve, 50.0)),
            ms(percentile(&mut resolve, 99.0)),
            row.resolved_at_end,
            ms(percentile(&mut unavailable, 50.0)),
            ms(percentile(&mut unavailable, 99.0)),
            ms(unavailable.iter().max().copied()),
        );
    }
    let passed = outcomes.iter().filter(|outcome| outcome.passed()).count();
    let _ = write!(
        text,
        "\n{passed} of {} runs passed every check.",
        outcomes.len()
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut values = vec![5, 1, 4, 2, 3];
        assert_eq!(percentile(&mut values, 50.0), Some(3));
        assert_eq!(percentile(&mut values, 99.0), Some(5));
        assert_eq!(percentile(&mut [], 50.0), None);
    }
}

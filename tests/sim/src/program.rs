//! What a simulation runs: a [`World`] (how many workers and cases, and the seed of
//! everything not in the operations) and a list of [`Op`]s, each a worker's call of the
//! client's public API, or an event of the world (the projector runs, the log forgets commit
//! ids, reads lag), at a time on the simulated clock. Each op carries the seed of its own
//! faults, so that dropping other ops (shrinking) leaves its faults as they were.
//!
//! The types print (`{:?}`) as Rust that builds them: a shrunk case pastes into a test.

use wfstate_store::{Mutation, ScopeId, TokenId, Value};

use crate::rng::{Rng, derive};

/// The fixed part of a simulation: its size and the seed of what the ops do not say (commit
/// ids, clocks, the retry policy, the log's answers' jitter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct World {
    /// The seed.
    pub seed: u64,
    /// Worker processes, each with its own workspace, handles and record.
    pub workers: u8,
    /// Cases every worker may touch.
    pub cases: u8,
}

/// One step of the simulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Op {
    /// The worker making the call (ignored by the world's acts).
    pub worker: u8,
    /// When it starts, in ms of simulated time from the start (a worker still busy with its
    /// last call starts it when that ends).
    pub at_ms: u32,
    /// The seed of the faults its appends meet; 0: none.
    pub faults: u64,
    /// What it does.
    pub act: Act,
}

/// A call of the client's public API, or an event of the world. `case` is a case's number
/// (`case-<n>`), `change` what a commit buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[expect(
    missing_docs,
    reason = "the fields are named in the enum's and the variants' docs"
)]
pub enum Act {
    /// `Workspace::create` (or its first commit on a handle of its own).
    Create { case: u8 },
    /// `Workspace::load`, replacing the worker's handle of the case.
    Load { case: u8 },
    /// Buffers a change and `Workspace::commit`s the handle.
    Commit { case: u8, change: Change },
    /// `Workspace::commit_with_meta` with a commit id the worker writes down first: a new
    /// one, or (`again`) one it used before on the case, sent again.
    CommitOwn {
        case: u8,
        change: Change,
        again: Option<u8>,
    },
    /// `Workspace::commit_many` with `batches` batches (0: resolve what is in doubt).
    CommitMany { case: u8, batches: u8 },
    /// `Workspace::transact_on` adding one to the case's `n`.
    Transact { case: u8 },
    /// `Workspace::transact`: loads the case, then as [`Act::Transact`].
    TransactLoaded { case: u8 },
    /// `Workspace::refresh`.
    Refresh { case: u8 },
    /// Buffers a change without committing.
    Buffer { case: u8, change: Change },
    /// `CaseHandle::rollback`.
    Rollback { case: u8 },
    /// A commit whose future is dropped after `polls` polls, 1 ms apart.
    DropCommit { case: u8, change: Change, polls: u8 },
    /// The worker restarts: its handles are gone; it loads the cases again and sends every
    /// commit its record says was sent and not acknowledged, with its commit id.
    Restart,
    /// The projector folds a batch; with `crash`, it dies after writing its views and before
    /// acknowledging the events, and a new one takes over.
    Project { crash: bool },
    /// The log forgets every commit id it was remembering (its duplicate window passes).
    Forget,
    /// Reads of single events answer from a replica that stopped where the log is now, for
    /// `ms` ms.
    Lag { ms: u16 },
}

/// What a commit changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[expect(missing_docs, reason = "the fields are named in the variants' docs")]
pub enum Change {
    /// `increment_step_count`.
    Increment,
    /// Sets ctx key `k<key>` to `value`.
    Set { key: u8, value: u8 },
    /// Adds token `t<token>` in the root scope: invalid when it is there.
    AddToken { token: u8 },
    /// Removes token `t<token>`: invalid when it is not there.
    RemoveToken { token: u8 },
    /// Exits the root scope: always invalid.
    Invalid,
}

impl Change {
    /// The mutation.
    ///
    /// # Panics
    /// Never: the ids are valid.
    pub fn mutation(self) -> Mutation {
        match self {
            Change::Increment => Mutation::IncrementStepCount,
            Change::Set { key, value } => {
                Mutation::set_key(format!("k{key}"), Value::from(u64::from(value)))
            }
            Change::AddToken { token } => Mutation::add_token(
                TokenId::new(format!("t{token}")).expect("a valid token id"),
                0,
                ScopeId::root(),
                Value::Null,
            ),
            Change::RemoveToken { token } => Mutation::RemoveToken {
                id: TokenId::new(format!("t{token}")).expect("a valid token id"),
            },
            Change::Invalid => Mutation::ExitScope {
                id: ScopeId::root(),
            },
        }
    }

    fn draw(rng: &mut Rng) -> Change {
        match rng.below(20) {
            0..=6 => Change::Increment,
            7..=13 => Change::Set {
                key: rng.pick(4),
                value: rng.pick(256),
            },
            14..=16 => Change::AddToken { token: rng.pick(3) },
            17..=18 => Change::RemoveToken { token: rng.pick(3) },
            _ => Change::Invalid,
        }
    }
}

impl World {
    /// The world of episode `episode` of a simulation seeded `seed`.
    pub fn of(seed: u64, episode: u64) -> World {
        let seed = derive(seed, episode);
        let mut rng = Rng::new(seed);
        World {
            seed,
            workers: 2 + rng.pick(3),
            cases: 1 + rng.pick(4),
        }
    }

    /// `count` ops drawn from the world's seed.
    ///
    /// # Panics
    /// Never: the gaps and lags drawn are small.
    pub fn program(&self, count: usize) -> Vec<Op> {
        let mut rng = Rng::new(derive(self.seed, u64::MAX));
        let mut at_ms = 0u32;
        // How often the ops of this episode meet faults, so that some episodes are calm and
        // some stormy.
        let fault_share = rng.below(40) + 5;
        (0..count)
            .map(|_| {
                at_ms += u32::try_from(rng.below(4)).expect("a small gap");
                if rng.chance(2) {
                    at_ms += u32::try_from(rng.below(400)).expect("a small gap");
                }
                let faults = if rng.chance(fault_share) {
                    rng.next_u64() | 1
                } else {
                    0
                };
                Op {
                    worker: rng.pick(u16::from(self.workers)),
                    at_ms,
                    faults,
                    act: self.act(&mut rng),
                }
            })
            .collect()
    }

    fn act(&self, rng: &mut Rng) -> Act {
        let case = rng.pick(u16::from(self.cases));
        match rng.below(200) {
            0..=7 => Act::Create { case },
            8 => Act::Load { case },
            9..=65 => Act::Commit {
                case,
                change: Change::draw(rng),
            },
            66..=97 => Act::CommitOwn {
                case,
                change: Change::draw(rng),
                again: rng.chance(30).then(|| rng.pick(8)),
            },
            98..=107 => Act::CommitMany {
                case,
                batches: rng.pick(4),
            },
            108..=132 => Act::Transact { case },
            133..=134 => Act::TransactLoaded { case },
            135..=150 => Act::Refresh { case },
            151..=156 => Act::Buffer {
                case,
                change: Change::draw(rng),
            },
            157..=160 => Act::Rollback { case },
            161..=168 => Act::DropCommit {
                case,
                change: Change::draw(rng),
                polls: rng.pick(4),
            },
            169 => Act::Restart,
            170..=188 => Act::Project {
                crash: rng.chance(10),
            },
            189..=194 => Act::Forget,
            _ => Act::Lag {
                ms: u16::try_from(rng.below(300)).expect("a small lag"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_one_program() {
        let world = World::of(7, 3);
        assert_eq!(world, World::of(7, 3));
        assert_eq!(world.program(500), world.program(500));
        assert_ne!(world.program(500), World::of(7, 4).program(500));
    }

    #[test]
    fn every_change_is_a_mutation_and_ops_print_as_rust() {
        let op = Op {
            worker: 1,
            at_ms: 2,
            faults: 3,
            act: Act::CommitOwn {
                case: 0,
                change: Change::Set { key: 1, value: 2 },
                again: Some(4),
            },
        };
        assert_eq!(
            format!("{op:?}"),
            "Op { worker: 1, at_ms: 2, faults: 3, act: CommitOwn { case: 0, change: Set { key: 1, \
             value: 2 }, again: Some(4) } }"
        );
        for change in [
            Change::Increment,
            Change::Set { key: 0, value: 0 },
            Change::AddToken { token: 0 },
            Change::RemoveToken { token: 0 },
            Change::Invalid,
        ] {
            let _ = change.mutation();
        }
    }
}

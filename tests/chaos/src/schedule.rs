//! The seeded fault schedule: which faults a run injects, on what, for how long, and the
//! quiet gaps between them. The same seed gives the same schedule, so a run can be replayed.

use std::fmt;
use std::time::Duration;

/// A small, seedable generator (splitmix64): the schedule and the workers' choices need to be
/// reproducible, not cryptographic.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (`bound` > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "an empty range");
        self.next_u64() % bound
    }

    /// An index into a collection of `len` (> 0) items.
    pub fn index(&mut self, len: usize) -> usize {
        usize::try_from(self.below(len as u64)).expect("an index below a usize")
    }

    /// A duration in `min..=max`, to the millisecond.
    pub fn between(&mut self, min: Duration, max: Duration) -> Duration {
        let span = u64::try_from(max.saturating_sub(min).as_millis()).unwrap_or(u64::MAX);
        min + Duration::from_millis(self.below(span + 1))
    }

    /// `true` with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// The seed of run `run` of a suite started with `seed`: each run can be replayed alone with
/// `--seed <its seed> --runs 1`.
pub fn run_seed(seed: u64, run: u64) -> u64 {
    Rng::new(seed ^ run.wrapping_mul(0xA076_1D64_78BD_642F)).next_u64() >> 1
}

/// What a fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    /// SIGKILL of the stream's leader, restarted after `hold`.
    LeaderKill,
    /// SIGKILL of node `target`, restarted after `hold`.
    NodeKill,
    /// SIGSTOP of node `target` for `hold` (a long pause), then SIGCONT.
    Pause,
    /// The stream's leader cut off from the other two for `hold`, both sides running.
    Partition,
    /// Every route into node `target` delayed by half a second for `hold`.
    SlowLink,
    /// Each node in turn killed and started again, waiting until it is ready.
    RollingRestart,
    /// SIGKILL of worker `target` while it commits; a new process with the same worker id
    /// sends the commits it had in flight again, with their commit ids.
    WorkerKill,
    /// SIGKILL of the projector, mid-batch; a new one takes over its durable consumer.
    ProjectorKill,
}

impl Fault {
    /// Every fault kind, in the order of the report's table.
    pub const ALL: [Fault; 8] = [
        Fault::LeaderKill,
        Fault::NodeKill,
        Fault::Pause,
        Fault::Partition,
        Fault::SlowLink,
        Fault::RollingRestart,
        Fault::WorkerKill,
        Fault::ProjectorKill,
    ];

    /// The fault's name in schedules and reports.
    pub fn name(self) -> &'static str {
        match self {
            Fault::LeaderKill => "leader-kill",
            Fault::NodeKill => "node-kill",
            Fault::Pause => "pause",
            Fault::Partition => "partition",
            Fault::SlowLink => "slow-link",
            Fault::RollingRestart => "rolling-restart",
            Fault::WorkerKill => "worker-kill",
            Fault::ProjectorKill => "projector-kill",
        }
    }
}

/// One planned fault.
#[derive(Debug, Clone, Copy)]
pub struct Planned {
    /// The quiet time before it, after the previous fault ended (or the run started).
    pub gap: Duration,
    /// What it does.
    pub fault: Fault,
    /// The node or worker it hits, where the kind names one.
    pub target: usize,
    /// How long it lasts before it is healed.
    pub hold: Duration,
}

impl fmt::Display for Planned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "after {:.1}s {}",
            self.gap.as_secs_f64(),
            self.fault.name()
        )?;
        match self.fault {
            Fault::NodeKill | Fault::Pause | Fault::SlowLink => write!(f, " node {}", self.target)?,
            Fault::WorkerKill => write!(f, " worker {}", self.target)?,
            _ => {}
        }
        match self.fault {
            Fault::WorkerKill | Fault::ProjectorKill | Fault::RollingRestart => Ok(()),
            _ => write!(f, " for {:.1}s", self.hold.as_secs_f64()),
        }
    }
}

/// The faults of one run of `seconds`, drawn from `seed`. Faults are planned while at least
/// ten seconds of the run would be left after them (a guess: a restart takes a few seconds
/// more than planned), so that the cluster works again before the run ends.
pub fn plan(seed: u64, run_for: Duration, nodes: usize, workers: usize) -> Vec<Planned> {
    let mut rng = Rng::new(seed);
    let mut planned = Vec::new();
    let mut at = Duration::ZERO;
    // A bound on the loop besides the time: at most one fault per two seconds of the run.
    for _ in 0..=run_for.as_secs() / 2 {
        let gap = rng.between(Duration::from_secs(2), Duration::from_secs(5));
        let fault = Fault::ALL[rng.index(Fault::ALL.len())];
        let target = match fault {
            Fault::WorkerKill => rng.index(workers),
            _ => rng.index(nodes),
        };
        let hold = match fault {
            Fault::LeaderKill | Fault::NodeKill => {
                rng.between(Duration::from_secs(2), Duration::from_secs(6))
            }
            Fault::Pause | Fault::Partition | Fault::SlowLink => {
                rng.between(Duration::from_secs(4), Duration::from_secs(10))
            }
            Fault::RollingRestart => Duration::from_secs(9),
            Fault::WorkerKill | Fault::ProjectorKill => Duration::ZERO,
        };
        if at + gap + hold + Duration::from_secs(10) > run_for {
            break;
        }
        at += gap + hold;
        planned.push(Planned {
            gap,
            fault,
            target,
            hold,
        });
    }
    planned
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_one_schedule() {
        let a = plan(7, Duration::from_mins(1), 3, 16);
        let b = plan(7, Duration::from_mins(1), 3, 16);
        let c = plan(8, Duration::from_mins(1), 3, 16);
        let show = |plan: &[Planned]| plan.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(show(&a), show(&b));
        assert_ne!(show(&a), show(&c));
        assert!(!a.is_empty());
        let total: Duration = a.iter().map(|p| p.gap + p.hold).sum();
        assert!(total + Duration::from_secs(10) <= Duration::from_mins(1));
    }

    #[test]
    fn runs_have_their_own_seeds() {
        assert_ne!(run_seed(1, 0), run_seed(1, 1));
        assert_eq!(run_seed(1, 3), run_seed(1, 3));
    }
}

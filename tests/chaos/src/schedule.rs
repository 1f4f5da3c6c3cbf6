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
    /// A node not known to lead cut off from the other two: a partition whose leader could
    /// not be found when it was injected (never planned as such).
    Isolation,
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
    /// The kinds a schedule draws from.
    pub const PLANNED: [Fault; 8] = [
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
            Fault::Isolation => "isolation",
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

impl Planned {
    /// How long the fault is expected to take, from its start until it is healed: its hold,
    /// and for a restart the few seconds a node takes to be ready again.
    pub fn estimate(&self) -> Duration {
        match self.fault {
            // A new leader is elected before the cluster is ready again.
            Fault::LeaderKill | Fault::NodeKill => self.hold + RESTART * 2,
            Fault::RollingRestart => RESTART * 3 + Duration::from_secs(1),
            Fault::WorkerKill | Fault::ProjectorKill => Duration::from_millis(500),
            Fault::Pause | Fault::Partition | Fault::Isolation | Fault::SlowLink => self.hold,
        }
    }
}

/// About how long a node takes to start again and be ready, in a three-node cluster on one
/// machine (measured: 3 s a node in a rolling restart; 5.5 s after a kill of the leader).
const RESTART: Duration = Duration::from_secs(3);

impl fmt::Display for Planned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "after {:.1}s {}",
            self.gap.as_secs_f64(),
            self.fault.name()
        )?;
        match self.fault {
            Fault::NodeKill | Fault::Pause | Fault::SlowLink | Fault::Isolation => {
                write!(f, " node {}", self.target)?;
            }
            Fault::WorkerKill => write!(f, " worker {}", self.target)?,
            _ => {}
        }
        match self.fault {
            Fault::WorkerKill | Fault::ProjectorKill | Fault::RollingRestart => Ok(()),
            _ => write!(f, " for {:.1}s", self.hold.as_secs_f64()),
        }
    }
}

/// The quiet time a run keeps at its end, so that the cluster works again before the run
/// ends: a sixth of the run, from 5 to 10 seconds.
pub fn tail(run_for: Duration) -> Duration {
    (run_for / 6).clamp(Duration::from_secs(5), Duration::from_secs(10))
}

/// How much shorter than a minute's a run's gaps and holds are, so that every kind fits in a
/// run of 20 s: a third at 20 s, whole from 60 s on.
fn scale(run_for: Duration) -> f64 {
    (run_for.as_secs_f64() / 60.0).clamp(1.0 / 3.0, 1.0)
}

/// One fault drawn from `rng`, its durations scaled by `scale`.
fn draw(rng: &mut Rng, scale: f64, nodes: usize, workers: usize) -> Planned {
    let scaled = |rng: &mut Rng, min: u64, max: u64| {
        rng.between(Duration::from_secs(min), Duration::from_secs(max))
            .mul_f64(scale)
    };
    let gap = scaled(rng, 2, 5);
    let fault = Fault::PLANNED[rng.index(Fault::PLANNED.len())];
    let target = match fault {
        Fault::WorkerKill => rng.index(workers),
        _ => rng.index(nodes),
    };
    let hold = match fault {
        Fault::LeaderKill | Fault::NodeKill => scaled(rng, 2, 6),
        Fault::Pause | Fault::Partition | Fault::Isolation | Fault::SlowLink => scaled(rng, 4, 10),
        Fault::RollingRestart | Fault::WorkerKill | Fault::ProjectorKill => Duration::ZERO,
    };
    Planned {
        gap,
        fault,
        target,
        hold,
    }
}

/// The faults of one run of `seconds`, drawn from `seed`: one after another while each is
/// expected to end before the run's [`tail`]. When a drawn fault would not fit what is left,
/// others are drawn (eight at most) before the plan is full, so that a run is planned at
/// least one fault and every kind can come up in a run of 20 s.
pub fn plan(seed: u64, run_for: Duration, nodes: usize, workers: usize) -> Vec<Planned> {
    let mut rng = Rng::new(seed);
    let window = run_for.saturating_sub(tail(run_for));
    let scale = scale(run_for);
    let mut planned = Vec::new();
    let mut at = Duration::ZERO;
    // Bounded besides the time: at most one fault per second of the run.
    for _ in 0..run_for.as_secs().max(1) {
        let fits = (0..8)
            .map(|_| draw(&mut rng, scale, nodes, workers))
            .find(|fault| at + fault.gap + fault.estimate() <= window);
        let Some(fault) = fits else {
            break;
        };
        at += fault.gap + fault.estimate();
        planned.push(fault);
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
        let total: Duration = a.iter().map(|p| p.gap + p.estimate()).sum();
        assert!(total + tail(Duration::from_mins(1)) <= Duration::from_mins(1));
    }

    /// Every run is planned a fault, and every kind comes up in runs of 20 s.
    #[test]
    fn every_short_run_has_a_fault_and_every_kind_comes_up() {
        let run_for = Duration::from_secs(20);
        let mut kinds = std::collections::BTreeSet::new();
        for seed in 0..200 {
            let plan = plan(run_seed(1, seed), run_for, 3, 8);
            assert!(!plan.is_empty(), "seed {seed}: no fault planned");
            let total: Duration = plan.iter().map(|p| p.gap + p.estimate()).sum();
            assert!(total + tail(run_for) <= run_for, "seed {seed}: {total:?}");
            kinds.extend(plan.iter().map(|p| p.fault));
        }
        assert_eq!(kinds.into_iter().collect::<Vec<_>>(), Fault::PLANNED);
    }

    #[test]
    fn runs_have_their_own_seeds() {
        assert_ne!(run_seed(1, 0), run_seed(1, 1));
        assert_eq!(run_seed(1, 3), run_seed(1, 3));
    }
}

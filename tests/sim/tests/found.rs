//! Cases the simulator found, shrunk and pasted here as it prints them: each broke a promise
//! of the commit client until the fix named above it.
#![expect(
    clippy::unreadable_literal,
    reason = "seeds are pasted as the simulator prints them"
)]

use wfstate_sim::{Act::*, Change::*, Op, World};

/// A conflict answered without a position while reads lag (a replicated stream's 10164),
/// the event stored after all, then a refusal: the commit was reported as refused (nothing
/// stored) though it had landed. Fixed: a conflict the case does not show yet may be this
/// very event, so the commit is in doubt.
#[test]
fn a_conflict_the_case_does_not_show_leaves_the_commit_in_doubt() {
    let world = World {
        seed: 12480123215995487855,
        workers: 3,
        cases: 4,
    };
    let ops = [
        Op {
            worker: 2,
            at_ms: 21,
            faults: 0,
            act: Lag { ms: 150 },
        },
        Op {
            worker: 0,
            at_ms: 26,
            faults: 12207822217839492599,
            act: Create { case: 1 },
        },
    ];
    let report = wfstate_sim::run(world, &ops);
    assert!(report.violations.is_empty(), "{:#?}", report.violations);
}

/// A commit id the handle holds, sent again while reads lag: its receipt is in doubt; the
/// next commit, dropped while it read the event again, lost the commit in doubt. Fixed: the
/// handle keeps it in doubt until the read ends.
#[test]
fn a_dropped_read_of_a_landed_commit_keeps_it_in_doubt() {
    let world = World {
        seed: 17359898409730982857,
        workers: 3,
        cases: 1,
    };
    let ops = [
        Op {
            worker: 0,
            at_ms: 62,
            faults: 0,
            act: Lag { ms: 214 },
        },
        Op {
            worker: 2,
            at_ms: 69,
            faults: 0,
            act: CommitOwn {
                case: 0,
                change: Set { key: 0, value: 197 },
                again: None,
            },
        },
        Op {
            worker: 2,
            at_ms: 87,
            faults: 0,
            act: CommitOwn {
                case: 0,
                change: Increment,
                again: Some(5),
            },
        },
        Op {
            worker: 2,
            at_ms: 127,
            faults: 0,
            act: DropCommit {
                case: 0,
                change: Set { key: 3, value: 205 },
                polls: 3,
            },
        },
    ];
    let report = wfstate_sim::run(world, &ops);
    assert!(report.violations.is_empty(), "{:#?}", report.violations);
}

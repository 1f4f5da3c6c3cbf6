//! Shrinking: a failing episode's ops cut down, by halves then single ops, to a short list
//! that still breaks the same promise; then printed as a test to paste into the suite.

use std::fmt::Write as _;

use crate::episode::run;
use crate::program::{Op, World};

/// How many runs shrinking may take (each a few ms).
const RUNS_MAX: usize = 4_000;

/// The shortest list of `ops` found (within a bound on runs) that still breaks `rule` in
/// `world`.
pub fn shrink(world: World, ops: &[Op], rule: &str) -> Vec<Op> {
    let runs = std::cell::Cell::new(0);
    let fails = |ops: &[Op]| {
        runs.set(runs.get() + 1);
        run(world, ops).violations.iter().any(|v| v.rule == rule)
    };
    let mut current = ops.to_vec();
    let mut chunk = current.len().div_ceil(2);
    while chunk >= 1 {
        let mut start = 0;
        while start < current.len() {
            let end = (start + chunk).min(current.len());
            let candidate: Vec<Op> = current[..start]
                .iter()
                .chain(&current[end..])
                .copied()
                .collect();
            if fails(&candidate) {
                current = candidate;
            } else {
                start += chunk;
            }
            if runs.get() >= RUNS_MAX {
                return current;
            }
        }
        chunk /= 2;
    }
    // Faults that are not needed go.
    for n in 0..current.len() {
        if current[n].faults != 0 && runs.get() < RUNS_MAX {
            let mut candidate = current.clone();
            candidate[n].faults = 0;
            if fails(&candidate) {
                current = candidate;
            }
        }
    }
    current
}

/// `ops` in `world` as a test that fails while the violation is there.
pub fn as_test(world: &World, ops: &[Op]) -> String {
    let mut listed = String::new();
    for op in ops {
        let _ = writeln!(listed, "        {op:?},");
    }
    format!(
        "#[test]\n\
         fn simulated_seed_{seed}() {{\n    \
         use wfstate_sim::{{Act::*, Change::*, Op, World}};\n    \
         let world = {world:?};\n    \
         let ops = [\n{listed}    ];\n    \
         let report = wfstate_sim::run(world, &ops);\n    \
         assert!(report.violations.is_empty(), \"{{:#?}}\", report.violations);\n\
         }}\n",
        seed = world.seed
    )
}

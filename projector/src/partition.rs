//! [`Partition`]: which projector folds a case when several share the work. Each case belongs
//! to one of `count` partitions by a stable hash of its id, so one projector at a time folds
//! it and its events stay in order.

use serde::{Deserialize, Serialize};

/// One of `count` partitions of the cases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Partition {
    /// This partition, below `count`.
    pub index: u32,
    /// How many partitions the cases are spread over.
    pub count: u32,
}

impl Partition {
    /// Partition `index` of `count`.
    ///
    /// # Errors
    /// A message saying what is wrong, when `count` is 0 or `index` is not below it.
    pub fn new(index: u32, count: u32) -> Result<Partition, String> {
        if index >= count {
            return Err(format!(
                "partition {index} of {count}: give a count of at least 1 and an index below it"
            ));
        }
        Ok(Partition { index, count })
    }

    /// The partition of `count` a case id belongs to: the one a stream of `count` partitions
    /// stores it in ([`wfstate_events::partition_of`], nats-server's `{{partition}}`). Every
    /// projector process must agree on it, so it never changes.
    pub fn index_of(case_id: &str, count: u32) -> u32 {
        wfstate_events::partition_of(case_id, count)
    }

    /// Whether the case belongs to this partition.
    pub fn holds(&self, case_id: &str) -> bool {
        Partition::index_of(case_id, self.count) == self.index
    }
}

impl std::fmt::Display for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-of-{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_fixed_and_spreads_cases() {
        // Fixed values (32-bit FNV-1a of "" and of "a"): projector processes of every build
        // agree, and with the server's subject mapping.
        assert_eq!(Partition::index_of("", 1000), 261);
        assert_eq!(Partition::index_of("a", 1_000_000), 2220);
        let mut counts = [0_u32; 4];
        for n in 0..4000 {
            counts[Partition::index_of(&format!("order-{n}"), 4) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
        let partitions: Vec<Partition> = (0..4).map(|i| Partition::new(i, 4).unwrap()).collect();
        for n in 0..100 {
            let case = format!("case-{n}");
            let holders = partitions.iter().filter(|p| p.holds(&case)).count();
            assert_eq!(holders, 1, "{case}");
        }
        assert!(Partition::new(4, 4).is_err());
        assert!(Partition::new(0, 0).is_err());
    }
}

//! [`Rng`]: splitmix64, seedable and small. Every choice of a simulation comes from one: the
//! same seed, the same run.

/// A seedable generator (splitmix64): reproducible, not cryptographic.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// A number in `0..bound` (`bound` > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "an empty range");
        self.next_u64() % bound
    }

    /// `true` with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// A number in `0..bound` as a `u8` (`bound` ≤ 256).
    pub fn pick(&mut self, bound: u16) -> u8 {
        u8::try_from(self.below(u64::from(bound))).expect("a pick below 256")
    }
}

/// splitmix64's finaliser: spreads the bits of `z`.
pub fn mix(z: u64) -> u64 {
    let z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A seed drawn from `seed` for the `n`th of something (an episode, an attempt): each gets
/// its own stream, whatever the others draw.
pub fn derive(seed: u64, n: u64) -> u64 {
    mix(seed ^ mix(n.wrapping_add(0xA076_1D64_78BD_642F)))
}

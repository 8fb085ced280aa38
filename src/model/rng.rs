//! A tiny deterministic random number generator (SplitMix64).
//!
//! Galaxy creation promises "same seed, same galaxy" for as long as the project lives, so
//! the generator is ours: a third-party RNG may change its output stream between releases.

/// SplitMix64 (Steele, Lea, Flood 2014): 64 bits of state, passes BigCrush, one multiply-xorshift
/// chain per draw. Not for cryptography; only for placing systems on a map.
#[derive(Clone, Debug)]
pub(crate) struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform draw from `0..=max`, by rejection so every value is equally likely.
    pub(crate) fn inclusive(&mut self, max: u64) -> u64 {
        let Some(span) = max.checked_add(1) else {
            return self.next_u64();
        };
        // The largest multiple of `span` that fits in u64; draws at or above it are biased.
        let zone = u64::MAX - (u64::MAX % span + 1) % span;
        loop {
            let draw = self.next_u64();
            if draw <= zone {
                return draw % span;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream() {
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
    }

    #[test]
    fn first_output_matches_the_reference_algorithm() {
        // Reference value of SplitMix64 seeded with 0 (from the published algorithm).
        assert_eq!(SplitMix64::new(0).next_u64(), 0xE220_A839_7B1D_CDAF);
    }

    #[test]
    fn inclusive_stays_in_range_and_hits_both_ends() {
        let mut rng = SplitMix64::new(1);
        let mut seen = [false; 4];
        for _ in 0..1000 {
            let v = rng.inclusive(3);
            assert!(v <= 3);
            seen[v as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
        assert_eq!(rng.inclusive(0), 0);
        let _ = rng.inclusive(u64::MAX);
    }
}

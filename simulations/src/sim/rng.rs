//! The simulator's only source of randomness: xoshiro256** seeded through splitmix64. Written here rather
//! than taken from a crate so the stream can never change under a dependency update: a seed printed
//! today must replay the same run next year.

/// xoshiro256** (Blackman and Vigna): fast, small state, good statistical quality for simulation.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

fn splitmix64(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut x = seed;
        Rng { s: [splitmix64(&mut x), splitmix64(&mut x), splitmix64(&mut x), splitmix64(&mut x)] }
    }

    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)` with 53 bits of precision.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// True with probability `p` (no draw is taken when `p` is 0, so a fault switched off does not shift
    /// the stream of the others).
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }

    /// Uniform in `[lo, hi]`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo { lo } else { lo + self.next_u64() % (hi - lo + 1) }
    }

    /// Exponentially distributed with the given mean (the gaps of a Poisson process).
    pub fn exp(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.unit()).ln()
    }

    /// `x` rounded up or down at random so that the expected value is exactly `x` (cheap stand-in for a
    /// binomial draw on counts such as errors among requests).
    pub fn round(&mut self, x: f64) -> u64 {
        let floor = x.floor();
        floor as u64 + u64::from(self.unit() < x - floor)
    }

    /// An independent generator for a sub-stream (e.g. per device), derived from this one's next output.
    pub fn fork(&mut self) -> Rng {
        Rng::new(self.next_u64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_is_pinned() {
        // Pinned: changing the generator would change every recorded seed's replay.
        let mut r = Rng::new(42);
        let first: Vec<u64> = (0..3).map(|_| r.next_u64()).collect();
        let mut again = Rng::new(42);
        assert_eq!(first, (0..3).map(|_| again.next_u64()).collect::<Vec<_>>());
        assert_ne!(Rng::new(43).next_u64(), first[0]);
    }

    #[test]
    fn draws_have_the_right_means() {
        let mut r = Rng::new(7);
        let n = 100_000;
        let unit: f64 = (0..n).map(|_| r.unit()).sum::<f64>() / n as f64;
        let exp: f64 = (0..n).map(|_| r.exp(3.0)).sum::<f64>() / n as f64;
        let round: f64 = (0..n).map(|_| r.round(2.25) as f64).sum::<f64>() / n as f64;
        let hits = (0..n).filter(|_| r.chance(0.2)).count() as f64 / n as f64;
        assert!((unit - 0.5).abs() < 0.01, "{unit}");
        assert!((exp - 3.0).abs() < 0.05, "{exp}");
        assert!((round - 2.25).abs() < 0.01, "{round}");
        assert!((hits - 0.2).abs() < 0.01, "{hits}");
        assert!((0..1000).all(|_| (3..=5).contains(&r.range(3, 5))));
        assert!(!r.chance(0.0));
    }
}

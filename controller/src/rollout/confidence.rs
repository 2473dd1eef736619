//! How sure the shadow gate is: the Wilson score interval of an agreement measured on `n` comparisons.
//!
//! The shadow gate compared the measured agreement with its floor, so a small sample decided as firmly as a
//! large one: a canary whose first 21 comparisons agreed 18 times (85.7 %) failed a 90 % gate although the
//! release agrees 97 % of the time. The agreement now carries its interval, and the gate fails only when
//! the whole interval is under the floor ([`Side::Worse`]); it passes, as before, when the agreement itself
//! reaches the floor (with the gate's sample minimum met); in between it is undecided and waits through the
//! bake, then passes (the planner: comparisons end when the candidate goes live, so waiting longer would
//! only pause a good rollout).
//!
//! The error-rate gate has the same flaw (one error in a wave's first 20 requests, 5 %, fails a 2-point
//! gate) and keeps judging its figure: its evidence is each device's latest window, which does not grow,
//! so waiting would never narrow the interval, and the interval let a bad canary through. In the
//! simulator's bad-model scenario (one device of ten failing 30 % of its requests) the wave's figure,
//! 2.84 % over 599 requests against a 2.2 % limit, is what catches it; judged by the interval (1.8 % to
//! 4.5 %) it was undecided, the wave went on and the next one exposed 100 devices (seed 3 at 1,000
//! devices; the faulty device's own watch rolls it back, after which the wave looks clean). Its guard
//! against small samples stays the sample minimum (`judged from N requests`).
//!
//! Wilson's interval rather than the normal approximation because agreements sit near 1 on tens of
//! samples, where the normal interval crosses 1 and is far too narrow.

/// 95 % two-sided (each bound 97.5 % one-sided): the confidence the gate needs before it fails a wave.
pub const Z: f64 = 1.96;

/// The range a fraction's true value lies in, at [`Z`]. `None` without samples.
pub fn wilson(fraction: f64, n: u64) -> Option<(f64, f64)> {
    if n == 0 || !fraction.is_finite() {
        return None;
    }
    let (p, n) = (fraction.clamp(0.0, 1.0), n as f64);
    let z2 = Z * Z;
    let denom = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denom;
    let half = Z / denom * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    Some(((centre - half).max(0.0), (centre + half).min(1.0)))
}

/// Where a measured agreement stands against the gate's floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The agreement itself reaches the floor: the gate passes.
    Clears,
    /// The whole interval is under the floor: the gate fails.
    Worse,
    /// The fraction is under the floor but the interval still reaches it: more samples decide.
    Undecided,
}

/// A fraction that must reach `floor` (an agreement).
pub fn at_least(fraction: f64, n: u64, floor: f64) -> Side {
    if fraction >= floor {
        return Side::Clears;
    }
    match wilson(fraction, n) {
        Some((_, high)) if high < floor => Side::Worse,
        _ => Side::Undecided,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_matches_wilsons_formula_and_stays_within_zero_and_one() {
        // 18 of 21 at 95 %: 0.654 to 0.950 (Wilson, 1927; any statistics table).
        let (low, high) = wilson(18.0 / 21.0, 21).unwrap();
        assert!((low - 0.654).abs() < 1e-3 && (high - 0.950).abs() < 1e-3, "{low} {high}");
        let (low, high) = wilson(0.0, 20).unwrap();
        assert!(low == 0.0 && (high - 0.161).abs() < 1e-3, "{high}");
        let (low, high) = wilson(1.0, 20).unwrap();
        assert!((low - 0.839).abs() < 1e-3 && high == 1.0, "{low}");
        assert_eq!(wilson(0.5, 0), None);
        assert_eq!(wilson(f64::NAN, 10), None);
        // More samples, a narrower interval.
        let width = |n| wilson(0.9, n).map(|(l, h)| h - l).unwrap();
        assert!(width(10_000) < width(100) && width(100) < width(10));
    }

    #[test]
    fn a_small_sample_below_the_threshold_waits_and_a_large_one_decides() {
        // The canary of the console test: 18 of 21 against 90 % is undecided, not a failure.
        assert_eq!(at_least(18.0 / 21.0, 21, 0.9), Side::Undecided);
        // A bad release: 30 of 100 agree.
        assert_eq!(at_least(0.3, 100, 0.9), Side::Worse);
        // The same 85.7 % over 2,100 comparisons is certain.
        assert_eq!(at_least(18.0 / 21.0, 2_100, 0.9), Side::Worse);
        assert_eq!(at_least(0.97, 21, 0.9), Side::Clears);
        assert_eq!(at_least(0.9, 21, 0.9), Side::Clears, "at the threshold passes, as before");
        assert_eq!(at_least(0.5, 0, 0.9), Side::Undecided, "no samples decide nothing");
    }
}

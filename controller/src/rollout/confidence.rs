//! How sure a counted gate is: the Wilson score interval of a fraction measured on `n` samples.
//!
//! The shadow gate compared the measured agreement with its floor, so a small sample decided as firmly as a
//! large one: a canary whose first 21 comparisons agreed 18 times (85.7 %) failed a 90 % gate although the
//! release agrees 97 % of the time. The agreement now carries its interval, and the gate fails only when
//! the whole interval is under the floor ([`Side::Worse`]); it passes, as before, when the agreement itself
//! reaches the floor (with the gate's sample minimum met); in between it is undecided and waits through the
//! bake, then passes (the planner: comparisons end when the candidate goes live, so waiting longer would
//! only pause a good rollout).
//!
//! The error-rate gate had the same flaw: a good release (0.2 % errors) was rolled back on 1 error in a
//! canary's first 39 requests (2.56 % against a 2.2 % limit). It judged each device's latest window, which
//! does not grow by waiting; it now judges each device's requests and errors summed since it was told
//! ([`super::view::Counted`]), which do, and the interval ([`at_most`]): it fails only when the whole
//! interval is over the limit, passes when the whole interval is under it, and otherwise waits. When the
//! bake is over an undecided rate passes if the figure itself is within the limit; over it, the wave holds
//! while requests add up (a fail once sure, a pause when the hold runs out: the operator decides). A device
//! whose install failed keeps the weight of a median device ([`super::per_device::ratio_with_stopped`]): in
//! the simulator's bad canary (one device of ten failing 30 % of its requests, rolled back by its own watch
//! after about 100 requests) the sum would otherwise thin its errors out while the nine healthy devices
//! bake, and the release would pass to the next wave.
//!
//! Wilson's interval rather than the normal approximation because agreements sit near 1 and error rates
//! near 0 on tens of samples, where the normal interval crosses the bound and is far too narrow.

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

/// Where a measured fraction stands against the gate's threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The agreement itself reaches the floor, or the whole interval of a rate is within its limit: the
    /// gate passes.
    Clears,
    /// The whole interval is on the wrong side: the gate fails.
    Worse,
    /// The interval still reaches the other side: more samples decide.
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

/// A fraction that must stay within `limit` (an error rate): sure under, sure over, or undecided.
pub fn at_most(fraction: f64, n: u64, limit: f64) -> Side {
    match wilson(fraction, n) {
        Some((_, high)) if high <= limit => Side::Clears,
        Some((low, _)) if low > limit => Side::Worse,
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

    #[test]
    fn an_error_rate_fails_only_when_sure_over_and_passes_only_when_sure_under() {
        // The good release rolled back before: 1 error in 39 requests against 2.2 % (0.5 % to 13.2 %).
        assert_eq!(at_most(1.0 / 39.0, 39, 0.022), Side::Undecided);
        // The same release summed over a bake: 2 errors in 1,000 (at most 0.7 %).
        assert_eq!(at_most(0.002, 1_000, 0.022), Side::Clears);
        // No error: sure under 2.2 % from 200 requests, not yet from 150.
        assert_eq!(at_most(0.0, 200, 0.022), Side::Clears);
        assert_eq!(at_most(0.0, 150, 0.022), Side::Undecided);
        // The bad canary: 2.84 % over one window of ten devices (599 requests) is not sure ...
        assert_eq!(at_most(0.0284, 599, 0.022), Side::Undecided);
        // ... 3.2 % over 1,800 summed requests is (2.5 % to 4.1 %).
        assert_eq!(at_most(0.0318, 1_800, 0.022), Side::Worse);
        assert_eq!(at_most(0.3, 100, 0.022), Side::Worse);
        assert_eq!(at_most(0.01, 0, 0.022), Side::Undecided, "no samples decide nothing");
    }
}

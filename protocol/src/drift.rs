//! The shared arithmetic of drift detection: how a value falls into a histogram bin and the population
//! stability index (PSI). Release tooling (reference profiles), agents (live windows) and the controller
//! (canary vs baseline gates) must bin and score identically, so it lives here.

/// Default number of even bins between `lo` and `hi` (plus one underflow and one overflow bin).
pub const DEFAULT_BINS: usize = 10;

/// Bin of `value` in a histogram with `n` even bins over `[lo, hi)`, an underflow bin 0 and an overflow
/// bin `n + 1`. NaN counts as overflow, so a model fed NaNs shows up as drift rather than vanishing.
pub fn bin_index(value: f32, lo: f32, hi: f32, n: usize) -> usize {
    if value.is_nan() || value >= hi {
        return n + 1;
    }
    if value < lo {
        return 0;
    }
    let width = (hi - lo) / n as f32;
    1 + (((value - lo) / width) as usize).min(n - 1)
}

/// PSI = Σ (a − e) · ln(a / e) over bins, with `expected` and `actual` as shares. Empty bins get a small
/// floor (1e-4) so one unseen bin does not make the index infinite. Rule of thumb: < 0.1 stable,
/// 0.1–0.25 moderate shift, > 0.25 significant shift.
pub fn psi(expected_shares: &[f32], actual_counts: &[u64]) -> Option<f32> {
    let total: u64 = actual_counts.iter().sum();
    if total == 0 || expected_shares.len() != actual_counts.len() {
        return None;
    }
    const FLOOR: f64 = 1e-4;
    let score = expected_shares
        .iter()
        .zip(actual_counts)
        .map(|(&e, &a)| {
            let e = f64::from(e).max(FLOOR);
            let a = (a as f64 / total as f64).max(FLOOR);
            (a - e) * (a / e).ln()
        })
        .sum::<f64>();
    Some(score as f32)
}

/// Counts → shares (summing to 1; all zero stays all zero).
pub fn shares(counts: &[u64]) -> Vec<f32> {
    let total: u64 = counts.iter().sum();
    counts.iter().map(|&c| if total == 0 { 0.0 } else { (c as f64 / total as f64) as f32 }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_fall_into_underflow_even_bins_and_overflow() {
        assert_eq!(bin_index(-0.1, 0.0, 1.0, 10), 0);
        assert_eq!(bin_index(0.0, 0.0, 1.0, 10), 1);
        assert_eq!(bin_index(0.55, 0.0, 1.0, 10), 6);
        assert_eq!(bin_index(0.9999, 0.0, 1.0, 10), 10);
        assert_eq!(bin_index(1.0, 0.0, 1.0, 10), 11);
        assert_eq!(bin_index(f32::NAN, 0.0, 1.0, 10), 11);
    }

    #[test]
    fn psi_is_zero_for_the_same_distribution_and_large_for_a_shifted_one() {
        let reference = shares(&[10, 20, 40, 20, 10]);
        assert!(psi(&reference, &[100, 200, 400, 200, 100]).unwrap().abs() < 1e-6);
        assert!(psi(&reference, &[400, 300, 200, 80, 20]).unwrap() > 0.25);
        assert_eq!(psi(&reference, &[0, 0, 0, 0, 0]), None);
        assert_eq!(psi(&reference, &[1, 2]), None);
    }
}

//! Shadow comparison: a candidate model runs beside the active one on sampled live requests, and the
//! agent reports how often they agree, how far apart their outputs get, and what the candidate costs.

use super::drift::top1;
use super::histogram::LatencyHistogram;
use outpost_protocol::Digest;
use outpost_protocol::Version;
use outpost_protocol::telemetry::ShadowStats;
use std::time::Duration;

/// Agreement between the active (primary) model and a candidate, between snapshots.
#[derive(Debug, Clone, Default)]
pub struct ShadowAccumulator {
    /// Calls to `record`; a window with none has nothing to report.
    requests: u64,
    /// Classifier rows compared by top-1 class, and those where both picked the same class.
    compared: u64,
    agreed_top1: u64,
    max_abs_diff: f32,
    latency: LatencyHistogram,
}

impl ShadowAccumulator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Compares one request's outputs. For classifiers (`classes = Some(c)`, `c ≥ 2`) each row of `c`
    /// values counts as one comparison, agreeing when the top-1 indices match. Outputs of different
    /// lengths are a structural disagreement: one disagreeing comparison and the largest finite
    /// difference, `f32::MAX` (the wire must stay finite for JSON).
    pub fn record(&mut self, primary: &[f32], candidate: &[f32], classes: Option<usize>, candidate_latency: Duration) {
        self.requests += 1;
        self.latency.record(candidate_latency);
        let classes = classes.filter(|&c| c >= 2);
        if primary.len() != candidate.len() {
            self.max_abs_diff = f32::MAX;
            if classes.is_some() {
                self.compared += 1;
            }
            return;
        }
        for (&p, &c) in primary.iter().zip(candidate) {
            self.max_abs_diff = self.max_abs_diff.max(abs_diff(p, c));
        }
        if let Some(c) = classes {
            for (p, k) in primary.chunks_exact(c).zip(candidate.chunks_exact(c)) {
                self.compared += 1;
                // A row without a top-1 (all NaN) on either side is a disagreement, not a skip: a
                // candidate that emits NaNs must not look better for it.
                if let (Some(a), Some(b)) = (top1(p), top1(k)) {
                    self.agreed_top1 += u64::from(a == b);
                }
            }
        }
    }

    /// Share of compared classifier rows where both models' top-1 agreed; `None` before any.
    pub fn agreement(&self) -> Option<f64> {
        (self.compared > 0).then(|| self.agreed_top1 as f64 / self.compared as f64)
    }

    /// Classifier rows compared so far in this window.
    pub fn compared(&self) -> u64 {
        self.compared
    }

    /// Largest element-wise difference between primary and candidate outputs so far.
    pub fn max_abs_diff(&self) -> f32 {
        self.max_abs_diff
    }

    /// Candidate latencies so far (for the Prometheus exporter).
    pub fn latency(&self) -> &LatencyHistogram {
        &self.latency
    }

    /// The window's statistics, then a fresh window. `None` when nothing was recorded. For a
    /// non-classifier `compared` and `agreed_top1` are 0 and `max_abs_diff` carries the comparison.
    pub fn snapshot(
        &mut self,
        candidate_version: Version,
        candidate_digest: Digest,
        candidate_mem_bytes: u64,
    ) -> Option<ShadowStats> {
        if self.requests == 0 {
            return None;
        }
        let stats = ShadowStats {
            candidate_version,
            candidate_digest,
            compared: self.compared,
            agreed_top1: self.agreed_top1,
            max_abs_diff: self.max_abs_diff,
            candidate_p95_us: self.latency.quantile_us(0.95),
            candidate_mem_bytes,
        };
        *self = Self::default();
        Some(stats)
    }
}

/// `|a - b|`, kept finite: equal values (including equal infinities) and two NaNs differ by 0; one NaN,
/// or a difference that overflows, counts as `f32::MAX` so a diverging candidate cannot hide.
fn abs_diff(a: f32, b: f32) -> f32 {
    if a == b || (a.is_nan() && b.is_nan()) {
        return 0.0;
    }
    let d = (a - b).abs();
    if d.is_finite() { d } else { f32::MAX }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn snapshot(acc: &mut ShadowAccumulator) -> Option<ShadowStats> {
        acc.snapshot(Version::new(1, 1, 0), Digest([7; 32]), 4096)
    }

    #[test]
    fn classifier_rows_count_as_compared_and_agree_by_top1() {
        let mut acc = ShadowAccumulator::new();
        let primary = [0.9, 0.1, 0.2, 0.8, 0.6, 0.4];
        let candidate = [0.7, 0.3, 0.6, 0.4, 0.55, 0.45];
        acc.record(&primary, &candidate, Some(2), MS);
        assert_eq!(acc.agreement(), Some(2.0 / 3.0));
        let stats = snapshot(&mut acc).unwrap();
        assert_eq!((stats.compared, stats.agreed_top1), (3, 2));
        assert!((stats.max_abs_diff - 0.4).abs() < 1e-6);
        assert_eq!((stats.candidate_version, stats.candidate_digest), (Version::new(1, 1, 0), Digest([7; 32])));
        assert_eq!(stats.candidate_mem_bytes, 4096);
    }

    #[test]
    fn nothing_recorded_means_no_agreement_and_no_snapshot() {
        let mut acc = ShadowAccumulator::new();
        assert_eq!(acc.agreement(), None);
        assert_eq!(snapshot(&mut acc), None);
    }

    #[test]
    fn snapshot_starts_a_fresh_window() {
        let mut acc = ShadowAccumulator::new();
        acc.record(&[1.0, 0.0], &[1.0, 0.0], Some(2), MS);
        assert!(snapshot(&mut acc).is_some());
        assert_eq!(acc.agreement(), None);
        assert_eq!(acc.latency().count(), 0);
        assert_eq!(snapshot(&mut acc), None);
    }

    #[test]
    fn different_output_lengths_are_a_disagreement_with_the_largest_finite_difference() {
        let mut acc = ShadowAccumulator::new();
        acc.record(&[1.0, 0.0], &[1.0, 0.0, 0.0, 1.0], Some(2), MS);
        assert_eq!(acc.agreement(), Some(0.0));
        assert_eq!(snapshot(&mut acc).unwrap().max_abs_diff, f32::MAX);
    }

    #[test]
    fn non_classifiers_report_only_the_difference_and_latency() {
        let mut acc = ShadowAccumulator::new();
        acc.record(&[1.0, 2.0], &[1.5, 2.0], None, Duration::from_micros(2_000));
        acc.record(&[1.0], &[1.25], Some(1), Duration::from_micros(2_000));
        assert_eq!(acc.agreement(), None);
        let stats = snapshot(&mut acc).unwrap();
        assert_eq!((stats.compared, stats.agreed_top1, stats.max_abs_diff), (0, 0, 0.5));
        assert_eq!(stats.candidate_p95_us, 2_425);
    }

    #[test]
    fn a_candidate_emitting_nan_disagrees_and_shows_the_largest_difference() {
        let mut acc = ShadowAccumulator::new();
        acc.record(&[0.9, 0.1], &[f32::NAN, f32::NAN], Some(2), MS);
        assert_eq!(acc.agreement(), Some(0.0));
        assert_eq!(snapshot(&mut acc).unwrap().max_abs_diff, f32::MAX);
    }

    #[test]
    fn equal_infinities_and_paired_nans_do_not_count_as_differences() {
        assert_eq!(abs_diff(f32::INFINITY, f32::INFINITY), 0.0);
        assert_eq!(abs_diff(f32::NAN, f32::NAN), 0.0);
        assert_eq!(abs_diff(f32::INFINITY, 0.0), f32::MAX);
        assert_eq!(abs_diff(-1.0, 1.0), 2.0);
    }
}

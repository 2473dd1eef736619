//! Shadow comparison: a candidate model runs beside the active one on sampled live requests, and the
//! agent reports how often they agree, how far apart their outputs get, and what the candidate costs.

use super::classes;
use super::drift::top1;
use super::histogram::LatencyHistogram;
use outpost_models::TensorData;
use outpost_protocol::Digest;
use outpost_protocol::Version;
use outpost_protocol::telemetry::ShadowStats;
use std::time::Duration;

/// One output as the runtime returns it: values (rows back to back) and the shape of one row.
pub type Output = (TensorData, Vec<usize>);

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

    /// Compares one request's outputs: each output's values (rows back to back, in its own type) and its
    /// per-row shape, as the runtime returns them. A row agrees when every integer or boolean output is
    /// exactly equal on it and every float classifier output (`[C]` or `[1, C]` per row, C ≥ 2) picks the
    /// same top-1 class; other float outputs (regressions, boxes) only move `max_abs_diff`, so a model with
    /// neither kind compares no rows. Outputs of different types, shapes or lengths are a structural
    /// disagreement: every row disagrees and the difference is the largest finite one, `f32::MAX` (the wire
    /// must stay finite for JSON).
    pub fn record(&mut self, primary: &[Output], candidate: &[Output], candidate_latency: Duration) {
        self.requests += 1;
        self.latency.record(candidate_latency);
        let judged = primary.iter().any(|(data, shape)| !data.dtype().is_float() || classes(shape).is_some());
        let rows = primary.first().map_or(0, |(data, shape)| data.len() / shape.iter().product::<usize>().max(1));
        let structural = primary.len() != candidate.len()
            || primary
                .iter()
                .zip(candidate)
                .any(|((p, ps), (c, cs))| p.dtype() != c.dtype() || p.len() != c.len() || ps != cs);
        if structural {
            self.max_abs_diff = f32::MAX;
            if judged {
                self.compared += rows.max(1) as u64;
            }
            return;
        }
        let mut agree = vec![true; rows];
        for ((p, shape), (c, _)) in primary.iter().zip(candidate) {
            for i in 0..p.len() {
                self.max_abs_diff = self.max_abs_diff.max(abs_diff(p.get_f64(i), c.get_f64(i)));
            }
            let per = shape.iter().product::<usize>().max(1);
            if !p.dtype().is_float() {
                for (r, ok) in agree.iter_mut().enumerate() {
                    *ok &= (r * per..(r + 1) * per).all(|i| p.same_at(c, i));
                }
            } else if let Some(n) = classes(shape) {
                let (p, c) = (p.sample_f32(usize::MAX), c.sample_f32(usize::MAX));
                for ((ok, pr), cr) in agree.iter_mut().zip(p.chunks_exact(n)).zip(c.chunks_exact(n)) {
                    // A row without a top-1 (all NaN) on either side is a disagreement, not a skip: a
                    // candidate that emits NaNs must not look better for it.
                    *ok &= matches!((top1(pr), top1(cr)), (Some(a), Some(b)) if a == b);
                }
            }
        }
        if judged {
            self.compared += rows as u64;
            self.agreed_top1 += agree.iter().filter(|&&ok| ok).count() as u64;
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

/// `|a - b|` as f32, kept finite: equal values (including equal infinities) and two NaNs differ by 0; one
/// NaN, or a difference beyond f32, counts as `f32::MAX` so a diverging candidate cannot hide.
fn abs_diff(a: Option<f64>, b: Option<f64>) -> f32 {
    let (a, b) = (a.unwrap_or(f64::NAN), b.unwrap_or(f64::NAN));
    if a == b || (a.is_nan() && b.is_nan()) {
        return 0.0;
    }
    let d = (a - b).abs() as f32;
    if d.is_finite() { d } else { f32::MAX }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn snapshot(acc: &mut ShadowAccumulator) -> Option<ShadowStats> {
        acc.snapshot(Version::new(1, 1, 0), Digest([7; 32]), 4096)
    }

    /// One FP32 output of rows shaped `row`.
    fn f32s(values: &[f32], row: &[usize]) -> Vec<Output> {
        vec![(TensorData::F32(values.to_vec()), row.to_vec())]
    }

    #[test]
    fn classifier_rows_count_as_compared_and_agree_by_top1() {
        let mut acc = ShadowAccumulator::new();
        let primary = f32s(&[0.9, 0.1, 0.2, 0.8, 0.6, 0.4], &[2]);
        let candidate = f32s(&[0.7, 0.3, 0.6, 0.4, 0.55, 0.45], &[2]);
        acc.record(&primary, &candidate, MS);
        assert_eq!(acc.agreement(), Some(2.0 / 3.0));
        let stats = snapshot(&mut acc).unwrap();
        assert_eq!((stats.compared, stats.agreed_top1), (3, 2));
        assert!((stats.max_abs_diff - 0.4).abs() < 1e-6);
        assert_eq!((stats.candidate_version, stats.candidate_digest), (Version::new(1, 1, 0), Digest([7; 32])));
        assert_eq!(stats.candidate_mem_bytes, 4096);
    }

    #[test]
    fn a_fixed_batch_classifier_row_of_one_by_c_is_a_classifier_too() {
        let mut acc = ShadowAccumulator::new();
        acc.record(&f32s(&[0.1, 0.7, 0.2], &[1, 3]), &f32s(&[0.2, 0.6, 0.2], &[1, 3]), MS);
        assert_eq!(acc.agreement(), Some(1.0));
    }

    #[test]
    fn integer_outputs_agree_only_when_every_value_of_the_row_is_equal() {
        let mut acc = ShadowAccumulator::new();
        // Class ids beyond 2^53 differ by one: f64 could not tell them apart, the comparison must.
        let big = (1i64 << 53) + 1;
        let primary = vec![(TensorData::I64(vec![3, 4, big, 7]), vec![2])];
        let candidate = vec![(TensorData::I64(vec![3, 4, big - 1, 7]), vec![2])];
        acc.record(&primary, &candidate, MS);
        assert_eq!(acc.agreement(), Some(0.5));
        let mut acc = ShadowAccumulator::new();
        let flags = |v: Vec<bool>| vec![(TensorData::Bool(v), vec![])];
        acc.record(&flags(vec![true, false, true]), &flags(vec![true, true, true]), MS);
        assert_eq!((acc.compared(), acc.agreement()), (3, Some(2.0 / 3.0)));
    }

    #[test]
    fn a_row_agrees_only_when_its_integer_and_classifier_outputs_all_agree() {
        let mut acc = ShadowAccumulator::new();
        // Two rows: boxes (float, not a classifier) never decide; class ids and scores do.
        let out = |boxes: [f32; 8], ids: [i64; 2], scores: [f32; 4]| {
            vec![
                (TensorData::F32(boxes.to_vec()), vec![4]),
                (TensorData::I64(ids.to_vec()), vec![]),
                (TensorData::F32(scores.to_vec()), vec![2]),
            ]
        };
        let primary = out([0.0; 8], [1, 2], [0.9, 0.1, 0.2, 0.8]);
        let candidate = out([0.5; 8], [1, 2], [0.8, 0.2, 0.7, 0.3]);
        acc.record(&primary, &candidate, MS);
        let stats = snapshot(&mut acc).unwrap();
        assert_eq!((stats.compared, stats.agreed_top1, stats.max_abs_diff), (2, 1, 0.5));
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
        acc.record(&f32s(&[1.0, 0.0], &[2]), &f32s(&[1.0, 0.0], &[2]), MS);
        assert!(snapshot(&mut acc).is_some());
        assert_eq!(acc.agreement(), None);
        assert_eq!(acc.latency().count(), 0);
        assert_eq!(snapshot(&mut acc), None);
    }

    #[test]
    fn different_output_lengths_or_types_are_a_disagreement_with_the_largest_finite_difference() {
        let mut acc = ShadowAccumulator::new();
        acc.record(&f32s(&[1.0, 0.0], &[2]), &f32s(&[1.0, 0.0, 0.0, 1.0], &[2]), MS);
        assert_eq!(acc.agreement(), Some(0.0));
        assert_eq!(snapshot(&mut acc).unwrap().max_abs_diff, f32::MAX);
        let as_i32 = vec![(TensorData::I32(vec![1, 0]), vec![2])];
        acc.record(&f32s(&[1.0, 0.0], &[2]), &as_i32, MS);
        assert_eq!(acc.agreement(), Some(0.0));
    }

    #[test]
    fn non_classifiers_report_only_the_difference_and_latency() {
        let mut acc = ShadowAccumulator::new();
        acc.record(&f32s(&[1.0, 2.0], &[]), &f32s(&[1.5, 2.0], &[]), Duration::from_micros(2_000));
        acc.record(&f32s(&[1.0], &[1]), &f32s(&[1.25], &[1]), Duration::from_micros(2_000));
        assert_eq!(acc.agreement(), None);
        let stats = snapshot(&mut acc).unwrap();
        assert_eq!((stats.compared, stats.agreed_top1, stats.max_abs_diff), (0, 0, 0.5));
        assert_eq!(stats.candidate_p95_us, 2_425);
    }

    #[test]
    fn a_candidate_emitting_nan_disagrees_and_shows_the_largest_difference() {
        let mut acc = ShadowAccumulator::new();
        acc.record(&f32s(&[0.9, 0.1], &[2]), &f32s(&[f32::NAN, f32::NAN], &[2]), MS);
        assert_eq!(acc.agreement(), Some(0.0));
        assert_eq!(snapshot(&mut acc).unwrap().max_abs_diff, f32::MAX);
    }

    #[test]
    fn equal_infinities_and_paired_nans_do_not_count_as_differences() {
        let d = |a: f64, b: f64| abs_diff(Some(a), Some(b));
        assert_eq!(d(f64::INFINITY, f64::INFINITY), 0.0);
        assert_eq!(d(f64::NAN, f64::NAN), 0.0);
        assert_eq!(d(f64::INFINITY, 0.0), f32::MAX);
        assert_eq!(d(-1.0, 1.0), 2.0);
        assert_eq!(d(1e300, -1e300), f32::MAX);
    }
}

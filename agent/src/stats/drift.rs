//! Drift of one model version's live traffic: per input tensor moments and histogram, and how often each
//! output class wins, scored with PSI against the manifest's reference profile.

use outpost_models::TensorData;
use outpost_protocol::drift::{bin_index, psi};
use outpost_protocol::manifest::ReferenceProfile;
use outpost_protocol::telemetry::FeatureStats;

/// What one window of traffic looked like, in the shape `InferenceWindow` carries.
#[derive(Debug, Clone, PartialEq)]
pub struct DriftSnapshot {
    pub features: Vec<FeatureStats>,
    pub output_classes: Vec<u64>,
    pub class_psi: Option<f32>,
}

/// Accumulates drift statistics between snapshots; configured once per loaded model version.
#[derive(Debug, Clone)]
pub struct DriftAccumulator {
    features: Vec<Feature>,
    /// Reference shares of top-1 classes; empty when the profile has none (or there is no profile).
    reference_classes: Vec<f32>,
    /// Sized on the first classifier output, so non-classifiers report an empty list as the wire expects.
    output_classes: Vec<u64>,
}

#[derive(Debug, Clone)]
struct Feature {
    tensor: String,
    lo: f32,
    hi: f32,
    n: usize,
    reference_shares: Option<Vec<f32>>,
    /// Every element seen, including non-finite ones (equals the sum of `bins`).
    count: u64,
    /// Welford state over the finite elements only.
    finite: u64,
    mean: f64,
    m2: f64,
    bins: Vec<u64>,
}

impl Feature {
    fn new(tensor: &str, reference: Option<&ReferenceProfile>, default_lo: f32, default_hi: f32, bins: usize) -> Self {
        let profile = reference.and_then(|r| r.inputs.iter().find(|t| t.tensor == tensor));
        // A profile with fewer than 3 shares has no even bins, and `bin_index` needs at least one; the
        // manifest is signed, but a bad release should cost its PSI, not crash the agent.
        let usable = profile.filter(|p| p.shares.len() >= 3 && p.lo < p.hi);
        let (lo, hi, n, reference_shares) = match usable {
            Some(p) => (p.lo, p.hi, p.shares.len() - 2, Some(p.shares.clone())),
            None => (default_lo, default_hi, bins.max(1), None),
        };
        Feature {
            tensor: tensor.to_owned(),
            lo,
            hi,
            n,
            reference_shares,
            count: 0,
            finite: 0,
            mean: 0.0,
            m2: 0.0,
            bins: vec![0; n + 2],
        }
    }

    fn observe(&mut self, values: &[f32]) {
        // One NaN or infinity would turn the window's mean and variance into NaN; the histogram already
        // shows it (overflow or underflow bin), so the moments describe the finite values.
        let (mut n, mut sum) = (0u64, 0f64);
        for &v in values {
            self.bins[bin_index(v, self.lo, self.hi, self.n)] += 1;
            if v.is_finite() {
                n += 1;
                sum += f64::from(v);
            }
        }
        self.count += values.len() as u64;
        if n == 0 {
            return;
        }
        // The call's own mean and squared deviations, merged into the window's (Chan et al.): one division
        // per call instead of one per value, which was half of a small model's per-request overhead.
        let batch_mean = sum / n as f64;
        let batch_m2: f64 = values.iter().filter(|v| v.is_finite()).map(|&v| (f64::from(v) - batch_mean).powi(2)).sum();
        let total = self.finite + n;
        let delta = batch_mean - self.mean;
        self.mean += delta * n as f64 / total as f64;
        self.m2 += batch_m2 + delta * delta * (self.finite as f64 * n as f64 / total as f64);
        self.finite = total;
    }

    fn take(&mut self) -> FeatureStats {
        let variance = if self.finite == 0 { 0.0 } else { self.m2 / self.finite as f64 };
        let stats = FeatureStats {
            tensor: self.tensor.clone(),
            count: self.count,
            mean: self.mean,
            variance,
            lo: self.lo,
            hi: self.hi,
            psi: self.reference_shares.as_deref().and_then(|shares| psi(shares, &self.bins)),
            bins: self.bins.clone(),
        };
        self.count = 0;
        self.finite = 0;
        self.mean = 0.0;
        self.m2 = 0.0;
        self.bins.iter_mut().for_each(|b| *b = 0);
        stats
    }
}

impl DriftAccumulator {
    /// One histogram per name in `input_names` (the model's inputs, in order). A tensor the reference
    /// profiles is binned with the profile's `lo`/`hi`/bin count so PSI compares like with like; any other
    /// with `bins` even bins over `[default_lo, default_hi)` and no PSI.
    pub fn new(
        reference: Option<&ReferenceProfile>,
        input_names: &[String],
        default_lo: f32,
        default_hi: f32,
        bins: usize,
    ) -> Self {
        DriftAccumulator {
            features: input_names
                .iter()
                .map(|name| Feature::new(name, reference, default_lo, default_hi, bins))
                .collect(),
            reference_classes: reference.map(|r| r.output_classes.clone()).unwrap_or_default(),
            output_classes: Vec::new(),
        }
    }

    /// Adds every element of input `tensor_index`. An index past the configured inputs is ignored: the
    /// runtime has already validated the request, and statistics must never fail a request.
    pub fn observe_input(&mut self, tensor_index: usize, values: &[f32]) {
        if let Some(feature) = self.features.get_mut(tensor_index) {
            feature.observe(values);
        }
    }

    /// Bins input `tensor_index`'s values of any type (booleans as 0 and 1, integers as numbers, as release
    /// tooling binned the reference), at most `max` of them spread evenly over the tensor: an image's 150k
    /// pixels cost 2 ms to bin, a sample of 4096 30 µs (BENCHMARKS.md), and a histogram's shares barely move.
    pub fn observe_tensor(&mut self, tensor_index: usize, data: &TensorData, max: usize) {
        match data.as_f32() {
            Some(values) if values.len() <= max => self.observe_input(tensor_index, values),
            _ => self.observe_input(tensor_index, &data.sample_f32(max)),
        }
    }

    /// Counts top-1 classes when the first output (values, per-row shape) is a float classifier, the output
    /// release tooling profiles; integer and other outputs have no class mix.
    pub fn observe_outputs(&mut self, outputs: &[(TensorData, Vec<usize>)]) {
        if let Some((data, row_shape)) = outputs.first()
            && data.dtype().is_float()
            && let Some(classes) = super::classes(row_shape)
        {
            match data.as_f32() {
                Some(logits) => self.observe_output(logits, classes),
                None => self.observe_output(&data.sample_f32(usize::MAX), classes),
            }
        }
    }

    /// Counts the top-1 class of each row of `classes` logits (a trailing partial row is ignored). Not a
    /// classifier when `classes < 2`; rows that are all NaN have no top-1 and are skipped.
    pub fn observe_output(&mut self, logits: &[f32], classes: usize) {
        if classes < 2 {
            return;
        }
        if self.output_classes.len() < classes {
            self.output_classes.resize(classes, 0);
        }
        for row in logits.chunks_exact(classes) {
            if let Some(class) = top1(row) {
                self.output_classes[class] += 1;
            }
        }
    }

    /// The window so far, then zeroed counters (bins, ranges and reference stay).
    pub fn snapshot(&mut self) -> DriftSnapshot {
        let class_psi =
            if self.reference_classes.is_empty() { None } else { psi(&self.reference_classes, &self.output_classes) };
        let output_classes = self.output_classes.clone();
        self.output_classes.iter_mut().for_each(|c| *c = 0);
        DriftSnapshot { features: self.features.iter_mut().map(Feature::take).collect(), output_classes, class_psi }
    }
}

/// Index of the largest value, the first on ties (as `argmax` in numpy and torch); NaNs never win, and a
/// row of only NaNs has no answer.
pub fn top1(row: &[f32]) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in row.iter().enumerate() {
        if !v.is_nan() && best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_protocol::drift::shares;
    use outpost_protocol::manifest::TensorProfile;

    /// Deterministic values, roughly normal around `mean` (sum of uniforms), for reproducible PSI.
    fn sample(seed: u64, len: usize, mean: f32) -> Vec<f32> {
        let mut state = seed;
        let mut uniform = move || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 40) as f32 / (1u64 << 24) as f32
        };
        (0..len).map(|_| mean + (uniform() + uniform() + uniform() - 1.5) * 0.2).collect()
    }

    fn reference_for(values: &[f32], lo: f32, hi: f32, n: usize) -> ReferenceProfile {
        let mut counts = vec![0u64; n + 2];
        values.iter().for_each(|&v| counts[bin_index(v, lo, hi, n)] += 1);
        ReferenceProfile {
            inputs: vec![TensorProfile { tensor: "x".into(), lo, hi, shares: shares(&counts), mean: 0.5, std: 0.1 }],
            output_classes: vec![0.5, 0.25, 0.25],
            samples: values.len() as u64,
        }
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn same_distribution_scores_low_psi_and_a_shifted_one_high() {
        let reference = reference_for(&sample(1, 20_000, 0.5), 0.0, 1.0, 10);
        let mut acc = DriftAccumulator::new(Some(&reference), &names(&["x"]), -5.0, 5.0, 4);
        acc.observe_input(0, &sample(2, 5_000, 0.5));
        let same = acc.snapshot().features[0].psi.unwrap();
        assert!(same < 0.1, "psi {same}");
        acc.observe_input(0, &sample(3, 5_000, 0.7));
        let shifted = acc.snapshot().features[0].psi.unwrap();
        assert!(shifted > 0.25, "psi {shifted}");
    }

    #[test]
    fn referenced_tensors_use_the_profile_bins_and_others_the_defaults() {
        let reference = reference_for(&[0.5], 0.0, 1.0, 10);
        let mut acc = DriftAccumulator::new(Some(&reference), &names(&["x", "y"]), -5.0, 5.0, 4);
        acc.observe_input(1, &[0.0]);
        let snap = acc.snapshot();
        assert_eq!((snap.features[0].lo, snap.features[0].hi, snap.features[0].bins.len()), (0.0, 1.0, 12));
        assert_eq!((snap.features[1].lo, snap.features[1].hi, snap.features[1].bins.len()), (-5.0, 5.0, 6));
        assert_eq!(snap.features[1].bins, [0, 0, 0, 1, 0, 0]);
        assert_eq!(snap.features[1].psi, None);
        // No traffic on the referenced tensor: nothing to score yet.
        assert_eq!(snap.features[0].psi, None);
    }

    #[test]
    fn mean_and_population_variance_match_a_direct_computation() {
        let a = sample(7, 1_000, 3.0);
        let b = sample(8, 333, -1.0);
        let mut acc = DriftAccumulator::new(None, &names(&["x"]), 0.0, 1.0, 10);
        acc.observe_input(0, &a);
        acc.observe_input(0, &b);
        let all: Vec<f64> = a.iter().chain(&b).map(|&v| f64::from(v)).collect();
        let mean = all.iter().sum::<f64>() / all.len() as f64;
        let variance = all.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / all.len() as f64;
        let stats = &acc.snapshot().features[0];
        assert_eq!(stats.count, 1_333);
        assert!((stats.mean - mean).abs() < 1e-9, "{} vs {mean}", stats.mean);
        assert!((stats.variance - variance).abs() < 1e-9, "{} vs {variance}", stats.variance);
    }

    #[test]
    fn nan_goes_to_the_overflow_bin_and_stays_out_of_the_moments() {
        let mut acc = DriftAccumulator::new(None, &names(&["x"]), 0.0, 1.0, 2);
        acc.observe_input(0, &[f32::NAN, 0.25, 0.75]);
        let stats = &acc.snapshot().features[0];
        assert_eq!(stats.bins, [0, 1, 1, 1]);
        assert_eq!(stats.count, 3);
        assert_eq!(stats.mean, 0.5);
        assert_eq!(stats.variance, 0.0625);
    }

    #[test]
    fn snapshot_resets_the_counters_but_keeps_the_configuration() {
        let reference = reference_for(&[0.5], 0.0, 1.0, 10);
        let mut acc = DriftAccumulator::new(Some(&reference), &names(&["x"]), 0.0, 1.0, 2);
        acc.observe_input(0, &[0.5, 0.6]);
        acc.observe_output(&[0.0, 1.0, 0.0], 3);
        acc.snapshot();
        let empty = acc.snapshot();
        assert_eq!(empty.features[0].count, 0);
        assert_eq!(empty.features[0].bins, vec![0; 12]);
        assert_eq!((empty.features[0].mean, empty.features[0].variance), (0.0, 0.0));
        assert_eq!(empty.output_classes, [0, 0, 0]);
        assert_eq!(empty.class_psi, None);
    }

    #[test]
    fn output_classes_count_the_top1_of_each_row_and_score_against_the_reference() {
        let reference = reference_for(&[0.5], 0.0, 1.0, 10);
        let mut acc = DriftAccumulator::new(Some(&reference), &names(&["x"]), 0.0, 1.0, 2);
        let rows = [9.0, 1.0, 0.0, 9.0, 1.0, 0.0, 0.0, 5.0, 1.0, 0.0, 1.0, 5.0, f32::NAN, f32::NAN, f32::NAN, 7.0];
        acc.observe_output(&rows, 3);
        acc.observe_output(&[1.0, 2.0], 1);
        let snap = acc.snapshot();
        assert_eq!(snap.output_classes, [2, 1, 1]);
        assert!(snap.class_psi.unwrap().abs() < 1e-6);
    }

    #[test]
    fn non_classifiers_report_no_output_classes() {
        let mut acc = DriftAccumulator::new(None, &names(&["x"]), 0.0, 1.0, 2);
        acc.observe_output(&[0.3, 0.7], 1);
        let snap = acc.snapshot();
        assert!(snap.output_classes.is_empty());
        assert_eq!(snap.class_psi, None);
    }

    #[test]
    fn top1_takes_the_first_maximum_and_ignores_nan() {
        assert_eq!(top1(&[1.0, 3.0, 3.0]), Some(1));
        assert_eq!(top1(&[f32::NAN, -1.0, -2.0]), Some(1));
        assert_eq!(top1(&[f32::NAN]), None);
        assert_eq!(top1(&[]), None);
    }
}

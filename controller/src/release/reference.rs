//! The reference profile a bundle carries for drift detection: input value histograms and the top-1
//! class mix of the model on the samples the release engineer supplied (`--selftest-input`).

use crate::model_probe::{Probe, ProbeError};
use outpost_protocol::drift::{DEFAULT_BINS, bin_index, shares};
use outpost_protocol::manifest::{ReferenceProfile, Tensor, TensorProfile};

/// Profiles `samples` (each of the model's single input, batch 1) and the model's answers to them.
pub fn profile(probe: &Probe, samples: &[Tensor]) -> Result<Option<ReferenceProfile>, ProbeError> {
    let Some(first) = samples.first() else { return Ok(None) };
    let values: Vec<f32> = samples.iter().flat_map(|s| s.data.iter().copied()).filter(|v| v.is_finite()).collect();
    let (mut lo, mut hi) = values.iter().fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
    if values.is_empty() {
        (lo, hi) = (0.0, 1.0);
    }
    if hi <= lo {
        hi = lo + 1.0;
    }
    // `hi` is exclusive: nudge it so the largest reference value lands in the last even bin.
    hi += (hi - lo) * 1e-4;
    let mut counts = vec![0u64; DEFAULT_BINS + 2];
    for s in samples {
        for &v in &s.data {
            counts[bin_index(v, lo, hi, DEFAULT_BINS)] += 1;
        }
    }
    let n = values.len().max(1) as f64;
    let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = values.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n;

    // One batched run over all samples for the output class mix.
    let mut batch_shape = first.shape.clone();
    batch_shape[0] = samples.len() as u64;
    let batch = Tensor {
        name: first.name.clone(),
        shape: batch_shape,
        data: samples.iter().flat_map(|s| s.data.iter().copied()).collect(),
    };
    let out = probe.run(&[batch])?.remove(0);
    let classes = match out.shape.as_slice() {
        [_, c] if *c >= 2 => *c as usize,
        _ => 0,
    };
    let mut class_counts = vec![0u64; classes];
    if classes > 0 {
        for row in out.data.chunks_exact(classes) {
            let top = row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i).unwrap_or(0);
            class_counts[top] += 1;
        }
    }
    Ok(Some(ReferenceProfile {
        inputs: vec![TensorProfile {
            tensor: first.name.clone(),
            lo,
            hi,
            shares: shares(&counts),
            mean,
            std: var.sqrt(),
        }],
        output_classes: shares(&class_counts),
        samples: samples.len() as u64,
    }))
}

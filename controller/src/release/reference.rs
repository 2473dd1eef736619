//! The reference profile a bundle carries for drift detection: each input's value histogram and the top-1
//! class mix of the model on the samples the release engineer supplied (`--selftest-input`). Values of
//! any type are binned as numbers (booleans as 0 and 1), exactly as devices bin live traffic.

use super::selftest::Sample;
use outpost_models::interface::Serving;
use outpost_models::onnx::Converted;
use outpost_models::{ModelError, TensorData};
use outpost_protocol::drift::{DEFAULT_BINS, bin_index, shares};
use outpost_protocol::manifest::{ReferenceProfile, TensorProfile};

/// Profiles `samples` (batch-1 inputs in the model's input order) and the model's answers to them.
pub fn profile(probe: &Converted, samples: &[Sample]) -> Result<Option<ReferenceProfile>, ModelError> {
    if samples.is_empty() {
        return Ok(None);
    }
    let inputs = probe
        .interface
        .inputs
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let values: Vec<f32> = samples.iter().flat_map(|s| s[i].1.sample_f32(usize::MAX)).collect();
            tensor_profile(&spec.name, &values)
        })
        .collect();
    Ok(Some(ReferenceProfile {
        inputs,
        output_classes: shares(&class_counts(probe, samples)?),
        samples: samples.len() as u64,
    }))
}

fn tensor_profile(name: &str, all: &[f32]) -> TensorProfile {
    let values: Vec<f32> = all.iter().copied().filter(|v| v.is_finite()).collect();
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
    for &v in all {
        counts[bin_index(v, lo, hi, DEFAULT_BINS)] += 1;
    }
    let n = values.len().max(1) as f64;
    let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = values.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n;
    TensorProfile { tensor: name.to_owned(), lo, hi, shares: shares(&counts), mean, std: var.sqrt() }
}

/// How often each class wins on the first output when it is a float classifier (`[N, C]` scores, C ≥ 2);
/// empty otherwise. One batched run when the model takes a batch, else one run per sample.
fn class_counts(probe: &Converted, samples: &[Sample]) -> Result<Vec<u64>, ModelError> {
    if !probe.interface.outputs.first().is_some_and(|o| o.dtype.is_float()) {
        return Ok(Vec::new());
    }
    let batchable = Serving::of(&probe.interface)?.batchable;
    let runs: Vec<Sample> = if batchable {
        let joined = (0..probe.interface.inputs.len())
            .map(|i| {
                let mut shape = samples[0][i].0.clone();
                shape[0] = samples.len();
                let mut data = TensorData::with_capacity(samples[0][i].1.dtype(), 0);
                for s in samples {
                    data.extend_from(&s[i].1).map_err(|e| ModelError::Run(e.to_string()))?;
                }
                Ok((shape, data))
            })
            .collect::<Result<_, ModelError>>()?;
        vec![joined]
    } else {
        samples.to_vec()
    };
    let mut counts = Vec::new();
    for run in runs {
        let (shape, scores) = probe.run(run)?.remove(0);
        let classes = match shape.as_slice() {
            [_, c] if *c >= 2 => *c,
            _ => return Ok(Vec::new()),
        };
        counts.resize(classes, 0u64);
        let scores = scores.sample_f32(usize::MAX);
        for row in scores.chunks_exact(classes) {
            let top = row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i).unwrap_or(0);
            counts[top] += 1;
        }
    }
    Ok(counts)
}

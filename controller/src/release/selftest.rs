//! Self-test vectors: inputs a device runs before it activates a model, with the outputs tract computed
//! here. Inputs come from a file of samples or from a seeded generator, so the same command always makes
//! the same bundle.

use super::ReleaseError;
use crate::model_probe::Probe;
use outpost_protocol::manifest::{DType, SelfTestVector, Tensor, Tolerance};

/// Where the inputs come from.
#[derive(Debug, Clone)]
pub enum Inputs {
    /// Raw little-endian f32 samples of the (single) input's shape with batch 1, back to back.
    File { bytes: Vec<u8>, path: String },
    /// Uniform values in [0, 1) from a fixed seed.
    Seeded,
}

pub fn make_vectors(probe: &Probe, inputs: &Inputs, count: usize) -> Result<Vec<SelfTestVector>, ReleaseError> {
    for spec in &probe.interface.inputs {
        if spec.dtype != DType::F32 {
            return Err(ReleaseError::Invalid(format!(
                "input {} is {}; self-test vectors support FP32 inputs only",
                spec.name,
                spec.dtype.as_str()
            )));
        }
    }
    let sets: Vec<Vec<Tensor>> = match inputs {
        Inputs::Seeded => (0..count).map(|v| seeded_inputs(probe, v as u64)).collect(),
        Inputs::File { bytes, path } => {
            file_samples(probe, bytes, path)?.into_iter().take(count).map(|t| vec![t]).collect()
        }
    };
    sets.into_iter()
        .map(|inputs| {
            let expected = probe.run(&inputs).map_err(|e| ReleaseError::Invalid(format!("self-test run: {e}")))?;
            Ok(SelfTestVector { inputs, expected, tolerance: Tolerance::default() })
        })
        .collect()
}

fn seeded_inputs(probe: &Probe, vector: u64) -> Vec<Tensor> {
    probe
        .interface
        .inputs
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let shape = probe.unit_shape(i);
            let n: u64 = shape.iter().product();
            // splitmix64: tiny, well-distributed, and the same on every platform.
            let mut state = (vector << 16 | i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let data = (0..n)
                .map(|_| {
                    state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                    let mut z = state;
                    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                    z ^= z >> 31;
                    (z >> 40) as f32 / (1u64 << 24) as f32
                })
                .collect();
            Tensor { name: spec.name.clone(), shape, data }
        })
        .collect()
}

/// Every sample in a `--selftest-input` file, as batch-1 tensors of the model's single input.
pub fn file_samples(probe: &Probe, bytes: &[u8], path: &str) -> Result<Vec<Tensor>, ReleaseError> {
    if probe.interface.inputs.len() != 1 {
        return Err(ReleaseError::Invalid(format!(
            "--selftest-input needs a single-input model; this one has {} inputs",
            probe.interface.inputs.len()
        )));
    }
    let shape = probe.unit_shape(0);
    let per = shape.iter().product::<u64>() as usize * 4;
    if bytes.is_empty() || !bytes.len().is_multiple_of(per) {
        return Err(ReleaseError::Invalid(format!(
            "{path}: {} bytes is not a whole number of {per}-byte f32 samples of shape {shape:?}",
            bytes.len()
        )));
    }
    Ok(bytes
        .chunks_exact(per)
        .map(|sample| {
            let data = sample.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect();
            Tensor { name: probe.interface.inputs[0].name.clone(), shape: shape.clone(), data }
        })
        .collect())
}

//! Runs a manifest's self-test vectors on a loaded model: the device-side proof, before a model serves,
//! that this CPU and this tract build reproduce what the release engineer saw.

use super::model::LoadedModel;
use outpost_protocol::manifest::{self, Tensor};

/// `Ok(n)` when all `n` vectors pass; `Err` names the first mismatch.
pub fn run(model: &LoadedModel) -> Result<usize, String> {
    let vectors = &model.manifest.selftest;
    for (v, vector) in vectors.iter().enumerate() {
        let rows = if model.batchable { vector.inputs.first().map(|t| t.shape[0] as usize).unwrap_or(1) } else { 1 };
        let mut inputs = Vec::new();
        for spec in &model.interface().inputs {
            let t = vector
                .inputs
                .iter()
                .find(|t| t.name == spec.name)
                .ok_or_else(|| format!("vector {v}: no value for input {}", spec.name))?;
            inputs.push(t.data.clone());
        }
        let outs = model.run(rows, &inputs).map_err(|e| format!("vector {v}: {e}"))?;
        for (want, (data, row_shape)) in vector.expected.iter().zip(outs) {
            let shape: Vec<u64> = if model.batchable {
                std::iter::once(rows as u64).chain(row_shape.iter().map(|&d| d as u64)).collect()
            } else {
                row_shape.iter().map(|&d| d as u64).collect()
            };
            let got = Tensor { name: want.name.clone(), shape, data };
            manifest::compare(&got, want, vector.tolerance).map_err(|e| format!("vector {v}: {e}"))?;
        }
    }
    Ok(vectors.len())
}

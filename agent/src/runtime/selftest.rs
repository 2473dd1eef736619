//! Runs a bundle's self-test vectors on a loaded model: the device-side proof, before a model serves,
//! that this CPU and this tract build reproduce what the release engineer saw (integers and booleans
//! exactly, floats within the vector's tolerance).

use super::model::LoadedModel;
use outpost_models::tensor;
use outpost_protocol::manifest::SelfTestVector;

/// `Ok(n)` when all `n` vectors pass; `Err` names the first mismatch.
pub fn run(model: &LoadedModel, vectors: &[SelfTestVector]) -> Result<usize, String> {
    let outputs = &model.interface().outputs;
    for (v, vector) in vectors.iter().enumerate() {
        let first = vector.inputs.first().and_then(|t| t.shape.first()).copied().unwrap_or(1);
        let rows = if model.batchable { usize::try_from(first).unwrap_or(usize::MAX) } else { 1 };
        let mut inputs = Vec::new();
        for (i, spec) in model.interface().inputs.iter().enumerate() {
            let t = vector
                .inputs
                .iter()
                .find(|t| t.name == spec.name)
                .ok_or_else(|| format!("vector {v}: no value for input {}", spec.name))?;
            // A vector whose shapes disagree with the model would make the run index out of bounds.
            let row = model.row_shape(i).iter().map(|&d| d as u64);
            let want: Vec<u64> =
                if model.batchable { std::iter::once(rows as u64).chain(row).collect() } else { row.collect() };
            if t.shape != want {
                return Err(format!("vector {v}: input {} has shape {:?}; the model takes {want:?}", t.name, t.shape));
            }
            if t.dtype != spec.dtype {
                return Err(format!("vector {v}: input {} is {}; the model takes {}", t.name, t.dtype, spec.dtype));
            }
            inputs.push(tensor::from_manifest(t).map_err(|e| format!("vector {v}: input {}: {e}", t.name))?);
        }
        if vector.expected.len() != outputs.len() {
            return Err(format!(
                "vector {v} expects {} output(s); the model has {}",
                vector.expected.len(),
                outputs.len()
            ));
        }
        let outs = model.run(rows, &inputs).map_err(|e| format!("vector {v}: {e}"))?;
        for (want, (data, row_shape)) in vector.expected.iter().zip(outs) {
            let shape: Vec<usize> =
                if model.batchable { std::iter::once(rows).chain(row_shape).collect() } else { row_shape };
            tensor::compare(&data, &shape, want, vector.tolerance).map_err(|e| format!("vector {v}: {e}"))?;
        }
    }
    Ok(vectors.len())
}

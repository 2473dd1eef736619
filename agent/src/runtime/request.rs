//! Checking a request against the model (names, types, shapes, rows, index values), and the cache key over
//! its exact input bytes.

use super::model::LoadedModel;
use super::{InferError, InferRequest, InputTensor};
use outpost_protocol::digest::Hasher;

/// Checks names, datatypes, shapes and index values against the model; returns the row count and, for
/// each of the model's inputs in order, the index of the request tensor that feeds it. Every size comes
/// from the request, so every product is checked (a batch of 2^58+1 rows of 64 values would wrap to 64),
/// rows are capped at `max_rows`, and a token id outside its embedding table is refused here, by name,
/// before tract would index with it.
pub(super) fn validate(
    model: &LoadedModel,
    req: &InferRequest,
    max_rows: usize,
) -> Result<(usize, Vec<usize>), InferError> {
    let specs = &model.interface().inputs;
    if req.inputs.len() != specs.len() {
        return Err(InferError::BadRequest(format!(
            "model {} takes {} input(s), the request has {}",
            model.name(),
            specs.len(),
            req.inputs.len()
        )));
    }
    let mut rows = None;
    let mut ordered = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        let index = req.inputs.iter().position(|t| t.name == spec.name).ok_or_else(|| {
            // Names NNEF cannot spell are served under its spelling ("gpu_0/data_0" as "gpu_0_data_0"):
            // a client that sends the ONNX name learns the one to send.
            let sent: Vec<String> = req.inputs.iter().map(|t| format!("{:?}", t.name)).collect();
            InferError::BadRequest(format!("missing input {:?} (the request has {})", spec.name, sent.join(", ")))
        })?;
        let t = &req.inputs[index];
        if t.data.dtype() != spec.dtype {
            return Err(InferError::BadRequest(format!(
                "input {:?} has datatype {}; the model takes {}",
                t.name,
                t.data.dtype(),
                spec.dtype
            )));
        }
        let row_shape = model.row_shape(i);
        let (n, rest) = if model.batchable {
            match t.shape.split_first() {
                Some((n, rest)) => (*n, rest),
                None => (0, &[][..]),
            }
        } else {
            (1, &t.shape[..])
        };
        if n == 0 || rest != row_shape {
            let want =
                if model.batchable { format!("[N,{}]", join(row_shape)) } else { format!("[{}]", join(row_shape)) };
            return Err(InferError::BadRequest(format!(
                "input {:?} has shape [{}]; the model takes {want}",
                t.name,
                join(&t.shape)
            )));
        }
        if n > max_rows {
            return Err(InferError::BadRequest(format!(
                "input {:?} has {n} rows; this agent takes at most {max_rows} per request (inference.max_rows)",
                t.name
            )));
        }
        let expected = n.checked_mul(model.row_len(i)).ok_or_else(|| {
            InferError::BadRequest(format!("input {:?} has shape [{}]: too many values", t.name, join(&t.shape)))
        })?;
        if t.data.len() != expected {
            return Err(InferError::BadRequest(format!(
                "input {:?} has {} values; shape [{}] needs {expected}",
                t.name,
                t.data.len(),
                join(&t.shape)
            )));
        }
        if *rows.get_or_insert(n) != n {
            return Err(InferError::BadRequest("inputs disagree on the batch size".into()));
        }
        model.check_index(i, &t.data).map_err(|e| InferError::BadRequest(e.to_string()))?;
        ordered.push(index);
    }
    if let Some(wanted) = &req.outputs {
        for name in wanted {
            if !model.interface().outputs.iter().any(|o| &o.name == name) {
                return Err(InferError::BadRequest(format!("the model has no output {name:?}")));
            }
        }
    }
    Ok((rows.unwrap_or(1), ordered))
}

fn join(dims: &[usize]) -> String {
    dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(",")
}

/// SHA-256 over every input's name, shape, type and exact little-endian bytes: the cache key's input half.
pub(super) fn input_hash(inputs: &[InputTensor]) -> [u8; 32] {
    let mut h = Hasher::default();
    for t in inputs {
        h.update(&(t.name.len() as u64).to_le_bytes());
        h.update(t.name.as_bytes());
        h.update(&(t.shape.len() as u64).to_le_bytes());
        for d in &t.shape {
            h.update(&(*d as u64).to_le_bytes());
        }
        // The same bytes as INT32 and as FP32 are different requests.
        let dtype = t.data.dtype().as_str();
        h.update(&[dtype.len() as u8]);
        h.update(dtype.as_bytes());
        t.data.for_each_le_chunk(|bytes| h.update(bytes));
    }
    h.finish().0
}

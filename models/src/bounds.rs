//! Index inputs: a model input that feeds, directly or through casts and reshapes, the indices of a
//! `Gather` (an embedding lookup of token ids, say) must hold values within the gathered axis. tract
//! indexes without checking there, so an out-of-range id panics inside the run; device builds abort on
//! panic (`panic = "abort"`), so one hostile request would take the agent down. The bounds are read from the
//! graph once per load and every request is checked against them before it runs.

use crate::{ModelError, TensorData};
use tract_nnef::internal::*;
use tract_nnef::tract_core::ops::array::Gather;
use tract_nnef::tract_core::ops::cast::Cast;
use tract_nnef::tract_core::ops::change_axes::AxisOp;

/// Values of an index input must lie in `[-len, len)` (negative ones count from the end, as in ONNX).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexBound {
    pub len: i64,
}

/// Per model input (in input order), the tightest bound of the gathers it indexes, or `None`.
pub fn index_bounds(model: &TypedModel) -> Result<Vec<Option<IndexBound>>, ModelError> {
    let load = |e: TractError| ModelError::Load(format!("{e:#}"));
    let inputs = model.input_outlets().map_err(load)?.to_vec();
    inputs.into_iter().map(|outlet| bound_of(model, outlet).map_err(load)).collect()
}

fn bound_of(model: &TypedModel, input: OutletId) -> TractResult<Option<IndexBound>> {
    let mut bound: Option<i64> = None;
    let mut todo = vec![input];
    let mut seen = std::collections::HashSet::new();
    while let Some(outlet) = todo.pop() {
        if !seen.insert(outlet) {
            continue;
        }
        for inlet in model.outlet_successors(outlet) {
            let node = model.node(inlet.node);
            if let Some(gather) = node.op_as::<Gather>() {
                if inlet.slot == 1 {
                    let data = model.outlet_fact(node.inputs[0])?;
                    // A symbolic axis length cannot be checked here; the run's own error covers it.
                    if let Some(len) = data.shape.get(gather.axis).and_then(|d| d.to_i64().ok()) {
                        bound = Some(bound.map_or(len, |b| b.min(len)));
                    }
                }
            } else if node.op_is::<Cast>() || node.op_is::<AxisOp>() {
                // Values pass through unchanged (or narrowed, which the check on the original values
                // over-approximates): follow them.
                todo.extend((0..node.outputs.len()).map(|slot| OutletId::new(node.id, slot)));
            }
        }
    }
    Ok(bound.map(|len| IndexBound { len }))
}

/// Checks an index input's values against its bound; the error names the input, the first value out of
/// range and where it is. Floats count by their integer part (a model may cast them to indices); a NaN is
/// out of range. Any integer that f64 cannot hold exactly is far beyond every table, so f64 decides right.
pub fn check(name: &str, bound: IndexBound, data: &TensorData) -> Result<(), ModelError> {
    let len = bound.len as f64;
    let outside = |v: f64| v.is_nan() || v.trunc() < -len || v.trunc() >= len;
    let found = (0..data.len()).find(|&i| data.get_f64(i).is_some_and(outside));
    match found {
        Some(i) => Err(ModelError::BadInput(format!(
            "input {name} holds {} at element {i}, but it indexes a table of {} rows: values must be in {}..{}",
            crate::tensor::show(data, i),
            bound.len,
            -bound.len,
            bound.len - 1
        ))),
        None => Ok(()),
    }
}

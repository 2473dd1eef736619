//! One run of a model on concrete inputs, for release tooling (expected self-test outputs, reference
//! profiles) and tests. The plan is compiled for exactly these shapes: tract runs concrete plans far faster
//! than symbolic ones (DESIGN.md). The agent compiles and pools its own plans per batch size.

use crate::{ModelError, TensorData, bounds};
use std::collections::HashMap;
use tract_nnef::prelude::*;

/// Runs `inputs` (in the model's input order: shape and values) and returns each output's shape and values
/// in its own type. Index inputs are checked against their tables first ([`bounds`]: an out-of-range token
/// id is [`ModelError::BadInput`]); a panic inside tract all the same is caught and returned as
/// [`ModelError::Run`] where panics unwind (release tooling, tests).
pub fn run_once(
    model: &TypedModel,
    inputs: Vec<(Vec<usize>, TensorData)>,
) -> Result<Vec<(Vec<usize>, TensorData)>, ModelError> {
    caught(|| run_unguarded(model, inputs))
}

/// Runs `f`, turning a panic inside it (tract's own, on inputs it does not check) into [`ModelError::Run`]
/// where panics unwind: hosts, tests, release tooling. Device builds abort on panic (`panic = "abort"`), so
/// there the checks before a run ([`bounds`]) are the defence; this is the second one.
pub fn caught<T>(f: impl FnOnce() -> Result<T, ModelError>) -> Result<T, ModelError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("a panic");
        Err(ModelError::Run(format!("tract panicked on these inputs: {what}")))
    })
}

fn run_unguarded(
    model: &TypedModel,
    inputs: Vec<(Vec<usize>, TensorData)>,
) -> Result<Vec<(Vec<usize>, TensorData)>, ModelError> {
    let run_err = |e: TractError| ModelError::Run(format!("{e:#}"));
    let outlets = model.input_outlets().map_err(run_err)?.to_vec();
    if outlets.len() != inputs.len() {
        return Err(ModelError::Run(format!("the model takes {} inputs, given {}", outlets.len(), inputs.len())));
    }
    for ((_, data), (outlet, bound)) in inputs.iter().zip(outlets.iter().zip(bounds::index_bounds(model)?)) {
        if let Some(bound) = bound {
            let name = model.outlet_label(*outlet).unwrap_or(&model.node(outlet.node).name);
            bounds::check(name, bound, data)?;
        }
    }
    let mut symbols = HashMap::new();
    let mut values = TVec::new();
    for ((shape, data), outlet) in inputs.into_iter().zip(outlets) {
        let fact = model.outlet_fact(outlet).map_err(run_err)?;
        if fact.shape.len() != shape.len() {
            return Err(ModelError::Run(format!("input of rank {} given shape {shape:?}", fact.shape.len())));
        }
        for (dim, &n) in fact.shape.iter().zip(&shape) {
            if let TDim::Sym(s) = dim {
                symbols.insert(s.clone(), TDim::Val(n as i64));
            }
        }
        let tensor = data.into_tract(&shape).map_err(|e| ModelError::Run(e.to_string()))?;
        values.push(tensor.into_tvalue());
    }
    let concrete = model.set_symbols(&symbols).map_err(run_err)?;
    let plan = concrete.into_optimized().map_err(run_err)?.into_runnable().map_err(run_err)?;
    let outputs = plan.run(values).map_err(run_err)?;
    outputs
        .iter()
        .map(|v| {
            let data = TensorData::from_tract(v).map_err(|e| ModelError::Run(format!("output: {e}")))?;
            Ok((v.shape().to_vec(), data))
        })
        .collect()
}

//! Exact GELU (`x · Φ(x)`, ONNX `Gelu` and the `Erf`-built form of BERT-like exports) written to NNEF as
//! its arithmetic. tract's decluttering fuses `0.5 · x · (1 + erf(x / √2))` into tract-core's `GeluExact`,
//! which has no NNEF form, so `bundle create` refused such models (the tanh approximation converted). The
//! chain is put back, in operators tract-nnef writes (`tract_core_erf` among them), after the last
//! decluttering: devices fuse it again when they load the model, into the same operator, with the same erf
//! kernel. Nothing is approximated.

use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::change_axes::wire_with_rank_broadcast;
use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_core::ops::math;
use tract_onnx::tract_core::ops::nn::gelu_exact::GeluExact;

/// Replaces every `GeluExact` of `model` by its arithmetic; returns how many.
pub fn unfuse(model: &mut TypedModel) -> TractResult<usize> {
    let gelus: Vec<usize> = model
        .eval_order()?
        .into_iter()
        .filter(|&n| model.node(n).op_as::<ElementWiseOp>().is_some_and(|op| op.0.is::<GeluExact>()))
        .collect();
    for &id in &gelus {
        let node = model.node(id);
        let patch = patch(model, node).with_context(|| format!("writing GELU node {:?} out", node.name))?;
        patch.apply(model)?;
    }
    Ok(gelus.len())
}

fn patch(model: &TypedModel, node: &TypedNode) -> TractResult<TypedModelPatch> {
    let name = &node.name;
    let dt = model.outlet_fact(node.inputs[0])?.datum_type;
    let mut patch = TypedModelPatch::new(format!("GELU {name} as erf"));
    let x = patch.tap_model(model, node.inputs[0])?;
    let constant = |patch: &mut TypedModelPatch, what: &str, v: f32| {
        patch.add_const(format!("{name}.{what}"), tensor0(v).cast_to_dt(dt)?.into_owned())
    };
    let binary = |patch: &mut TypedModelPatch, what: &str, op, a, b| {
        TractResult::Ok(wire_with_rank_broadcast(format!("{name}.{what}"), patch, op, &[a, b])?[0])
    };
    // The order of tract's own GeluExact: (x / √2) as x · (1/√2) in the input's type, erf, then
    // (x · 0.5) · (erf + 1).
    let inv_sqrt2 = constant(&mut patch, "inv_sqrt2", std::f32::consts::SQRT_2.recip())?;
    let scaled = binary(&mut patch, "scaled", math::mul(), x, inv_sqrt2)?;
    let erf = patch.wire_node(format!("{name}.erf"), math::erf(), &[scaled])?[0];
    let one = constant(&mut patch, "one", 1.0)?;
    let one_plus = binary(&mut patch, "one_plus_erf", math::add(), erf, one)?;
    let half = constant(&mut patch, "half", 0.5)?;
    let half_x = binary(&mut patch, "half_x", math::mul(), x, half)?;
    let y = binary(&mut patch, "gelu", math::mul(), half_x, one_plus)?;
    patch.shunt_outside(model, node.id.into(), y)?;
    Ok(patch)
}

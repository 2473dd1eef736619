//! Per-tensor `QuantizeLinear` and `DequantizeLinear` rewritten into tract-core operators at packaging time.
//! tract reads them as `QuantizeLinearU8`/`QuantizeLinearI8` and `DequantizeLinearF32`, tract-core operators
//! without an NNEF form, so `bundle create` refused every QDQ model ("operator QuantizeLinearU8 … has no NNEF
//! form"). What is left of them once [`crate::qdq_conv`] has fused the convolutions (a model's input
//! quantized, the residual `Add`, pooling and `Gemm` in between) becomes the arithmetic ONNX defines, in
//! operators devices load:
//! - quantize: `clamp(round_half_to_even(x / scale) + zero_point)`, cast to uint8 or int8 (tract keeps
//!   `1 / scale` and multiplies, as here, so answers do not change);
//! - dequantize: `(cast_to_f32(x) - zero_point) × scale`.
//!
//! The per-axis forms are tract-core operators already (tract-onnx writes them so).

use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cast::cast;
use tract_onnx::tract_core::ops::change_axes::wire_with_rank_broadcast;
use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_core::ops::math;
use tract_onnx::tract_core::ops::quant::{DequantizeLinearF32, QuantizeLinearI8, QuantizeLinearU8};

/// Rewrites every per-tensor quantize and dequantize of `model`; returns how many.
pub fn rewrite(model: &mut TypedModel) -> TractResult<usize> {
    let mut count = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let patch = if let Some(q) = quantize_params(node) {
            quantize(model, node, q)
        } else if let Some(dq) = node.op_as::<DequantizeLinearF32>() {
            dequantize(model, node, dq.scale, dq.zero_point)
        } else {
            continue;
        };
        patch.with_context(|| format!("rewriting {:?} into core operators", node.name))?.apply(model)?;
        count += 1;
    }
    Ok(count)
}

/// (1 / scale, zero point, the integer type) of a quantize node.
fn quantize_params(node: &TypedNode) -> Option<(f32, i32, DatumType)> {
    let op = node.op_as::<ElementWiseOp>()?;
    if let Some(q) = op.0.downcast_ref::<QuantizeLinearU8>() {
        return Some((q.scale, q.zero_point as i32, DatumType::U8));
    }
    op.0.downcast_ref::<QuantizeLinearI8>().map(|q| (q.scale, q.zero_point as i32, DatumType::I8))
}

fn quantize(
    model: &TypedModel,
    node: &TypedNode,
    (inv_scale, zero, dt): (f32, i32, DatumType),
) -> TractResult<TypedModelPatch> {
    let name = &node.name;
    let (lo, hi) =
        if dt == DatumType::U8 { (u8::MIN as f32, u8::MAX as f32) } else { (i8::MIN as f32, i8::MAX as f32) };
    let mut patch = TypedModelPatch::new(format!("quantize {name} into core operators"));
    let mut x = patch.tap_model(model, node.inputs[0])?;
    if patch.outlet_fact(x)?.datum_type != DatumType::F32 {
        x = patch.wire_node(format!("{name}.as_f32"), cast(DatumType::F32), &[x])?[0];
    }
    let scaled = binary(&mut patch, name, "scaled", math::mul(), x, inv_scale)?;
    let rounded = patch.wire_node(format!("{name}.rounded"), math::round_half_to_even(), &[scaled])?[0];
    let shifted = binary(&mut patch, name, "zero_point", math::add(), rounded, zero as f32)?;
    let above = binary(&mut patch, name, "low", math::max(), shifted, lo)?;
    let within = binary(&mut patch, name, "high", math::min(), above, hi)?;
    let y = patch.wire_node(format!("{name}.cast"), cast(dt), &[within])?[0];
    patch.shunt_outside(model, node.id.into(), y)?;
    Ok(patch)
}

fn dequantize(model: &TypedModel, node: &TypedNode, scale: f32, zero: i32) -> TractResult<TypedModelPatch> {
    let name = &node.name;
    let mut patch = TypedModelPatch::new(format!("dequantize {name} into core operators"));
    let x = patch.tap_model(model, node.inputs[0])?;
    let x = patch.wire_node(format!("{name}.as_f32"), cast(DatumType::F32), &[x])?[0];
    let centred = binary(&mut patch, name, "zero_point", math::sub(), x, zero as f32)?;
    let y = binary(&mut patch, name, "scale", math::mul(), centred, scale)?;
    patch.shunt_outside(model, node.id.into(), y)?;
    Ok(patch)
}

/// `a op constant`, the constant a float32 scalar broadcast to `a`'s rank.
fn binary(
    patch: &mut TypedModelPatch,
    name: &str,
    what: &str,
    op: tract_onnx::tract_core::ops::binary::TypedBinOp,
    a: OutletId,
    constant: f32,
) -> TractResult<OutletId> {
    let c = patch.add_const(format!("{name}.{what}.value"), tensor0(constant))?;
    Ok(wire_with_rank_broadcast(format!("{name}.{what}"), patch, op, &[a, c])?[0])
}

//! ONNX's LRN (local response normalisation: AlexNet, ZFNet, GoogLeNet) rewritten into tract-core operators
//! at packaging time. tract runs LRN from ONNX as an operator of its ONNX library (`tract-onnx-opl`), which
//! devices do not link (it would cost the 8 MB aarch64 agent the ONNX extras' code), so NNEF written with
//! tract-core's registry only had no form for it ("No serializer found for node Lrn") and `bundle create`
//! refused every model that uses it. The rewrite costs devices nothing: every operator below is tract-core's
//! and has an NNEF form.
//!
//! ONNX defines, for channel c of C and `size` channels around it:
//! `y = x / (bias + alpha / size * Σ_{c' = max(0, c - ⌊(size-1)/2⌋)}^{min(C-1, c + ⌈(size-1)/2⌉)} x[c']²) ^ beta`.
//! The sum over the channel window is a sum pool over the channel axis, zero-padded by ⌊(size-1)/2⌋ before
//! and ⌈(size-1)/2⌉ after (zeros add nothing, so the window clipped at the edges is exactly ONNX's):
//! `[N, C, …]` → square → `[N, 1, C, …]` → box of `[size, 1, …]` → `[N, C, …]` → scale, add bias, power,
//! divide.

use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::change_axes::wire_with_rank_broadcast;
use tract_onnx::tract_core::ops::cnn::{PaddingSpec, PoolSpec, SumPool};
use tract_onnx::tract_core::ops::math;
use tract_onnx::tract_core::ops::nn::DataFormat;
use tract_onnx_opl::lrn::Lrn;

/// Replaces every LRN node of `model` by tract-core operators computing the same values; returns how many.
pub fn rewrite(model: &mut TypedModel) -> TractResult<usize> {
    let lrns: Vec<usize> =
        model.eval_order()?.into_iter().filter(|&n| model.node(n).op_as::<Lrn>().is_some()).collect();
    for &id in &lrns {
        let node = model.node(id);
        let lrn = node.op_as::<Lrn>().expect("filtered above").clone();
        let patch = patch(model, node, &lrn).with_context(|| format!("rewriting LRN node {:?}", node.name))?;
        patch.apply(model)?;
    }
    Ok(lrns.len())
}

fn patch(model: &TypedModel, node: &TypedNode, lrn: &Lrn) -> TractResult<TypedModelPatch> {
    let name = &node.name;
    let fact = model.outlet_fact(node.inputs[0])?.clone();
    let rank = fact.rank();
    ensure!(rank >= 3, "LRN takes [N, C, …], got rank {rank}");
    ensure!(lrn.size >= 1, "LRN size {} is below 1", lrn.size);
    let dt = fact.datum_type;
    let mut patch = TypedModelPatch::new(format!("LRN {name} into core operators"));
    let x = patch.tap_model(model, node.inputs[0])?;
    let square = patch.wire_node(format!("{name}.square"), math::square(), &[x])?[0];
    // [N, C, …] → [N, 1, C, …]: the channels become the first spatial axis of a one-channel sum pool.
    let wide = patch.wire_node(format!("{name}.channels"), AxisOp::Add(1), &[square])?[0];
    let before = (lrn.size - 1) / 2;
    let after = lrn.size - 1 - before;
    let mut kernel: TVec<usize> = tvec![1; rank - 1];
    kernel[0] = lrn.size;
    let (mut pad_before, mut pad_after): (TVec<usize>, TVec<usize>) = (tvec![0; rank - 1], tvec![0; rank - 1]);
    pad_before[0] = before;
    pad_after[0] = after;
    let pool_spec = PoolSpec {
        data_format: DataFormat::NCHW,
        kernel_shape: kernel,
        padding: PaddingSpec::Explicit(pad_before, pad_after),
        dilations: None,
        strides: None,
        input_channels: 1,
        output_channels: 1,
    };
    let sum = SumPool { pool_spec, count_include_pad: true, normalize: false };
    let sum = patch.wire_node(format!("{name}.window_sum"), sum, &[wide])?[0];
    let sum = patch.wire_node(format!("{name}.unchannels"), AxisOp::Rm(1), &[sum])?[0];
    let scalar = |patch: &mut TypedModelPatch, what: &str, v: f32| -> TractResult<OutletId> {
        patch.add_const(format!("{name}.{what}"), tensor0(v).cast_to_dt(dt)?.into_owned())
    };
    let binary = |patch: &mut TypedModelPatch, what: &str, op: TypedBinOp, a: OutletId, b: OutletId| {
        TractResult::Ok(wire_with_rank_broadcast(format!("{name}.{what}"), patch, op, &[a, b])?[0])
    };
    let scale = scalar(&mut patch, "alpha_over_size", lrn.alpha / lrn.size as f32)?;
    let scaled = binary(&mut patch, "scaled", math::mul(), sum, scale)?;
    let bias = scalar(&mut patch, "bias", lrn.bias)?;
    let biased = binary(&mut patch, "biased", math::add(), scaled, bias)?;
    let beta = scalar(&mut patch, "beta", lrn.beta)?;
    let denominator = binary(&mut patch, "denominator", math::pow(), biased, beta)?;
    let y = binary(&mut patch, "normalised", math::div(), x, denominator)?;
    patch.shunt_outside(model, node.id.into(), y)?;
    Ok(patch)
}

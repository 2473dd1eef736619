//! ONNX pooling with `ceil_mode = 1` rewritten at packaging time into pooling NNEF can express. tract keeps
//! ONNX's rounding in `PaddingSpec::ExplicitOnnxPool(before, after, ceil)`, but its NNEF writer keeps only
//! the padding, so the model devices read back rounds down: other windows, another output shape. `bundle
//! create` refused such a model when the change reached the interface, and would have signed one whose
//! answers changed where it did not (a global pool after it). The rewrite pads the end by what rounding down
//! needs to give ONNX's windows, which is exact for:
//! - max pooling: padding never wins a max (NNEF border `ignore`);
//! - average pooling without `count_include_pad`: the divisor counts real values only (border `ignore`);
//! - average pooling with `count_include_pad`: ONNX counts the model's own padding but not the overhang past
//!   it, so the rewrite sums (border `constant`: zeros) and multiplies by one over each window's count, a
//!   constant computed here.
//!
//! Spatial sizes must be known at packaging (they are in image models: only the batch is symbolic); a model
//! whose are not is refused naming the node. Every operator below is tract-core's: devices pay nothing.

use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::change_axes::wire_with_rank_broadcast;
use tract_onnx::tract_core::ops::cnn::{MaxPool, PaddingSpec, PoolSpec, SumPool};
use tract_onnx::tract_core::ops::math;

/// Rewrites every pooling node of `model` that rounds up; returns how many.
pub fn rewrite(model: &mut TypedModel) -> TractResult<usize> {
    let pools: Vec<usize> = model
        .eval_order()?
        .into_iter()
        .filter(|&n| {
            spec_of(model.node(n)).is_some_and(|s| matches!(s.padding, PaddingSpec::ExplicitOnnxPool(.., true)))
        })
        .collect();
    for &id in &pools {
        let node = model.node(id);
        let spec = spec_of(node).expect("filtered above");
        let input = model.outlet_fact(node.inputs[0])?.clone();
        let floor = rounding_down(spec, &input).with_context(|| format!("rewriting pooling node {:?}", node.name))?;
        if let Some(op) = node.op_as::<MaxPool>() {
            let op = MaxPool { pool_spec: floor.spec, ..op.clone() };
            model.node_mut(id).op = Box::new(op);
        } else if let Some(op) = node.op_as::<SumPool>() {
            let op = op.clone();
            if op.count_include_pad && op.normalize && floor.overhang {
                let patch = average_with_counts(model, node, &op, floor)?;
                patch.apply(model)?;
            } else {
                model.node_mut(id).op = Box::new(SumPool { pool_spec: floor.spec, ..op });
            }
        }
    }
    Ok(pools.len())
}

/// The pooling spec of a max pool (without its indices output, which has no NNEF form anyway) or a sum pool.
fn spec_of(node: &TypedNode) -> Option<&PoolSpec> {
    if let Some(op) = node.op_as::<MaxPool>() {
        return op.with_index_outputs.is_none().then_some(&op.pool_spec);
    }
    node.op_as::<SumPool>().map(|op| &op.pool_spec)
}

/// A pooling that rounds down to the windows `spec` rounds up to.
struct Floor {
    spec: PoolSpec,
    /// Whether some last window reaches past the model's own padding (ONNX does not count that part).
    overhang: bool,
    /// The spatial input and output sizes.
    input_hw: TVec<usize>,
    output_hw: TVec<usize>,
}

fn rounding_down(spec: &PoolSpec, input: &TypedFact) -> TractResult<Floor> {
    let PaddingSpec::ExplicitOnnxPool(before, after, true) = &spec.padding else { bail!("not a ceil-mode pooling") };
    let shape = spec.data_format.shape(input.shape.to_tvec())?;
    let input_hw: TVec<usize> =
        shape.hw_dims().iter().map(|d| d.to_usize().ok()).collect::<Option<_>>().context(
            "it rounds up (ceil_mode) over spatial sizes not known at packaging; give the model fixed sizes",
        )?;
    let computed = spec.computed_padding(&input_hw);
    let mut padded_after = after.clone();
    let mut overhang = false;
    for (ax, c) in computed.iter().enumerate() {
        let field = (spec.kernel_shape[ax] - 1) * spec.dilation(ax) + 1;
        let reach = (c.convoluted - 1) * spec.stride(ax) + field;
        let padded = before[ax] + input_hw[ax] + after[ax];
        if reach > padded {
            padded_after[ax] += reach - padded;
            overhang = true;
        }
    }
    let floor = PoolSpec { padding: PaddingSpec::Explicit(before.clone(), padded_after), ..spec.clone() };
    let output_hw: TVec<usize> = computed.iter().map(|c| c.convoluted).collect();
    let got: TVec<usize> = floor.computed_padding(&input_hw).iter().map(|c| c.convoluted).collect();
    ensure!(got == output_hw, "rounding down with end padding gives {got:?}, ONNX's rounding up {output_hw:?}");
    Ok(Floor { spec: floor, overhang, input_hw, output_hw })
}

/// ONNX's average with `count_include_pad`: the sum over each window (padding as zeros) times one over the
/// number of its taps inside the model's own padding, the overhang past it left out.
fn average_with_counts(
    model: &TypedModel,
    node: &TypedNode,
    op: &SumPool,
    floor: Floor,
) -> TractResult<TypedModelPatch> {
    let name = &node.name;
    let PaddingSpec::ExplicitOnnxPool(before, after, _) = &op.pool_spec.padding else {
        bail!("not a ceil-mode pooling")
    };
    let spec = &op.pool_spec;
    // Per axis, how many taps of window o fall inside the padded input.
    let taps: Vec<Vec<usize>> = (0..spec.rank())
        .map(|ax| {
            let padded = before[ax] + floor.input_hw[ax] + after[ax];
            (0..floor.output_hw[ax])
                .map(|o| {
                    (0..spec.kernel_shape[ax]).filter(|k| o * spec.stride(ax) + k * spec.dilation(ax) < padded).count()
                })
                .collect()
        })
        .collect();
    let windows: usize = floor.output_hw.iter().product();
    let scale: Vec<f32> = (0..windows)
        .map(|i| {
            // Row-major window i → its index along each axis.
            let mut rest = i;
            let mut count = 1;
            for ax in (0..spec.rank()).rev() {
                count *= taps[ax][rest % floor.output_hw[ax]];
                rest /= floor.output_hw[ax];
            }
            1.0 / count as f32
        })
        .collect();
    // [oh, ow] in the output's layout with N and C of 1, so it broadcasts over both.
    let layout = spec.data_format.from_n_c_hw(1, 1, floor.output_hw.clone())?;
    let dt = model.outlet_fact(node.inputs[0])?.datum_type;
    let scale = Tensor::from_shape(&layout.shape, &scale)?.cast_to_dt(dt)?.into_owned();
    let mut patch = TypedModelPatch::new(format!("average pooling {name} rounding down"));
    let x = patch.tap_model(model, node.inputs[0])?;
    let sum = SumPool { pool_spec: floor.spec, count_include_pad: true, normalize: false };
    let sum = patch.wire_node(format!("{name}.window_sum"), sum, &[x])?[0];
    let scale = patch.add_const(format!("{name}.one_over_taps"), scale)?;
    let y = wire_with_rank_broadcast(format!("{name}.average"), &mut patch, math::mul(), &[sum, scale])?[0];
    patch.shunt_outside(model, node.id.into(), y)?;
    Ok(patch)
}

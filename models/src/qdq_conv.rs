//! Quantized (QDQ) convolutions kept in int8 arithmetic on devices. Quantized models ship in the QDQ format
//! (onnxruntime's `quantize_static`, TensorFlow Lite exports): every convolution is a float `Conv` between
//! `DequantizeLinear` of its uint8 input, int8 weights and int32 bias, and a `QuantizeLinear` of its output.
//! tract reads that as what it says, a float convolution: the weights are dequantized into FP32 constants.
//! onnxruntime fuses the pattern into `QLinearConv`: int8 × int8 products summed in int32, plus the bias,
//! then requantized in float, `round(accumulator × input scale × weight scale / output scale) + zero point`.
//! This rewrite writes the same on the ONNX graph before tract reads it, as `ConvInteger` (tract-core's
//! quantized convolution with int32 output, which tract-nnef writes as `tract_core_qconv` and devices load
//! with tract-core and tract-nnef only), the int32 bias `Add`, and onnxruntime's requantization: `Cast` to
//! float, a per-channel `Mul` and a `QuantizeLinear` of scale 1 (rewritten by [`crate::qdq_core`]). tract's
//! own `QLinearConv` requantizes in fixed point, one per-element pass it does not fuse for per-channel
//! scales, at nearly twice the whole model's time (MobileNetV2, BENCHMARKS.md), and rounds otherwise than
//! onnxruntime.
//!
//! The rewrite is exact where QDQ and `QLinearConv` mean the same: the bias must be int32 with zero point 0
//! and scale input scale × weight scale (how quantizers write it), activations per-tensor, weights
//! per-tensor or per output channel, and the convolution's only reader the `QuantizeLinear`. Anything else
//! is left as it is (it then runs in float, as tract reads it), and so are depthwise convolutions, which
//! tract runs faster in float. What remains of Q/DQ, around `Add`, pooling and `Gemm`, is rewritten by
//! [`crate::qdq_core`].

use std::collections::{HashMap, HashSet};
use tract_onnx::pb::{AttributeProto, GraphProto, NodeProto, TensorProto};
use tract_onnx::prelude::*;

/// Rewrites every QDQ convolution of `graph` into integer convolution and requantization; returns how many.
pub fn fuse(graph: &mut GraphProto) -> TractResult<usize> {
    let fusions = {
        let g = Graph::of(graph)?;
        let mut fusions = Vec::new();
        for (ix, node) in graph.node.iter().enumerate() {
            if node.op_type == "Conv"
                && node.domain.is_empty()
                && let Some(f) = g.fusion(ix, node)?
            {
                fusions.push(f);
            }
        }
        fusions
    };
    if fusions.is_empty() {
        return Ok(0);
    }
    let quantizes: HashSet<usize> = fusions.iter().map(|f| f.quantize).collect();
    graph.initializer.extend(fusions.iter().flat_map(|f| f.initializers.iter().cloned()));
    let mut fused: HashMap<usize, Vec<NodeProto>> = fusions.iter().map(|f| (f.conv, f.nodes.clone())).collect();
    let nodes = std::mem::take(&mut graph.node);
    graph.node = nodes
        .into_iter()
        .enumerate()
        .filter(|(ix, _)| !quantizes.contains(ix))
        .flat_map(|(ix, node)| fused.remove(&ix).unwrap_or_else(|| vec![node]))
        .collect();
    drop_unread_dequantizes(graph);
    Ok(fusions.len())
}

/// A `DequantizeLinear` whose only readers were fused convolutions now feeds nothing: removed, so the weights
/// are not also carried as FP32 constants.
fn drop_unread_dequantizes(graph: &mut GraphProto) {
    loop {
        let read: HashSet<&str> = graph
            .node
            .iter()
            .flat_map(|n| n.input.iter())
            .chain(graph.output.iter().map(|o| &o.name))
            .map(String::as_str)
            .collect();
        let unread: Vec<usize> = (0..graph.node.len())
            .filter(|&ix| {
                let n = &graph.node[ix];
                n.op_type == "DequantizeLinear" && n.output.iter().all(|o| !read.contains(o.as_str()))
            })
            .collect();
        if unread.is_empty() {
            return;
        }
        for ix in unread.into_iter().rev() {
            graph.node.remove(ix);
        }
    }
}

struct Fusion {
    conv: usize,
    quantize: usize,
    /// What replaces the convolution, in order.
    nodes: Vec<NodeProto>,
    /// Constants the fused node reads that the model lacks.
    initializers: Vec<TensorProto>,
}

/// Who writes and who reads each tensor, and the constant ones.
struct Graph<'a> {
    nodes: &'a [NodeProto],
    writer: HashMap<&'a str, usize>,
    readers: HashMap<&'a str, usize>,
    inits: HashMap<&'a str, &'a TensorProto>,
}

impl<'a> Graph<'a> {
    fn of(graph: &'a GraphProto) -> TractResult<Self> {
        let mut writer = HashMap::new();
        let mut readers: HashMap<&str, usize> = HashMap::new();
        for (ix, n) in graph.node.iter().enumerate() {
            for o in &n.output {
                writer.insert(o.as_str(), ix);
            }
            for i in &n.input {
                *readers.entry(i.as_str()).or_default() += 1;
            }
        }
        // A graph output is read from outside: its convolution cannot disappear into a fused one.
        for o in &graph.output {
            *readers.entry(o.name.as_str()).or_default() += 1;
        }
        let inits = graph.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
        Ok(Graph { nodes: &graph.node, writer, readers, inits })
    }

    fn constant(&self, name: &str) -> TractResult<Option<Tensor>> {
        let Some(t) = self.inits.get(name) else { return Ok(None) };
        let resolver = tract_onnx::data_resolver::default();
        Ok(Some(tract_onnx::tensor::load_tensor(&*resolver, t, None)?))
    }

    /// The `DequantizeLinear` writing `tensor`, with constant scale and zero point: (node, scale, zero point).
    fn dequantize(&self, tensor: &str) -> TractResult<Option<(&'a NodeProto, Tensor, Tensor)>> {
        let Some(&ix) = self.writer.get(tensor) else { return Ok(None) };
        let node = &self.nodes[ix];
        if node.op_type != "DequantizeLinear" || !node.domain.is_empty() || node.input.len() != 3 {
            return Ok(None);
        }
        let (Some(scale), Some(zero)) = (self.constant(&node.input[1])?, self.constant(&node.input[2])?) else {
            return Ok(None);
        };
        Ok(Some((node, scale, zero)))
    }

    fn fusion(&self, conv_ix: usize, conv: &NodeProto) -> TractResult<Option<Fusion>> {
        let Some(y) = conv.output.first() else { return Ok(None) };
        if conv.input.len() < 2 || self.readers.get(y.as_str()) != Some(&1) {
            return Ok(None);
        }
        let Some((q_ix, quantize)) = self.nodes.iter().enumerate().find(|(_, n)| n.input.first() == Some(y)) else {
            return Ok(None);
        };
        if quantize.op_type != "QuantizeLinear" || !quantize.domain.is_empty() || quantize.input.len() != 3 {
            return Ok(None);
        }
        let (Some(y_scale), Some(y_zero)) = (self.constant(&quantize.input[1])?, self.constant(&quantize.input[2])?)
        else {
            return Ok(None);
        };
        let Some((dx, x_scale, x_zero)) = self.dequantize(&conv.input[0])? else { return Ok(None) };
        let Some((dw, w_scale, w_zero)) = self.dequantize(&conv.input[1])? else { return Ok(None) };
        let per_tensor = |t: &Tensor| t.len() == 1;
        let activation_types = |t: &Tensor| matches!(t.datum_type(), DatumType::U8 | DatumType::I8);
        if !(per_tensor(&x_scale) && per_tensor(&x_zero) && per_tensor(&y_scale) && per_tensor(&y_zero))
            || !(activation_types(&x_zero) && activation_types(&y_zero) && activation_types(&w_zero))
            || !self.inits.contains_key(dw.input[0].as_str())
        {
            return Ok(None);
        }
        // Depthwise convolutions (one input channel per group) stay in float: tract-core's quantized
        // convolution runs them as one matrix product per channel over an im2col copy, far slower than its
        // float depthwise convolution with the quantize steps around it (MobileNetV2: 430 against 201 ms
        // for the whole model, BENCHMARKS.md), for weights that are a few percent of the model's.
        let w_dims = &self.inits[dw.input[0].as_str()].dims;
        if attr_int(conv, "group").unwrap_or(1) > 1 && w_dims.get(1) == Some(&1) {
            return Ok(None);
        }
        // Per-channel weights: scales along the output channels (axis 0), one per channel.
        let w_axis = attr_int(dw, "axis").unwrap_or(1);
        let channels = w_dims.first().copied().unwrap_or(0) as usize;
        if !per_tensor(&w_scale) && (w_axis != 0 || w_scale.len() != channels || w_zero.len() != channels) {
            return Ok(None);
        }
        // Symmetric weights (zero point 0 on every channel, as quantizers write int8 weights) get one scalar
        // zero point: tract then drops the correction term that multiplies it, which with a per-channel
        // vector of zeros it computed in full (a product and a subtraction over every output value).
        let mut initializers = Vec::new();
        let mut w_zero_name = dw.input[2].clone();
        if w_zero.len() > 1 && values(&w_zero)?.iter().all(|&z| z == 0.0) {
            w_zero_name = format!("{y}.weight_zero_point");
            let data_type = self.inits.get(dw.input[2].as_str()).map_or(0, |t| t.data_type);
            initializers.push(constant(w_zero_name.clone(), data_type, vec![], vec![0]));
        }
        let mut bias = None;
        if let Some(b) = conv.input.get(2).filter(|b| !b.is_empty()) {
            let Some((db, b_scale, b_zero)) = self.dequantize(b)? else { return Ok(None) };
            if !self.inits.contains_key(db.input[0].as_str())
                || !bias_is_accumulator_scaled(&x_scale, &w_scale, &b_scale, &b_zero)?
            {
                return Ok(None);
            }
            bias = self.constant(&db.input[0])?;
        }
        // [C, 1, …]: one value per output channel, broadcast over the spatial axes.
        let per_channel = |c: usize| -> Vec<i64> {
            let mut d = vec![1i64; w_dims.len() - 1];
            d[0] = c as i64;
            d
        };
        let name = |what: &str| format!("{y}.conv_integer.{what}");
        let mut nodes = vec![node_of(
            "ConvInteger",
            vec![dx.input[0].clone(), dw.input[0].clone(), dx.input[2].clone(), w_zero_name],
            name("accumulators"),
            conv.attribute.clone(),
        )];
        if let Some(bias) = bias {
            let b: Vec<i32> = bias.cast_to::<i32>()?.to_plain_array_view::<i32>()?.iter().copied().collect();
            let raw = b.iter().flat_map(|v| v.to_le_bytes()).collect();
            initializers.push(constant(name("bias"), INT32, per_channel(b.len()), raw));
            nodes.push(node_of("Add", vec![name("accumulators"), name("bias")], name("biased"), vec![]));
        }
        let accumulators = nodes.last().map(|n| n.output[0].clone()).unwrap_or_default();
        let to_float =
            AttributeProto { name: "to".into(), i: FLOAT.into(), r#type: INT_ATTRIBUTE, ..Default::default() };
        nodes.push(node_of("Cast", vec![accumulators], name("as_f32"), vec![to_float]));
        // onnxruntime's factor per channel, computed as it does: input scale × weight scale / output scale.
        let (sx, sy) = (x_scale.cast_to_scalar::<f32>()?, y_scale.cast_to_scalar::<f32>()?);
        let factors: Vec<f32> = values(&w_scale)?.iter().map(|&w| sx * w as f32 / sy).collect();
        let dims = if factors.len() == 1 { vec![] } else { per_channel(factors.len()) };
        let raw = factors.iter().flat_map(|v| v.to_le_bytes()).collect();
        initializers.push(constant(name("factors"), FLOAT, dims, raw));
        nodes.push(node_of("Mul", vec![name("as_f32"), name("factors")], name("scaled"), vec![]));
        initializers.push(constant(name("one"), FLOAT, vec![], 1f32.to_le_bytes().to_vec()));
        let mut requantize = node_of(
            "QuantizeLinear",
            vec![name("scaled"), name("one"), quantize.input[2].clone()],
            name("requantized"),
            vec![],
        );
        requantize.output = quantize.output.clone();
        nodes.push(requantize);
        Ok(Some(Fusion { conv: conv_ix, quantize: q_ix, nodes, initializers }))
    }
}

/// `QLinearConv` adds its int32 bias to the int32 accumulators, whose scale is input scale × weight scale:
/// the QDQ bias means the same only with zero point 0 and that scale (to a few float roundings of the
/// product, which quantizers compute in float64 or float32).
fn bias_is_accumulator_scaled(
    x_scale: &Tensor,
    w_scale: &Tensor,
    b_scale: &Tensor,
    b_zero: &Tensor,
) -> TractResult<bool> {
    if b_zero.datum_type() != DatumType::I32 || values(b_zero)?.iter().any(|&z| z != 0.0) {
        return Ok(false);
    }
    let x = x_scale.cast_to_scalar::<f32>()? as f64;
    let (w, b) = (values(w_scale)?, values(b_scale)?);
    if b.len() != w.len() {
        return Ok(false);
    }
    Ok(b.iter().zip(&w).all(|(&b, &w)| (b - x * w).abs() <= (x * w).abs() * 1e-6))
}

/// A constant's values as float64 (scales are float32, zero points 8- or 32-bit integers: all exact).
fn values(t: &Tensor) -> TractResult<Vec<f64>> {
    let t = t.cast_to::<f64>()?;
    Ok(t.to_plain_array_view::<f64>()?.iter().copied().collect())
}

/// ONNX's codes for the element types and attribute type used here.
const FLOAT: i32 = 1;
const INT32: i32 = 6;
const INT_ATTRIBUTE: i32 = 2;

fn constant(name: String, data_type: i32, dims: Vec<i64>, raw_data: Vec<u8>) -> TensorProto {
    TensorProto { name, data_type, dims, raw_data, ..Default::default() }
}

fn node_of(op: &str, input: Vec<String>, output: String, attribute: Vec<AttributeProto>) -> NodeProto {
    NodeProto { name: output.clone(), input, output: vec![output], op_type: op.into(), attribute, ..Default::default() }
}

fn attr_int(node: &NodeProto, name: &str) -> Option<i64> {
    node.attribute.iter().find(|a| a.name == name).map(|a| a.i)
}

#[cfg(test)]
mod tests {
    use super::fuse;
    use tract_onnx::pb::{AttributeProto, GraphProto, NodeProto, TensorProto, ValueInfoProto};

    const FLOAT: i32 = 1;
    const UINT8: i32 = 2;
    const INT8: i32 = 3;
    const INT32: i32 = 6;

    fn init(name: &str, data_type: i32, dims: &[i64], raw: Vec<u8>) -> TensorProto {
        TensorProto { name: name.into(), data_type, dims: dims.to_vec(), raw_data: raw, ..Default::default() }
    }

    fn floats(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|f| f.to_le_bytes()).collect()
    }

    fn node(op: &str, inputs: &[&str], outputs: &[&str], attribute: Vec<AttributeProto>) -> NodeProto {
        NodeProto {
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            attribute,
            ..Default::default()
        }
    }

    fn int_attr(name: &str, i: i64) -> AttributeProto {
        AttributeProto { name: name.into(), i, r#type: 2, ..Default::default() }
    }

    /// uint8 x → DQ → Conv (int8 weights per channel over 2 output channels, int32 bias) → Q → uint8 y,
    /// the convolution unnamed. `bias_scale` is the bias's scale over input scale × weight scale.
    fn graph(bias_scale: f32, group: i64) -> GraphProto {
        let (sx, sw) = (0.5f32, [0.25f32, 0.125]);
        let sb = [sx * sw[0] * bias_scale, sx * sw[1] * bias_scale];
        GraphProto {
            node: vec![
                node("DequantizeLinear", &["xq", "sx", "zx"], &["x"], vec![]),
                node("DequantizeLinear", &["wq", "sw", "zw"], &["w"], vec![int_attr("axis", 0)]),
                node("DequantizeLinear", &["bq", "sb", "zb"], &["b"], vec![int_attr("axis", 0)]),
                node("Conv", &["x", "w", "b"], &["y"], vec![int_attr("group", group)]),
                node("QuantizeLinear", &["y", "sy", "zy"], &["yq"], vec![]),
            ],
            initializer: vec![
                init("sx", FLOAT, &[], floats(&[sx])),
                init("zx", UINT8, &[], vec![3]),
                init("wq", INT8, &[2, 1, 1, 1], vec![5, 0xfe]),
                init("sw", FLOAT, &[2], floats(&sw)),
                init("zw", INT8, &[2], vec![0, 0]),
                init("bq", INT32, &[2], [7i32, -7].iter().flat_map(|v| v.to_le_bytes()).collect()),
                init("sb", FLOAT, &[2], floats(&sb)),
                init("zb", INT32, &[2], vec![0; 8]),
                init("sy", FLOAT, &[], floats(&[0.1])),
                init("zy", UINT8, &[], vec![128]),
            ],
            output: vec![ValueInfoProto { name: "yq".into(), ..Default::default() }],
            ..Default::default()
        }
    }

    #[test]
    fn a_qdq_convolution_becomes_integer_convolution_and_onnxruntimes_requantization() {
        let mut g = graph(1.0, 1);
        assert_eq!(fuse(&mut g).unwrap(), 1);
        let ops: Vec<&str> = g.node.iter().map(|n| n.op_type.as_str()).collect();
        // The input's dequantize has no reader left either: only the rewritten convolution remains.
        assert_eq!(ops, ["ConvInteger", "Add", "Cast", "Mul", "QuantizeLinear"], "{ops:?}");
        let name = |what: &str| format!("y.conv_integer.{what}");
        assert_eq!(g.node[0].input, ["xq", "wq", "zx", "y.weight_zero_point"]);
        assert_eq!(g.node[1].input, [name("accumulators"), name("bias")]);
        assert_eq!(g.node[4].input, [name("scaled"), name("one"), "zy".to_string()]);
        assert_eq!(g.node[4].output, ["yq"]);
        let init = |n: &str| g.initializer.iter().find(|t| t.name == n).unwrap();
        let zero = init("y.weight_zero_point");
        assert_eq!((zero.data_type, zero.dims.len(), &zero.raw_data[..]), (INT8, 0, &[0u8][..]));
        assert_eq!((init(&name("bias")).dims.clone(), init(&name("bias")).data_type), (vec![2, 1, 1], INT32));
        // input scale × weight scale / output scale, per output channel: 0.5 × 0.25 / 0.1, 0.5 × 0.125 / 0.1.
        let factors = init(&name("factors"));
        let f: Vec<f32> = factors.raw_data.chunks(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
        assert_eq!((factors.dims.clone(), f), (vec![2, 1, 1], vec![0.5f32 * 0.25 / 0.1, 0.5f32 * 0.125 / 0.1]));
    }

    #[test]
    fn what_qlinearconv_would_compute_otherwise_stays_as_it_is() {
        // A bias not on the accumulators' scale, a depthwise convolution, a convolution read by the model's
        // caller as well as by its quantize.
        let mut off = graph(1.01, 1);
        let mut depthwise = graph(1.0, 2);
        let mut read_twice = graph(1.0, 1);
        read_twice.output.push(ValueInfoProto { name: "y".into(), ..Default::default() });
        for (what, g) in [("bias scale", &mut off), ("depthwise", &mut depthwise), ("read twice", &mut read_twice)] {
            let before = g.clone();
            assert_eq!(fuse(g).unwrap(), 0, "{what}");
            assert_eq!(*g, before, "{what}");
        }
    }
}

//! Quantized (QDQ) models, as onnxruntime's `quantize_static` writes them, converted for devices: the
//! committed fixtures listed under "quantized" in `typed/typed.json` (one network, convolutions, one
//! depthwise, a residual Add, pooling and a Gemm, quantized three ways: uint8 activations with int8
//! per-channel weights, int8 activations, uint8 weights with one scale per tensor) convert to NNEF, keep
//! their convolutions in integer arithmetic on tract-core's quantized convolution (but the depthwise one,
//! which tract runs faster in float), and answer like onnxruntime's int8 kernels.

use outpost_models::{TensorData, onnx};
use std::path::PathBuf;

fn typed(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../simulations/models/typed").join(file)
}

fn f32s(file: &str) -> Vec<f32> {
    std::fs::read(typed(file)).unwrap().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

#[test]
fn qdq_models_convert_with_integer_convolutions_and_answer_like_onnxruntime_int8() {
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(typed("typed.json")).unwrap()).unwrap();
    let quantized = index["quantized"].as_array().unwrap();
    assert_eq!(quantized.len(), 3, "{quantized:?}");
    for m in quantized {
        let name = m["name"].as_str().unwrap();
        let converted = onnx::convert(&std::fs::read(typed(m["file"].as_str().unwrap())).unwrap())
            .unwrap_or_else(|e| panic!("{name}: the QDQ model must convert: {e}"));
        // What devices load: the NNEF archive read back with tract-core's operators only. Its convolutions
        // (the 1×1 one is a matrix product in tract) take 8-bit activations and weights, plain or carrying
        // their zero point and scale (QU8, QI8).
        let nnef = outpost_models::nnef::read(&converted.nnef).unwrap();
        let byte = |o| {
            let dt = format!("{:?}", nnef.outlet_fact(o).unwrap().datum_type);
            ["U8", "I8", "QU8(", "QI8("].iter().any(|t| dt.starts_with(t))
        };
        let integer: Vec<&str> = nnef
            .nodes()
            .iter()
            .filter(|n| ["Conv", "EinSum"].contains(&&*n.op.name()) && byte(n.inputs[0]) && byte(n.inputs[1]))
            .map(|n| n.name.as_str())
            .collect();
        // The depthwise convolution stays in float (tract runs it faster so), the other two are integer.
        assert_eq!(integer.len(), 2, "{name}: the full and 1×1 convolutions in integer arithmetic: {integer:?}");
        let float_convs = nnef
            .nodes()
            .iter()
            .filter(|n| {
                n.op.name() == "Conv" && format!("{:?}", nnef.outlet_fact(n.inputs[0]).unwrap().datum_type) == "F32"
            })
            .count();
        assert_eq!(float_convs, 1, "{name}: the depthwise convolution in float");
        let ops: Vec<String> = nnef.nodes().iter().map(|n| n.op.name().to_string()).collect();
        assert!(!ops.iter().any(|o| o.contains("QuantizeLinear")), "{name}: {ops:?}");

        let x = f32s(m["files"]["image"].as_str().unwrap());
        let want = f32s(m["files"]["logits"].as_str().unwrap());
        let rows = x.len() / (3 * 16 * 16);
        let out = converted.run(vec![(vec![rows, 3, 16, 16], TensorData::F32(x))]).unwrap();
        let (shape, TensorData::F32(got)) = &out[0] else { panic!("{name}: {out:?}") };
        assert_eq!(shape, &vec![rows, 5], "{name}");
        // The same integer arithmetic as onnxruntime's: equal here (on MobileNetV2, within 3 steps of the
        // output's quantization, BENCHMARKS.md).
        let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst <= 1e-6, "{name}: largest difference from onnxruntime int8 {worst}");
    }
}

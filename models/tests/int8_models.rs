//! Quantized (QDQ) models, as onnxruntime's `quantize_static` writes them, converted for devices: the
//! committed fixture `typed/camera-int8.onnx` (uint8 activations, int8 per-channel weights; convolutions, one
//! depthwise, a residual Add, pooling and a Gemm) converts to NNEF, keeps its convolutions in int8
//! arithmetic on tract-core's quantized convolution, and answers like onnxruntime's int8 kernels.

use outpost_models::{TensorData, onnx};
use std::path::PathBuf;

fn typed(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../simulations/models/typed").join(file)
}

fn f32s(file: &str) -> Vec<f32> {
    std::fs::read(typed(file)).unwrap().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

#[test]
fn a_qdq_model_converts_with_int8_convolutions_and_answers_like_onnxruntime_int8() {
    let converted = onnx::convert(&std::fs::read(typed("camera-int8.onnx")).unwrap())
        .unwrap_or_else(|e| panic!("the QDQ model must convert: {e}"));
    // What devices load: the NNEF archive read back with tract-core's operators only.
    let nnef = outpost_models::nnef::read(&converted.nnef).unwrap();
    // The convolutions (the 1×1 one is a matrix product in tract) take 8-bit activations and weights
    // (plain or carrying their zero point and scale: QU8, QI8).
    let byte = |o, t: &str| {
        let dt = format!("{:?}", nnef.outlet_fact(o).unwrap().datum_type);
        dt == t || dt.starts_with(&format!("Q{t}("))
    };
    let int8: Vec<&str> = nnef
        .nodes()
        .iter()
        .filter(|n| ["Conv", "EinSum"].contains(&&*n.op.name()) && byte(n.inputs[0], "U8") && byte(n.inputs[1], "I8"))
        .map(|n| n.name.as_str())
        .collect();
    assert_eq!(int8.len(), 3, "every convolution in int8 arithmetic: {int8:?}");
    let ops: Vec<String> = nnef.nodes().iter().map(|n| n.op.name().to_string()).collect();
    assert!(!ops.iter().any(|o| o.contains("QuantizeLinear")), "{ops:?}");

    let (x, want) = (f32s("camera-int8.input.image.bin"), f32s("camera-int8.ort.logits.bin"));
    let rows = x.len() / (3 * 16 * 16);
    let out = converted.run(vec![(vec![rows, 3, 16, 16], TensorData::F32(x))]).unwrap();
    let (shape, TensorData::F32(got)) = &out[0] else { panic!("{out:?}") };
    assert_eq!(shape, &vec![rows, 5]);
    let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    eprintln!("largest difference from onnxruntime int8: {worst}; got {got:?} want {want:?}");
    let top1 =
        |v: &[f32]| v.chunks(5).map(|r| (0..5).max_by(|&a, &b| r[a].total_cmp(&r[b])).unwrap()).collect::<Vec<_>>();
    assert_eq!(top1(got), top1(&want), "top-1 per sample");
    assert!(worst <= 1e-3, "largest difference from onnxruntime int8 {worst}");
}

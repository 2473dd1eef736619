//! ONNX operators tract runs but tract-core's NNEF cannot express (simulations/models/onnx_ops.py finds them):
//! LRN, pooling that rounds up (`ceil_mode`) and exact GELU are rewritten into tract-core operators at
//! conversion and answer like onnxruntime; an operator with no such rewrite is refused naming the operator
//! and the model's node, before anything is signed.

use outpost_models::{ModelError, TensorData, onnx};
use std::path::PathBuf;

fn ops_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../simulations/models/ops")
}

fn f32s(file: &str) -> Vec<f32> {
    std::fs::read(ops_dir().join(file))
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

#[test]
fn a_model_with_lrn_converts_to_nnef_without_it_and_answers_like_onnxruntime() {
    let converted = onnx::convert(&std::fs::read(ops_dir().join("lrn.onnx")).unwrap())
        .unwrap_or_else(|e| panic!("LRN must convert: {e}"));
    // What devices load: the NNEF archive, read back with tract-core's operators only.
    let nnef = outpost_models::nnef::read(&converted.nnef).unwrap();
    let ops: Vec<String> = nnef.nodes().iter().map(|n| n.op.name().to_string()).collect();
    assert!(!ops.iter().any(|o| o == "Lrn"), "{ops:?}");
    assert!(ops.iter().any(|o| o == "SumPool"), "the channel window is a sum pool: {ops:?}");

    let (x, want) = (f32s("lrn.input.f32"), f32s("lrn.ort.f32"));
    let rows = x.len() / (3 * 6 * 6);
    let out = outpost_models::run::run_once(&nnef, vec![(vec![rows, 3, 6, 6], TensorData::F32(x))]).unwrap();
    let (shape, TensorData::F32(got)) = &out[0] else { panic!("{out:?}") };
    assert_eq!(shape, &vec![rows, 8, 6, 6]);
    let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(worst <= 1e-5, "largest difference from onnxruntime {worst}");
    // Not the identity: both normalisations change the convolution's output.
    assert!(want.iter().any(|v| v.abs() > 0.1), "the fixture's answers are not all near zero");
}

#[test]
fn pooling_that_rounds_up_converts_and_answers_like_onnxruntime() {
    // Written as it was, NNEF kept the padding but not the rounding: 3×3 windows of stride 2 on 8×8 gave
    // 3×3 outputs instead of ONNX's 4×4, and the conversion was refused as an interface change.
    let converted = onnx::convert(&std::fs::read(ops_dir().join("pool_ceil.onnx")).unwrap())
        .unwrap_or_else(|e| panic!("ceil_mode pooling must convert: {e}"));
    let nnef = outpost_models::nnef::read(&converted.nnef).unwrap();
    let x = f32s("pool_ceil.input.f32");
    let rows = x.len() / (2 * 8 * 8);
    let out = outpost_models::run::run_once(&nnef, vec![(vec![rows, 2, 8, 8], TensorData::F32(x))]).unwrap();
    for ((name, side), (shape, got)) in [("max", 4), ("avg", 4), ("avg_pad", 5)].into_iter().zip(&out) {
        let TensorData::F32(got) = got else { panic!("{name}: {got:?}") };
        assert_eq!(shape, &vec![rows, 2, side, side], "{name}");
        let want = f32s(&format!("pool_ceil.ort.{name}.f32"));
        let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst <= 1e-5, "{name}: largest difference from onnxruntime {worst}");
    }
}

#[test]
fn an_operator_devices_cannot_load_is_refused_naming_the_operator_and_its_node() {
    let bytes = std::fs::read(ops_dir().join("nonzero.onnx")).unwrap();
    assert!(onnx::typed(&bytes).is_ok(), "tract runs NonZero from ONNX");
    match onnx::convert(&bytes) {
        Err(ModelError::Convert(why)) => {
            assert!(why.contains("operator NonZero"), "{why}");
            assert!(why.contains("node \"where_set\"") || why.contains("node \"idx\""), "{why}");
            assert!(why.contains("docs/release-engineering.md"), "{why}");
        }
        other => panic!("NonZero must be refused at conversion: {other:?}"),
    }
}

#[test]
fn exact_gelu_converts_and_answers_like_onnxruntime() {
    // ONNX's Gelu and the Erf-built chain both became tract-core's GeluExact, which NNEF could not write: the
    // model was refused. Written out as its erf arithmetic, nothing approximated.
    let converted = onnx::convert(&std::fs::read(ops_dir().join("gelu.onnx")).unwrap())
        .unwrap_or_else(|e| panic!("exact GELU must convert: {e}"));
    let nnef = outpost_models::nnef::read(&converted.nnef).unwrap();
    let x = f32s("gelu.input.f32");
    let rows = x.len() / 16;
    let out = outpost_models::run::run_once(&nnef, vec![(vec![rows, 16], TensorData::F32(x))]).unwrap();
    for (name, (shape, got)) in ["gelu", "erf_gelu"].into_iter().zip(&out) {
        let TensorData::F32(got) = got else { panic!("{name}: {got:?}") };
        assert_eq!(shape, &vec![rows, 16], "{name}");
        let want = f32s(&format!("gelu.ort.{name}.f32"));
        let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst <= 1e-5, "{name}: largest difference from onnxruntime {worst}");
        // The tanh approximation would not pass: on these inputs it differs from the exact form by up to
        // 4.7e-4 (near |x| = 2.7).
        assert!(want.iter().any(|v| *v < -0.1), "{name}: the inputs reach GELU's negative dip");
    }
}

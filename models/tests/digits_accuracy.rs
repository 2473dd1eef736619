//! tract on the committed digits models and held-out test set: accuracy per model, and how far its
//! logits are from onnxruntime's (committed by `make_models.py`). Prints the figures for the issue notes.
//! It runs the NNEF conversion bundles carry, so this also checks the conversion changes no answer.

use outpost_models::{TensorData, onnx};
use std::path::PathBuf;

fn models() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../simulations/models")
}

fn f32s(name: &str) -> Vec<f32> {
    let bytes = std::fs::read(models().join(name)).unwrap();
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

#[test]
fn tract_classifies_the_test_set_like_onnxruntime() {
    let labels = std::fs::read(models().join("digits-test-labels.u8")).unwrap();
    let n = labels.len();
    let images = f32s("digits-test-inputs.f32");
    assert_eq!(images.len(), n * 64);
    // (model, lowest and highest acceptable accuracy)
    for (name, lo, hi) in [("v1", 0.96, 1.0), ("v2", 0.96, 1.0), ("bad", 0.0, 0.2), ("subtle", 0.7, 0.9)] {
        let bytes = std::fs::read(models().join(format!("digits-{name}.onnx"))).unwrap();
        let model = onnx::convert(&bytes).unwrap();
        let (shape, out) = model.run(vec![(vec![n, 1, 8, 8], TensorData::F32(images.clone()))]).unwrap().remove(0);
        assert_eq!(shape, vec![n, 10]);
        let out = out.as_f32().unwrap();
        let correct = out
            .chunks_exact(10)
            .zip(&labels)
            .filter(|(row, label)| {
                let top = row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
                top == **label as usize
            })
            .count();
        let accuracy = correct as f64 / n as f64;
        let ort = f32s(&format!("digits-{name}.ort-logits.f32"));
        let max_diff = out.iter().zip(&ort).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        println!(
            "digits-{name}: tract accuracy {:.2} % ({correct}/{n}), max |tract - onnxruntime| = {max_diff:.2e}",
            accuracy * 100.0
        );
        assert!((lo..=hi).contains(&accuracy), "digits-{name}: accuracy {accuracy}");
        assert!(max_diff < 1e-3, "digits-{name}: tract and onnxruntime disagree by {max_diff}");
    }
}

//! A quantized (QDQ) model through the real binaries: `outpost bundle create` converts the committed fixture
//! `typed/camera-int8.onnx` (onnxruntime's `quantize_static`: uint8 activations, int8 per-channel weights;
//! convolutions, one depthwise, a residual Add, pooling and a Gemm) with its convolutions in int8
//! arithmetic, `outpost-agent install` self-tests it, and `outpost-agent run` answers like onnxruntime's int8
//! kernels.

mod support;

use serde_json::{Value, json};
use support::release::{d, f32s, release_and_serve, typed};

#[test]
fn a_qdq_int8_model_is_bundled_installed_and_served_with_onnxruntimes_int8_answers() {
    let samples = d(&typed("camera-int8.input.image.bin"));
    let served =
        release_and_serve("int8-models", "camera-int8", &typed("camera-int8.onnx"), &["--selftest-input", &samples]);
    let (info, http, url) = (&served.info, &served.http, &served.url);
    assert_eq!(info["inputs"], json!(["image FP32 [N,3,16,16]"]), "{info}");
    assert_eq!(info["outputs"], json!(["logits FP32 [N,5]"]), "{info}");

    // Every sample as one batch: onnxruntime's int8 answers (the same integer arithmetic: exact here).
    let (x, want) = (f32s(&typed("camera-int8.input.image.bin")), f32s(&typed("camera-int8.ort.logits.bin")));
    let rows = x.len() / (3 * 16 * 16);
    let body = json!({"inputs": [{"name": "image", "shape": [rows, 3, 16, 16], "datatype": "FP32", "data": x}]});
    let mut r = http.post(format!("{url}/infer")).send_json(body).unwrap();
    assert_eq!(r.status(), 200);
    let answer: Value = r.body_mut().read_json().unwrap();
    let out = &answer["outputs"][0];
    assert_eq!((&out["name"], &out["shape"]), (&json!("logits"), &json!([rows, 5])), "{answer}");
    let got: Vec<f32> = out["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    assert_eq!(got, want, "onnxruntime int8's logits");

    let _ = std::fs::remove_dir_all(&served.dir);
}

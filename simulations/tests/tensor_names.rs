//! Tensor names NNEF cannot spell, through the real binaries. ResNet-50, ShuffleNet and ZFNet-512 from the
//! onnx package name their input `gpu_0/data_0`; NNEF writes it `gpu_0_data_0`. `outpost bundle create`
//! converts such a model (the committed fixture `typed/gpu-names.onnx`; its sample file named for the ONNX
//! input, `--selftest-input gpu_0/data_0=FILE`), `outpost-agent install` takes the
//! bundle, and `outpost-agent run` serves its tensors under NNEF's spelling: model metadata reports it,
//! inference by it answers like onnxruntime, and a request by the ONNX name gets a 400 naming the name to send.

mod support;

use serde_json::{Value, json};
use support::release::{d, f32s, release_and_serve, typed};

#[test]
fn names_nnef_cannot_spell_are_bundled_installed_and_served_under_nnefs_spelling() {
    // The release engineer names the sample file's input as the ONNX model does.
    let samples = format!("gpu_0/data_0={}", d(&typed("gpu-names.input.gpu_0_data_0.bin")));
    let served =
        release_and_serve("tensor-names", "gpu-names", &typed("gpu-names.onnx"), &["--selftest-input", &samples]);
    let (info, http, url) = (&served.info, &served.http, &served.url);
    assert_eq!(info["inputs"], json!(["gpu_0_data_0 FP32 [N,3,6,6]"]), "{info}");
    assert_eq!(info["outputs"], json!(["gpu_0_softmax_1 FP32 [N,5]"]), "{info}");

    let mut r = http.get(url).call().unwrap();
    let meta: Value = r.body_mut().read_json().unwrap();
    assert_eq!(meta["inputs"][0]["name"], "gpu_0_data_0", "{meta}");
    assert_eq!(meta["inputs"][0]["datatype"], "FP32", "{meta}");
    assert_eq!(meta["outputs"][0]["name"], "gpu_0_softmax_1", "{meta}");

    // Every sample as one batch, by the name metadata reports: onnxruntime's answers.
    let (x, want) =
        (f32s(&typed("gpu-names.input.gpu_0_data_0.bin")), f32s(&typed("gpu-names.ort.gpu_0_softmax_1.bin")));
    let rows = x.len() / (3 * 6 * 6);
    let body =
        |name: &str| json!({"inputs": [{"name": name, "shape": [rows, 3, 6, 6], "datatype": "FP32", "data": x}]});
    let mut r = http.post(format!("{url}/infer")).send_json(body("gpu_0_data_0")).unwrap();
    assert_eq!(r.status(), 200);
    let answer: Value = r.body_mut().read_json().unwrap();
    let out = &answer["outputs"][0];
    assert_eq!(out["name"], "gpu_0_softmax_1", "{answer}");
    assert_eq!(out["shape"], json!([rows, 5]), "{answer}");
    let got: Vec<f64> = out["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(got.len(), want.len());
    let worst = got.iter().zip(&want).map(|(a, b)| (a - f64::from(*b)).abs()).fold(0.0, f64::max);
    assert!(worst <= 1e-5, "largest difference from onnxruntime {worst}");

    // The ONNX name is not served; the answer says which name is.
    let mut r = http.post(format!("{url}/infer")).send_json(body("gpu_0/data_0")).unwrap();
    assert_eq!(r.status(), 400);
    let text = r.body_mut().read_to_string().unwrap();
    assert!(text.contains(r#"missing input \"gpu_0_data_0\" (the request has \"gpu_0/data_0\")"#), "{text}");
    let _ = std::fs::remove_dir_all(&served.dir);
}

//! Tensor names NNEF cannot spell, through the real binaries. ResNet-50, ShuffleNet and ZFNet-512 from the
//! onnx package name their input `gpu_0/data_0`; NNEF writes it `gpu_0_data_0`. `outpost bundle create`
//! converts such a model (the committed fixture `typed/gpu-names.onnx`), `outpost-agent install` takes the
//! bundle, and `outpost-agent run` serves its tensors under NNEF's spelling: model metadata reports it,
//! inference by it answers like onnxruntime, and a request by the ONNX name gets a 400 naming the name to send.

mod support;

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use support::*;

fn typed(file: &str) -> PathBuf {
    outpost_simulations::models_dir().join("typed").join(file)
}

fn d(p: &Path) -> String {
    p.display().to_string()
}

fn f32s(file: &str) -> Vec<f32> {
    std::fs::read(typed(file)).unwrap().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

fn succeeds(bin: &Path, args: &[&str]) -> String {
    let out = Command::new(bin).args(args).output().unwrap();
    assert!(out.status.success(), "{} {args:?}: {}", bin.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn names_nnef_cannot_spell_are_bundled_installed_and_served_under_nnefs_spelling() {
    let dir = tempdir("tensor-names");
    let (outpost, agent) = (outpost_bin(), outpost_bin().with_file_name("outpost-agent"));
    let (keys, policy, bundle) = (dir.join("keys"), dir.join("trust.policy"), dir.join("gpu-names.obundle"));

    // The release engineer's commands.
    for name in ["root", "release"] {
        succeeds(&outpost, &["keys", "gen", "--out", &d(&keys), "--name", name]);
    }
    let (root_key, release_pub) = (keys.join("root.key"), keys.join("release.pub"));
    let trust_init = ["trust", "init", "--root-key", &d(&root_key), "--release-pub", &d(&release_pub)];
    succeeds(&outpost, &[&trust_init[..], &["--out", &d(&policy)]].concat());
    let samples = typed("gpu-names.input.gpu_0_data_0.bin");
    succeeds(
        &outpost,
        &[
            "bundle",
            "create",
            "--model",
            &d(&typed("gpu-names.onnx")),
            "--name",
            "gpu-names",
            "--version",
            "1.0.0",
            "--sequence",
            "1",
            "--key",
            &d(&keys.join("release.key")),
            "--selftest-input",
            &d(&samples),
            "--out",
            &d(&bundle),
        ],
    );
    let info: Value =
        serde_json::from_str(&succeeds(&outpost, &["bundle", "inspect", &d(&bundle), "-o", "json"])).unwrap();
    assert_eq!(info["inputs"], json!(["gpu_0_data_0 FP32 [N,3,6,6]"]), "{info}");
    assert_eq!(info["outputs"], json!(["gpu_0_softmax_1 FP32 [N,5]"]), "{info}");

    // The device's: install (which self-tests the model), then serve.
    let data = dir.join("device");
    let trust = ["--trust", &d(&policy), "--root-pub", &d(&keys.join("root.pub"))];
    succeeds(&agent, &[&["install", &d(&bundle), "--data-dir", &d(&data)][..], &trust].concat());
    let port = free_port();
    let log = std::fs::File::create(dir.join("agent.log")).unwrap();
    let _running = Proc(
        Command::new(&agent)
            .args(["run", "--data-dir", &d(&data), "--listen", &format!("127.0.0.1:{port}")])
            .args(trust)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    wait_port(port);
    let http: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let url = format!("http://127.0.0.1:{port}/v2/models/gpu-names");
    let log = || std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default();
    wait_until("gpu-names ready", 60, || http.get(format!("{url}/ready")).call().is_ok_and(|r| r.status() == 200), log);

    let mut r = http.get(&url).call().unwrap();
    let meta: Value = r.body_mut().read_json().unwrap();
    assert_eq!(meta["inputs"][0]["name"], "gpu_0_data_0", "{meta}");
    assert_eq!(meta["inputs"][0]["datatype"], "FP32", "{meta}");
    assert_eq!(meta["outputs"][0]["name"], "gpu_0_softmax_1", "{meta}");

    // Every sample as one batch, by the name metadata reports: onnxruntime's answers.
    let (x, want) = (f32s("gpu-names.input.gpu_0_data_0.bin"), f32s("gpu-names.ort.gpu_0_softmax_1.bin"));
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
    let _ = std::fs::remove_dir_all(&dir);
}

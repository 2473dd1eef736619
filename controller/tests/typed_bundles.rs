//! `outpost bundle create` on the typed fixtures (`simulations/models/typed/`), as a release engineer runs
//! it: self-tests in each input's own type, one sample file per input, seeded inputs refused when the model
//! fails on them, and an image-sized model whose signed manifest stays small.

#[path = "support/cli.rs"]
mod cli;

use cli::*;
use std::path::Path;
use std::process::Output;

fn typed(file: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../simulations/models/typed").join(file).display().to_string()
}

/// A release key and trust policy in `dir`; returns (release key, trust policy, root public key).
fn keys(dir: &Path) -> (String, String, String) {
    let p = |f: &str| dir.join(f).display().to_string();
    for name in ["root", "release"] {
        ok(&["keys", "gen", "--out", &p("keys"), "--name", name]);
    }
    let args =
        ["--root-key", &p("keys/root.key"), "--release-pub", &p("keys/release.pub"), "--out", &p("trust.policy")];
    ok(&[&["trust", "init"][..], &args].concat());
    (p("keys/release.key"), p("trust.policy"), p("keys/root.pub"))
}

fn create(model: &str, key: &str, out: &str, extra: &[&str]) -> Output {
    let m = typed(&format!("{model}.onnx"));
    let args = ["bundle", "create", "--model", &m, "--name", model, "--version", "1.0.0", "--sequence", "1"];
    outpost(&[&args[..], &["--key", key, "--out", out], extra].concat())
}

fn inspect(bundle: &str) -> serde_json::Value {
    serde_json::from_str(&ok(&["bundle", "inspect", bundle, "-o", "json"])).unwrap()
}

#[test]
fn seeded_inputs_that_break_the_model_are_refused_with_a_request_for_real_samples() {
    let d = tempdir("typed-seeded");
    let (key, ..) = keys(&d);
    let out = d.join("intent.obundle").display().to_string();
    // Seeded INT64 ids are in [0, 256); the vocabulary has 50 tokens.
    let r = create("intent-i64", &key, &out, &[]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(2), "{err}");
    assert!(err.contains("fails on seeded random self-test inputs"), "{err}");
    assert!(err.contains("ids (INT64), mask (INT64)") && err.contains("--selftest-input NAME=FILE"), "{err}");
    assert!(!Path::new(&out).exists(), "nothing is signed");
}

#[test]
fn one_sample_file_per_input_makes_typed_self_tests_and_a_reference() {
    let d = tempdir("typed-files");
    let (key, policy, root) = keys(&d);
    let out = d.join("intent.obundle").display().to_string();
    let (ids, mask) = (typed("intent-i64.input.ids.bin"), typed("intent-i64.input.mask.bin"));
    let ids_arg = format!("ids={ids}");
    let mask_arg = format!("mask={mask}");
    let r = create("intent-i64", &key, &out, &["--selftest-input", &ids_arg, "--selftest-input", &mask_arg]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let info = inspect(&out);
    assert_eq!(info["selftest_vectors"], 4, "{info}");
    assert_eq!(info["inputs"], serde_json::json!(["ids INT64 [N,8]", "mask INT64 [N,8]"]), "{info}");
    assert_eq!(info["outputs"], serde_json::json!(["logits FP32 [N,4]", "intent INT64 [N]"]), "{info}");
    assert_eq!(info["reference_samples"], 6, "{info}");
    // Exactly the check a device runs.
    ok(&["bundle", "verify", &out, "--trust", &policy, "--root-pub", &root]);

    // The single-file form is for single-input models; a missing input or a wrong name is named.
    let (_, e) = fails(&[
        "bundle",
        "create",
        "--model",
        &typed("intent-i64.onnx"),
        "--name",
        "intent",
        "--version",
        "1.0.0",
        "--sequence",
        "1",
        "--key",
        &key,
        "--out",
        &out,
        "--selftest-input",
        &ids,
    ]);
    assert!(e.contains("the model has 2 inputs (ids, mask); name the input of each file"), "{e}");
    let (_, e) = fails(&[
        "bundle",
        "create",
        "--model",
        &typed("intent-i64.onnx"),
        "--name",
        "intent",
        "--version",
        "1.0.0",
        "--sequence",
        "1",
        "--key",
        &key,
        "--out",
        &out,
        "--selftest-input",
        &ids_arg,
    ]);
    assert!(e.contains("input mask needs exactly one --selftest-input mask=FILE"), "{e}");
    let wrong = format!("token_ids={ids}");
    let (_, e) = fails(&[
        "bundle",
        "create",
        "--model",
        &typed("intent-i64.onnx"),
        "--name",
        "intent",
        "--version",
        "1.0.0",
        "--sequence",
        "1",
        "--key",
        &key,
        "--out",
        &out,
        "--selftest-input",
        &wrong,
        "--selftest-input",
        &mask_arg,
    ]);
    assert!(e.contains("the model has no input \"token_ids\"; its inputs are ids, mask"), "{e}");
    // A file that is not whole samples of the input's type.
    let ragged = d.join("ragged.bin");
    std::fs::write(&ragged, [0u8; 100]).unwrap();
    let ragged = format!("ids={}", ragged.display());
    let (_, e) = fails(&[
        "bundle",
        "create",
        "--model",
        &typed("intent-i64.onnx"),
        "--name",
        "intent",
        "--version",
        "1.0.0",
        "--sequence",
        "1",
        "--key",
        &key,
        "--out",
        &out,
        "--selftest-input",
        &ragged,
        "--selftest-input",
        &mask_arg,
    ]);
    assert!(e.contains("100 bytes is not a whole number of 64-byte INT64 samples of shape [1, 8]"), "{e}");
}

#[test]
fn uint8_bool_and_fp16_models_bundle_with_seeded_inputs_of_their_own_type() {
    let d = tempdir("typed-seeded-ok");
    let (key, policy, root) = keys(&d);
    for (model, dtype) in [("camera-u8", "UINT8"), ("flags-bool", "BOOL"), ("sensor-f16", "FP16")] {
        let out = d.join(format!("{model}.obundle")).display().to_string();
        let r = create(model, &key, &out, &[]);
        assert!(r.status.success(), "{model}: {}", String::from_utf8_lossy(&r.stderr));
        let info = inspect(&out);
        assert!(info["inputs"][0].as_str().unwrap().contains(dtype), "{info}");
        ok(&["bundle", "verify", &out, "--trust", &policy, "--root-pub", &root]);
    }
}

#[test]
fn an_image_sized_model_bundles_with_a_small_manifest() {
    let d = tempdir("typed-detector");
    let (key, policy, root) = keys(&d);
    let out = d.join("detector.obundle").display().to_string();
    let r = create("detector-640", &key, &out, &[]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let bundle = std::fs::read(&out).unwrap();
    let manifest_len = u32::from_le_bytes(bundle[8..12].try_into().unwrap());
    let info = inspect(&out);
    println!(
        "detector-640: bundle {} bytes, manifest {manifest_len} bytes, {} self-test vectors",
        bundle.len(),
        info["selftest_vectors"]
    );
    assert_eq!(info["selftest_vectors"], 4);
    assert!(info["selftest_bytes"].as_u64().unwrap() > 4 * 3 * 640 * 640, "{info}");
    // Four 3×640×640 UINT8 inputs are 4.9 MB; none of it is in the signed manifest.
    assert!(bundle.len() > 4 * 3 * 640 * 640, "{} bytes", bundle.len());
    assert!(manifest_len < 4096, "manifest {manifest_len} bytes");
    ok(&["bundle", "verify", &out, "--trust", &policy, "--root-pub", &root]);
}

#[test]
fn a_sample_file_names_its_input_as_the_onnx_model_does_or_as_devices_serve_it() {
    // gpu-names' input is `gpu_0/data_0` in ONNX, `gpu_0_data_0` in NNEF (what devices serve).
    let d = tempdir("typed-onnx-names");
    let (key, policy, root) = keys(&d);
    let samples = typed("gpu-names.input.gpu_0_data_0.bin");
    // A path holding '=' after a separator is still a path, not a name.
    let odd = d.join("runs=1").join("x=1.bin");
    std::fs::create_dir_all(odd.parent().unwrap()).unwrap();
    std::fs::copy(&samples, &odd).unwrap();
    let mut sections = Vec::new();
    for arg in [format!("gpu_0/data_0={samples}"), format!("gpu_0_data_0={samples}"), odd.display().to_string()] {
        let out = d.join("gpu-names.obundle").display().to_string();
        let r = create("gpu-names", &key, &out, &["--selftest-input", &arg]);
        assert!(r.status.success(), "{arg}: {}", String::from_utf8_lossy(&r.stderr));
        let info = inspect(&out);
        assert_eq!(info["inputs"], serde_json::json!(["gpu_0_data_0 FP32 [N,3,6,6]"]), "{info}");
        assert_eq!(info["reference_samples"], 6, "{arg}: every sample of the file: {info}");
        ok(&["bundle", "verify", &out, "--trust", &policy, "--root-pub", &root]);
        sections.push((info["selftest_vectors"].clone(), info["selftest_bytes"].clone()));
    }
    assert!(sections.iter().all(|s| s == &sections[0]), "the same self-test section: {sections:?}");
    // A name that is neither spelling is named.
    let r = create(
        "gpu-names",
        &key,
        &d.join("x.obundle").display().to_string(),
        &["--selftest-input", &format!("data={samples}")],
    );
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("the model has no input \"data\""), "{err}");
}

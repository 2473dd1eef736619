//! Drives the `outpost` binary the way a release engineer does, on the committed digits models.

#[path = "support/cli.rs"]
mod cli;

use cli::*;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

fn model(name: &str) -> String {
    repo().join("simulations/models").join(name).display().to_string()
}

#[test]
fn a_release_engineer_signs_verifies_and_cosigns_digits_bundles() {
    let d = tempdir("cli-workflow");
    let p = |f: &str| d.join(f).display().to_string();
    let keys = p("keys");
    for name in ["root", "release", "release2"] {
        let line = ok(&["keys", "gen", "--out", &keys, "--name", name]);
        assert!(line.starts_with("key "), "{line}");
    }
    // A key is never silently overwritten.
    let (code, err) = fails(&["keys", "gen", "--out", &keys, "--name", "root"]);
    assert_eq!(code, 2);
    assert!(err.contains("refusing to overwrite"), "{err}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.join("keys/root.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "private keys are readable by their owner only");
    }

    let (root_key, root_pub) = (p("keys/root.key"), p("keys/root.pub"));
    let (rel, rel2) = (p("keys/release.key"), p("keys/release2.key"));
    ok(&[
        "trust",
        "init",
        "--root-key",
        &root_key,
        "--release-pub",
        &p("keys/release.pub"),
        "--out",
        &p("trust.policy"),
    ]);
    let inspect: serde_json::Value =
        serde_json::from_str(&ok(&["trust", "inspect", &p("trust.policy"), "-o", "json"])).unwrap();
    assert_eq!(inspect["threshold"], 1);

    let inputs = model("digits-test-inputs.f32");
    let common = ["--name", "digits", "--key", &rel, "--selftest-input", &inputs];
    let v1 = p("v1.obundle");
    let line = ok(&[
        &[
            "bundle",
            "create",
            "--model",
            &model("digits-v1.onnx"),
            "--version",
            "1.0.0",
            "--sequence",
            "1",
            "--out",
            &v1,
        ][..],
        &common,
    ]
    .concat());
    assert!(line.contains("digits 1.0.0 (sequence 1)") && line.contains("4 self-test vector(s)"), "{line}");
    let v2 = p("v2.obundle");
    ok(&[
        &[
            "bundle",
            "create",
            "--model",
            &model("digits-v2.onnx"),
            "--version",
            "2.0.0",
            "--sequence",
            "2",
            "--out",
            &v2,
        ][..],
        &common,
    ]
    .concat());
    let v2d = p("v2-delta.obundle");
    let base = model("digits-v1.onnx");
    ok(&[
        &[
            "bundle",
            "create",
            "--model",
            &model("digits-v2.onnx"),
            "--version",
            "2.0.0",
            "--sequence",
            "2",
            "--base",
            &base,
            "--out",
            &v2d,
        ][..],
        &common,
    ]
    .concat());

    let full = std::fs::metadata(&v2).unwrap().len();
    let delta = std::fs::metadata(&v2d).unwrap().len();
    println!(
        "bundle sizes: v1 full {}, v2 full {full}, v2 delta {delta} ({:.1} %)",
        std::fs::metadata(&v1).unwrap().len(),
        100.0 * delta as f64 / full as f64
    );
    assert!(delta * 10 < full, "a head-only retrain ships as a small delta: {delta} vs {full}");

    let info: serde_json::Value = serde_json::from_str(&ok(&["bundle", "inspect", &v2d, "-o", "json"])).unwrap();
    assert_eq!(info["payload"]["compression"], "delta");
    assert_eq!(info["version"], "2.0.0");
    assert_eq!(info["selftest_vectors"], 4);
    assert_eq!(info["reference_samples"], 360, "the drift reference covers every supplied sample");
    assert_eq!(info["inputs"][0], "input FP32 [N,1,8,8]");
    assert_eq!(info["outputs"][0], "logits FP32 [N,10]");
    assert!(ok(&["bundle", "inspect", &v1]).contains("model        digits 1.0.0 (sequence 1)"));

    let verify = ["bundle", "verify", "--trust", &p("trust.policy"), "--root-pub", &root_pub];
    assert!(ok(&[&verify[..], &[&v1]].concat()).starts_with("ok: digits 1.0.0 (sequence 1)"));
    ok(&[&verify[..], &[&v2d, "--floor", "1", "--base", &base]].concat());
    let (code, err) = fails(&[&verify[..], &[&v2d, "--floor", "1", "--base", &model("digits-bad.onnx")]].concat());
    assert_eq!((code, err.starts_with("rejected: delta_base_mismatch:")), (1, true), "{err}");
    let (code, err) = fails(&[&verify[..], &[&v1, "--floor", "2"]].concat());
    assert_eq!((code, err.starts_with("rejected: rollback:")), (1, true), "{err}");
    // The same for scripts: -o json says ok or the reason code, with the exit code unchanged.
    let json: serde_json::Value = serde_json::from_str(&ok(&[&verify[..], &[&v1, "-o", "json"]].concat())).unwrap();
    assert_eq!((&json["ok"], &json["version"], &json["sequence"]), (&true.into(), &"1.0.0".into(), &1.into()));
    let digest = json["bundle_sha256"].as_str().unwrap();
    assert!(digest.len() == 64 && digest.chars().all(|c| c.is_ascii_hexdigit()), "{json}");
    let refused = outpost(&[&verify[..], &[&v1, "--floor", "2", "-o", "json"]].concat());
    let json: serde_json::Value = serde_json::from_slice(&refused.stdout).unwrap();
    assert_eq!((refused.status.code(), &json["ok"], &json["reason"]), (Some(1), &false.into(), &"rollback".into()));

    // Two-of-two: one signature is not enough, the co-signed bundle passes.
    ok(&[
        "trust",
        "init",
        "--root-key",
        &root_key,
        "--release-pub",
        &p("keys/release.pub"),
        "--release-pub",
        &p("keys/release2.pub"),
        "--threshold",
        "2",
        "--policy-version",
        "2",
        "--out",
        &p("trust2.policy"),
    ]);
    let verify2 = ["bundle", "verify", "--trust", &p("trust2.policy"), "--root-pub", &root_pub];
    let (code, err) = fails(&[&verify2[..], &[&v2]].concat());
    assert_eq!((code, err.starts_with("rejected: below_threshold:")), (1, true), "{err}");
    assert!(ok(&["bundle", "sign", &v2, "--key", &rel2]).contains(", "));
    assert!(ok(&[&verify2[..], &[&v2]].concat()).contains("[policy v2]"));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn every_attack_fixture_is_refused_by_bundle_verify_with_its_reason_code() {
    let dir = repo().join("protocol/tests/data/attacks");
    let index = std::fs::read_to_string(dir.join("index.tsv")).unwrap();
    let f = |name: &str| dir.join(name).display().to_string();
    let mut checked = 0;
    for line in index.lines().filter(|l| !l.starts_with('#')) {
        let cols: Vec<&str> = line.split('\t').collect();
        let [bundle, policy, base, expected] = cols[..] else { panic!("bad index line {line:?}") };
        let (b, t, r) = (f(bundle), f(policy), f("root.pub"));
        let mut args = vec!["bundle", "verify", &b, "--trust", &t, "--root-pub", &r];
        args.extend(["--now", "1800000000", "--floor", "5", "--policy-floor", "1", "--arch", "x86_64"]);
        args.extend(["--agent-version", "0.1.0"]);
        let base_path = f(base);
        if base != "-" {
            args.extend(["--base", &base_path]);
        }
        if expected == "ok" {
            ok(&args);
        } else {
            let (code, err) = fails(&args);
            assert_eq!(code, 1, "{bundle}: {err}");
            assert!(err.starts_with(&format!("rejected: {expected}: ")), "{bundle}: {err}");
            assert!(
                err.trim_end().len() > format!("rejected: {expected}: ").len() + 10,
                "{bundle} says what was wrong: {err}"
            );
        }
        checked += 1;
    }
    assert!(checked >= 20, "{checked} fixtures");
}

#[test]
fn broken_inputs_get_one_line_errors_naming_what_was_wrong() {
    let d = tempdir("cli-broken");
    let p = |f: &str| d.join(f).display().to_string();
    ok(&["keys", "gen", "--out", &p("k"), "--name", "release"]);
    std::fs::write(d.join("not-a-model.onnx"), b"this is not onnx").unwrap();
    let create = |model: &str, key: &str| {
        fails(&[
            "bundle",
            "create",
            "--model",
            model,
            "--name",
            "digits",
            "--version",
            "1.0.0",
            "--sequence",
            "1",
            "--key",
            key,
            "--out",
            &p("x.obundle"),
        ])
    };
    let (code, err) = create(&p("not-a-model.onnx"), &p("k/release.key"));
    assert_eq!(code, 2);
    assert!(err.contains("not-a-model.onnx") && err.contains("tract cannot load"), "{err}");
    let (code, err) = create(&model("digits-v1.onnx"), &p("k/missing.key"));
    assert!(code == 2 && err.contains("missing.key"), "{err}");
    let (code, err) = create(&model("digits-v1.onnx"), &p("k/release.pub"));
    assert!(code == 2 && err.contains("release.pub") && err.contains("PKCS#8"), "{err}");
    assert!(!d.join("x.obundle").exists(), "nothing is written when packaging fails");
    let (code, err) = fails(&[
        "bundle",
        "create",
        "--model",
        &model("digits-v1.onnx"),
        "--name",
        "..",
        "--version",
        "1.0.0",
        "--sequence",
        "1",
        "--key",
        &p("k/release.key"),
        "--out",
        &p("x.obundle"),
    ]);
    assert!(code == 2 && err.contains("path traversal"), "{err}");
    let (code, err) = fails(&[
        "trust",
        "init",
        "--root-key",
        &p("k/release.key"),
        "--release-pub",
        &p("k/release.pub"),
        "--threshold",
        "3",
        "--out",
        &p("t.policy"),
    ]);
    assert!(code == 2 && err.contains("--threshold 3"), "{err}");
    let (code, err) = fails(&["bundle", "inspect", &model("digits-v1.onnx")]);
    assert!(code == 1 && err.contains("malformed"), "{err}");
    let _ = std::fs::remove_dir_all(&d);
}

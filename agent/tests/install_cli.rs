//! `outpost-agent install | selftest | status | run | print-default-config` as an installer or operator
//! uses them, including every way an install must be refused without touching the active model.

mod support;

use outpost_models::tensor::{TensorData, to_manifest};
use std::path::Path;
use std::process::{Command, Output};
use support::*;

fn agent_cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_outpost-agent")).args(args).output().unwrap()
}

fn install(dir: &Path, bundle: &[u8], name: &str) -> Output {
    let path = dir.join(name);
    std::fs::write(&path, bundle).unwrap();
    let d = |p: &str| dir.join(p).display().to_string();
    agent_cli(&[
        "install",
        &path.display().to_string(),
        "--data-dir",
        &d("data"),
        "--trust",
        &d("trust.policy"),
        "--root-pub",
        &d("root.pub"),
    ])
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn install_refuses_bad_bundles_and_the_active_model_keeps_serving() {
    let dir = tempdir("install-cli");
    let cfg = config(&dir, "");
    let ok = install(&dir, &signed_bundle("v1", "1.0.0", 1), "v1.obundle");
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("installed digits 1.0.0 (sequence 1) as active"));
    let agent = Agent::start(cfg.clone());
    agent.wait_for("/v2/health/ready", "ready", |r| r.status == 200);
    let slots_before = std::fs::read(dir.join("data/slots.json")).unwrap();

    let v2 = model_bytes("v2");
    let mut tampered = signed_bundle("v2", "2.0.0", 2);
    let n = tampered.len();
    tampered[n - 100] ^= 1;
    let mut lying = manifest(&v2, "2.0.0", 2);
    lying.interface.inputs[0].name = "image".into();
    let mut wrong_answers = selftest_vectors(&v2);
    wrong_answers[0].expected[0] = to_manifest("logits", &[1, 10], &TensorData::F32(vec![0.0; 10]));
    let mut not_onnx = manifest(&v2, "2.0.0", 2);
    not_onnx.interface = lying.interface.clone();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("tampered in transit", tampered, "rejected: payload_digest_mismatch"),
        (
            "signed by an unknown key",
            bundle_with(&manifest(&v2, "2.0.0", 2), &v2, &stranger()),
            "rejected: unknown_key",
        ),
        ("an older release", signed_bundle("v2", "0.9.0", 1), "rejected: rollback"),
        (
            "an interface that differs from the model",
            bundle_with(&lying, &v2, &release()),
            "rejected: model_unloadable",
        ),
        (
            "self-tests that do not reproduce",
            bundle_with_vectors(&manifest(&v2, "2.0.0", 2), &v2, &release(), &wrong_answers),
            "rejected: selftest_failed",
        ),
        (
            "a payload that is not a model",
            bundle_with(&not_onnx, b"not an onnx file at all", &release()),
            "rejected: model_unloadable",
        ),
        ("garbage", b"garbage".to_vec(), "rejected: truncated"),
    ];
    for (what, bundle, expect) in cases {
        let out = install(&dir, &bundle, "bad.obundle");
        assert_eq!(out.status.code(), Some(1), "{what}: {}", stderr(&out));
        assert!(stderr(&out).starts_with(expect), "{what}: {}", stderr(&out));
        assert_eq!(std::fs::read(dir.join("data/slots.json")).unwrap(), slots_before, "{what}: slots untouched");
    }
    let (images, _) = test_set();
    let r = agent.post("/v2/models/digits/infer", &infer_body(&images[..1]));
    assert_eq!((r.status, r.json()["model_version"].as_str().unwrap()), (200, "1.0.0"), "v1 still serves");

    let data = dir.join("data").display().to_string();
    let selftest = agent_cli(&["selftest", "--data-dir", &data]);
    assert!(selftest.status.success(), "{}", stderr(&selftest));
    assert!(String::from_utf8_lossy(&selftest.stdout).contains("selftest passed: digits 1.0.0, 4 vector(s)"));

    let listen = agent.addr.to_string();
    let status = agent_cli(&["status", "--data-dir", &data, "--listen", &listen, "-o", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(json["models"]["digits"]["active"]["version"], "1.0.0");
    assert_eq!(json["models"]["digits"]["state"], "serving");
    assert_eq!(json["running"], true);
    assert_eq!(json["models"]["digits"]["floor"], 1);
    let table =
        String::from_utf8_lossy(&agent_cli(&["status", "--data-dir", &data, "--listen", &listen]).stdout).into_owned();
    assert!(table.contains("model digits: serving (floor 1)"), "{table}");
    assert!(table.contains("  active      1.0.0 (sequence 1)"), "{table}");

    // A good update goes through, and v1 is kept as previous.
    let ok = install(&dir, &signed_bundle("v2", "2.0.0", 2), "v2.obundle");
    assert!(ok.status.success(), "{}", stderr(&ok));
    agent.wait_for("/v2/models/digits", "v2", |r| r.json()["versions"][0] == "2.0.0");
    let json: serde_json::Value =
        serde_json::from_slice(&agent_cli(&["status", "--data-dir", &data, "-o", "json"]).stdout).unwrap();
    assert_eq!(
        (
            json["models"]["digits"]["active"]["version"].as_str(),
            json["models"]["digits"]["previous"]["version"].as_str()
        ),
        (Some("2.0.0"), Some("1.0.0"))
    );
}

#[test]
fn a_corrupted_model_on_disk_fails_selftest_instead_of_serving_wrong_answers() {
    let dir = tempdir("corrupt");
    let _cfg = config(&dir, "");
    assert!(install(&dir, &signed_bundle("v1", "1.0.0", 1), "v1.obundle").status.success());
    let models = dir.join("data/models");
    let model_dir = std::fs::read_dir(&models).unwrap().next().unwrap().unwrap().path();
    let file = model_dir.join("model");
    let mut bytes = std::fs::read(&file).unwrap();
    let n = bytes.len();
    bytes[n - 50] ^= 0x20;
    std::fs::write(&file, bytes).unwrap();
    let out = agent_cli(&["selftest", "--data-dir", &dir.join("data").display().to_string()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("does not match its digest"), "{}", stderr(&out));
}

#[test]
fn a_broken_config_is_refused_before_anything_binds_naming_the_bad_key() {
    let dir = tempdir("config");
    let path = dir.join("agent.toml");
    std::fs::write(&path, "listen = \"127.0.0.1:0\"\n[inference]\nmax_batchh = 4\n").unwrap();
    let out = agent_cli(&["run", "--config", &path.display().to_string()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("max_batchh") && stderr(&out).contains("agent.toml"), "{}", stderr(&out));
    std::fs::write(&path, "[inference]\nmax_delay = \"soon\"\n").unwrap();
    let out = agent_cli(&["run", "--config", &path.display().to_string()]);
    assert!(stderr(&out).contains("inference.max_delay"), "{}", stderr(&out));

    let printed = agent_cli(&["print-default-config"]);
    let text = String::from_utf8(printed.stdout).unwrap();
    std::fs::write(&path, &text).unwrap();
    let parsed = outpost_agent::config::Config::load(Some(&path), &Default::default()).unwrap();
    assert_eq!(parsed.listen.to_string(), "127.0.0.1:8470");
}

#[test]
fn install_if_no_model_installs_on_first_boot_only() {
    let dir = tempdir("install-if-no-model");
    let d = |p: &str| dir.join(p).display().to_string();
    let first_boot = |bundle: &[u8], name: &str| {
        std::fs::write(dir.join(name), bundle).unwrap();
        let flags = ["--data-dir", &d("data"), "--trust", &d("trust.policy"), "--root-pub", &d("root.pub")];
        agent_cli(&[&["install", "--if-no-model", &d(name)][..], &flags[..]].concat())
    };
    let _ = config(&dir, "");
    let out = first_boot(&signed_bundle("v1", "1.0.0", 1), "v1.obundle");
    assert!(String::from_utf8_lossy(&out.stdout).contains("installed digits 1.0.0"), "{}", stderr(&out));
    let slots = std::fs::read(dir.join("data/slots.json")).unwrap();
    // A later boot, with a newer model active or not, leaves the slots alone and succeeds.
    let again = first_boot(&signed_bundle("v2", "2.0.0", 2), "v2.obundle");
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(String::from_utf8_lossy(&again.stdout).contains("already active"));
    assert_eq!(std::fs::read(dir.join("data/slots.json")).unwrap(), slots);
}

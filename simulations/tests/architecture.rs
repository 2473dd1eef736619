//! The dependency invariant of ARCHITECTURE.md, checked: protocol ← models ← {agent, controller} ←
//! simulations, with `files` beside them. `protocol` and `files` depend on no workspace crate, `models` on
//! `protocol` only, the agent and the controller on those three and never on each other, and only
//! `simulations` sees both. Also: `protocol` pulls in
//! no async runtime, networking or file-system crate; `models` no async runtime or network either, and
//! the ONNX parser only behind its `onnx` feature, which the agent's own dependencies never enable.

use std::collections::BTreeSet;
use std::path::Path;

fn deps(krate: &str) -> BTreeSet<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(krate).join("Cargo.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let doc: toml::Table = text.parse().unwrap();
    let mut names = BTreeSet::new();
    for section in ["dependencies", "build-dependencies"] {
        if let Some(t) = doc.get(section).and_then(|v| v.as_table()) {
            names.extend(t.keys().cloned());
        }
    }
    names
}

fn workspace(d: &BTreeSet<String>) -> BTreeSet<&str> {
    d.iter().map(String::as_str).filter(|n| n.starts_with("outpost-")).collect()
}

fn manifest(krate: &str) -> toml::Table {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(krate).join("Cargo.toml");
    std::fs::read_to_string(&path).unwrap().parse().unwrap()
}

#[test]
fn agent_and_controller_share_only_the_protocol_model_and_files_crates() {
    assert_eq!(workspace(&deps("protocol")), BTreeSet::new());
    assert_eq!(workspace(&deps("files")), BTreeSet::new());
    assert_eq!(workspace(&deps("models")), BTreeSet::from(["outpost-protocol"]));
    let shared = BTreeSet::from(["outpost-files", "outpost-models", "outpost-protocol"]);
    assert_eq!(workspace(&deps("agent")), shared);
    assert_eq!(workspace(&deps("controller")), shared);
    assert_eq!(
        workspace(&deps("simulations")),
        BTreeSet::from(["outpost-agent", "outpost-controller", "outpost-protocol"])
    );
}

#[test]
fn the_device_build_links_no_onnx_parser() {
    // The agent's own dependencies: the model library without `onnx`, and no tract-onnx at all (tests and
    // benchmarks may convert ONNX; the binary must not carry the parser: cross/README.md "Size").
    let agent = manifest("agent");
    let d = agent["dependencies"].as_table().unwrap();
    assert!(!d.contains_key("tract-onnx"), "the agent links tract-onnx");
    let features = d["outpost-models"].get("features").and_then(|f| f.as_array()).cloned().unwrap_or_default();
    assert!(features.is_empty(), "the agent enables model-library features {features:?}");
    let models = manifest("models");
    for onnx_crate in ["tract-onnx", "tract-onnx-opl"] {
        let optional = models["dependencies"][onnx_crate].get("optional").and_then(|v| v.as_bool());
        assert_eq!(optional, Some(true), "the model library must keep {onnx_crate} optional");
    }
    for f in ["tokio", "rumqttc", "axum", "redb"] {
        assert!(!deps("models").contains(f), "the model library depends on {f}");
    }
}

#[test]
fn the_protocol_crate_has_no_io_runtime_or_clock_dependencies() {
    let forbidden = ["tokio", "rumqttc", "rumqttd", "redb", "axum", "hyper", "reqwest", "tract-onnx", "chrono", "time"];
    let d = deps("protocol");
    for f in forbidden {
        assert!(!d.contains(f), "protocol must stay pure but depends on {f}");
    }
    // And no source file reaches for the clock or the file system.
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../protocol/src");
    for entry in std::fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for needle in ["SystemTime", "Instant::now", "std::fs", "std::net", "tokio"] {
            assert!(!text.contains(needle), "{} uses {needle}", path.display());
        }
    }
}

//! The memory budget and the accepted model names, as an installer meets them: a model that would take
//! the device over its budget is refused with `insufficient_memory` and the numbers, and the models
//! already serving keep serving; a device pinned to some model names refuses the others.

mod support;

use std::path::Path;
use std::process::Output;
use support::*;

fn install(dir: &Path, bundle: &[u8], config: Option<&Path>) -> Output {
    let config = config.map(|c| c.display().to_string());
    let extra: Vec<&str> = config.iter().flat_map(|c| ["--config", c.as_str()]).collect();
    install_local(dir, bundle, &extra)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_model_over_the_memory_budget_is_refused_with_the_numbers_while_the_others_serve() {
    let dir = tempdir("memory-budget");
    let cfg = config(&dir, "[cache]\nmax_entries = 0\n");
    for (name, file) in [("digits", "v1"), ("shapes", "subtle")] {
        let out = install(&dir, &signed_bundle_named(name, file, "1.0.0", 1), None);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
    }
    let agent = Agent::start(cfg);
    agent.wait_for("/v2/health/ready", "two models", |r| r.status == 200);
    let slots = outpost_agent::store::Store::open(&dir.join("data")).unwrap().slots().unwrap();
    let serving: u64 = slots.installed().map(|(_, m)| m.mem_bytes).sum();
    assert!(slots.installed().all(|(_, m)| m.mem_bytes > 0), "each model's footprint is recorded: {slots:?}");

    // A budget that the two serving models fill: a third is refused before it is loaded.
    let toml = dir.join("tight.toml");
    std::fs::write(&toml, format!("[models]\nmemory_budget = \"{}\"\n", serving + (64 << 10))).unwrap();
    let out = install(&dir, &signed_bundle_named("sensor", "v2", "1.0.0", 1), Some(&toml));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.starts_with("rejected: insufficient_memory: sensor 1.0.0 takes"), "{err}");
    for want in ["estimated from its size", "digits", "shapes", "over the memory budget of"] {
        assert!(err.contains(want), "the refusal names {want:?}: {err}");
    }
    let image = test_set().0[3].clone();
    for name in ["digits", "shapes"] {
        let r = agent.post(&format!("/v2/models/{name}/infer"), &infer_body(std::slice::from_ref(&image)));
        assert_eq!(r.status, 200, "{name} keeps serving: {}", r.text());
    }
    assert_eq!(agent.post("/v2/models/sensor/infer", &infer_body(&[image])).status, 404);

    // A device pinned to some model names refuses others, by the verified manifest's name.
    let pinned = dir.join("pinned.toml");
    std::fs::write(&pinned, "[models]\naccept = [\"digits\", \"shapes\"]\n").unwrap();
    let out = install(&dir, &signed_bundle_named("sensor", "v2", "1.0.0", 1), Some(&pinned));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("desired_mismatch") && stderr(&out).contains("accepts only the models digits, shapes")
    );
    let ok = install(&dir, &signed_bundle_named("shapes", "v2", "2.0.0", 2), Some(&pinned));
    assert!(ok.status.success(), "{}", stderr(&ok));
}

//! Several models on one device through the local CLI, as an installer uses it: `install A` then
//! `install B` and both serve; a new version of A leaves B untouched; `remove B` stops serving B only;
//! `status` lists every model with its slots, version, floor and state.

mod support;

use std::process::Output;
use support::*;

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn answer_200(agent: &Agent, model: &str, image: &[f32]) -> (String, Vec<f64>) {
    answer(agent.addr, model, image).unwrap_or_else(|| panic!("{model} did not answer 200"))
}

#[test]
fn two_models_installed_side_by_side_update_and_remove_independently() {
    let dir = tempdir("multi-install");
    let cfg = config(&dir, "[cache]\nmax_entries = 0\n");
    let a = install_local(&dir, &signed_bundle_named("digits", "v1", "1.0.0", 1), &[]);
    assert!(a.status.success(), "{}", text(&a));
    let agent = Agent::start(cfg);
    let b = install_local(&dir, &signed_bundle_named("shapes", "v2", "1.0.0", 1), &[]);
    assert!(b.status.success(), "{}", text(&b));
    assert!(text(&b).contains("installed shapes 1.0.0 (sequence 1) as active"), "{}", text(&b));
    agent.wait_for("/v2/health/ready", "both models loaded", |r| {
        r.status == 200 && r.json()["models"].as_array().is_some_and(|m| m.len() == 2)
    });
    let image = test_set().0[7].clone();
    let digits_v1 = answer_200(&agent, "digits", &image);
    let shapes_v1 = answer_200(&agent, "shapes", &image);
    assert_ne!(digits_v1.1, shapes_v1.1, "two different models answer");
    assert_eq!(agent.get("/v2/models/shapes").json()["versions"][0], "1.0.0");
    assert_eq!(agent.get("/v2/models/nothing/infer").status, 405, "GET on an infer route");
    assert_eq!(agent.post("/v2/models/nothing/infer", &infer_body(std::slice::from_ref(&image))).status, 404);

    // A new version of digits: shapes keeps its model and its answers.
    let up = install_local(&dir, &signed_bundle_named("digits", "v2", "2.0.0", 2), &[]);
    assert!(up.status.success(), "{}", text(&up));
    agent.wait_for("/v2/models/digits", "digits 2.0.0", |r| r.json()["versions"][0] == "2.0.0");
    assert_eq!(answer_200(&agent, "shapes", &image), shapes_v1, "shapes untouched by the digits update");
    assert_eq!(answer_200(&agent, "digits", &image).0, "2.0.0");

    let listen = agent.addr.to_string();
    let status = text(&agent_cli(&dir, &["status", "--listen", &listen]));
    for want in ["model digits: serving (floor 2)", "model shapes: serving (floor 1)", "2.0.0 (sequence 2)"] {
        assert!(status.contains(want), "status shows {want:?}:\n{status}");
    }

    // Remove shapes: it stops answering, digits serves on, the floor of shapes stays.
    let gone = agent_cli(&dir, &["remove", "shapes"]);
    assert!(gone.status.success(), "{}", text(&gone));
    assert!(text(&gone).contains("removed shapes 1.0.0"), "{}", text(&gone));
    agent.wait_for("/v2/models/shapes", "shapes unloaded", |r| r.status == 404);
    assert_eq!(answer_200(&agent, "digits", &image).0, "2.0.0");
    assert_eq!(agent.get("/v2/health/ready").status, 200, "ready: every installed model is loaded");
    let status = text(&agent_cli(&dir, &["status", "-o", "json"]));
    let j: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(
        (j["models"]["shapes"]["state"].as_str(), j["models"]["shapes"]["floor"].as_u64()),
        (Some("removed"), Some(1))
    );
    let again = agent_cli(&dir, &["remove", "shapes"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again).contains("model \"shapes\" is not installed (installed: digits)"), "{}", text(&again));
    let old = install_local(&dir, &signed_bundle_named("shapes", "v2", "0.9.0", 1), &[]);
    assert!(text(&old).contains("rejected: rollback"), "a removed model's floor still holds: {}", text(&old));
}

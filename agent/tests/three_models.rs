//! Three models reach one device, the way they do in the field: one installed by hand (`outpost-agent
//! install`), two by the fleet at the same time (two desired states of two rollouts, retained on
//! mosquitto, fetched in chunks, verified, self-tested, activated and watched concurrently). Each model
//! answers exactly as it does alone while the others install; a revert of one leaves the other two.

mod support;

use outpost_protocol::messages::{DesiredState, Mode, Watch};
use outpost_protocol::telemetry::UpdateStage;
use outpost_protocol::{DeviceId, ModelName};
use support::broker::Mosquitto;
use support::controller::FakeController;
use support::*;

fn desired(
    model: &str,
    version: &str,
    sequence: u64,
    bundle: outpost_protocol::messages::BundleRef,
    mode: Mode,
) -> DesiredState {
    DesiredState {
        model: ModelName::new(model).unwrap(),
        version: version.parse().unwrap(),
        sequence,
        bundle,
        rollout: Some(format!("{model}-{version}")),
        mode,
        issued_at: 0,
        watch: Watch { secs: 2, ..Watch::default() },
    }
}

#[test]
fn two_concurrent_fleet_installs_and_one_local_install_serve_three_models_side_by_side() {
    let dir = tempdir("three-models");
    let broker = Mosquitto::start(&dir);
    let ctl = FakeController::start(broker.port);
    let device = DeviceId::new("dev-three").unwrap();
    let extra = format!("[link]\nbroker = \"{}\"\ndevice_id = \"{device}\"\n", broker.url());
    trust_files(&dir);
    let install = install_local(&dir, &signed_bundle_named("sensor", "subtle", "1.0.0", 1), &[]);
    assert!(install.status.success(), "{}", String::from_utf8_lossy(&install.stderr));
    let agent = AgentProcess::spawn(&dir, &extra);
    let image = test_set().0[11].clone();
    let sensor = answer(agent.addr, "sensor", &image).expect("the local model serves");

    // Two rollouts of two models, published together.
    let digits = ctl.offer(signed_bundle_named("digits", "v1", "1.0.0", 1));
    let shapes = ctl.offer(signed_bundle_named("shapes", "v2", "3.0.0", 1));
    ctl.publish_desired(&device, &desired("digits", "1.0.0", 1, digits, Mode::Activate));
    ctl.publish_desired(&device, &desired("shapes", "3.0.0", 1, shapes, Mode::Activate));
    // While both install, the local model answers as before.
    ctl.wait_event("1.0.0", UpdateStage::Verifying);
    assert_eq!(answer(agent.addr, "sensor", &image).as_ref(), Some(&sensor), "sensor while the others install");
    ctl.wait_event("1.0.0", UpdateStage::Committed);
    ctl.wait_event("3.0.0", UpdateStage::Committed);
    let got = |m: &str| answer(agent.addr, m, &image).unwrap_or_else(|| panic!("{m} serves; log:\n{}", agent.log()));
    let (digits_v1, shapes_v1) = (got("digits"), got("shapes"));
    assert_eq!((digits_v1.0.as_str(), shapes_v1.0.as_str()), ("1.0.0", "3.0.0"));
    assert_eq!(got("sensor"), sensor);
    assert_ne!(digits_v1.1, shapes_v1.1, "two different models answer");
    // Each model answers as it does alone (the same weights loaded on their own, as the local one was).
    let ready = agent.get("/v2/health/ready");
    assert_eq!(ready.status, 200, "{}", ready.text());
    assert_eq!(ready.json()["models"].as_array().map(Vec::len), Some(3), "{}", ready.text());

    // A second digits release, then the fleet reverts it: shapes and sensor never change.
    let digits2 = ctl.offer(signed_bundle_named("digits", "v2", "2.0.0", 2));
    ctl.publish_desired(&device, &desired("digits", "2.0.0", 2, digits2.clone(), Mode::Activate));
    ctl.wait_event("2.0.0", UpdateStage::Committed);
    assert_eq!(got("digits").0, "2.0.0");
    assert_eq!(got("shapes"), shapes_v1, "shapes untouched by the digits update");
    ctl.direct(&device, &desired("digits", "2.0.0", 2, digits2, Mode::Revert));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while got("digits").0 != "1.0.0" {
        assert!(std::time::Instant::now() < deadline, "digits reverted; log:\n{}", agent.log());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(got("digits"), digits_v1, "back on exactly the previous model");
    assert_eq!(got("shapes"), shapes_v1, "shapes untouched by the digits revert");
    assert_eq!(got("sensor"), sensor, "sensor untouched by the digits revert");

    // `status` lists the three, each with its own floor.
    let status = agent_cli(&dir, &["status", "-o", "json", "--listen", &agent.addr.to_string()]);
    let j: serde_json::Value = serde_json::from_slice(&status.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&status.stderr)));
    for (model, floor) in [("digits", 2), ("shapes", 1), ("sensor", 1)] {
        assert_eq!(j["models"][model]["floor"].as_u64(), Some(floor), "{model}: {j}");
    }
}

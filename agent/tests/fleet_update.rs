//! Updates over the fleet link, end to end: a real mosquitto, a stand-in controller, a real agent with
//! real models. Install, update with shadow and as a delta (with a corrupted chunk re-fetched), a model
//! the watch rolls back, and a tampered bundle refused, while the agent keeps serving.

mod support;

use outpost_protocol::messages::{Mode, Watch};
use outpost_protocol::telemetry::{RecordBody, UpdateStage};
use outpost_protocol::{DeviceId, RejectReason};
use support::broker::Mosquitto;
use support::controller::FakeController;
use support::*;

fn serves(agent: &Agent, version: &str) {
    agent.wait_for("/v2/models/digits", &format!("digits {version} serving"), |r| {
        r.status == 200 && r.json()["versions"][0] == version
    });
}

fn quick_watch() -> Watch {
    Watch { secs: 2, max_error_ppm: 10_000, max_p95_us: 0, min_requests: 5, max_restarts: 3 }
}

#[test]
fn updates_over_mqtt_install_shadow_delta_roll_back_and_refuse_while_serving() {
    let dir = tempdir("fleet");
    let mut broker = Mosquitto::start(&dir);
    let ctl = FakeController::start(broker.port);
    let device = DeviceId::new("dev-fleet-1").unwrap();
    let extra = format!(
        "[link]\nbroker = \"{}\"\ndevice_id = \"{device}\"\nlabels = {{ region = \"eu\" }}\n[telemetry]\nwindow = \"1s\"\n[cache]\nmax_entries = 0\n",
        broker.url()
    );
    let agent = Agent::start(config(&dir, &extra));
    let (images, _) = test_set();
    let infer = |n: usize| {
        for image in images.iter().take(n) {
            let r = agent.post("/v2/models/digits/infer", &infer_body(std::slice::from_ref(image)));
            assert!(r.status == 200, "{}", r.text());
        }
    };

    // 0. Garbage on the device's topics is dropped; the link and the agent carry on.
    use outpost_protocol::topics::{self, Down};
    ctl.publish_raw(
        topics::down(&device, &Down::Desired(outpost_protocol::ModelName::new("digits").unwrap())),
        b"not a message".to_vec(),
        true,
    );
    ctl.publish_raw(
        topics::down(&device, &Down::Chunk),
        vec![b'O', b'P', outpost_protocol::codec::MAJOR, 0, 0xff, 0xff],
        false,
    );
    assert_eq!(agent.get("/v2/health/live").status, 200);

    // 1. First model, full bundle.
    let v1 = ctl.offer(signed_bundle("v1", "1.0.0", 1));
    ctl.desire(&device, "1.0.0", 1, v1, Mode::Activate, quick_watch());
    serves(&agent, "1.0.0");
    infer(20);
    ctl.wait_event("1.0.0", UpdateStage::Committed);

    // 2. v2 as a delta against v1, shadowed first; its first chunk arrives corrupted and is fetched again.
    let v2 = ctl.offer(signed_delta("v2", "v1", "2.0.0", 2));
    ctl.corrupt_once(v2.digest, 0);
    let requests_before = ctl.seen.lock().unwrap().chunk_requests;
    ctl.desire(&device, "2.0.0", 2, v2, Mode::Shadow { secs: 2, sample_percent: 100 }, quick_watch());
    ctl.wait_event("2.0.0", UpdateStage::Shadow);
    agent.wait_for("/outpost/v1/status", "v2 shadowing", |r| {
        r.json()["models"]["digits"]["candidate"]["version"] == "2.0.0"
    });
    infer(50);
    serves(&agent, "2.0.0");
    infer(20);
    ctl.wait_event("2.0.0", UpdateStage::Committed);
    assert!(ctl.seen.lock().unwrap().chunk_requests > requests_before + 1, "the corrupted chunk was requested again");

    // 3. A model whose latency cannot meet the watch budget: activated, judged, rolled back to v2.
    let budget = Watch { max_p95_us: 1, ..quick_watch() };
    let bad = ctl.offer(signed_bundle("bad", "3.0.0", 3));
    ctl.desire(&device, "3.0.0", 3, bad, Mode::Activate, budget);
    serves(&agent, "3.0.0");
    infer(20);
    let rolled = ctl.wait_event("3.0.0", UpdateStage::RolledBack);
    assert_eq!(rolled.reason, Some(RejectReason::UnhealthyLatency), "{}", rolled.detail);
    assert!(rolled.detail.contains("over the budget of 1 µs"), "evidence: {}", rolled.detail);
    serves(&agent, "2.0.0");

    // 4. A bundle changed after signing: refused, v2 keeps serving.
    let mut tampered = signed_bundle("v1", "4.0.0", 4);
    let n = tampered.len();
    tampered[n / 3] ^= 1;
    let t = ctl.offer(tampered);
    ctl.desire(&device, "4.0.0", 4, t, Mode::Activate, quick_watch());
    let refused = ctl.wait_event("4.0.0", UpdateStage::Rejected);
    assert!(refused.reason.is_some(), "{refused:?}");
    infer(5);
    serves(&agent, "2.0.0");

    // 5. Fleet `abort --revert`: one step back to the kept previous model (v1, kept through the rollback).
    let mut revert_ref = ctl.offer(b"revert".to_vec());
    revert_ref.chunks.clear();
    ctl.desire(&device, "2.0.0", 2, revert_ref, Mode::Revert, quick_watch());
    serves(&agent, "1.0.0");

    // Telemetry arrived with every update event and inference window, acked and de-duplicated.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let seen = ctl.seen.lock().unwrap();
    let seqs: Vec<u64> = seen.records.keys().copied().collect();
    assert!(!seqs.is_empty());
    assert_eq!(seqs, (seqs[0]..=*seqs.last().unwrap()).collect::<Vec<_>>(), "no gaps in the sequence");
    let updates = seen.records.values().filter(|r| matches!(r.body, RecordBody::Update(_))).count();
    let windows = seen.records.values().filter(|r| matches!(r.body, RecordBody::Inference(_))).count();
    assert!(updates >= 20, "{updates} update events in telemetry");
    assert!(windows >= 2, "{windows} inference windows");
    let shadowed = seen.records.values().any(|r| match &r.body {
        RecordBody::Inference(w) => w.shadow.as_ref().is_some_and(|s| s.compared > 0),
        _ => false,
    });
    assert!(shadowed, "a window carried shadow statistics");
    assert!(seen.hellos >= 1);
    drop(seen);
    drop(agent);
    broker.stop();
}

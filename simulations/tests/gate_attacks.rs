//! One device cannot steer a wave's gates (issue 14). Every part real: mosquitto, `outpost serve`, four
//! in-process agents serving digits to an application that asks them about held-out images. One of the
//! four is compromised: an attacker with a plain MQTT client publishes its telemetry in the wave of each
//! rollout, with counts of 10^12. Its forged figures neither block a good release (it claims every
//! shadow comparison disagreed, every request failed, a p95 of an hour, a PSI of 10^9) nor pass a bad one
//! (it claims 10^12 comparisons that all agreed, no error, a negative PSI): it weighs as one device, a
//! third of the evidence at most (a gate judges from three devices with a figure on), and the gates leave
//! more than a third of margin (shadow agreement at least 60 %, error rate at most 40 %), so only a device
//! weighing more than one device could flip them.
//!
//! Before, counts were summed: the forged shadow counts alone decided both rollouts, the good release was
//! rolled back and the bad one went live.

mod support;

use outpost_protocol::codec;
use outpost_protocol::digest::Digest;
use outpost_protocol::manifest::ModelFormat;
use outpost_protocol::messages::{Message, TelemetryBatch};
use outpost_protocol::telemetry::{InferenceWindow, Record, RecordBody, ShadowStats};
use outpost_protocol::topics::{self, Up};
use outpost_protocol::{DeviceId, ModelName, Version};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::*;

/// The digest devices report for the model inside `simulations/models/digits-{file}.onnx` as bundled.
fn model_digest(file: &str) -> Digest {
    let onnx = std::fs::read(outpost_simulations::models_dir().join(format!("digits-{file}.onnx"))).unwrap();
    let nnef = outpost_models::onnx::to_nnef(&onnx).unwrap();
    outpost_protocol::bundle::prepare_payload(&nnef, None, ModelFormat::Nnef).0.model_sha256
}

/// What the compromised device claims while a rollout from `running` to `candidate` goes on.
#[derive(Debug, Clone, Copy)]
struct Forgery {
    running: (Digest, Version),
    candidate: (Digest, Version),
    /// Claim a perfect candidate (to pass a bad release) or a broken one (to block a good release).
    praise: bool,
}

fn window(digest: Digest, version: Version, f: &Forgery, shadow: bool) -> InferenceWindow {
    let n = 1_000_000_000_000u64;
    InferenceWindow {
        model: ModelName::new("digits").unwrap(),
        version,
        digest,
        window_start: now() - 1,
        window_secs: 1,
        requests: n,
        errors: if f.praise { 0 } else { n },
        timeouts: if f.praise { 0 } else { u64::MAX },
        rejected: 0,
        latency_hist: Vec::new(),
        latency_p50_us: 1,
        latency_p95_us: if f.praise { 1 } else { u32::MAX },
        cache_hits: 0,
        cache_misses: n,
        shadow: shadow.then_some(ShadowStats {
            candidate_version: f.candidate.1,
            candidate_digest: f.candidate.0,
            compared: n,
            agreed_top1: if f.praise { n } else { 0 },
            max_abs_diff: 0.0,
            candidate_p95_us: 1,
            candidate_mem_bytes: 0,
        }),
        features: Vec::new(),
        output_classes: vec![n / 10; 10],
        class_psi: Some(if f.praise { -5.0 } else { 1e9 }),
    }
}

/// The attacker: a plain MQTT client publishing the device's telemetry every 300 ms with sequence numbers
/// above anything the device sent (so the controller takes the forgery and drops the device's own), until
/// `stop`.
fn attacker(broker: u16, device: DeviceId, forgery: Arc<Mutex<Option<Forgery>>>, stop: Arc<AtomicBool>) {
    let o = rumqttc::MqttOptions::new("telemetry-forger", "127.0.0.1", broker);
    let (client, mut connection) = rumqttc::Client::new(o, 64);
    std::thread::spawn(move || for _ in connection.iter() {});
    let topic = topics::up(&device, Up::Telemetry);
    let mut seq = 1_000_000_000u64;
    while !stop.load(Ordering::Relaxed) {
        if let Some(f) = *forgery.lock().unwrap() {
            let records = vec![
                // While it shadows: the running model's window carries the candidate's comparisons.
                Record { seq, at: now(), body: RecordBody::Inference(window(f.running.0, f.running.1, &f, true)) },
                // Once it runs the candidate: its windows.
                Record {
                    seq: seq + 1,
                    at: now(),
                    body: RecordBody::Inference(window(f.candidate.0, f.candidate.1, &f, false)),
                },
            ];
            let batch = TelemetryBatch { first_seq: seq, last_seq: seq + 1, records };
            seq += 2;
            let bytes = codec::encode_compressed(&Message::Telemetry(batch));
            client.publish(topic.clone(), rumqttc::QoS::AtLeastOnce, false, bytes).unwrap();
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    client.disconnect().ok();
}

#[test]
fn one_devices_forged_telemetry_neither_blocks_a_good_release_nor_passes_a_bad_one() {
    let dir = tempdir("gate-attacks");
    let (_broker, port) = mosquitto(&dir);
    let ctl = Controller::with_broker(&dir, port);
    let run = |args: &[&str]| ctl.run(args);
    for (file, version, seq) in [("v1", "1.0.0", 1), ("v2", "2.0.0", 2), ("bad", "3.0.0", 3)] {
        let out = ctl.push_bundle(&dir, &format!("digits-{version}"), model_bundle("digits", file, version, seq));
        assert!(out.status.success(), "push {version}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let _agents: Vec<_> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| agent_on(&dir, &format!("dev-{i}"), port, "site = \"lab\"", *p))
        .collect();
    // The application asks every device about held-out digits the whole time: shadows compare real answers.
    let raw = std::fs::read(outpost_simulations::models_dir().join("digits-test-inputs.f32")).unwrap();
    let floats: Vec<f32> = raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    let images: Vec<Vec<f32>> = floats.chunks_exact(64).map(<[f32]>::to_vec).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (stop, ports) = (stop.clone(), ports.clone());
        std::thread::spawn(move || {
            for image in images.iter().cycle() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                ports.iter().for_each(|p| infer_image(*p, image));
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let ids = ["dev-0", "dev-1", "dev-2", "dev-3"];
    wait_until("four devices", 30, || run(&["devices", "list"]).matches("dev-").count() == 4, || ctl.context(&ids));
    let all = |version: &str| ports.iter().all(|p| serving(*p).as_deref() == Some(version));
    let first = ["--bundle", "digits@1.0.0", "--waves", "100%", "--bake", "10s", "--watch", "2s", "--id", "first"];
    run(&[&["rollout", "start"][..], &first].concat());
    ctl.wait_phase("first", "Completed", 180);
    wait_until("digits 1.0.0 everywhere", 60, || all("1.0.0"), || ctl.context(&ids));

    // Waits for a rollout's phase, showing its status and every device on a timeout.
    let wait_phase = |id: &str, want: &str| {
        let status = || ctl.json(&["rollout", "status", id]);
        let is = |r: &serde_json::Value| r["state"]["phase"] == want || r["state"]["phase"].get(want).is_some();
        let context = || format!("{}\n{}", run(&["rollout", "status", id]), ctl.context(&ids));
        wait_until(&format!("{id} becomes {want}"), 240, || is(&status()), context);
        status()
    };

    // dev-3 is compromised from now on.
    let forgery = Arc::new(Mutex::new(None));
    let forger = {
        let (forgery, stop) = (forgery.clone(), stop.clone());
        std::thread::spawn(move || attacker(port, DeviceId::new("dev-3").unwrap(), forgery, stop))
    };
    let (v1, v2, bad) = (model_digest("v1"), model_digest("v2"), model_digest("bad"));
    let version = |s: &str| s.parse::<Version>().unwrap();
    // One wave of all four devices, so the compromised one is in it; a quorum of all four.
    let gated = |bundle: &str, id: &str| {
        // A long bake: four debug-built agents fetch, verify, self-test and shadow under load slowly, and a
        // wave that has not heard from every device by the end of its hold pauses.
        let args = ["rollout", "start", "--bundle", bundle, "--waves", "100%", "--bake", "30s", "--watch", "2s"];
        let gates = ["--shadow", "5s", "--min-shadow-agreement", "60%", "--max-error-rate", "40%", "--quorum", "100%"];
        run(&[&args[..], &gates, &["--on-failure", "rollback", "--id", id]].concat());
    };

    // A good release (v2 agrees with v1 on most held-out digits): dev-3 claims every comparison disagreed
    // and every request failed. It completes.
    *forgery.lock().unwrap() =
        Some(Forgery { running: (v1, version("1.0.0")), candidate: (v2, version("2.0.0")), praise: false });
    gated("digits@2.0.0", "good");
    let status = wait_phase("good", "Completed");
    let text = run(&["rollout", "status", "good"]);
    println!("$ outpost rollout status good\n{text}");
    assert!(text.contains("1 device(s) reported impossible figures"), "the forgery is named:\n{text}");
    assert_eq!(status["state"]["phase"], "Completed", "{text}");
    wait_until("digits 2.0.0 everywhere", 60, || all("2.0.0"), || ctl.context(&ids));

    // A bad release (scrambled weights: about one answer in ten agrees): dev-3 claims 10^12 comparisons
    // that all agreed, no error, no drift. The shadow gate fails and the release never serves.
    *forgery.lock().unwrap() =
        Some(Forgery { running: (v2, version("2.0.0")), candidate: (bad, version("3.0.0")), praise: true });
    gated("digits@3.0.0", "bad");
    let mut saw_bad = 0;
    let status = wait_phase("bad", "RolledBack");
    let text = run(&["rollout", "status", "bad"]);
    println!("$ outpost rollout status bad\n{text}");
    let reason = status["state"]["phase"]["RolledBack"].to_string();
    assert!(reason.contains("shadow-agreement"), "rolled back by the shadow gate: {reason}\n{text}");
    wait_until(
        "digits 2.0.0 everywhere after the rollback",
        60,
        || {
            saw_bad += ports.iter().filter(|p| serving(**p).as_deref() == Some("3.0.0")).count();
            all("2.0.0")
        },
        || ctl.context(&ids),
    );
    assert_eq!(saw_bad, 0, "the bad release never served");

    stop.store(true, Ordering::Relaxed);
    forger.join().unwrap();
    load.join().unwrap();
}

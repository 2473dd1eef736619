//! Rollouts per model against the real controller (`outpost serve`) over a real mosquitto, with devices
//! played by plain MQTT clients that speak the wire protocol: each runs a set of models and acts on the
//! retained desired state of each model apart (install, revert, remove), as the agent's per-model update
//! machine will (issue 12, agent side). Two rollouts of two models on the same devices run their own
//! waves; `abort --revert` of one never touches the other; a removal rollout takes a model off devices.

mod support;

use outpost_protocol::codec;
use outpost_protocol::messages::{DesiredState, Hello, Message, Mode, RunningModel, TelemetryBatch};
use outpost_protocol::telemetry::{InferenceWindow, LATENCY_BUCKETS_US, Record, RecordBody, UpdateEvent, UpdateStage};
use outpost_protocol::topics::{self, Down, Up};
use outpost_protocol::{Arch, DeviceId, Digest, Limits, ModelName, Version};
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

/// What each pushed bundle installs: bundle digest -> the running model it becomes.
type Releases = Arc<HashMap<Digest, RunningModel>>;

/// A device as a plain MQTT client: it serves `running`, keeps the model it replaced per model name for
/// a revert, and reports a window per model every 500 ms.
fn device(id: &str, port: u16, region: &str, start: Vec<RunningModel>, releases: Releases, stop: Arc<Mutex<bool>>) {
    let dev = DeviceId::new(id).unwrap();
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut conn) = Client::new(o, 64);
    client.subscribe(topics::device_subscription(&dev), QoS::AtLeastOnce).unwrap();
    let mut running: BTreeMap<ModelName, RunningModel> = start.into_iter().map(|r| (r.name.clone(), r)).collect();
    let mut previous: HashMap<ModelName, RunningModel> = HashMap::new();
    let mut seq = 0u64;
    let publish = |kind: Up, msg: &Message| {
        client.publish(topics::up(&dev, kind), QoS::AtLeastOnce, false, codec::encode(msg)).unwrap();
    };
    let hello = |running: &BTreeMap<ModelName, RunningModel>| {
        Message::Hello(Hello {
            device: dev.clone(),
            arch: Arch::X86_64,
            agent_version: Version::new(0, 1, 0),
            labels: vec![("region".into(), region.into())],
            running: running.values().cloned().collect(),
            boot_id: 7,
            max_packet: 1 << 20,
        })
    };
    publish(Up::Hello, &hello(&running));
    let mut last_report = Instant::now();
    while !*stop.lock().unwrap() {
        if last_report.elapsed() > Duration::from_millis(500) {
            last_report = Instant::now();
            let records: Vec<Record> = running
                .values()
                .map(|r| {
                    seq += 1;
                    Record { seq, at: now(), body: RecordBody::Inference(window(r)) }
                })
                .collect();
            if let (Some(first), Some(last)) = (records.first().map(|r| r.seq), records.last().map(|r| r.seq)) {
                let batch = TelemetryBatch { first_seq: first, last_seq: last, records };
                publish(Up::Telemetry, &Message::Telemetry(batch));
            }
        }
        let Ok(Ok(Event::Incoming(Packet::Publish(p)))) = conn.recv_timeout(Duration::from_millis(100)) else {
            continue;
        };
        let model = match topics::parse(&p.topic) {
            Some(topics::Parsed::Down(_, Down::Desired(model))) => model,
            Some(topics::Parsed::Down(_, Down::Ack)) => {
                // The controller missed this device's hello (it subscribed after the device connected).
                if let Ok(Message::TelemetryAck(a)) = codec::decode(&p.payload, &Limits::default())
                    && a.hello_wanted
                {
                    publish(Up::Hello, &hello(&running));
                }
                continue;
            }
            _ => continue,
        };
        if p.payload.is_empty() {
            continue; // Withdrawn: keep what runs.
        }
        // The controller signs each desired state for its device (the director's statement).
        let Ok(Message::SignedDesired(s)) = codec::decode(&p.payload, &Limits::default()) else { continue };
        let Ok(x) = s.request().map(|s| s.desired) else { continue };
        assert_eq!(x.model, model, "the topic's model and the desired state's agree");
        let event = |to: UpdateStage, x: &DesiredState| {
            Message::Event(UpdateEvent {
                rollout: x.rollout.clone(),
                model: x.model.clone(),
                version: x.version,
                bundle: x.bundle.digest,
                from: UpdateStage::Idle,
                to,
                reason: None,
                detail: String::new(),
                seq: 0,
            })
        };
        match x.mode {
            Mode::Activate | Mode::Shadow { .. } => {
                let release = releases[&x.bundle.digest].clone();
                if running.get(&model) == Some(&release) {
                    continue;
                }
                if let Some(old) = running.insert(model.clone(), release) {
                    previous.insert(model.clone(), old);
                }
                publish(Up::Events, &event(UpdateStage::Committed, &x));
            }
            Mode::Revert => {
                let on_it = running.get(&model).is_some_and(|r| r.sequence == x.sequence);
                if let (true, Some(p)) = (on_it, previous.remove(&model)) {
                    running.insert(model.clone(), p);
                    publish(Up::Events, &event(UpdateStage::RolledBack, &x));
                }
            }
            Mode::Remove => {
                running.remove(&model);
            }
        }
        publish(Up::Hello, &hello(&running));
    }
}

fn window(r: &RunningModel) -> InferenceWindow {
    let mut hist = vec![0u64; LATENCY_BUCKETS_US.len() + 1];
    hist[3] = 50;
    InferenceWindow {
        model: r.name.clone(),
        version: r.version,
        digest: r.digest,
        window_start: now(),
        window_secs: 1,
        requests: 50,
        errors: 0,
        timeouts: 0,
        rejected: 0,
        latency_hist: hist,
        latency_p50_us: 900,
        latency_p95_us: 1_000,
        cache_hits: 0,
        cache_misses: 50,
        shadow: None,
        features: vec![],
        output_classes: vec![],
        class_psi: None,
    }
}

/// Devices on which `model` runs `version`.
fn on(list: &[serde_json::Value], model: &str, version: &str) -> usize {
    list.iter()
        .filter(|d| d["running"].as_array().unwrap().iter().any(|r| r["name"] == model && r["version"] == version))
        .count()
}

fn release(bytes: &[u8]) -> (Digest, RunningModel) {
    let m = outpost_protocol::bundle::inspect(bytes, &Limits::default()).unwrap().manifest;
    let r = RunningModel { name: m.name, version: m.version, digest: m.payload.model_sha256, sequence: m.sequence };
    (Digest::of(bytes), r)
}

#[test]
fn rollouts_of_two_models_on_the_same_devices_are_independent_and_a_removal_takes_one_off() {
    let dir = tempdir("model-rollouts");
    let (_broker, port) = mosquitto(&dir);
    let ctl = Controller::with_broker(&dir, port);

    // Two models, two releases each, pushed and verified by the controller.
    let bundles = [
        ("digits", "1.0.0", 1, "v1"),
        ("digits", "2.0.0", 2, "v2"),
        ("vibration", "1.0.0", 1, "v1"),
        ("vibration", "1.1.0", 2, "v2"),
    ];
    let mut releases = HashMap::new();
    let mut first: HashMap<&str, RunningModel> = HashMap::new();
    for (model, version, seq, file) in bundles {
        let bytes = model_bundle(model, file, version, seq);
        let (digest, r) = release(&bytes);
        if seq == 1 {
            first.insert(model, r.clone());
        }
        releases.insert(digest, r);
        let out = ctl.push_bundle(&dir, &format!("{model}-{version}"), bytes);
        assert!(out.status.success(), "push {model} {version}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let releases: Releases = Arc::new(releases);

    // Eight devices run digits 1.0.0 and vibration 1.0.0; two more run digits only.
    let stop = Arc::new(Mutex::new(false));
    let mut threads = Vec::new();
    for i in 0..10 {
        let start = if i < 8 {
            vec![first["digits"].clone(), first["vibration"].clone()]
        } else {
            vec![first["digits"].clone()]
        };
        let (rel, stop) = (releases.clone(), stop.clone());
        let region = if i % 2 == 0 { "eu" } else { "us" };
        threads.push(std::thread::spawn(move || device(&format!("dev-{i:02}"), port, region, start, rel, stop)));
    }
    ctl.wait_devices("all ten devices registered", 60, |l| l.len() == 10 && on(l, "vibration", "1.0.0") == 8);
    let table = ctl.run(&["devices", "list"]);
    assert!(table.contains("digits 1.0.0, vibration 1.0.0"), "every model in one line: {table}");

    // Both rollouts at once, on overlapping devices, each with its own waves.
    ctl.run(&["rollout", "start", "--bundle", "digits@2.0.0", "--waves", "2,100%", "--bake", "2s", "--id", "d2"]);
    ctl.run(&[
        "rollout",
        "start",
        "--bundle",
        "vibration@1.1.0",
        "--waves",
        "1,50%,100%",
        "--bake",
        "3s",
        "--id",
        "v11",
    ]);
    let d2 = ctl.wait_phase("d2", "Completed", 60);
    assert_eq!(d2["state"]["members"].as_object().unwrap().len(), 10);
    let v11 = ctl.wait_phase("v11", "Completed", 60);
    let fresh = |r: &serde_json::Value| {
        r["state"]["members"].as_object().unwrap().values().filter(|m| m["fresh"] == true).count()
    };
    assert_eq!((v11["state"]["members"].as_object().unwrap().len(), fresh(&v11)), (10, 2), "it added vibration to two");
    ctl.wait_devices("both releases everywhere", 60, |l| {
        on(l, "digits", "2.0.0") == 10 && on(l, "vibration", "1.1.0") == 10
    });
    let advanced = |r: &serde_json::Value| r["state"]["history"].to_string().matches("Advanced").count();
    assert_eq!((advanced(&d2), advanced(&v11)), (1, 2), "each rollout went through its own waves");

    // abort --revert of vibration never touches digits; the two devices it added vibration to remove it.
    let out = ctl.run(&["rollout", "abort", "v11", "--revert"]);
    assert!(out.contains("v11"), "{out}");
    ctl.wait_devices("vibration back on 1.0.0", 60, |l| {
        on(l, "vibration", "1.0.0") == 8 && on(l, "vibration", "1.1.0") == 0
    });
    let list = ctl.json(&["devices", "list"]);
    assert_eq!(on(list.as_array().unwrap(), "digits", "2.0.0"), 10, "digits stayed on 2.0.0 everywhere");
    for i in [8, 9] {
        let dev = &list.as_array().unwrap()[i];
        assert!(!dev["running"].to_string().contains("vibration"), "reverting an added model removes it: {dev}");
    }
    let audit = ctl.json(&["audit", "--rollout", "d2"]);
    assert!(
        !audit.to_string().contains("Aborted"),
        "no decision of the digits rollout followed the vibration abort: {audit}"
    );

    // A removal: vibration off the eu devices, digits untouched; refusals of the wrong verbs.
    let out = ctl.run(&["rollout", "remove", "vibration", "-l", "region=eu", "--bake", "1s", "--id", "rm-eu"]);
    assert!(out.contains("rm-eu"), "{out}");
    let rm = ctl.wait_phase("rm-eu", "Completed", 60);
    assert_eq!(rm["spec"]["kind"], "Remove");
    ctl.wait_devices("vibration gone from eu", 60, |l| on(l, "vibration", "1.0.0") == 4);
    let list = ctl.json(&["devices", "list"]);
    let list = list.as_array().unwrap();
    for dev in list {
        let eu = dev["labels"]["region"] == "eu";
        let has = dev["running"].as_array().unwrap().iter().any(|r| r["name"] == "vibration");
        assert!(!(eu && has), "an eu device still runs vibration: {dev}");
    }
    assert_eq!(on(list, "digits", "2.0.0"), 10, "the removal left digits alone");
    let undo = ctl.cli(&["rollout", "undo", "rm-eu"]);
    assert_eq!(undo.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&undo.stderr).contains("roll it out again"),
        "{}",
        String::from_utf8_lossy(&undo.stderr)
    );
    let nothing = ctl.cli(&["rollout", "remove", "kws"]);
    assert!(
        String::from_utf8_lossy(&nothing.stderr).contains("no bundle of kws"),
        "{}",
        String::from_utf8_lossy(&nothing.stderr)
    );

    // What an operator sees: skew of every model, each device's models (printed: `-- --nocapture`).
    for args in [&["devices", "list"][..], &["rollout", "status", "rm-eu"], &["devices", "show", "dev-00"]] {
        println!("$ outpost {}\n{}", args.join(" "), ctl.run(args));
    }
    let skew = ctl.run(&["skew"]);
    println!("$ outpost skew\n{skew}");
    assert!(skew.contains("model digits") && skew.contains("model vibration"), "{skew}");
    let show = ctl.run(&["devices", "show", "dev-00"]);
    assert!(show.contains("  digits\n    running   2.0.0"), "{show}");
    assert!(
        show.contains("  vibration\n    running   -\n    desired   1.1.0 (sequence 2): remove, rollout rm-eu"),
        "{show}"
    );
    let show = ctl.run(&["devices", "show", "dev-01"]);
    assert!(show.contains("  vibration\n    running   1.0.0"), "a us device keeps vibration: {show}");

    *stop.lock().unwrap() = true;
    for t in threads {
        t.join().unwrap();
    }
}

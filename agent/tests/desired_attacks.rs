//! The desired state and chunks arrive unsigned: an attacker with a plain MQTT client on the broker may
//! ask, never decide. Each attack measured on the agent before issue 12 is played here against a real
//! agent process and a real mosquitto, and refused with its reason code while the agent keeps serving.

mod support;

use outpost_protocol::codec;
use outpost_protocol::director::SignedDesired;
use outpost_protocol::messages::{BundleRef, DesiredState, Message, Mode, Watch};
use outpost_protocol::telemetry::UpdateStage;
use outpost_protocol::topics::{self, Down};
use outpost_protocol::{DeviceId, Digest, ModelName, RejectReason, Version};
use support::broker::Mosquitto;
use support::controller::FakeController;
use support::*;

fn quick_watch() -> Watch {
    Watch { secs: 1, max_error_ppm: 0, max_p95_us: 0, min_requests: 0, max_restarts: 3 }
}

fn desired(version: &str, sequence: u64, bundle: BundleRef) -> DesiredState {
    DesiredState {
        model: ModelName::new("digits").unwrap(),
        version: version.parse::<Version>().unwrap(),
        sequence,
        bundle,
        rollout: Some(format!("attack-{sequence}")),
        mode: Mode::Activate,
        issued_at: 0,
        watch: quick_watch(),
    }
}

fn floor(dir: &std::path::Path) -> u64 {
    let store = outpost_agent::store::Store::open(&dir.join("data")).unwrap();
    store.slots().unwrap().floor("digits")
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn serves(agent: &AgentProcess, version: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let r = agent.get("/v2/models/digits");
        if r.status == 200 && r.json()["versions"][0] == version {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "digits {version} not serving: {} {}", r.status, r.text());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The attacker: a plain MQTT client of its own on the broker, publishing `d` as the retained desired
/// state of its model, exactly as given.
fn attacker_publishes(port: u16, device: &DeviceId, d: &DesiredState) {
    attacker_sends(port, device, &d.model, codec::encode(&Message::Desired(d.clone())));
}

/// The attacker publishes `frame` (any bytes: a forgery, or a frame captured earlier) as the retained
/// desired state of `model` on `device`'s topic.
fn attacker_sends(port: u16, device: &DeviceId, model: &ModelName, frame: Vec<u8>) {
    let o = rumqttc::MqttOptions::new("attacker", "127.0.0.1", port);
    let (client, mut connection) = rumqttc::Client::new(o, 8);
    let topic = topics::down(device, &Down::Desired(model.clone()));
    client.publish(topic, rumqttc::QoS::AtLeastOnce, true, frame).unwrap();
    for event in connection.iter() {
        match event.expect("the attacker reaches the broker") {
            rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) => break,
            _ => continue,
        }
    }
    client.disconnect().ok();
}

fn floor_stays_and_nothing_rolled_back(ctl: &FakeController, dir: &std::path::Path) {
    assert_eq!(floor(dir), 1);
    let seen = ctl.seen.lock().unwrap();
    let back: Vec<_> = seen.events.iter().filter(|e| e.to == UpdateStage::RolledBack).collect();
    assert!(back.is_empty(), "nothing was rolled back: {back:?}");
}

/// A first install is under watch (no previous model to fall back on) when an attacker publishes a desired
/// state naming a genuine bundle with a lying sequence. Before the fix the unsigned message rolled the
/// watched install back as superseded, and the model stayed unserved once the forged bundle was refused.
/// Now the install finishes its watch and keeps serving; the forged state waits, then is refused.
#[test]
fn a_forged_desired_state_during_a_first_install_watch_leaves_the_model_serving() {
    let dir = tempdir("attack-watch");
    let broker = Mosquitto::start(&dir);
    let ctl = FakeController::start(broker.port);
    let device = DeviceId::new("dev-watched").unwrap();
    let link = format!("[link]\nbroker = \"{}\"\ndevice_id = \"{device}\"\n", broker.url());
    let agent = AgentProcess::spawn(&dir, &link);

    let v1 = ctl.offer(signed_bundle("v1", "1.0.0", 1));
    let mut first = desired("1.0.0", 1, v1);
    // Long enough that the attack surely lands inside the watch, even on a loaded machine.
    first.watch.secs = 20;
    ctl.publish_desired(&device, &first);
    ctl.wait_event("1.0.0", UpdateStage::Watching);
    serves(&agent, "1.0.0");

    let v2 = ctl.offer(signed_bundle("v2", "2.0.0", 2));
    attacker_publishes(broker.port, &device, &desired("2.0.0", u64::MAX, v2));
    let e = ctl.wait_event("2.0.0", UpdateStage::Idle);
    assert!(e.detail.contains("waits for digits 1.0.0 to finish its watch"), "{}", e.detail);
    serves(&agent, "1.0.0");
    assert_eq!(agent.get("/v2/models/digits").status, 200);

    // The install commits on its own watch; then the forged state is fetched, verified, and refused.
    ctl.wait_event("1.0.0", UpdateStage::Committed);
    let e = ctl.wait_event("2.0.0", UpdateStage::Rejected);
    assert_eq!(e.reason, Some(RejectReason::DesiredMismatch), "{}", e.detail);
    serves(&agent, "1.0.0");
    floor_stays_and_nothing_rolled_back(&ctl, &dir);

    // The forged state stays retained on the broker: a restart meets it again and still serves 1.0.0.
    let mut agent = agent;
    agent.kill9();
    agent.restart();
    serves(&agent, "1.0.0");
    floor_stays_and_nothing_rolled_back(&ctl, &dir);
}

#[test]
fn forged_desired_states_are_refused_by_their_numbers_and_the_verified_manifest() {
    let dir = tempdir("attacks");
    let broker = Mosquitto::start(&dir);
    let ctl = FakeController::start(broker.port);
    let device = DeviceId::new("dev-attacked").unwrap();
    let link = format!("[link]\nbroker = \"{}\"\ndevice_id = \"{device}\"\n", broker.url());
    let agent = AgentProcess::spawn(&dir, &link);

    let v1 = ctl.offer(signed_bundle("v1", "1.0.0", 1));
    ctl.publish_desired(&device, &desired("1.0.0", 1, v1));
    ctl.wait_event("1.0.0", UpdateStage::Committed);
    serves(&agent, "1.0.0");
    assert_eq!(floor(&dir), 1);

    // 1. A genuine bundle (sequence 2) announced as sequence u64::MAX: before, the floor rose to u64::MAX
    //    for good, and no release could ever install again. Now the verified manifest decides.
    let v2 = ctl.offer(signed_bundle("v2", "2.0.0", 2));
    ctl.publish_desired(&device, &desired("2.0.0", u64::MAX, v2.clone()));
    let e = ctl.wait_event("2.0.0", UpdateStage::Rejected);
    assert_eq!(e.reason, Some(RejectReason::DesiredMismatch), "{}", e.detail);
    assert!(e.detail.contains("sequence 2") && e.detail.contains(&u64::MAX.to_string()), "{}", e.detail);
    assert_eq!(floor(&dir), 1, "the floor never moves on an unsigned number");
    serves(&agent, "1.0.0");

    // 2. A ~100-byte desired state naming a 3 GiB bundle, then one chunk: before, a 3 GiB staging file and
    //    3 GiB read into memory. Now refused before anything is allocated.
    let rss_before = rss_kib(agent.pid());
    let huge =
        BundleRef { digest: Digest::of(b"huge"), size: 3 << 30, chunk_size: 256 << 10, chunks: vec![Digest::of(b"c")] };
    ctl.publish_desired(&device, &desired("3.0.0", 3, huge.clone()));
    let e = ctl.wait_event("3.0.0", UpdateStage::Rejected);
    assert_eq!(e.reason, Some(RejectReason::OverLimits), "{}", e.detail);
    let staged: Vec<_> = std::fs::read_dir(dir.join("data/staging")).unwrap().flatten().collect();
    assert!(staged.is_empty(), "no staging file was made: {staged:?}");
    assert!(rss_kib(agent.pid()) < rss_before + 64 * 1024, "no memory was reserved by the message's numbers");

    // 3. chunk_size = 2^32-1: before, every restart aborted on allocating a 4 GiB chunk buffer, forever.
    let wide =
        BundleRef { digest: Digest::of(b"wide"), size: 1 << 20, chunk_size: u32::MAX, chunks: vec![Digest::of(b"c")] };
    ctl.publish_desired(&device, &desired("4.0.0", 4, wide));
    let e = ctl.wait_event("4.0.0", UpdateStage::Rejected);
    assert_eq!(e.reason, Some(RejectReason::OverLimits), "{}", e.detail);
    let mut agent = agent;
    agent.kill9();
    agent.restart();
    serves(&agent, "1.0.0");

    // The genuine release, asked for with its true numbers, still installs: nothing above stuck.
    ctl.publish_desired(&device, &desired("2.0.0", 2, v2));
    ctl.wait_event("2.0.0", UpdateStage::Committed);
    serves(&agent, "2.0.0");
    assert_eq!(floor(&dir), 2, "the floor rose to the verified sequence");
    assert!(agent.log().contains("refused before fetching"), "{}", agent.log());
}

/// The refusal event of a desired state: it names the code, no rollout and no bundle.
fn refusal(ctl: &FakeController, reason: RejectReason) -> outpost_protocol::telemetry::UpdateEvent {
    ctl.wait_until(&format!("a {reason} refusal"), |s| s.events.iter().any(|e| e.reason == Some(reason)));
    let e = ctl.seen.lock().unwrap().events.iter().find(|e| e.reason == Some(reason)).cloned().unwrap();
    assert_eq!((e.from, e.to), (UpdateStage::Idle, UpdateStage::Idle), "{e:?}");
    assert_eq!((e.rollout.as_deref(), e.bundle), (None, Digest([0; 32])), "it claims no rollout's evidence: {e:?}");
    e
}

/// A revert or removal takes a verified model off a device, and carries nothing the release keys signed:
/// only the controller's director key (named by the root-signed trust policy) may ask for one, for one
/// device, and never with a statement older than one the device already took. Before, any client that
/// could publish on the device's topic switched digits back or took it off at once. Each forgery is
/// refused with its reason code while digits keeps serving, through a `kill -9` with the last forgery
/// still retained on the broker; the director's own revert still works.
#[test]
fn forged_reverts_and_removals_are_refused_and_the_model_keeps_serving() {
    let dir = tempdir("attack-revert");
    let broker = Mosquitto::start(&dir);
    let ctl = FakeController::start(broker.port);
    let device = DeviceId::new("dev-targeted").unwrap();
    let link = format!("[link]\nbroker = \"{}\"\ndevice_id = \"{device}\"\n", broker.url());
    let mut agent = AgentProcess::spawn(&dir, &link);
    let t0 = now();
    let statement = |d: &DesiredState, by: &outpost_protocol::keys::PrivateKey, to: &DeviceId| {
        codec::encode(&Message::SignedDesired(SignedDesired::sign(to, d, by)))
    };

    // The director installs 1.0.0, then 2.0.0: 2.0.0 serves with 1.0.0 kept as its previous model.
    let v1 = ctl.offer(signed_bundle("v1", "1.0.0", 1));
    ctl.direct(&device, &DesiredState { issued_at: t0 - 100, ..desired("1.0.0", 1, v1) });
    ctl.wait_event("1.0.0", UpdateStage::Committed);
    let v2 = ctl.offer(signed_bundle("v2", "2.0.0", 2));
    ctl.direct(&device, &DesiredState { issued_at: t0 - 90, ..desired("2.0.0", 2, v2.clone()) });
    ctl.wait_event("2.0.0", UpdateStage::Committed);
    serves(&agent, "2.0.0");
    let revert = DesiredState { mode: Mode::Revert, issued_at: t0 - 80, ..desired("2.0.0", 2, v2.clone()) };
    let remove = DesiredState { mode: Mode::Remove, issued_at: t0 - 80, ..desired("2.0.0", 2, v2.clone()) };
    let digits = ModelName::new("digits").unwrap();

    // 1. An unsigned revert and an unsigned removal, from a plain MQTT client.
    attacker_publishes(broker.port, &device, &revert);
    let e = refusal(&ctl, RejectReason::UnsignedRequest);
    assert!(e.detail.contains("a revert of digits 2.0.0 refused"), "{}", e.detail);
    attacker_publishes(broker.port, &device, &remove);
    ctl.wait_until("the removal refused", |s| {
        s.events.iter().any(|e| e.reason == Some(RejectReason::UnsignedRequest) && e.detail.contains("removal"))
    });
    serves(&agent, "2.0.0");
    // 2. Signed, but with the attacker's own key.
    attacker_sends(broker.port, &device, &digits, statement(&remove, &stranger(), &device));
    refusal(&ctl, RejectReason::UnknownKey);
    // 3. The director's genuine removal, signed for another device, replayed on this one.
    let other = DeviceId::new("dev-other").unwrap();
    attacker_sends(broker.port, &device, &digits, statement(&remove, &director(), &other));
    refusal(&ctl, RejectReason::WrongDevice);
    // 4. A genuine statement altered on the way: its revert turned into a removal.
    let mut altered = SignedDesired::sign(&device, &revert, &director());
    altered.statement = SignedDesired::sign(&device, &remove, &director()).statement;
    altered.signature = SignedDesired::sign(&device, &revert, &director()).signature;
    attacker_sends(broker.port, &device, &digits, codec::encode(&Message::SignedDesired(altered)));
    refusal(&ctl, RejectReason::BadSignature);
    serves(&agent, "2.0.0");
    assert_eq!(agent.get("/v2/models/digits").status, 200);

    // The director's own revert works: one step back to the kept 1.0.0. An attacker captures its frame.
    let captured = statement(&revert, &director(), &device);
    ctl.direct(&device, &revert);
    serves(&agent, "1.0.0");
    // The director installs 3.0.0 afterwards (a newer statement)...
    let v3 = ctl.offer(signed_bundle("bad", "3.0.0", 3));
    ctl.direct(&device, &DesiredState { issued_at: t0 - 70, ..desired("3.0.0", 3, v3) });
    ctl.wait_event("3.0.0", UpdateStage::Committed);
    serves(&agent, "3.0.0");
    // 5. ... and the captured revert, replayed, is stale: 3.0.0 keeps serving.
    attacker_sends(broker.port, &device, &digits, captured);
    let e = refusal(&ctl, RejectReason::StaleRequest);
    assert!(e.detail.contains(&format!("issued at {}", t0 - 80)), "{}", e.detail);
    serves(&agent, "3.0.0");

    // `kill -9`, with the replayed revert still retained: the device comes back serving 3.0.0 and refuses
    // it again (the director floor was persisted).
    let before = ctl.seen.lock().unwrap().events.len();
    agent.kill9();
    agent.restart();
    serves(&agent, "3.0.0");
    ctl.wait_until("the replay refused again after the restart", |s| {
        s.events[before..].iter().any(|e| e.reason == Some(RejectReason::StaleRequest))
    });
    serves(&agent, "3.0.0");
    let seen = ctl.seen.lock().unwrap();
    let back: Vec<_> = seen.events.iter().filter(|e| e.to == UpdateStage::RolledBack).collect();
    assert_eq!(back.len(), 1, "only the director's revert switched back: {back:?}");
    assert!(agent.log().contains("desired state refused"), "{}", agent.log());
}

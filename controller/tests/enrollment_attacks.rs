//! Issue 14's attacks on enrollment and the embedded broker, played with plain MQTT clients against a
//! real `outpost serve` (embedded broker, real CA, real CSRs): taking over an id that a hand-issued
//! certificate or a hello made known, a certificate per request without a token, tokens without a cap or
//! an id list, the controller's client id taken on the embedded broker, and enrollment starved by device
//! traffic.

#[path = "support/serve.rs"]
mod serve;

use outpost_protocol::enroll::EnrollOutcome;
use outpost_protocol::messages::{Hello, Message};
use outpost_protocol::topics::{self, Up};
use outpost_protocol::{Arch, DeviceId, Version};
use serve::*;
use std::path::Path;
use std::time::{Duration, Instant};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_outpost"))
}

fn hello(id: &str, boot_id: u64) -> Message {
    Message::Hello(Hello {
        device: DeviceId::new(id).unwrap(),
        arch: Arch::X86_64,
        agent_version: Version::new(0, 1, 0),
        labels: vec![],
        running: vec![],
        boot_id,
        max_packet: 1 << 20,
    })
}

fn certificate(o: &EnrollOutcome) -> String {
    match o {
        EnrollOutcome::Issued { certificate, .. } => certificate.clone(),
        other => panic!("no certificate: {other:?}"),
    }
}

fn status(device: &serde_json::Value) -> String {
    match &device["enrollment"]["status"] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Object(o) => o.keys().next().cloned().unwrap_or_default(),
        _ => String::new(),
    }
}

async fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(Instant::now() < deadline, "{what} within 20 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_issued_by_hand_or_seen_in_a_hello_is_not_given_to_another_key_on_a_token() {
    let dir = tempdir("claims");
    // dev-b got its certificate with `outpost certs issue` before the controller ever ran.
    let pki = dir.join("pki").display().to_string();
    let data = dir.join("data").display().to_string();
    let out = std::process::Command::new(bin())
        .args(["certs", "issue", "--device", "dev-b", "--out", &pki, "--data-dir", &data])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ctl = Serve::start(bin(), &dir, &[]);
    let token = ctl.token(&["--auto-approve"]);
    let attacker = DeviceKey::new();

    let o = enroll(ctl.mqtt, "dev-b", &token, &attacker).await;
    assert_eq!(refusal(&o), Some("key_mismatch"), "a token claimed dev-b for another key: {o:?}");

    // dev-c is known from its hello (over the quick start's broker, no certificate): a token alone does
    // not hand it to a key; an operator must approve the claim.
    let mut c = Plain::device(ctl.mqtt, "dev-c");
    assert!(c.outcome().await);
    greet(&ctl, &c, "dev-c", &hello("dev-c", 7), 7).await;
    let o = enroll(ctl.mqtt, "dev-c", &token, &attacker).await;
    assert_eq!(o, EnrollOutcome::Pending, "a claim of a known id is issued on a token alone");
    let d = ctl.device("dev-c");
    assert_eq!((status(&d).as_str(), &d["enrollment"]["claim"]), ("Pending", &serde_json::json!(true)), "{d}");
    let audit = serde_json::to_string(&ctl.audit()).unwrap();
    assert!(audit.contains("claims a device id the registry knew"), "{audit}");
    // The operator decides: after approval the claimer gets it.
    ctl.run(&["devices", "approve", "dev-c"]);
    let o = enroll(ctl.mqtt, "dev-c", "", &attacker).await;
    assert!(matches!(o, EnrollOutcome::Issued { .. }), "{o:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_key_asking_again_gets_the_same_certificate_and_floods_are_limited() {
    let dir = tempdir("flood");
    let ctl = Serve::start(bin(), &dir, &[]);
    let token = ctl.token(&["--auto-approve"]);
    let key = DeviceKey::new();
    let first = certificate(&enroll(ctl.mqtt, "dev-d", &token, &key).await);
    let (issued, audited) = (ctl.issued_lines(), ctl.audit().len());

    // 200 requests with the bound key and no token, as fast as the answers come.
    let session = outpost_protocol::enroll::session_name(rand16());
    let mut c = Plain::device(ctl.mqtt, session.as_str());
    assert!(c.outcome().await);
    let (mut same, mut limited) = (0, 0);
    for i in 0..200 {
        match ask(&mut c, &session, "dev-d", "", &key).await {
            EnrollOutcome::Issued { certificate, .. } => {
                assert_eq!(certificate, first, "request {i}: a new certificate before the renewal window");
                same += 1;
            }
            o => {
                assert_eq!(refusal(&o), Some("rate_limited"), "{o:?}");
                limited += 1;
            }
        }
    }
    assert!(same >= 1 && limited >= 150, "{same} answered, {limited} rate limited");
    assert_eq!(ctl.issued_lines(), issued, "the CA's issued log did not grow");
    let grown = ctl.audit().len() - audited;
    assert!(grown <= 2, "the audit log grew by {grown} entries");
    let d = ctl.device("dev-d");
    assert_eq!(d["enrollment"]["serials"].as_array().unwrap().len(), 1, "{d}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_enrolls_only_as_many_devices_as_it_allows_and_only_the_ids_it_names() {
    let dir = tempdir("tokens");
    let ctl = Serve::start(bin(), &dir, &[]);
    let capped = ctl.token(&["--auto-approve", "--max-uses", "2"]);
    for id in ["cap-1", "cap-2"] {
        let o = enroll(ctl.mqtt, id, &capped, &DeviceKey::new()).await;
        assert!(matches!(o, EnrollOutcome::Issued { .. }), "{id}: {o:?}");
    }
    let o = enroll(ctl.mqtt, "cap-3", &capped, &DeviceKey::new()).await;
    assert_eq!(refusal(&o), Some("token_used_up"), "{o:?}");

    let site = ctl.token(&["--auto-approve", "--devices", "site1-*,spare"]);
    let o = enroll(ctl.mqtt, "site2-cam", &site, &DeviceKey::new()).await;
    assert_eq!(refusal(&o), Some("device_not_allowed"), "{o:?}");
    for id in ["site1-cam", "spare"] {
        let o = enroll(ctl.mqtt, id, &site, &DeviceKey::new()).await;
        assert!(matches!(o, EnrollOutcome::Issued { .. }), "{id}: {o:?}");
    }
    let list = ctl.run(&["enroll-token", "list"]);
    assert!(list.contains("2/2") && list.contains("site1-*,spare"), "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_other_client_takes_the_controllers_place_on_the_embedded_broker() {
    let dir = tempdir("embedded-id");
    let ctl = Serve::start(bin(), &dir, &[]);
    let mut d = Plain::device(ctl.mqtt, "dev-y");
    assert!(d.outcome().await);
    greet(&ctl, &d, "dev-y", &hello("dev-y", 1), 1).await;
    for login in [None, Some(("outpost-controller", "guess")), Some(("outpost-controller", ""))] {
        let mut thief = Plain::connect(ctl.mqtt, "outpost-controller", login);
        assert!(!thief.outcome().await, "a client connected as the controller with {login:?}");
    }
    let mut thief = Plain::connect(ctl.mqtt, "dev-x", Some(("outpost-controller", "guess")));
    assert!(!thief.outcome().await, "the controller's username without its password");
    // The controller kept its session and its subscription: the next hello registers at once.
    d.publish(&topics::up(&DeviceId::new("dev-y").unwrap(), Up::Hello), &hello("dev-y", 2)).await;
    wait_until("dev-y's second hello registered", || ctl.device("dev-y")["boot_id"] == 2).await;
    assert!(!ctl.log().contains("controller lost the broker"), "{}", ctl.log());
    let pw = std::fs::metadata(ctl.data.join("broker-password")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(pw.permissions().mode() & 0o777, 0o600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollment_is_answered_after_sustained_device_traffic_on_the_embedded_broker() {
    let dir = tempdir("traffic");
    let ctl = Serve::start(bin(), &dir, &[]);
    let token = ctl.token(&["--auto-approve"]);
    let mut busy = Plain::device(ctl.mqtt, "dev-busy");
    assert!(busy.outcome().await);
    greet(&ctl, &busy, "dev-busy", &hello("dev-busy", 1), 1).await;
    // 20,000 messages through the devices' shared subscription (payloads the controller drops at once, so
    // the traffic is the broker's, not the controller's store), then a hello after them.
    let topic = topics::up(&DeviceId::new("dev-busy").unwrap(), Up::Telemetry);
    for i in 0..20_000u32 {
        busy.client.publish(&topic, rumqttc::QoS::AtLeastOnce, false, i.to_le_bytes().to_vec()).await.unwrap();
    }
    let hello_topic = topics::up(&DeviceId::new("dev-busy").unwrap(), Up::Hello);
    busy.publish(&hello_topic, &hello("dev-busy", 3)).await;
    wait_until("the traffic handled", || ctl.device("dev-busy")["boot_id"] == 3).await;
    for i in 0..3 {
        let o = enroll(ctl.mqtt, &format!("dev-new-{i}"), &token, &DeviceKey::new()).await;
        assert!(matches!(o, EnrollOutcome::Issued { .. }), "enrollment {i} after traffic: {o:?}\n{}", ctl.log());
    }
}

#[test]
fn the_data_directory_and_the_store_are_private() {
    let dir = tempdir("modes");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ctl = rt.block_on(async { Serve::start(bin(), &dir, &[]) });
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&ctl.data), 0o700);
    assert_eq!(mode(&ctl.data.join("controller.redb")), 0o600);
    assert_eq!(mode(&ctl.data.join("api-token")), 0o600);
}

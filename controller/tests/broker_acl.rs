//! The shipped production broker setup with real mosquitto, real certificates from `outpost certs` and
//! real rumqttc clients: a device can use only its own topics, the controller identity sees all of them,
//! a certificate from another CA is refused, and the enrollment listener confines each anonymous client
//! to its own enrollment topics.

#[path = "support/cli.rs"]
mod cli;

use cli::*;
#[path = "support/prod_broker.rs"]
mod prod_broker;

use prod_broker::ProdBroker;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;

fn outpost(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_outpost")).args(args).output().unwrap();
    assert!(out.status.success(), "outpost {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// CA in `data`, server/controller/device certificates in `pki`.
fn issue_all(data: &Path, pki: &Path, devices: &[&str]) {
    let (data, pki) = (data.display().to_string(), pki.display().to_string());
    outpost(&["certs", "init", "--data-dir", &data]);
    outpost(&["certs", "server", "--host", "127.0.0.1", "--out", &pki, "--data-dir", &data]);
    outpost(&["certs", "controller", "--out", &pki, "--data-dir", &data]);
    for d in devices {
        outpost(&["certs", "issue", "--device", d, "--out", &pki, "--data-dir", &data]);
    }
    std::fs::copy(Path::new(&data).join("ca/crl.pem"), Path::new(&pki).join("crl.pem")).unwrap();
}

struct Client {
    client: AsyncClient,
    rx: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    connected: tokio::sync::watch::Receiver<Option<bool>>,
    /// Connections lost after the first one succeeded.
    drops: Arc<AtomicU32>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A rumqttc client; `identity` is the certificate/key file stem in `pki` (none: server-auth TLS only).
fn client(pki: &Path, port: u16, client_id: &str, identity: Option<&str>) -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut o = MqttOptions::new(client_id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(5));
    let ca = std::fs::read(pki.join("ca.pem")).unwrap();
    let client_auth = identity.map(|n| {
        (std::fs::read(pki.join(format!("{n}.crt"))).unwrap(), std::fs::read(pki.join(format!("{n}.key"))).unwrap())
    });
    o.set_transport(Transport::tls_with_config(TlsConfiguration::Simple { ca, alpn: None, client_auth }));
    let (client, mut eventloop) = AsyncClient::new(o, 64);
    let (tx, rx) = mpsc::unbounded_channel();
    let (ctx, connected) = tokio::sync::watch::channel(None);
    let drops = Arc::new(AtomicU32::new(0));
    let dropped = drops.clone();
    let task = tokio::spawn(async move {
        let mut up = false;
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    up = true;
                    let _ = ctx.send(Some(true));
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = tx.send((p.topic.clone(), p.payload.to_vec()));
                }
                Ok(_) => {}
                Err(_) => {
                    if std::mem::take(&mut up) {
                        dropped.fetch_add(1, Ordering::SeqCst);
                    }
                    let _ = ctx.send(Some(false));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    });
    Client { client, rx, connected, drops, task }
}

impl Client {
    /// Waits for the first connection outcome: `true` on CONNACK, `false` when the attempt failed.
    async fn outcome(&mut self) -> bool {
        let r = self.connected.wait_for(|c| c.is_some()).await.unwrap();
        r.unwrap()
    }

    async fn sub(&self, filter: &str) {
        self.client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    }

    async fn publish(&self, topic: &str, body: &str) {
        self.client.publish(topic, QoS::AtLeastOnce, false, body.as_bytes().to_vec()).await.unwrap();
    }

    /// Publishes `marker` on `topic` until `to` receives it (its subscription may not be active yet).
    async fn ping(&self, to: &mut Client, topic: &str, marker: &str) {
        for _ in 0..100 {
            self.publish(topic, marker).await;
            if let Ok(Some((_, body))) = tokio::time::timeout(Duration::from_millis(200), to.rx.recv()).await
                && body == marker.as_bytes()
            {
                return;
            }
        }
        panic!("{marker:?} never arrived on {topic}");
    }

    /// Everything received until `marker` arrives (or panics after 10 s).
    async fn until(&mut self, marker: &str) -> Vec<(String, String)> {
        let mut seen = Vec::new();
        loop {
            let (topic, body) = tokio::time::timeout(Duration::from_secs(10), self.rx.recv())
                .await
                .unwrap_or_else(|_| panic!("{marker:?} never arrived; got {seen:?}"))
                .unwrap();
            let body = String::from_utf8_lossy(&body).into_owned();
            let done = body == marker;
            seen.push((topic, body));
            if done {
                return seen;
            }
        }
    }
}

const DEV: &str = "outpost/v1/devices";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_use_only_their_own_topics_the_controller_sees_all_and_foreign_certificates_are_refused() {
    let dir = tempdir("acl-identity");
    let (data, pki) = (dir.join("data"), dir.join("pki"));
    issue_all(&data, &pki, &["dev-a", "dev-b"]);
    let broker = ProdBroker::start(&pki);

    let mut ctl = client(&pki, broker.tls_port, "outpost-controller", Some("controller"));
    assert!(ctl.outcome().await, "the controller identity connects: {}", broker.log());
    // Exactly the daemon's subscription (a shared one): the ACL must allow it.
    ctl.sub(&outpost_protocol::topics::controller_subscription()).await;
    let mut a = client(&pki, broker.tls_port, "dev-a", Some("dev-a"));
    let mut b = client(&pki, broker.tls_port, "dev-b", Some("dev-b"));
    assert!(a.outcome().await && b.outcome().await, "devices connect: {}", broker.log());
    for filter in [format!("{DEV}/dev-b/down/#"), "#".into(), format!("{DEV}/dev-a/down/+")] {
        a.sub(&filter).await;
    }
    b.sub(&format!("{DEV}/dev-b/down/#")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A speaks as B, then as itself: the controller gets only the second.
    a.publish(&format!("{DEV}/dev-b/up/hello"), "a-as-b").await;
    a.publish(&format!("{DEV}/dev-b/up/telemetry"), "a-as-b").await;
    a.publish(&format!("{DEV}/dev-a/down/desired/digits"), "a-writes-its-own-down").await;
    a.publish(&format!("{DEV}/dev-a/up/hello"), "a-done").await;
    let seen = ctl.until("a-done").await;
    assert_eq!(seen, vec![(format!("{DEV}/dev-a/up/hello"), "a-done".into())], "only A's own message reached it");
    b.publish(&format!("{DEV}/dev-b/up/hello"), "b-done").await;
    assert_eq!(ctl.until("b-done").await, vec![(format!("{DEV}/dev-b/up/hello"), "b-done".into())]);

    // The controller writes B's desired state (retained, as the daemon does), then A's: A reads only its own.
    let desired_b = format!("{DEV}/dev-b/down/desired/digits");
    ctl.client.publish(&desired_b, QoS::AtLeastOnce, true, b"for-b".to_vec()).await.unwrap();
    ctl.publish(&format!("{DEV}/dev-b/down/chunk"), "chunk-for-b").await;
    assert_eq!(b.until("chunk-for-b").await.len(), 2, "B gets its desired state and chunk");
    ctl.publish(&format!("{DEV}/dev-a/down/desired/digits"), "for-a").await;
    let seen_by_a = a.until("for-a").await;
    assert!(seen_by_a.iter().all(|(t, _)| t.starts_with(&format!("{DEV}/dev-a/"))), "A saw {seen_by_a:?}");
    assert!(!seen_by_a.iter().any(|(_, body)| body == "a-writes-its-own-down"), "a device cannot write down topics");
    // A late subscriber on A's identity does not get B's retained desired state either. (Its session is
    // A's: the broker names every connection by its certificate, so A's first connection goes first.)
    drop(a);
    let mut late = client(&pki, broker.tls_port, "dev-a-late", Some("dev-a"));
    assert!(late.outcome().await);
    late.sub(&desired_b).await;
    late.sub(&format!("{DEV}/dev-a/down/#")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    ctl.publish(&format!("{DEV}/dev-a/down/ack"), "late-marker").await;
    assert_eq!(late.until("late-marker").await.len(), 1, "B's retained desired state never reached A");

    // A certificate from another CA (same device id) and no certificate at all: refused at the handshake.
    let other = dir.join("other");
    let other_pki = dir.join("other-pki");
    issue_all(&other, &other_pki, &["dev-a"]);
    std::fs::copy(pki.join("ca.pem"), other_pki.join("ca.pem")).unwrap(); // trust the real broker
    let mut forged = client(&other_pki, broker.tls_port, "dev-a", Some("dev-a"));
    assert!(!forged.outcome().await, "a certificate from another CA is refused");
    let mut anonymous = client(&pki, broker.tls_port, "dev-x", None);
    assert!(!anonymous.outcome().await, "no certificate, no connection on the identity listener");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_enrollment_listener_confines_each_anonymous_client_to_its_own_enrollment_topics() {
    let dir = tempdir("acl-enroll");
    let (data, pki) = (dir.join("data"), dir.join("pki"));
    issue_all(&data, &pki, &["dev-b"]);
    let broker = ProdBroker::start(&pki);
    let enroll = "outpost/v1/enroll";

    // The controller reads enrollment on the enrollment broker's controller listener.
    let mut ctl = client(&pki, broker.enroll_controller_port, "outpost-controller-enroll-1", Some("controller"));
    assert!(ctl.outcome().await, "{}", broker.enroll_log());
    ctl.sub(&outpost_protocol::enroll::controller_subscription()).await;
    ctl.sub(&outpost_protocol::topics::controller_subscription()).await;
    let desired_b = format!("{DEV}/dev-b/down/desired/digits");
    ctl.client.publish(&desired_b, QoS::AtLeastOnce, true, b"secret-desired".to_vec()).await.unwrap();

    // No client certificate: server-auth TLS is enough here.
    let mut c = client(&pki, broker.enroll_port, "dev-c", None);
    let mut d = client(&pki, broker.enroll_port, "dev-d", None);
    assert!(c.outcome().await && d.outcome().await, "anonymous enrollment clients connect: {}", broker.enroll_log());
    for filter in ["#", "outpost/v1/enroll/+/request", desired_b.as_str(), "outpost/v1/enroll/dev-c/response"] {
        c.sub(filter).await;
    }
    d.sub("outpost/v1/enroll/dev-d/response").await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // C writes D's request, a device topic, then its own request (one connection: in order).
    c.publish(&format!("{enroll}/dev-d/request"), "c-as-d").await;
    c.publish(&format!("{DEV}/dev-b/up/hello"), "c-as-b").await;
    c.publish(&format!("{enroll}/dev-c/request"), "c-done").await;
    let seen = ctl.until("c-done").await;
    assert_eq!(seen, vec![(format!("{enroll}/dev-c/request"), "c-done".to_string())], "C's forged messages arrived");
    d.publish(&format!("{enroll}/dev-d/request"), "d-token").await;
    assert_eq!(ctl.until("d-token").await.len(), 1, "D's own request arrives");

    // The controller answers both; each reads its own answer only, and C never saw D's token.
    ctl.publish(&format!("{enroll}/dev-d/response"), "cert-d").await;
    ctl.publish(&format!("{enroll}/dev-c/response"), "cert-c").await;
    assert_eq!(d.until("cert-d").await.len(), 1);
    let seen_by_c = c.until("cert-c").await;
    assert_eq!(seen_by_c, vec![(format!("{enroll}/dev-c/response"), "cert-c".to_string())], "C saw {seen_by_c:?}");

    // A client id that is a wildcard gains nothing through %c: it reads no one's answer.
    let mut w = client(&pki, broker.enroll_port, "+", None);
    if w.outcome().await {
        w.sub("outpost/v1/enroll/+/response").await;
        w.sub("#").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        ctl.publish(&format!("{enroll}/dev-c/response"), "cert-c-again").await;
        c.until("cert-c-again").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(w.rx.try_recv().is_err(), "a wildcard client id read an answer");
    }

    // A device's own certificate on the controller's listener (8885) reads no request and answers no one:
    // only the controller's certificate may (docs/security.md, "What each listener trusts").
    let mut b = client(&pki, broker.enroll_controller_port, "dev-b", Some("dev-b"));
    assert!(b.outcome().await, "a certificate of the CA connects: {}", broker.enroll_log());
    for filter in ["#", "outpost/v1/enroll/+/request"] {
        b.sub(filter).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    b.publish(&format!("{enroll}/dev-d/response"), "forged-cert-d").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    d.publish(&format!("{enroll}/dev-d/request"), "d-token-again").await;
    ctl.until("d-token-again").await;
    ctl.publish(&format!("{enroll}/dev-d/response"), "cert-d-again").await;
    let seen_by_d = d.until("cert-d-again").await;
    assert_eq!(
        seen_by_d,
        vec![(format!("{enroll}/dev-d/response"), "cert-d-again".to_string())],
        "D saw {seen_by_d:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(b.rx.try_recv().is_err(), "a device's certificate read an enrollment request (tokens) on 8885");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_device_reads_the_fleet_trust_and_only_the_controller_writes_it() {
    let dir = tempdir("acl-trust");
    let (data, pki) = (dir.join("data"), dir.join("pki"));
    issue_all(&data, &pki, &["dev-a", "dev-b"]);
    let broker = ProdBroker::start(&pki);
    let trust = outpost_protocol::topics::TRUST;

    let mut ctl = client(&pki, broker.tls_port, "outpost-controller", Some("controller"));
    let mut a = client(&pki, broker.tls_port, "dev-a", Some("dev-a"));
    assert!(ctl.outcome().await && a.outcome().await, "{}", broker.log());
    a.sub(trust).await;
    a.sub(&format!("{DEV}/dev-a/down/#")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A device cannot replace the fleet's trust (a retained forgery would reach every device).
    a.client.publish(trust, QoS::AtLeastOnce, true, b"forged-by-a".to_vec()).await.unwrap();
    ctl.client.publish(trust, QoS::AtLeastOnce, true, b"the-trust".to_vec()).await.unwrap();
    let seen = a.until("the-trust").await;
    assert_eq!(seen, vec![(trust.to_string(), "the-trust".to_string())], "A saw {seen:?}");
    // A device that connects later gets it retained; so does another device.
    let mut b = client(&pki, broker.tls_port, "dev-b", Some("dev-b"));
    assert!(b.outcome().await);
    b.sub(trust).await;
    assert_eq!(b.until("the-trust").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_cannot_take_the_session_of_another_device_or_of_the_controller() {
    let dir = tempdir("acl-takeover");
    let (data, pki) = (dir.join("data"), dir.join("pki"));
    issue_all(&data, &pki, &["dev-a", "dev-b"]);
    let broker = ProdBroker::start(&pki);
    let mut ctl = client(&pki, broker.tls_port, "outpost-controller", Some("controller"));
    let mut b = client(&pki, broker.tls_port, "dev-b", Some("dev-b"));
    assert!(ctl.outcome().await && b.outcome().await, "{}", broker.log());
    ctl.sub(&format!("{DEV}/+/up/#")).await;
    b.sub(&format!("{DEV}/dev-b/down/+")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // dev-a's certificate connects under dev-b's client id, then under the controller's.
    for (n, stolen) in ["dev-b", "outpost-controller"].into_iter().enumerate() {
        let mut thief = client(&pki, broker.tls_port, stolen, Some("dev-a"));
        assert!(thief.outcome().await, "the thief connects (as itself): {}", broker.log());
        // Round trips through both victims: a victim knocked off reconnects before these go through.
        let marker = format!("b-after-{n}");
        b.publish(&format!("{DEV}/dev-b/up/hello"), &marker).await;
        ctl.until(&marker).await;
        ctl.publish(&format!("{DEV}/dev-b/down/ack"), &marker).await;
        b.until(&marker).await;
        assert_eq!(b.drops.load(Ordering::SeqCst), 0, "dev-a's certificate as {stolen} disconnected dev-b");
        assert_eq!(ctl.drops.load(Ordering::SeqCst), 0, "dev-a's certificate as {stolen} disconnected the controller");
        // And the thief speaks as dev-a only: as dev-b it is not heard.
        thief.publish(&format!("{DEV}/dev-b/up/hello"), "forged").await;
        thief.publish(&format!("{DEV}/dev-a/up/hello"), &format!("a-{n}")).await;
        let seen = ctl.until(&format!("a-{n}")).await;
        assert!(seen.iter().all(|(_, body)| body != "forged"), "{seen:?}");
    }
}

/// mosquitto keeps one client-id namespace per process, and a client connecting under a taken id
/// disconnects the one that had it. Anonymous enrollment clients are therefore served by a broker process of
/// their own (mosquitto-enroll.conf): one connecting there under a device's or the controller's client id
/// disconnects no one, and enrollment goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anonymous_enrollment_client_cannot_disconnect_a_device_or_the_controller() {
    let dir = tempdir("acl-anon-kick");
    let (data, pki) = (dir.join("data"), dir.join("pki"));
    issue_all(&data, &pki, &["dev-b"]);
    let broker = ProdBroker::start(&pki);
    let mut ctl = client(&pki, broker.tls_port, "outpost-controller", Some("controller"));
    let mut enroll = client(&pki, broker.enroll_controller_port, "outpost-controller-enroll-5f3a", Some("controller"));
    let mut b = client(&pki, broker.tls_port, "dev-b", Some("dev-b"));
    assert!(ctl.outcome().await && enroll.outcome().await && b.outcome().await, "{}", broker.log());
    ctl.sub(&format!("{DEV}/+/up/#")).await;
    b.sub(&format!("{DEV}/dev-b/down/+")).await;
    enroll.sub(&outpost_protocol::enroll::controller_subscription()).await;
    b.ping(&mut ctl, &format!("{DEV}/dev-b/up/hello"), "ready").await;

    // (The controller's enrollment link has a random client id, which no thief knows.)
    for (n, stolen) in ["dev-b", "outpost-controller"].into_iter().enumerate() {
        let mut thief = client(&pki, broker.enroll_port, stolen, None);
        assert!(thief.outcome().await, "the anonymous client connects: {}", broker.enroll_log());
        // Round trips through every victim: one knocked off reconnects before these go through.
        let marker = format!("after-{n}");
        b.publish(&format!("{DEV}/dev-b/up/hello"), &marker).await;
        ctl.until(&marker).await;
        ctl.publish(&format!("{DEV}/dev-b/down/ack"), &marker).await;
        b.until(&marker).await;
        thief.ping(&mut enroll, &format!("outpost/v1/enroll/{stolen}/request"), &marker).await;
        for (who, c) in [("dev-b", &b), ("the controller", &ctl), ("the controller's enrollment link", &enroll)] {
            assert_eq!(c.drops.load(Ordering::SeqCst), 0, "an anonymous client as {stolen} disconnected {who}");
        }
    }
}

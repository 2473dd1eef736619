//! `outpost serve` with its embedded broker on free loopback ports, the operator CLI pointed at it, and a
//! plain MQTT client that plays a device or an attacker with the protocol's own messages. Shared by the
//! controller's and the simulations' attack tests through `#[path]` (each passes its `outpost` binary).

#![allow(dead_code)]

use outpost_protocol::enroll::{EnrollOutcome, EnrollRequest, EnrollResponse};
use outpost_protocol::messages::Message;
use outpost_protocol::{Arch, DeviceId, Limits, Version, codec};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

pub fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("outpost-attack-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `outpost serve` with the embedded broker; killed on drop.
pub struct Serve {
    child: Child,
    bin: PathBuf,
    pub data: PathBuf,
    pub mqtt: u16,
    pub url: String,
    log: PathBuf,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    /// Starts `bin serve` with its data in `dir/data`; `extra` flags go after the defaults.
    pub fn start(bin: &Path, dir: &Path, extra: &[&str]) -> Serve {
        let (api, mqtt) = (free_port(), free_port());
        let data = dir.join("data");
        let log = dir.join("controller.log");
        let child = Command::new(bin)
            .args(["serve", "--data-dir", &data.display().to_string(), "--api", &format!("127.0.0.1:{api}")])
            .args(["--mqtt-listen", &format!("127.0.0.1:{mqtt}")])
            .args(extra)
            .env("OUTPOST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        wait_port(api);
        wait_port(mqtt);
        Serve { child, bin: bin.to_owned(), data, mqtt, url: format!("http://127.0.0.1:{api}"), log }
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(&self.bin)
            .args(args)
            .args(["--controller", &self.url, "--data-dir", &self.data.display().to_string()])
            .output()
            .unwrap()
    }

    pub fn run(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(out.status.success(), "outpost {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A token with these `create` flags; returns the secret.
    pub fn token(&self, flags: &[&str]) -> String {
        let token = self.run(&[&["enroll-token", "create"][..], flags].concat()).trim().to_owned();
        assert!(token.starts_with("opt_"), "{token}");
        token
    }

    pub fn device(&self, id: &str) -> serde_json::Value {
        serde_json::from_slice(&self.cli(&["devices", "show", id, "-o", "json"]).stdout).unwrap_or_default()
    }

    pub fn audit(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.run(&["audit", "-o", "json"])).unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn issued_lines(&self) -> usize {
        std::fs::read_to_string(self.data.join("ca/issued.jsonl")).map(|t| t.lines().count()).unwrap_or(0)
    }
}

/// A plain MQTT client: what it received, and how its connection attempts went.
pub struct Plain {
    pub client: AsyncClient,
    rx: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    outcomes: mpsc::UnboundedReceiver<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Plain {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Plain {
    /// Connects to `port` as `client_id`, logging in as `username` with `password` if given.
    pub fn connect(port: u16, client_id: &str, login: Option<(&str, &str)>) -> Plain {
        let mut o = MqttOptions::new(client_id, "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(5));
        o.set_max_packet_size(2 << 20, 2 << 20);
        if let Some((u, p)) = login {
            o.set_credentials(u, p);
        }
        let (client, mut eventloop) = AsyncClient::new(o, 10_000);
        let (tx, rx) = mpsc::unbounded_channel();
        let (otx, outcomes) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = otx.send(true);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send((p.topic.clone(), p.payload.to_vec()));
                    }
                    Ok(_) => {}
                    Err(_) => {
                        let _ = otx.send(false);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
        Plain { client, rx, outcomes, task }
    }

    /// A device as agents connect: its id as client id and username.
    pub fn device(port: u16, id: &str) -> Plain {
        Plain::connect(port, id, Some((id, "")))
    }

    /// The next connection outcome: `true` on CONNACK, `false` when the connection failed or dropped.
    pub async fn outcome(&mut self) -> bool {
        tokio::time::timeout(Duration::from_secs(10), self.outcomes.recv())
            .await
            .expect("a connection outcome")
            .unwrap()
    }

    /// Connection outcomes seen so far beyond those already taken.
    pub fn more_outcomes(&mut self) -> Vec<bool> {
        let mut v = Vec::new();
        while let Ok(o) = self.outcomes.try_recv() {
            v.push(o);
        }
        v
    }

    pub async fn subscribe(&self, filter: &str) {
        self.client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    }

    pub async fn publish(&self, topic: &str, msg: &Message) {
        self.client.publish(topic, QoS::AtLeastOnce, false, codec::encode(msg)).await.unwrap();
    }

    /// The next message on `topic`, decoded (panics after `secs`).
    pub async fn next_on(&mut self, topic: &str, secs: u64) -> Message {
        let wait = Duration::from_secs(secs);
        self.try_next_on(topic, wait).await.unwrap_or_else(|| panic!("nothing on {topic} within {secs} s"))
    }

    /// The next message on `topic`, decoded, and everything that came before it (panics after `secs`).
    pub async fn until_on(&mut self, topic: &str, secs: u64) -> (Message, Vec<(String, Vec<u8>)>) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        let mut before = Vec::new();
        loop {
            let (t, body) = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .unwrap_or_else(|_| panic!("nothing on {topic} within {secs} s; before it: {before:?}"))
                .unwrap();
            if t == topic {
                return (codec::decode(&body, &Limits::default()).unwrap(), before);
            }
            before.push((t, body));
        }
    }

    /// The next message on `topic` within `wait`, decoded.
    pub async fn try_next_on(&mut self, topic: &str, wait: Duration) -> Option<Message> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let (t, body) = tokio::time::timeout_at(deadline, self.rx.recv()).await.ok()?.unwrap();
            if t == topic {
                return Some(codec::decode(&body, &Limits::default()).unwrap());
            }
        }
    }

    /// Everything received so far, not waiting.
    pub fn drain(&mut self) -> Vec<(String, Vec<u8>)> {
        let mut v = Vec::new();
        while let Ok(m) = self.rx.try_recv() {
            v.push(m);
        }
        v
    }
}

/// A device key (P-256) and its CSR for `device`, as an agent or an attacker makes them.
pub struct DeviceKey {
    pub key: rcgen::KeyPair,
}

impl DeviceKey {
    pub fn new() -> DeviceKey {
        DeviceKey { key: rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap() }
    }

    pub fn csr(&self, device: &str) -> Vec<u8> {
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(rcgen::DnType::CommonName, device);
        p.serialize_request(&self.key).unwrap().der().to_vec()
    }
}

/// Enrolls over a fresh random session (as agents do) and returns the controller's answer.
pub async fn enroll(port: u16, device: &str, token: &str, key: &DeviceKey) -> EnrollOutcome {
    let session = outpost_protocol::enroll::session_name(rand16());
    let mut c = Plain::device(port, session.as_str());
    assert!(c.outcome().await, "the enrollment session connects");
    ask(&mut c, &session, device, token, key).await
}

pub fn rand16() -> [u8; 16] {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).unwrap();
    b
}

/// One request on an open session; waits for the answer to it.
pub async fn ask(c: &mut Plain, session: &DeviceId, device: &str, token: &str, key: &DeviceKey) -> EnrollOutcome {
    let response = outpost_protocol::enroll::response_topic(session);
    c.subscribe(&response).await;
    let nonce = u64::from_le_bytes(rand16()[..8].try_into().unwrap());
    let req = EnrollRequest {
        device: DeviceId::new(device).unwrap(),
        token: token.into(),
        csr: key.csr(device),
        arch: Arch::X86_64,
        agent_version: Version::new(0, 1, 0),
        labels: vec![],
        nonce,
    };
    // Asked again every 2 s, as agents do: the controller may not have subscribed yet.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "no answer to the enrollment request of {device} within 30 s");
        c.publish(&outpost_protocol::enroll::request_topic(session), &Message::EnrollRequest(req.clone())).await;
        while let Some(m) = c.try_next_on(&response, Duration::from_secs(2)).await {
            match m {
                Message::EnrollResponse(EnrollResponse { nonce: n, outcome, .. }) if n == nonce => return outcome,
                _ => {}
            }
        }
    }
}

pub fn refusal(o: &EnrollOutcome) -> Option<&'static str> {
    match o {
        EnrollOutcome::Refused { reason, .. } => Some(reason.code()),
        _ => None,
    }
}

/// What a release engineer makes with the `outpost` CLI in `dir`: keys, a trust policy, and one signed
/// digits bundle per (version, sequence, model file in `simulations/models/`).
pub struct Release {
    pub policy: PathBuf,
    pub root_pub: PathBuf,
    pub bundles: Vec<PathBuf>,
}

pub fn release(bin: &Path, dir: &Path, models: &[(&str, u64, &str)]) -> Release {
    let p = |f: &str| dir.join(f).display().to_string();
    let run = |args: &[&str]| {
        let out = Command::new(bin).args(args).output().unwrap();
        assert!(out.status.success(), "outpost {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    for name in ["root", "release"] {
        run(&["keys", "gen", "--out", &p("keys"), "--name", name]);
    }
    run(&["trust", "init", "--root-key", &p("keys/root.key"), "--release-pub", &p("keys/release.pub")]
        .iter()
        .copied()
        .chain(["--out", &p("trust.policy")])
        .collect::<Vec<_>>());
    let models_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../simulations/models");
    let mut bundles = Vec::new();
    for (version, sequence, model) in models {
        let out = dir.join(format!("digits-{version}.obundle"));
        let model = models_dir.join(format!("digits-{model}.onnx")).display().to_string();
        let seq = sequence.to_string();
        run(&[
            "bundle",
            "create",
            "--model",
            &model,
            "--name",
            "digits",
            "--version",
            version,
            "--sequence",
            &seq,
            "--key",
            &p("keys/release.key"),
            "--out",
            &out.display().to_string(),
        ]);
        bundles.push(out);
    }
    Release { policy: dir.join("trust.policy"), root_pub: dir.join("keys/root.pub"), bundles }
}

/// Publishes `hello` as `device` every second until the registry shows `boot_id`: the controller may
/// not have subscribed yet when a test starts.
pub async fn greet(ctl: &Serve, dev: &Plain, device: &str, hello: &Message, boot_id: u64) {
    let topic = outpost_protocol::topics::up(&DeviceId::new(device).unwrap(), outpost_protocol::topics::Up::Hello);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        dev.publish(&topic, hello).await;
        let until = Instant::now() + Duration::from_secs(1);
        while Instant::now() < until {
            if ctl.device(device)["boot_id"] == boot_id {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(Instant::now() < deadline, "{device}'s hello did not register within 30 s:\n{}", ctl.log());
    }
}

//! First-boot enrollment end to end: the real `outpost serve`, real `outpost-agent` processes, and the
//! shipped mosquitto setup (mutual-TLS listener for identities, server-auth TLS listener for enrollment).
//! A fresh agent with a token enrolls, reconnects with its certificate and says hello; it restarts
//! without its token file; a wrong token is refused while the agent keeps serving; a device waits for
//! approval; a revoked device is refused by the broker (CRL) and cannot enroll again. The quick start's
//! embedded broker enrolls too, over plain MQTT.

#[path = "../../controller/tests/support/prod_broker.rs"]
mod prod_broker;

use prod_broker::ProdBroker;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("outpost-enroll-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A binary built beside this crate's own (`cargo build -p outpost-controller -p outpost-agent`).
fn sibling(name: &str) -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_outpost-sim")).with_file_name(name);
    assert!(bin.exists(), "{} is missing: build it first (cargo test --workspace does)", bin.display());
    bin
}

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn d(p: &Path) -> String {
    p.display().to_string()
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// A trust policy, its root public key and a signed digits bundle, as files in `dir`.
fn model_files(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use outpost_protocol::keys::{self, private_key_from_seed};
    use outpost_protocol::manifest::*;
    use outpost_protocol::trust::{self, POLICY_FORMAT, TrustPolicy};
    let (root, release) = (private_key_from_seed([1; 32]), private_key_from_seed([2; 32]));
    let policy = TrustPolicy {
        format: POLICY_FORMAT,
        version: 1,
        created: now() - 60,
        expires: now() + 86_400,
        threshold: 1,
        release_keys: vec![release.verifying_key().to_bytes()],
        director_keys: vec![],
    };
    std::fs::write(dir.join("trust.policy"), trust::create_policy(&policy, std::slice::from_ref(&root))).unwrap();
    std::fs::write(dir.join("root.pub"), keys::public_key_to_pem(&root.verifying_key())).unwrap();
    let onnx = std::fs::read(outpost_simulations::models_dir().join("digits-v1.onnx")).unwrap();
    let model = outpost_models::onnx::to_nnef(&onnx).unwrap();
    let (payload, packed) = outpost_protocol::bundle::prepare_payload(&model, None, ModelFormat::Nnef);
    let m = Manifest {
        format: MANIFEST_FORMAT,
        name: outpost_protocol::ModelName::new("digits").unwrap(),
        version: outpost_protocol::Version::new(1, 0, 0),
        sequence: 1,
        payload,
        targets: Targets { archs: vec![], min_agent: outpost_protocol::Version::new(0, 1, 0) },
        interface: outpost_models::nnef::read_interface(&model).unwrap(),
        selftest: SelfTestSection::default(),
        created: now() - 60,
        expires: now() + 86_400,
        reference: None,
    };
    std::fs::write(dir.join("digits.obundle"), outpost_protocol::bundle::create(&m, &[release], &packed, &[])).unwrap();
    (dir.join("trust.policy"), dir.join("root.pub"), dir.join("digits.obundle"))
}

fn wait_until(what: &str, secs: u64, mut ok: impl FnMut() -> bool, context: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(Instant::now() < deadline, "{what} within {secs}s:\n{}", context());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The controller and the operator CLI pointed at it.
struct Controller {
    _proc: Proc,
    url: String,
    data: PathBuf,
    log: PathBuf,
}

impl Controller {
    fn start(dir: &Path, data: &Path, args: &[&str]) -> Controller {
        let api = free_port();
        let log = dir.join("controller.log");
        let child = Command::new(sibling("outpost"))
            .args(["serve", "--data-dir", &d(data), "--api", &format!("127.0.0.1:{api}")])
            .args(args)
            .env("OUTPOST_LOG", "info")
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        wait_port(api);
        Controller { _proc: Proc(child), url: format!("http://127.0.0.1:{api}"), data: data.to_owned(), log }
    }

    fn cli(&self, args: &[&str]) -> Output {
        Command::new(sibling("outpost"))
            .args(args)
            .args(["--controller", &self.url, "--data-dir", &d(&self.data)])
            .output()
            .unwrap()
    }

    fn run(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(out.status.success(), "outpost {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn token(&self, dir: &Path, name: &str, auto: bool) -> PathBuf {
        let args: &[&str] =
            if auto { &["enroll-token", "create", "--auto-approve"] } else { &["enroll-token", "create"] };
        let token = self.run(args).trim().to_owned();
        assert!(token.starts_with("opt_"), "{token}");
        let path = dir.join(name);
        std::fs::write(&path, format!("{token}\n")).unwrap();
        path
    }

    fn device(&self, id: &str) -> serde_json::Value {
        let out = self.cli(&["devices", "show", id, "-o", "json"]);
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// An `outpost-agent run` process with its own data directory and log.
struct Agent {
    proc: Option<Proc>,
    data: PathBuf,
    config: PathBuf,
    log: PathBuf,
    api: u16,
    starts: u32,
}

impl Agent {
    fn new(dir: &Path, id: &str, link: &str) -> Agent {
        let config = dir.join(format!("{id}.toml"));
        let text = format!(
            "[link]\ndevice_id = \"{id}\"\n{link}labels = {{ site = \"lab\" }}\n[telemetry]\nwindow = \"1s\"\n"
        );
        std::fs::write(&config, text).unwrap();
        let data = dir.join(id);
        Agent { proc: None, log: dir.join(format!("{id}.log")), data, config, api: free_port(), starts: 0 }
    }

    fn start(&mut self) {
        self.starts += 1;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(sibling("outpost-agent"))
            .args(["run", "--config", &d(&self.config), "--data-dir", &d(&self.data)])
            .args(["--listen", &format!("127.0.0.1:{}", self.api)])
            .env("OUTPOST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.proc = Some(Proc(child));
        wait_port(self.api);
    }

    fn stop(&mut self) {
        self.proc = None;
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Installs a bundle with the agent's own CLI (the agent is stopped).
    fn install(&self, bundle: &Path, policy: &Path, root_pub: &Path) {
        let out = Command::new(sibling("outpost-agent"))
            .args(["install", &d(bundle), "--config", &d(&self.config), "--data-dir", &d(&self.data)])
            .args(["--trust", &d(policy), "--root-pub", &d(root_pub)])
            .output()
            .unwrap();
        assert!(out.status.success(), "install: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// One inference over the local API; the HTTP status line.
    fn infer(&self) -> String {
        use std::io::{Read, Write};
        let body = format!(
            "{{\"inputs\":[{{\"name\":\"input\",\"shape\":[1,1,8,8],\"datatype\":\"FP32\",\"data\":[{}]}}]}}",
            vec!["0.5"; 64].join(",")
        );
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.api)) else { return "no connection".into() };
        let _ = write!(
            s,
            "POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let mut buf = String::new();
        let _ = s.read_to_string(&mut buf);
        buf.lines().next().unwrap_or_default().to_owned()
    }

    fn live(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.api)) else { return false };
        let _ = write!(s, "GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let mut buf = String::new();
        let _ = s.read_to_string(&mut buf);
        buf.starts_with("HTTP/1.1 200")
    }
}

fn status(device: &serde_json::Value) -> String {
    match &device["enrollment"]["status"] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Object(o) => o.keys().next().cloned().unwrap_or_default(),
        _ => String::new(),
    }
}

/// The shipped mosquitto setup with certificates from `outpost certs`, and `outpost serve` on it with
/// `enroll` appended to its `[enroll]` section.
struct Mosquitto {
    broker: ProdBroker,
    ctl: Controller,
    pki: PathBuf,
}

impl Mosquitto {
    fn start(dir: &Path, enroll: &str) -> Mosquitto {
        let (data, pki) = (dir.join("controller-data"), dir.join("pki"));
        let setup = |args: &[&str]| {
            let out = Command::new(sibling("outpost")).args(args).args(["--data-dir", &d(&data)]).output().unwrap();
            assert!(out.status.success(), "outpost {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        setup(&["certs", "init"]);
        setup(&["certs", "server", "--host", "127.0.0.1", "--out", &d(&pki)]);
        setup(&["certs", "controller", "--out", &d(&pki)]);
        // The broker reads a copy of the CRL the controller rewrites on every revocation (the controller's
        // data directory is private, 0700): the revocation hook copies it, then makes mosquitto reload.
        let (crl, copy) = (data.join("ca/crl.pem"), pki.join("crl.pem"));
        std::fs::copy(&crl, &copy).unwrap();
        let broker = ProdBroker::start(&pki);
        let config = dir.join("controller.toml");
        let hook = format!("cp {} {} && {}", d(&crl), d(&copy), broker.reload_command());
        std::fs::write(
            &config,
            format!(
                "[broker]\nurl = \"mqtts://127.0.0.1:{}\"\nca = {:?}\nclient_cert = {:?}\nclient_key = {:?}\n\
                 [enroll]\nbroker = \"mqtts://127.0.0.1:{}\"\non_revoke = [\"sh\", \"-c\", {hook:?}]\n{enroll}",
                broker.tls_port,
                d(&pki.join("ca.pem")),
                d(&pki.join("controller.crt")),
                d(&pki.join("controller.key")),
                broker.enroll_controller_port,
            ),
        )
        .unwrap();
        let ctl = Controller::start(dir, &data, &["--config", &d(&config)]);
        Mosquitto { broker, ctl, pki }
    }

    /// An agent's `[link]` lines for this broker, enrolling with the token in `token`.
    fn link(&self, token: &Path) -> String {
        format!(
            "broker = \"mqtts://127.0.0.1:{}\"\nenroll_broker = \"mqtts://127.0.0.1:{}\"\nca = {:?}\nenroll_token = {:?}\n",
            self.broker.tls_port,
            self.broker.enroll_port,
            d(&self.pki.join("ca.pem")),
            d(token)
        )
    }
}

#[test]
fn devices_enroll_over_mosquitto_wait_for_approval_and_revoked_ones_are_refused() {
    let dir = tempdir("mosquitto");
    let m = Mosquitto::start(&dir, "");
    let (ctl, broker) = (&m.ctl, &m.broker);
    let link = |token: &Path| m.link(token);

    // 1. A fresh device with an auto-approve token enrolls, reconnects on mutual TLS and says hello.
    let auto = ctl.token(&dir, "token-auto", true);
    let mut a = Agent::new(&dir, "dev-auto", &link(&auto));
    a.start();
    let ctx = || format!("{}\n--- agent\n{}\n--- broker\n{}", ctl.log(), a.log(), broker.log());
    wait_until(
        "dev-auto enrolled and online",
        40,
        || {
            let dev = ctl.device("dev-auto");
            status(&dev) == "Enrolled" && dev["online"] == true && dev["agent_version"].is_string()
        },
        ctx,
    );
    let list = ctl.run(&["devices", "list"]);
    assert!(list.lines().any(|l| l.contains("dev-auto") && l.contains("enrolled") && l.contains("yes")), "{list}");
    let identity = a.data.join("identity");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(identity.join("device.key")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the device key is private");
    let cert = std::fs::read_to_string(identity.join("device.crt")).unwrap();
    assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"), "{cert}");
    assert!(a.log().contains("enrolled: identity stored"), "{}", a.log());

    // 2. The token file is gone and the agent restarts: it connects with its identity, never the token.
    std::fs::remove_file(&auto).unwrap();
    let boot = ctl.device("dev-auto")["boot_id"].clone();
    a.stop();
    a.start();
    wait_until(
        "dev-auto back with a new boot",
        30,
        || {
            let dev = ctl.device("dev-auto");
            dev["boot_id"] != boot && dev["online"] == true
        },
        || format!("{}\n--- agent\n{}", ctl.log(), a.log()),
    );
    let second_run = a.log().split("serving the Open Inference Protocol").last().unwrap_or_default().to_owned();
    assert!(!second_run.contains("enroll"), "the restart did not enroll again:\n{second_run}");

    // 3. A wrong token is refused with a clear reason; the agent keeps serving and retries with backoff.
    let wrong = dir.join("token-wrong");
    std::fs::write(&wrong, "opt_0000000000000000000000000000000000000000000000000000000000000000\n").unwrap();
    let mut w = Agent::new(&dir, "dev-wrong", &link(&wrong));
    let (policy, root_pub, bundle) = model_files(&dir);
    w.install(&bundle, &policy, &root_pub);
    w.start();
    wait_until(
        "two refusals of the wrong token",
        30,
        || w.log().matches("enrollment refused: invalid_token").count() >= 2,
        || w.log(),
    );
    assert!(w.live(), "the local API serves while enrollment is refused");
    wait_until("inference while enrollment is refused", 20, || w.infer().starts_with("HTTP/1.1 200"), || w.infer());
    assert!(!w.data.join("identity/device.crt").exists());
    assert!(ctl.device("dev-wrong").is_null(), "a refused device is not registered");
    let audit = ctl.run(&["audit"]);
    assert!(audit.contains("enrollment refused") && audit.contains("invalid_token"), "{audit}");
    w.stop();

    // 4. A token without auto-approve: the device waits, the operator approves, it gets its certificate.
    let manual = ctl.token(&dir, "token-manual", false);
    let mut p = Agent::new(&dir, "dev-pending", &link(&manual));
    p.start();
    wait_until(
        "dev-pending registered as pending",
        30,
        || status(&ctl.device("dev-pending")) == "Pending",
        || format!("{}\n--- agent\n{}", ctl.log(), p.log()),
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(!p.data.join("identity/device.crt").exists(), "no certificate before approval");
    assert!(ctl.run(&["devices", "list"]).contains("pending"));
    ctl.run(&["devices", "approve", "dev-pending"]);
    wait_until(
        "dev-pending enrolled and online after approval",
        40,
        || {
            let dev = ctl.device("dev-pending");
            status(&dev) == "Enrolled" && dev["online"] == true
        },
        || format!("{}\n--- agent\n{}", ctl.log(), p.log()),
    );
    let out = ctl.cli(&["devices", "approve", "dev-auto"]);
    assert!(!out.status.success(), "only pending devices can be approved");
    let audit = ctl.run(&["audit"]);
    let approved = audit.lines().find(|l| l.contains("device approved")).unwrap_or_default();
    assert!(approved.contains(" admin ") && approved.contains("device=dev-pending"), "who approved:\n{audit}");

    // 5. Revocation: the registry ignores the device, the broker (CRL, reloaded by the hook) refuses it.
    ctl.run(&["devices", "revoke", "dev-auto"]);
    assert_eq!(status(&ctl.device("dev-auto")), "Revoked");
    let audit = ctl.run(&["audit"]);
    let revoked = audit.lines().find(|l| l.contains("device revoked")).unwrap_or_default();
    assert!(revoked.contains(" admin ") && revoked.contains("device=dev-auto"), "who revoked:\n{audit}");
    // Its open connection lives on until it reconnects: what it sends (telemetry every second) is ignored
    // and audited.
    wait_until(
        "the revoked device's messages ignored and audited",
        20,
        || ctl.run(&["audit"]).contains("message from a revoked device ignored"),
        || ctl.run(&["audit"]),
    );
    assert_eq!(ctl.device("dev-auto")["online"], false, "its telemetry did not mark it online");
    let boot = ctl.device("dev-auto")["boot_id"].clone();
    a.stop();
    a.start();
    // The same certificate connected before the reload; after it, the handshake fails (OpenSSL checks the CRL).
    let refused = || {
        let log = broker.log();
        log.split("Reloading config").nth(1).is_some_and(|after| after.contains("certificate verify failed"))
    };
    wait_until("the broker refusing dev-auto's certificate", 30, refused, || {
        format!("{}\n--- agent\n{}", broker.log(), a.log())
    });
    std::thread::sleep(Duration::from_secs(2));
    let dev = ctl.device("dev-auto");
    assert_eq!(dev["boot_id"], boot, "no hello from the revoked device reached the registry");
    assert_eq!(dev["online"], false);
    assert!(ctl.device("dev-pending")["online"] == true, "other devices are unaffected");
    a.stop();
    // A revoked id cannot enroll again, even with a fresh key and a valid token.
    std::fs::remove_dir_all(&identity).unwrap();
    let again = ctl.token(&dir, "token-auto", true);
    assert_eq!(again, auto);
    a.start();
    wait_until("re-enrollment refused as revoked", 30, || a.log().contains("enrollment refused: revoked"), || a.log());
    assert!(!identity.join("device.crt").exists());
    assert_eq!(status(&ctl.device("dev-auto")), "Revoked");
}

#[test]
fn the_quick_start_embedded_broker_enrolls_over_plain_mqtt() {
    let dir = tempdir("embedded");
    let data = dir.join("data");
    let mqtt = free_port();
    let ctl = Controller::start(&dir, &data, &["--mqtt-listen", &format!("127.0.0.1:{mqtt}")]);
    wait_port(mqtt);
    let token = ctl.token(&dir, "token", true);
    let link = format!("broker = \"mqtt://127.0.0.1:{mqtt}\"\nenroll_token = {:?}\n", d(&token));
    let mut a = Agent::new(&dir, "dev-quick", &link);
    a.start();
    wait_until(
        "dev-quick enrolled and online",
        40,
        || {
            let dev = ctl.device("dev-quick");
            status(&dev) == "Enrolled" && dev["online"] == true
        },
        || format!("{}\n--- agent\n{}", ctl.log(), a.log()),
    );
    assert!(a.data.join("identity/device.crt").exists());
    assert!(data.join("ca/ca.pem").exists(), "the CA was made at first start");
}

/// An attacker on the enrollment listener (anonymous, like every client there) connects under the
/// enrolling device's id, again and again from four connections: each new connection under an id
/// disconnects the one that had it. Agents enroll under a random session name, which it cannot know, and
/// the enrollment broker is a process of its own, so the enrolled device (and the controller, also
/// attacked by name) keep their connections to the identity broker.
#[test]
fn an_anonymous_client_cannot_keep_an_enrolling_device_off() {
    let dir = tempdir("kick");
    let m = Mosquitto::start(&dir, "");
    let token = m.ctl.token(&dir, "token", true);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let kicks = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let attacker = {
        let (stop, kicks, port, ca) = (stop.clone(), kicks.clone(), m.broker.enroll_port, m.pki.join("ca.pem"));
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async move {
                let _ = rustls::crypto::ring::default_provider().install_default();
                let ca = std::fs::read(ca).unwrap();
                let mut loops = Vec::new();
                for id in ["dev-kicked", "dev-kicked", "dev-kicked", "outpost-controller"] {
                    let (stop, kicks, ca) = (stop.clone(), kicks.clone(), ca.clone());
                    loops.push(tokio::spawn(async move {
                        let mut o = rumqttc::MqttOptions::new(id, "127.0.0.1", port);
                        o.set_keep_alive(Duration::from_secs(5));
                        let tls = rumqttc::TlsConfiguration::Simple { ca, alpn: None, client_auth: None };
                        o.set_transport(rumqttc::Transport::tls_with_config(tls));
                        let (_client, mut ev) = rumqttc::AsyncClient::new(o, 8);
                        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                            if let Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) = ev.poll().await {
                                kicks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                        }
                    }));
                }
                for l in loops {
                    let _ = l.await;
                }
            });
        })
    };
    let mut a = Agent::new(&dir, "dev-kicked", &m.link(&token));
    a.start();
    wait_until(
        "dev-kicked enrolled and online while its id is taken on the enrollment listener",
        60,
        || {
            let dev = m.ctl.device("dev-kicked");
            status(&dev) == "Enrolled" && dev["online"] == true
        },
        || format!("{}\n--- agent\n{}", m.ctl.log(), a.log()),
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let kicked = kicks.load(std::sync::atomic::Ordering::Relaxed);
    assert!(kicked > 10, "the attacker kept connecting ({kicked} connections)");
    let log = m.ctl.log();
    assert!(!log.contains("controller lost the broker"), "the controller was knocked off:\n{log}");
    let agent = a.log();
    assert!(!agent.contains("disconnected from the broker"), "the enrolled device was knocked off:\n{agent}");
    let _ = attacker.join();
}

/// Device certificates expire; the agent renews its own in time. With a 30 s lifetime, the agent renews
/// two thirds in, and after the first certificate expired it connects again with the renewed one.
#[test]
fn a_device_renews_its_certificate_and_connects_after_the_first_one_expired() {
    use outpost_agent::identity::renew::validity;
    let dir = tempdir("renew");
    let m = Mosquitto::start(&dir, "cert_lifetime = \"30s\"\n");
    let token = m.ctl.token(&dir, "token", true);
    let mut a = Agent::new(&dir, "dev-renew", &m.link(&token));
    a.start();
    let online = |boot: &serde_json::Value| {
        let dev = m.ctl.device("dev-renew");
        status(&dev) == "Enrolled" && dev["online"] == true && &dev["boot_id"] != boot
    };
    let agent_log = a.log.clone();
    let ctx = || {
        let agent = std::fs::read_to_string(&agent_log).unwrap_or_default();
        format!("{}\n--- agent\n{agent}\n--- broker\n{}", m.ctl.log(), m.broker.log())
    };
    wait_until("dev-renew enrolled and online", 40, || online(&serde_json::Value::Null), ctx);
    let cert = a.data.join("identity/device.crt");
    let (from, to) = validity(&std::fs::read_to_string(&cert).unwrap()).unwrap();
    assert!(to - from <= 40, "a short certificate: {from}..{to}");
    let renewed = || std::fs::read_to_string(&agent_log).unwrap_or_default().contains("device certificate renewed");
    wait_until("a renewed certificate", 40, renewed, ctx);
    let (_, renewed_to) = validity(&std::fs::read_to_string(&cert).unwrap()).unwrap();
    assert!(renewed_to > to, "{renewed_to} > {to}");
    let audit = m.ctl.run(&["audit"]);
    assert!(audit.contains("certificate renewed"), "{audit}");
    // Past the first certificate's end, the device comes back with what it holds now.
    while now() <= to + 1 {
        std::thread::sleep(Duration::from_millis(200));
    }
    let boot = m.ctl.device("dev-renew")["boot_id"].clone();
    a.stop();
    a.start();
    wait_until("dev-renew back after the first certificate expired", 30, || online(&boot), ctx);
}

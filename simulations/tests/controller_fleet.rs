//! The controller daemon with real agents over a real mosquitto: devices register and report, bundles
//! are verified on push, the operator CLI shows it all.

use outpost_agent::config::{Config, Overrides};
use outpost_protocol::bundle;
use outpost_protocol::keys::{self, private_key_from_seed};
use outpost_protocol::manifest::*;
use outpost_protocol::trust::{self, POLICY_FORMAT, TrustPolicy};
use outpost_protocol::{ModelName, Version};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("outpost-sim-{name}-{}", std::process::id()));
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

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn mosquitto(dir: &Path) -> (Proc, u16) {
    let port = free_port();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(&conf, format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")).unwrap();
    let bin = if Path::new("/usr/sbin/mosquitto").exists() { "/usr/sbin/mosquitto" } else { "mosquitto" };
    let child = Command::new(bin)
        .arg("-c")
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("mosquitto installed");
    wait_port(port);
    (Proc(child), port)
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// Root and release keys, the trust policy and the root public key, as files in `dir`.
fn trust_files(dir: &Path) -> (PathBuf, PathBuf) {
    let root = private_key_from_seed([1; 32]);
    let release = private_key_from_seed([2; 32]);
    let policy = TrustPolicy {
        format: POLICY_FORMAT,
        version: 1,
        created: now() - 60,
        expires: now() + 86_400,
        threshold: 1,
        release_keys: vec![release.verifying_key().to_bytes()],
    };
    std::fs::write(dir.join("trust.policy"), trust::create_policy(&policy, std::slice::from_ref(&root))).unwrap();
    std::fs::write(dir.join("root.pub"), keys::public_key_to_pem(&root.verifying_key())).unwrap();
    (dir.join("trust.policy"), dir.join("root.pub"))
}

fn digits_bundle(version: &str, sequence: u64) -> Vec<u8> {
    bundle_of("v1", version, sequence)
}

/// The controller's `outpost` binary, built beside this crate's own by `cargo test --workspace`.
fn outpost_bin() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_outpost-sim")).with_file_name("outpost");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p outpost-controller` (cargo test --workspace does)",
        bin.display()
    );
    bin
}

fn outpost(args: &[&str]) -> Output {
    Command::new(outpost_bin()).args(args).output().unwrap()
}

/// Starts an in-process agent that joins the fleet through `broker_port`.
fn agent(dir: &Path, id: &str, broker_port: u16, labels: &str) -> std::thread::JoinHandle<()> {
    agent_on(dir, id, broker_port, labels, 0)
}

/// As `agent`, with the local API on `api_port` (0: any).
fn agent_on(dir: &Path, id: &str, broker_port: u16, labels: &str, api_port: u16) -> std::thread::JoinHandle<()> {
    // Trust files are written once per test (by `trust_files`); agents only read them.
    let (policy, root_pub) = (dir.join("trust.policy"), dir.join("root.pub"));
    let raw = outpost_agent::config::parse(
        &format!("[link]\nlabels = {{ {labels} }}\n[telemetry]\nwindow = \"1s\"\n"),
        "test",
    )
    .unwrap();
    let o = Overrides {
        data_dir: Some(dir.join(id)),
        listen: Some(format!("127.0.0.1:{api_port}")),
        trust: Some(policy),
        root_pubs: vec![root_pub],
        broker: Some(format!("mqtt://127.0.0.1:{broker_port}")),
        device_id: Some(id.into()),
        ..Overrides::default()
    };
    let cfg = Config::validate(raw, &o, "test").unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind(cfg.listen).await.unwrap();
            let _ = outpost_agent::serve::serve(cfg, listener, std::future::pending()).await;
        });
    })
}

#[test]
fn devices_register_over_mosquitto_and_pushed_bundles_are_verified() {
    let dir = tempdir("controller");
    let (_broker, port) = mosquitto(&dir);
    let (policy, root_pub) = trust_files(&dir);
    let api_port = free_port();
    let data = dir.join("controller-data");
    let d = |p: &Path| p.display().to_string();
    let api = format!("127.0.0.1:{api_port}");
    let _controller = Proc(
        Command::new(outpost_bin())
            .args(["serve", "--data-dir", &d(&data), "--api", &api, "--broker", &format!("mqtt://127.0.0.1:{port}")])
            .args(["--trust", &d(&policy), "--root-pub", &d(&root_pub)])
            .spawn()
            .unwrap(),
    );
    wait_port(api_port);
    let _a = agent(&dir, "dev-eu-1", port, "region = \"eu\"");
    let _b = agent(&dir, "dev-us-1", port, "region = \"us\"");
    let url = format!("http://{api}");
    let remote = ["--controller", url.as_str(), "--data-dir", &d(&data)];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = outpost(&[&["devices", "list", "-o", "json"][..], &remote].concat());
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if list.as_array().map(|l| l.len()) == Some(2) && list.as_array().unwrap().iter().all(|d| d["online"] == true) {
            break;
        }
        assert!(Instant::now() < deadline, "devices did not register: {}", String::from_utf8_lossy(&out.stderr));
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = outpost(&[&["devices", "list", "-l", "region=eu"][..], &remote].concat());
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(table.contains("dev-eu-1") && !table.contains("dev-us-1"), "{table}");
    // Telemetry flows and is acked: the cursor advances.
    std::thread::sleep(Duration::from_secs(3));
    let out = outpost(&[&["devices", "show", "dev-eu-1", "-o", "json"][..], &remote].concat());
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(shown["telemetry"]["received"].as_u64() >= Some(2), "{shown}");
    assert_eq!(shown["telemetry"]["missing"], 0);

    let good = dir.join("digits.obundle");
    std::fs::write(&good, digits_bundle("1.0.0", 1)).unwrap();
    let out = outpost(&[&["bundle", "push", &d(&good)][..], &remote].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut bad = digits_bundle("1.0.1", 2);
    let n = bad.len();
    bad[n / 2] ^= 1;
    let tampered = dir.join("tampered.obundle");
    std::fs::write(&tampered, bad).unwrap();
    let out = outpost(&[&["bundle", "push", &d(&tampered)][..], &remote].concat());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("payload_digest_mismatch"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = outpost(&[&["bundle", "list"][..], &remote].concat());
    let list = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(list.contains("digits@1.0.0") && !list.contains("1.0.1"), "{list}");
    // Without the token, nothing.
    let out = Command::new(outpost_bin())
        .args(["devices", "list", "--controller", &url, "--data-dir", "/nonexistent"])
        .env_remove("OUTPOST_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(outpost_bin())
        .args(["devices", "list", "--controller", &url])
        .env("OUTPOST_TOKEN", "wrong")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("API token"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn with_no_config_the_controller_runs_its_own_broker_and_devices_join_it() {
    let dir = tempdir("embedded");
    let (mqtt, api_port) = (free_port(), free_port());
    let data = dir.join("data");
    let api = format!("127.0.0.1:{api_port}");
    let _controller = Proc(
        Command::new(outpost_bin())
            .current_dir(&dir)
            .args(["serve", "--api", &api, "--mqtt-listen", &format!("127.0.0.1:{mqtt}")])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_port(api_port);
    trust_files(&dir);
    let _a = agent(&dir, "dev-embedded", mqtt, "site = \"lab\"");
    let url = format!("http://{api}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = Command::new(outpost_bin())
            .current_dir(&dir)
            .args(["devices", "list", "--controller", &url])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout).contains("dev-embedded") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no device joined the embedded broker: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The default data directory is ./outpost-data in the working folder, with the API token in it.
    assert!(dir.join("outpost-data/api-token").exists());
    let _ = data;
}

fn bundle_of(model: &str, version: &str, sequence: u64) -> Vec<u8> {
    let bytes = std::fs::read(outpost_simulations::models_dir().join(format!("digits-{model}.onnx"))).unwrap();
    let (payload, packed) = bundle::prepare_payload(&bytes, None, ModelFormat::Onnx);
    let m = Manifest {
        format: MANIFEST_FORMAT,
        name: ModelName::new("digits").unwrap(),
        version: version.parse::<Version>().unwrap(),
        sequence,
        payload,
        targets: Targets { archs: vec![], min_agent: Version::new(0, 1, 0) },
        interface: outpost_agent::runtime::model::read_interface(&bytes).unwrap(),
        selftest: vec![],
        created: now() - 60,
        expires: now() + 86_400,
        reference: None,
    };
    bundle::create(&m, &[private_key_from_seed([2; 32])], &packed)
}

fn serving(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    use std::io::{Read, Write};
    write!(s, "GET /v2/models/digits HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let body = buf.split_once("\r\n\r\n")?.1;
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    v["versions"][0].as_str().map(str::to_owned)
}

fn infer(port: u16) {
    use std::io::{Read, Write};
    let body = format!(
        "{{\"inputs\":[{{\"name\":\"input\",\"shape\":[1,1,8,8],\"datatype\":\"FP32\",\"data\":[{}]}}]}}",
        vec!["0.5"; 64].join(",")
    );
    if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
        let _ = write!(
            s,
            "POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }
}

#[test]
fn a_good_rollout_completes_in_waves_and_a_bad_model_is_caught_at_the_canary_and_rolled_back() {
    let dir = tempdir("rollout");
    let (_broker, port) = mosquitto(&dir);
    let (policy, root_pub) = trust_files(&dir);
    let api_port = free_port();
    let data = dir.join("controller-data");
    let d = |p: &Path| p.display().to_string();
    let api = format!("127.0.0.1:{api_port}");
    let _controller = Proc(
        Command::new(outpost_bin())
            .args(["serve", "--data-dir", &d(&data), "--api", &api, "--broker", &format!("mqtt://127.0.0.1:{port}")])
            .args(["--trust", &d(&policy), "--root-pub", &d(&root_pub)])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_port(api_port);
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let _agents: Vec<_> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| agent_on(&dir, &format!("dev-{i}"), port, "site = \"lab\"", *p))
        .collect();
    for p in &ports {
        wait_port(*p);
    }
    // Local applications use their models the whole time.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (stop, ports) = (stop.clone(), ports.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for p in &ports {
                    infer(*p);
                }
            }
        })
    };
    let url = format!("http://{api}");
    let remote = ["--controller", url.as_str(), "--data-dir", &d(&data)];
    let run = |args: &[&str]| {
        let out = Command::new(outpost_bin()).args([args, &remote[..]].concat()).output().unwrap();
        assert!(out.status.success(), "outpost {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !run(&["devices", "list"]).contains("dev-3") {
        assert!(Instant::now() < deadline, "devices did not register");
        std::thread::sleep(Duration::from_millis(100));
    }
    for (name, model, version, seq) in [("v1", "v1", "1.0.0", 1u64), ("bad", "bad", "2.0.0", 2)] {
        let path = dir.join(format!("{name}.obundle"));
        std::fs::write(&path, bundle_of(model, version, seq)).unwrap();
        run(&["bundle", "push", &d(&path)]);
    }

    // 1. v1 everywhere: one canary, then the rest.
    run(&[
        "rollout",
        "start",
        "--bundle",
        "digits@1.0.0",
        "--waves",
        "1,100%",
        "--bake",
        "6s",
        "--watch",
        "1s",
        "--max-failure-rate",
        "50%",
        "--quorum",
        "50%",
        "--id",
        "first",
    ]);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let status = run(&["rollout", "status", "first"]);
        if status.contains("phase     Completed") && ports.iter().all(|p| serving(*p).as_deref() == Some("1.0.0")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rollout did not complete:\n{status}\n{}",
            (0..4).map(|i| run(&["devices", "show", &format!("dev-{i}")])).collect::<Vec<_>>().join("\n")
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    // 2. The scrambled model: shadowed at the canary, disagreement fails the gate, the canary reverts.
    run(&[
        "rollout",
        "start",
        "--bundle",
        "digits@2.0.0",
        "--waves",
        "1,100%",
        "--bake",
        "6s",
        "--shadow",
        "4s",
        "--watch",
        "1s",
        "--min-shadow-agreement",
        "90%",
        "--on-failure",
        "rollback",
        "--quorum",
        "50%",
        "--id",
        "second",
    ]);
    let mut saw_bad = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        for (i, p) in ports.iter().enumerate() {
            if serving(*p).as_deref() == Some("2.0.0") {
                saw_bad.insert(i);
            }
        }
        let status = run(&["rollout", "status", "second"]);
        if status.contains("phase     RolledBack") && ports.iter().all(|p| serving(*p).as_deref() == Some("1.0.0")) {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the bad rollout was not rolled back:\n{status}\n{}",
            (0..4).map(|i| run(&["devices", "show", &format!("dev-{i}"), "-o", "json"])).collect::<Vec<_>>().join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.join().unwrap();
    println!("{status}");
    assert!(saw_bad.len() <= 1, "only the canary may ever serve the bad model: {saw_bad:?}");
    let audit = run(&["audit"]);
    assert!(audit.contains("shadow"), "the decision is audited with its evidence:\n{audit}");
    let skew = run(&["skew"]);
    assert!(skew.contains("1.0.0  4 online"), "{skew}");
}

//! Shared by the simulations crate's integration tests: mosquitto on a free loopback port, trust files,
//! signed digits bundles, the `outpost` binary, and in-process agents that can be stopped and started again.
#![allow(dead_code)]

pub mod browser;
pub mod controller;
pub mod release;

#[allow(unused_imports)] // each test binary uses some of them
pub use controller::{Controller, path, wait_until};

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

pub fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("outpost-sim-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub struct Proc(pub Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn mosquitto(dir: &Path) -> (Proc, u16) {
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

pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// The controller's director key the test trust policy names (`trust_files`): a controller started with
/// it signs reverts and removals that devices take.
pub fn director() -> keys::PrivateKey {
    private_key_from_seed([5; 32])
}

/// Puts the test director key where `outpost serve --data-dir DATA` reads it by default.
pub fn director_key_into(data: &Path) {
    std::fs::create_dir_all(data).unwrap();
    std::fs::write(data.join("director.key"), keys::private_key_to_pem(&director())).unwrap();
}

/// Root and release keys, the trust policy (naming the test director key) and the root public key, as
/// files in `dir`.
pub fn trust_files(dir: &Path) -> (PathBuf, PathBuf) {
    let root = private_key_from_seed([1; 32]);
    let release = private_key_from_seed([2; 32]);
    let policy = TrustPolicy {
        format: POLICY_FORMAT,
        version: 1,
        created: now() - 60,
        expires: now() + 86_400,
        threshold: 1,
        release_keys: vec![release.verifying_key().to_bytes()],
        director_keys: vec![director().verifying_key().to_bytes()],
    };
    std::fs::write(dir.join("trust.policy"), trust::create_policy(&policy, std::slice::from_ref(&root))).unwrap();
    std::fs::write(dir.join("root.pub"), keys::public_key_to_pem(&root.verifying_key())).unwrap();
    (dir.join("trust.policy"), dir.join("root.pub"))
}

pub fn digits_bundle(version: &str, sequence: u64) -> Vec<u8> {
    bundle_of("v1", version, sequence)
}

/// The controller's `outpost` binary, built beside this crate's own by `cargo test --workspace`.
pub fn outpost_bin() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_outpost-sim")).with_file_name("outpost");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --workspace --bins` (cargo test --workspace does)",
        bin.display()
    );
    bin
}

pub fn outpost(args: &[&str]) -> Output {
    Command::new(outpost_bin()).args(args).output().unwrap()
}

/// Starts an in-process agent that joins the fleet through `broker_port`.
pub fn agent(dir: &Path, id: &str, broker_port: u16, labels: &str) -> std::thread::JoinHandle<()> {
    agent_on(dir, id, broker_port, labels, 0)
}

/// As `agent`, with the local API on `api_port` (0: any).
pub fn agent_on(dir: &Path, id: &str, broker_port: u16, labels: &str, api_port: u16) -> std::thread::JoinHandle<()> {
    let (agent, _) = stoppable_agent(dir, id, broker_port, labels, api_port);
    std::mem::forget(agent.stop);
    agent.thread
}

/// An in-process agent that stops (its link goes down, the broker publishes its will) when told.
#[derive(Debug)]
pub struct Running {
    pub stop: tokio::sync::oneshot::Sender<()>,
    pub thread: std::thread::JoinHandle<()>,
}

impl Running {
    /// Stops the agent and waits until its runtime is gone (its sockets closed).
    pub fn halt(self) {
        let _ = self.stop.send(());
        self.thread.join().unwrap();
    }
}

/// Starts an agent; returns it and its local API port. The data directory `dir/id` survives a stop, so
/// starting the same id again is the device coming back.
pub fn stoppable_agent(dir: &Path, id: &str, broker_port: u16, labels: &str, api_port: u16) -> (Running, u16) {
    let config = format!("[link]\nlabels = {{ {labels} }}\n[telemetry]\nwindow = \"1s\"\n");
    stoppable_agent_config(dir, id, broker_port, api_port, &config)
}

/// As `stoppable_agent`, with the whole agent configuration text (the trust files, data directory,
/// listener, broker and device id still come from the arguments).
pub fn stoppable_agent_config(dir: &Path, id: &str, broker_port: u16, api_port: u16, config: &str) -> (Running, u16) {
    // Trust files are written once per test (by `trust_files`); agents only read them.
    let (policy, root_pub) = (dir.join("trust.policy"), dir.join("root.pub"));
    let api_port = if api_port == 0 { free_port() } else { api_port };
    let raw = outpost_agent::config::parse(config, "test").unwrap();
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
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind(cfg.listen).await.unwrap();
            let _ = outpost_agent::serve::serve(cfg, listener, async move {
                let _ = stopped.await;
            })
            .await;
        });
        // Dropping the runtime here aborts the link and the driver: the device is gone.
    });
    wait_port(api_port);
    (Running { stop, thread }, api_port)
}

pub fn bundle_of(model: &str, version: &str, sequence: u64) -> Vec<u8> {
    model_bundle("digits", model, version, sequence)
}

/// A digits bundle signed by `keys`.
pub fn bundle_signed(model: &str, version: &str, sequence: u64, keys: &[keys::PrivateKey]) -> Vec<u8> {
    model_bundle_signed("digits", model, version, sequence, keys)
}

/// A signed bundle of `simulations/models/{name}-{file}.onnx` released as `name`.
pub fn model_bundle(name: &str, file: &str, version: &str, sequence: u64) -> Vec<u8> {
    model_bundle_signed(name, file, version, sequence, &[private_key_from_seed([2; 32])])
}

/// As `model_bundle`, signed by `keys`.
pub fn model_bundle_signed(name: &str, file: &str, version: &str, sequence: u64, keys: &[keys::PrivateKey]) -> Vec<u8> {
    model_bundle_for_agent(name, file, version, sequence, keys, Version::new(0, 1, 0))
}

/// As `model_bundle_signed`, for agents of `min_agent` and newer.
pub fn model_bundle_for_agent(
    name: &str,
    file: &str,
    version: &str,
    sequence: u64,
    keys: &[keys::PrivateKey],
    min_agent: Version,
) -> Vec<u8> {
    let onnx = std::fs::read(outpost_simulations::models_dir().join(format!("{name}-{file}.onnx"))).unwrap();
    // Bundles carry NNEF, converted as `outpost bundle create` does.
    let bytes = outpost_models::onnx::to_nnef(&onnx).unwrap();
    let (payload, packed) = bundle::prepare_payload(&bytes, None, ModelFormat::Nnef);
    let m = Manifest {
        format: MANIFEST_FORMAT,
        name: ModelName::new(name).unwrap(),
        version: version.parse::<Version>().unwrap(),
        sequence,
        payload,
        targets: Targets { archs: vec![], min_agent },
        interface: outpost_models::nnef::read_interface(&bytes).unwrap(),
        selftest: SelfTestSection::default(),
        created: now() - 60,
        expires: now() + 86_400,
        reference: None,
    };
    bundle::create(&m, keys, &packed, &[])
}

pub fn serving(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    use std::io::{Read, Write};
    write!(s, "GET /v2/models/digits HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let body = buf.split_once("\r\n\r\n")?.1;
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    v["versions"][0].as_str().map(str::to_owned)
}

pub fn infer(port: u16) {
    infer_image(port, &[0.5; 64]);
}

/// One digits request to a device's local API (JSON, the 8×8 image), the way an application asks; the answer
/// is read and dropped: tests use it so gates judge real inference windows.
pub fn infer_image(port: u16, image: &[f32]) {
    infer_model(port, "digits", "input", &[1, 1, 8, 8], image);
}

/// One JSON request to `model` on a device's local API with one FP32 input; the answer is read and dropped.
pub fn infer_model(port: u16, model: &str, input: &str, shape: &[usize], data: &[f32]) {
    use std::io::{Read, Write};
    let body = serde_json::json!({"inputs": [{"name": input, "shape": shape, "datatype": "FP32", "data": data}]});
    let body = body.to_string();
    if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
        let _ = write!(
            s,
            "POST /v2/models/{model}/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }
}

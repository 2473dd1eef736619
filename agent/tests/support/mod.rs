//! Shared by the agent's integration tests: real models from `simulations/models/`, real keys and
//! signed bundles made with the protocol crate, an agent served on 127.0.0.1:0, and a minimal HTTP client.
#![allow(dead_code)]

pub mod broker;
pub mod controller;

use outpost_agent::config::{Config, Overrides, RawConfig};
use outpost_agent::runtime::model::LoadedModel;
use outpost_models::nnef::read_interface;
use outpost_models::tensor::{TensorData, to_manifest};
use outpost_protocol::bundle;
use outpost_protocol::keys::{self, PrivateKey, private_key_from_seed};
use outpost_protocol::manifest::*;
use outpost_protocol::trust::{self, POLICY_FORMAT, TrustPolicy};
use outpost_protocol::{ModelName, Version};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub fn models() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../simulations/models")
}

/// A committed digits model as bundles carry it: NNEF, converted from its ONNX file.
pub fn model_bytes(name: &str) -> Vec<u8> {
    to_nnef(&std::fs::read(models().join(format!("digits-{name}.onnx"))).unwrap())
}

/// ONNX → NNEF exactly as `outpost bundle create` converts (the shared model library).
pub fn to_nnef(onnx_bytes: &[u8]) -> Vec<u8> {
    outpost_models::onnx::to_nnef(onnx_bytes).unwrap()
}

/// The held-out digits: (images of 64 floats, labels).
pub fn test_set() -> (Vec<Vec<f32>>, Vec<u8>) {
    let bytes = std::fs::read(models().join("digits-test-inputs.f32")).unwrap();
    let floats: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    let labels = std::fs::read(models().join("digits-test-labels.u8")).unwrap();
    (floats.chunks_exact(64).map(<[f32]>::to_vec).collect(), labels)
}

pub fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("outpost-agent-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn root() -> PrivateKey {
    private_key_from_seed([1; 32])
}
pub fn release() -> PrivateKey {
    private_key_from_seed([2; 32])
}
pub fn stranger() -> PrivateKey {
    private_key_from_seed([3; 32])
}
/// The controller's director key: the test trust policy names it (reverts and removals need it).
pub fn director() -> PrivateKey {
    private_key_from_seed([4; 32])
}

pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// Writes `trust.policy` (release key, signed by root) and `root.pub` into `dir`.
pub fn trust_files(dir: &Path) -> (PathBuf, PathBuf) {
    let policy = TrustPolicy {
        format: POLICY_FORMAT,
        version: 1,
        created: now() - 60,
        expires: now() + 86_400,
        threshold: 1,
        release_keys: vec![release().verifying_key().to_bytes()],
        director_keys: vec![director().verifying_key().to_bytes()],
    };
    let (p, r) = (dir.join("trust.policy"), dir.join("root.pub"));
    std::fs::write(&p, trust::create_policy(&policy, &[root()])).unwrap();
    std::fs::write(&r, keys::public_key_to_pem(&root().verifying_key())).unwrap();
    (p, r)
}

/// A manifest for `model` (its self-test section is filled in when a bundle is made).
pub fn manifest(model: &[u8], version: &str, sequence: u64) -> Manifest {
    manifest_named("digits", model, version, sequence)
}

/// `manifest` under another model name: the committed digits models stand in for a device's other models.
pub fn manifest_named(name: &str, model: &[u8], version: &str, sequence: u64) -> Manifest {
    let (payload, _) = bundle::prepare_payload(model, None, ModelFormat::Nnef);
    Manifest {
        format: MANIFEST_FORMAT,
        name: ModelName::new(name).unwrap(),
        version: version.parse::<Version>().unwrap(),
        sequence,
        payload,
        targets: Targets { archs: vec![], min_agent: Version::new(0, 1, 0) },
        interface: read_interface(model).unwrap(),
        selftest: SelfTestSection::default(),
        created: now() - 60,
        expires: now() + 86_400,
        reference: None,
    }
}

/// Self-test vectors for a digits model: the first 4 test images and the model's own outputs. None for
/// bytes that are not a model (tests that only move bytes around).
pub fn selftest_vectors(model: &[u8]) -> Vec<SelfTestVector> {
    if read_interface(model).is_err() {
        return Vec::new();
    }
    let Ok(loaded) = LoadedModel::load(model, manifest(model, "1.0.0", 1), 1) else { return Vec::new() };
    let (images, _) = test_set();
    images
        .iter()
        .take(4)
        .map(|image| {
            let out = loaded.run(1, &[TensorData::F32(image.clone())]).unwrap();
            SelfTestVector {
                inputs: vec![to_manifest("input", &[1, 1, 8, 8], &TensorData::F32(image.clone()))],
                expected: vec![to_manifest("logits", &[1, 10], &out[0].0)],
                tolerance: Tolerance::default(),
            }
        })
        .collect()
}

/// A full bundle of `manifest` over `model` with the model's own self-test vectors, signed by `key`.
pub fn bundle_with(manifest: &Manifest, model: &[u8], key: &PrivateKey) -> Vec<u8> {
    bundle_with_vectors(manifest, model, key, &selftest_vectors(model))
}

/// A full bundle of `manifest` over `model` carrying `vectors`, signed by `key`.
pub fn bundle_with_vectors(manifest: &Manifest, model: &[u8], key: &PrivateKey, vectors: &[SelfTestVector]) -> Vec<u8> {
    let (payload, bytes) = bundle::prepare_payload(model, None, ModelFormat::Nnef);
    let mut m = manifest.clone();
    m.payload = payload;
    bundle::create(&m, std::slice::from_ref(key), &bytes, vectors)
}

/// A delta bundle of model `name` against model `base`, signed by the release key.
pub fn signed_delta(name: &str, base: &str, version: &str, sequence: u64) -> Vec<u8> {
    let (model, base) = (model_bytes(name), model_bytes(base));
    let mut m = manifest(&model, version, sequence);
    let (payload, bytes) = bundle::prepare_payload(&model, Some(&base), ModelFormat::Nnef);
    m.payload = payload;
    bundle::create(&m, &[release()], &bytes, &selftest_vectors(&model))
}

/// A full bundle of the committed digits model `file` released as model `name`.
pub fn signed_bundle_named(name: &str, file: &str, version: &str, sequence: u64) -> Vec<u8> {
    let model = model_bytes(file);
    bundle_with(&manifest_named(name, &model, version, sequence), &model, &release())
}

pub fn signed_bundle(name: &str, version: &str, sequence: u64) -> Vec<u8> {
    let model = model_bytes(name);
    bundle_with(&manifest(&model, version, sequence), &model, &release())
}

/// A validated config for a test agent: data in `dir`, trust files in `dir`, API on an ephemeral port.
pub fn config(dir: &Path, extra_toml: &str) -> Config {
    let (policy, root_pub) = trust_files(dir);
    let raw: RawConfig = outpost_agent::config::parse(extra_toml, "test").unwrap();
    let o = Overrides {
        data_dir: Some(dir.join("data")),
        listen: Some("127.0.0.1:0".into()),
        trust: Some(policy),
        root_pubs: vec![root_pub],
        ..Overrides::default()
    };
    Config::validate(raw, &o, "test").unwrap()
}

/// An agent serving `cfg` on an ephemeral loopback port in a background thread; stops when dropped.
pub struct Agent {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Agent {
    pub fn start(cfg: Config) -> Agent {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind(cfg.listen).await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                outpost_agent::serve::serve(cfg, listener, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
            });
        });
        let addr = addr_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        Agent { addr, stop: Some(stop), thread: Some(thread) }
    }

    pub fn get(&self, path: &str) -> Response {
        http(self.addr, "GET", path, b"")
    }

    pub fn post(&self, path: &str, body: &[u8]) -> Response {
        http(self.addr, "POST", path, body)
    }

    pub fn post_with(&self, path: &str, headers: &[(&str, String)], body: &[u8]) -> Response {
        http_with(self.addr, "POST", path, headers, body)
    }

    /// Polls `GET path` until `ok` holds (the agent follows slot changes asynchronously).
    pub fn wait_for(&self, path: &str, what: &str, ok: impl Fn(&Response) -> bool) -> Response {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = self.get(path);
            if ok(&r) {
                return r;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}; last answer {} {}", r.status, r.text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn status(&self) -> serde_json::Value {
        self.get("/outpost/v1/status").json()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// One HTTP/1.1 request with `Connection: close`.
pub fn http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> Response {
    http_with(addr, method, path, &[], body)
}

/// `http` with extra request headers.
pub fn http_with(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, String)], body: &[u8]) -> Response {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    // The server may answer (413) before reading a large body; a failed write is then expected.
    let _ = s.write_all(body);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").expect("HTTP response head");
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    let headers =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned())).collect();
    Response { status, headers, body: buf[split + 4..].to_vec() }
}

/// `outpost-agent ARGS` on the data dir and trust files of `dir` (as `trust_files` and `AgentProcess` lay
/// them out), the way an installer types it.
pub fn agent_cli(dir: &Path, args: &[&str]) -> std::process::Output {
    let d = |p: &str| dir.join(p).display().to_string();
    let common =
        ["--data-dir".to_string(), d("data"), "--trust".into(), d("trust.policy"), "--root-pub".into(), d("root.pub")];
    std::process::Command::new(env!("CARGO_BIN_EXE_outpost-agent")).args(args).args(&common).output().unwrap()
}

/// `outpost-agent install` of `bundle` (written to `dir/b.obundle`), plus `extra` arguments.
pub fn install_local(dir: &Path, bundle: &[u8], extra: &[&str]) -> std::process::Output {
    let path = dir.join("b.obundle");
    std::fs::write(&path, bundle).unwrap();
    let path = path.display().to_string();
    agent_cli(dir, &[&["install", path.as_str()][..], extra].concat())
}

/// A digits-shaped model's answer to one image over the local API: the version that answered and the
/// output values, or `None` when it did not answer 200.
pub fn answer(addr: SocketAddr, model: &str, image: &[f32]) -> Option<(String, Vec<f64>)> {
    let r = http(addr, "POST", &format!("/v2/models/{model}/infer"), &infer_body(&[image.to_vec()]));
    if r.status != 200 {
        return None;
    }
    let j = r.json();
    let values = j["outputs"][0]["data"].as_array()?.iter().map(|v| v.as_f64().unwrap()).collect();
    Some((j["model_version"].as_str()?.to_owned(), values))
}

/// An Open Inference Protocol request for `rows` digit images.
pub fn infer_body(images: &[Vec<f32>]) -> Vec<u8> {
    let data: Vec<f32> = images.iter().flatten().copied().collect();
    serde_json::to_vec(&serde_json::json!({
        "inputs": [{"name": "input", "shape": [images.len(), 1, 8, 8], "datatype": "FP32", "data": data}]
    }))
    .unwrap()
}

pub fn argmax(row: &[f32]) -> usize {
    row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0
}

/// `outpost-agent run` as a real process, for crash tests. Its config file lives in `dir`.
pub struct AgentProcess {
    pub addr: SocketAddr,
    config: PathBuf,
    child: Option<std::process::Child>,
}

impl AgentProcess {
    /// Writes `dir/agent.toml` (data in `dir/data`, trust files in `dir`, API on a free port) plus `extra`.
    pub fn spawn(dir: &Path, extra: &str) -> AgentProcess {
        let (policy, root_pub) = trust_files(dir);
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = dir.join("agent.toml");
        let toml = format!(
            "data_dir = {:?}\nlisten = \"127.0.0.1:{port}\"\n[trust]\npolicy = {:?}\nroot_pub = [{:?}]\n{extra}",
            dir.join("data"),
            policy,
            root_pub
        );
        std::fs::write(&config, toml).unwrap();
        let mut p = AgentProcess { addr: format!("127.0.0.1:{port}").parse().unwrap(), config, child: None };
        p.restart();
        p
    }

    pub fn restart(&mut self) {
        self.restart_with(&[]);
    }

    pub fn restart_with(&mut self, env: &[(&str, &str)]) {
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.config.with_extension("log")).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_outpost-agent"))
            .args(["run", "--config", &self.config.display().to_string()])
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(self.addr).is_err() {
            assert!(Instant::now() < deadline, "the agent did not start listening");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn get(&self, path: &str) -> Response {
        http(self.addr, "GET", path, b"")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.config.with_extension("log")).unwrap_or_default()
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

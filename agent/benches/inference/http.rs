//! The agent over local HTTP: the real `serve::serve` on `127.0.0.1:0` in a background tokio runtime (two
//! worker threads, as `outpost-agent run` builds it), fed from a throw-away model store; and a tiny
//! HTTP/1.1 keep-alive client over a tokio `TcpStream`, so no HTTP client crate is needed.

use crate::models::BenchModel;
use crate::report::Summary;
use anyhow::{Context, bail};
use outpost_agent::config::{Config, Overrides};
use outpost_agent::store::{Slots, Store};
use outpost_protocol::manifest::Manifest;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The knobs the benchmark turns; everything else is the shipped default config, with the result cache off.
#[derive(Debug, Clone, Copy)]
pub struct AgentSettings {
    pub workers: usize,
    pub max_batch: usize,
    /// `None` keeps the default `inference.max_delay`.
    pub max_delay: Option<Duration>,
    /// `None` keeps the default `shadow.sample_percent`.
    pub shadow_percent: Option<u8>,
    /// `inference.threads` (above 1 only in a build with the agent's `multithread` feature).
    pub threads: usize,
}

/// The defaults of `default-agent.toml`, with the result cache off so that no figure is a cache hit.
pub fn bench_config(s: &AgentSettings) -> Config {
    let mut cfg = Config::load(None, &Overrides::default()).expect("the built-in defaults validate");
    cfg.cache.max_entries = 0;
    cfg.inference.workers = s.workers;
    cfg.inference.max_batch = s.max_batch;
    cfg.inference.threads = s.threads;
    if let Some(d) = s.max_delay {
        cfg.inference.max_delay = d;
    }
    if let Some(p) = s.shadow_percent {
        cfg.shadow.sample_percent = p;
    }
    cfg
}

/// A running agent; stopped (and its store removed) on drop.
#[derive(Debug)]
pub struct Agent {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    dir: PathBuf,
}

impl Agent {
    /// Stores `active` (and the shadow `candidate`) in a fresh data dir, serves, and waits until the agent
    /// answers ready (with the candidate loaded, when there is one).
    pub fn start(
        settings: &AgentSettings,
        active: (&[u8], &Manifest),
        candidate: Option<(&[u8], &Manifest)>,
    ) -> anyhow::Result<Agent> {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("outpost-bench-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(&dir)?;
        // Benchmark manifests carry an empty self-test section (models.rs).
        let no_vectors = outpost_protocol::manifest::SelfTestSection::encode(&[]).1;
        let digest = store.put_model(active.0, active.1, &no_vectors)?;
        let mut cfg = bench_config(settings);
        cfg.data_dir = dir.clone();
        let mut slots = Slots::default();
        let name = active.1.name.as_str().to_owned();
        slots.model_mut(&name).active = Some(digest.to_hex());
        if let Some((bytes, manifest)) = candidate {
            slots.model_mut(&name).candidate = Some(store.put_model(bytes, manifest, &no_vectors)?.to_hex());
            // The slot table, not the config, says which share of requests the candidate shadows.
            slots.model_mut(&name).shadow_percent = Some(cfg.shadow.sample_percent);
        }
        store.write_slots(&slots)?;

        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
                addr_tx.send(listener.local_addr().expect("addr")).expect("send addr");
                let stop = async move {
                    let _ = stop_rx.await;
                };
                if let Err(e) = outpost_agent::serve::serve(cfg, listener, stop).await {
                    eprintln!("agent stopped: {e:#}");
                }
            });
        });
        let addr = addr_rx.recv_timeout(Duration::from_secs(10)).context("the agent did not bind")?;
        let agent = Agent { addr, stop: Some(stop_tx), thread: Some(thread), dir };
        agent.wait_until_serving(candidate.is_some())?;
        Ok(agent)
    }

    /// Polls `/outpost/v1/status` until the active model (and the candidate) are loaded. Calibration of a
    /// large model at activation takes seconds, hence the generous limit.
    fn wait_until_serving(&self, want_candidate: bool) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(status) = self.status() {
                // One model is served; its entry is the only one.
                let model = status["models"].as_object().and_then(|o| o.values().next()).cloned().unwrap_or_default();
                let active = !model["active"].is_null();
                let candidate = !model["candidate"].is_null();
                if active && (candidate || !want_candidate) {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("the agent at {} did not load its models within 120 s", self.addr);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A `GET` on a fresh connection; an error unless the agent answers 200.
    fn get(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        let addr = self.addr;
        let (status, body) =
            tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async move {
                let mut c = Client::connect(addr).await?;
                c.request("GET", path, &[]).await
            })?;
        if status != 200 {
            bail!("GET {path} answered {status}");
        }
        Ok(body)
    }

    /// `GET /outpost/v1/status` as JSON.
    pub fn status(&self) -> anyhow::Result<serde_json::Value> {
        Ok(serde_json::from_slice(&self.get("/outpost/v1/status")?)?)
    }

    /// Unlabelled samples from `GET /metrics`, by name (`outpost_batch_rows_sum` etc.).
    pub fn metrics(&self) -> anyhow::Result<std::collections::BTreeMap<String, f64>> {
        Ok(crate::parts::parse_metrics(&String::from_utf8(self.get("/metrics")?)?))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// How request bodies travel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Wire {
    /// Open Inference Protocol JSON.
    Json,
    /// The binary tensor extension: raw input and output tensors after a JSON header.
    Binary,
}

/// Request `i` of a model's bodies, sent the `wire` way.
async fn send(c: &mut Client, m: &Bodies, wire: Wire, i: usize) -> anyhow::Result<Vec<u8>> {
    match wire {
        Wire::Json => c.infer(m.name, &m.json[i % m.json.len()]).await,
        Wire::Binary => {
            let (body, header_len) = &m.binary[i % m.binary.len()];
            c.infer_binary(m.name, body, *header_len).await
        }
    }
}

/// A model's request bodies, shareable with client tasks.
#[derive(Debug, Clone)]
struct Bodies {
    name: &'static str,
    json: Arc<Vec<Vec<u8>>>,
    binary: Arc<Vec<(Vec<u8>, usize)>>,
}

/// `n` clients, each on its own connection, each sending `per_client` requests back to back after
/// `warm` untimed ones. Returns latencies of answered requests over the wall time, and the failures.
pub async fn clients(
    addr: std::net::SocketAddr,
    m: &BenchModel,
    wire: Wire,
    n: usize,
    per_client: usize,
    warm: usize,
) -> anyhow::Result<(Summary, usize)> {
    let bodies = Bodies { name: m.name, json: m.bodies.clone(), binary: m.binary_bodies.clone() };
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let mut c = Client::connect(addr).await?;
        for w in 0..warm {
            send(&mut c, &bodies, wire, i + w).await?;
        }
        conns.push(c);
    }
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (ci, mut c) in conns.into_iter().enumerate() {
        let bodies = bodies.clone();
        tasks.spawn(async move {
            let mut lat = Vec::with_capacity(per_client);
            let mut errors = 0;
            for i in 0..per_client {
                let t = Instant::now();
                match send(&mut c, &bodies, wire, ci * per_client + i).await {
                    Ok(_) => lat.push(t.elapsed()),
                    Err(_) => errors += 1,
                }
            }
            (lat, errors)
        });
    }
    let mut lat = Vec::new();
    let mut errors = 0;
    while let Some(r) = tasks.join_next().await {
        let (l, e) = r?;
        lat.extend(l);
        errors += e;
    }
    Ok((Summary::new(lat, start.elapsed()), errors))
}

/// One keep-alive HTTP/1.1 connection.
#[derive(Debug)]
pub struct Client {
    conn: BufReader<TcpStream>,
    line: String,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> std::io::Result<Client> {
        let stream = TcpStream::connect(addr).await?;
        // Header and body go out as two writes: without NODELAY, Nagle + delayed ACK add ~40 ms.
        stream.set_nodelay(true)?;
        Ok(Client { conn: BufReader::new(stream), line: String::new() })
    }

    /// Sends one request and reads the whole response: (status, body).
    pub async fn request(&mut self, method: &str, path: &str, body: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
        self.request_with(method, path, "", body).await
    }

    /// `request` with extra header lines (each ending in `\r\n`).
    pub async fn request_with(
        &mut self,
        method: &str,
        path: &str,
        extra: &str,
        body: &[u8],
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n{extra}content-length: {}\r\n\r\n",
            body.len()
        );
        let stream = self.conn.get_mut();
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body).await?;
        self.line.clear();
        self.conn.read_line(&mut self.line).await?;
        let status: u16 = self
            .line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line {:?}", self.line))?;
        let mut length = None;
        loop {
            self.line.clear();
            if self.conn.read_line(&mut self.line).await? == 0 {
                bail!("connection closed inside the response head");
            }
            let header = self.line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = Some(value.trim().parse::<usize>()?);
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    bail!("chunked responses are not supported by this little client");
                }
            }
        }
        let mut out = vec![0; length.context("response without content-length")?];
        self.conn.read_exact(&mut out).await?;
        Ok((status, out))
    }

    /// `POST /v2/models/{model}/infer` with the binary tensor extension (the JSON header is the first
    /// `header_len` bytes of `body`); an error unless the agent answers 200.
    pub async fn infer_binary(&mut self, model: &str, body: &[u8], header_len: usize) -> anyhow::Result<Vec<u8>> {
        let extra = format!("inference-header-content-length: {header_len}\r\n");
        let (status, out) = self.request_with("POST", &format!("/v2/models/{model}/infer"), &extra, body).await?;
        if status != 200 {
            bail!("binary infer answered {status}: {}", String::from_utf8_lossy(&out));
        }
        Ok(out)
    }

    /// `POST /v2/models/{model}/infer`; an error unless the agent answers 200.
    pub async fn infer(&mut self, model: &str, body: &[u8]) -> anyhow::Result<Vec<u8>> {
        let (status, out) = self.request("POST", &format!("/v2/models/{model}/infer"), body).await?;
        if status != 200 {
            bail!("infer answered {status}: {}", String::from_utf8_lossy(&out));
        }
        Ok(out)
    }
}

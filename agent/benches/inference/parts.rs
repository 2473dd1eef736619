//! Where the agent's time goes beyond tract: each piece of the request path timed on its own with the
//! agent's own types (queue, drift statistics, request JSON), and the in-process runtime under concurrent
//! callers (no HTTP), which isolates the batcher.

use crate::http::{Agent, AgentSettings, Client};
use crate::models::BenchModel;
use crate::report::Summary;
use outpost_agent::api::oip::InferRequestJson;
use outpost_agent::runtime::model::LoadedModel;
use outpost_agent::runtime::queue::{BatchQueue, Queued};
use outpost_agent::runtime::{InferRequest, InputTensor, Runtime, TensorData};
use outpost_agent::stats::drift::DriftAccumulator;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Times `f` `n` times (after a few untimed calls).
fn time_each(n: usize, mut f: impl FnMut(usize)) -> Summary {
    for i in 0..n.min(20) {
        f(i);
    }
    let mut lat = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        f(i);
        lat.push(t.elapsed());
    }
    Summary::new(lat, start.elapsed())
}

struct Ping {
    enqueued: Instant,
    reply: tokio::sync::oneshot::Sender<()>,
}

impl Queued for Ping {
    fn rows(&self) -> usize {
        1
    }
    fn enqueued(&self) -> Instant {
        self.enqueued
    }
}

/// The runtime's hand-off without a model: push onto the agent's `BatchQueue`, a worker thread takes it
/// (`next_batch` polls 50 µs before it blocks) and answers on a oneshot, the caller awaits it under a
/// timeout, as `Runtime::infer` does. The worker busy-waits `work` per job (a stand-in for the model, so
/// the caller really parks), and that time is taken off the figures.
pub fn queue_round_trip(n: usize, work: Duration) -> anyhow::Result<Summary> {
    let q = Arc::new(BatchQueue::<Ping>::new(64));
    let worker_q = q.clone();
    let worker = std::thread::spawn(move || {
        while let Some(batch) = worker_q.next_batch(|_| 1, Duration::ZERO) {
            for job in batch {
                let start = Instant::now();
                while start.elapsed() < work {
                    std::hint::spin_loop();
                }
                let _ = job.reply.send(());
            }
        }
    });
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let summary = rt.block_on(async {
        let once = || async {
            let (tx, rx) = tokio::sync::oneshot::channel();
            if q.try_push(Ping { enqueued: Instant::now(), reply: tx }).is_err() {
                anyhow::bail!("queue full");
            }
            tokio::time::timeout(Duration::from_secs(2), rx).await??;
            anyhow::Ok(())
        };
        for _ in 0..20 {
            once().await?;
        }
        let mut lat = Vec::with_capacity(n);
        let start = Instant::now();
        for _ in 0..n {
            let t = Instant::now();
            once().await?;
            lat.push(t.elapsed());
        }
        anyhow::Ok(Summary::new(lat, start.elapsed()))
    });
    q.close();
    let _ = worker.join();
    let s = summary?;
    Ok(Summary { median: s.median.saturating_sub(work), p95: s.p95.saturating_sub(work), throughput: s.throughput })
}

/// Drift statistics over one request's input: every value (`sample = None`, what the runtime did before),
/// or a strided sample of at most `sample` values (what `Runtime::observe_drift` does now).
pub fn drift(m: &BenchModel, n: usize, sample: Option<usize>) -> Summary {
    let mut acc = DriftAccumulator::new(None, std::slice::from_ref(&m.input), 0.0, 1.0, 10);
    time_each(n, |i| {
        let row = &m.rows[i % m.rows.len()];
        match sample {
            Some(cap) if row.len() > cap => {
                let strided: Vec<f32> = row.iter().step_by(row.len().div_ceil(cap)).copied().collect();
                acc.observe_input(0, &strided);
            }
            _ => acc.observe_input(0, row),
        }
    })
}

/// Decoding one request body into the agent's JSON request type.
pub fn json_decode(m: &BenchModel, n: usize) -> Summary {
    time_each(n, |i| {
        let req: InferRequestJson =
            serde_json::from_slice(&m.bodies[i % m.bodies.len()]).expect("the bench's own body decodes");
        std::hint::black_box(req);
    })
}

/// Decoding one binary-extension request body (`api::binary::decode_request`): JSON header + raw tensor.
pub fn binary_decode(m: &BenchModel, n: usize) -> Summary {
    time_each(n, |i| {
        let (body, header_len) = &m.binary_bodies[i % m.binary_bodies.len()];
        let req = outpost_agent::api::binary::decode_request(body, Some(&header_len.to_string()))
            .expect("the bench's own body decodes");
        std::hint::black_box(req);
    })
}

/// A keep-alive HTTP round trip to the agent without inference (`GET /v2/health/live`).
pub fn http_floor(m: &BenchModel, n: usize) -> anyhow::Result<Summary> {
    let s = AgentSettings { workers: 1, max_batch: 1, max_delay: None, shadow_percent: None, threads: 1 };
    let agent = Agent::start(&s, (&m.nnef, &m.manifest), None)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let addr = agent.addr;
    rt.block_on(async move {
        let mut c = Client::connect(addr).await?;
        for _ in 0..20 {
            c.request("GET", "/v2/health/live", &[]).await?;
        }
        let mut lat = Vec::with_capacity(n);
        let start = Instant::now();
        for _ in 0..n {
            let t = Instant::now();
            c.request("GET", "/v2/health/live", &[]).await?;
            lat.push(t.elapsed());
        }
        anyhow::Ok(Summary::new(lat, start.elapsed()))
    })
}

/// Unlabelled samples of a Prometheus text page, by name.
pub fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    // Per-model series are summed over their labels (the benches serve one model); buckets are skipped.
    for (series, value) in text.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.rsplit_once(' ')) {
        let name = series.split('{').next().unwrap_or(series);
        if name.ends_with("_bucket") {
            continue;
        }
        if let Ok(v) = value.trim().parse::<f64>() {
            *out.entry(name.to_owned()).or_insert(0.0) += v;
        }
    }
    out
}

/// `clients` tokio tasks calling `Runtime::infer` back to back, `per_client` each, on a current-thread
/// runtime (one thread of callers, as the HTTP client side is). Returns the summary, the batch size
/// kept after calibration and the mean rows per model run.
pub fn in_process_clients(
    m: &BenchModel,
    s: &AgentSettings,
    clients: usize,
    per_client: usize,
) -> anyhow::Result<(Summary, usize, f64)> {
    let cfg = crate::http::bench_config(s);
    let rt = Runtime::start(outpost_agent::serve::runtime_config(&cfg));
    let mut model = LoadedModel::load(&m.nnef, m.manifest.clone(), s.max_batch)?;
    model.calibrate(crate::CALIBRATION);
    let kept = model.max_rows();
    rt.activate(model);
    let tokio_rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let rows = Arc::new(m.rows.clone());
    let result = tokio_rt.block_on(async {
        let before = parse_metrics(&rt.prometheus());
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for c in 0..clients {
            let (rt, rows, name, input, shape) =
                (rt.clone(), rows.clone(), m.name.to_owned(), m.input.clone(), m.shape1.clone());
            tasks.spawn(async move {
                let mut lat = Vec::with_capacity(per_client);
                for i in 0..per_client {
                    let data = rows[(c * per_client + i) % rows.len()].clone();
                    let req = InferRequest {
                        model: name.clone(),
                        inputs: vec![InputTensor {
                            name: input.clone(),
                            shape: shape.clone(),
                            data: TensorData::F32(data),
                        }],
                        outputs: None,
                    };
                    let t = Instant::now();
                    if rt.infer(req).await.is_ok() {
                        lat.push(t.elapsed());
                    }
                }
                lat
            });
        }
        let mut lat = Vec::new();
        while let Some(l) = tasks.join_next().await {
            lat.extend(l?);
        }
        let summary = Summary::new(lat, start.elapsed());
        let after = parse_metrics(&rt.prometheus());
        let delta = |k: &str| after.get(k).copied().unwrap_or(0.0) - before.get(k).copied().unwrap_or(0.0);
        let rows_per_run = delta("outpost_batch_rows_sum") / delta("outpost_batch_rows_count").max(1.0);
        anyhow::Ok((summary, kept, rows_per_run))
    });
    rt.shutdown();
    result
}

//! Several models on one device: batch-1 latency of each of three models served alone and served together
//! (the three loaded in one runtime, requests interleaved), and the resident memory each model adds when
//! loaded. Prints a Markdown table and ratios; asserts no timing.
//!
//! ```sh
//! cargo bench -p outpost-agent --bench multi_model
//! ```
//! `OUTPOST_BENCH_SCALE=0.2` scales the iteration counts (quick look). The result cache is off, so no
//! figure is a cache hit. The three models are the committed digits models under three names (`digits`
//! v1, `shapes` = v2, `sensor` = the subtle model): what differs between them is their weights.

use outpost_agent::config::{Config, Overrides};
use outpost_agent::runtime::model::LoadedModel;
use outpost_agent::runtime::{InferRequest, InputTensor, Runtime};
use outpost_models::nnef::read_interface;
use outpost_protocol::manifest::{
    Compression, MANIFEST_FORMAT, Manifest, ModelFormat, Payload, SelfTestSection, Targets,
};
use outpost_protocol::{Digest, ModelName, Version};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

const MODELS: [(&str, &str); 3] = [("digits", "v1"), ("shapes", "v2"), ("sensor", "subtle")];
const CALIBRATION: Duration = Duration::from_millis(300);

fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../simulations/models")
}

fn nnef(file: &str) -> Vec<u8> {
    let onnx = std::fs::read(models_dir().join(format!("digits-{file}.onnx"))).expect("committed model");
    outpost_models::onnx::to_nnef(&onnx).expect("converts")
}

fn manifest(name: &str, bytes: &[u8]) -> Manifest {
    let digest = Digest::of(bytes);
    Manifest {
        format: MANIFEST_FORMAT,
        name: ModelName::new(name).expect("a valid name"),
        version: Version::new(1, 0, 0),
        sequence: 1,
        payload: Payload {
            format: ModelFormat::Nnef,
            compression: Compression::Full,
            compressed_size: bytes.len() as u64,
            compressed_sha256: digest,
            model_size: bytes.len() as u64,
            model_sha256: digest,
        },
        targets: Targets { archs: Vec::new(), min_agent: Version::new(0, 0, 0) },
        interface: read_interface(bytes).expect("interface"),
        selftest: SelfTestSection::encode(&[]).0,
        created: 0,
        expires: u64::MAX,
        reference: None,
    }
}

fn load(name: &str, bytes: &[u8]) -> LoadedModel {
    let mut m = LoadedModel::load(bytes, manifest(name, bytes), 8).expect("loads");
    m.calibrate(CALIBRATION);
    m
}

fn rows() -> Vec<Vec<f32>> {
    let bytes = std::fs::read(models_dir().join("digits-test-inputs.f32")).expect("test inputs");
    let floats: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    floats.chunks_exact(64).map(<[f32]>::to_vec).collect()
}

/// Resident set size of this process (bytes), from /proc.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn runtime() -> Arc<Runtime> {
    let mut cfg = Config::load(None, &Overrides::default()).expect("the built-in defaults validate");
    cfg.cache.max_entries = 0;
    Runtime::start(outpost_agent::serve::runtime_config(&cfg))
}

fn request(model: &str, row: &[f32]) -> InferRequest {
    InferRequest {
        model: model.into(),
        inputs: vec![InputTensor {
            name: "input".into(),
            shape: vec![1, 1, 8, 8],
            data: outpost_models::TensorData::F32(row.to_vec()),
        }],
        outputs: None,
    }
}

#[derive(Debug, Clone, Copy)]
struct Summary {
    p50_us: f64,
    p99_us: f64,
    mean_us: f64,
}

fn summarize(mut lat: Vec<Duration>) -> Summary {
    lat.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let at = |q: f64| us(lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)]);
    let mean = lat.iter().map(|d| us(*d)).sum::<f64>() / lat.len() as f64;
    Summary { p50_us: at(0.50), p99_us: at(0.99), mean_us: mean }
}

/// Sequential batch-1 requests, round-robin over `names`, from a tokio runtime like the agent's server;
/// the latency of each request is kept by model.
fn measure(rt: &Arc<Runtime>, names: &[&str], per_model: usize, rows: &[Vec<f32>]) -> Vec<Summary> {
    let tokio_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
    tokio_rt.block_on(async {
        for i in 0..per_model / 5 {
            for n in names {
                rt.infer(request(n, &rows[i % rows.len()])).await.expect("warm-up");
            }
        }
        let mut lat = vec![Vec::with_capacity(per_model); names.len()];
        for i in 0..per_model {
            for (k, n) in names.iter().enumerate() {
                let req = request(n, &rows[i % rows.len()]);
                let t = Instant::now();
                std::hint::black_box(rt.infer(req).await.expect("answers"));
                lat[k].push(t.elapsed());
            }
        }
        lat.into_iter().map(summarize).collect()
    })
}

fn main() {
    let scale: f64 = std::env::var("OUTPOST_BENCH_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1.0);
    let n = ((5_000.0 * scale) as usize).max(100);
    let rows = rows();
    let bytes: Vec<(&str, Vec<u8>)> = MODELS.iter().map(|(name, file)| (*name, nnef(file))).collect();
    let load_avg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("# Several models on one agent\n");
    println!("{n} sequential batch-1 requests per model and setting; load average at start: {}", load_avg.trim());

    // Alone: one runtime per model, nothing else loaded.
    let mut alone = Vec::new();
    for (name, b) in &bytes {
        let rt = runtime();
        rt.activate(load(name, b));
        alone.push(measure(&rt, &[name], n, &rows)[0]);
        rt.shutdown();
    }

    // Together: the three in one runtime, loaded one after another (RSS measured around each load), the
    // requests interleaved so each model runs between the others.
    let rt = runtime();
    let mut rss_rows = Vec::new();
    let base = rss();
    let mut before = base;
    for (name, b) in &bytes {
        rt.activate(load(name, b));
        let after = rss();
        rss_rows.push((*name, after.saturating_sub(before)));
        before = after;
    }
    let names: Vec<&str> = bytes.iter().map(|(n, _)| *n).collect();
    let together = measure(&rt, &names, n, &rows);
    rt.shutdown();

    println!(
        "\n| model | alone p50 µs | together p50 µs | ratio p50 | alone mean µs | together mean µs | ratio mean | alone p99 µs | together p99 µs |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (i, (name, _)) in bytes.iter().enumerate() {
        let (a, t) = (alone[i], together[i]);
        println!(
            "| {name} | {:.1} | {:.1} | {:.3} | {:.1} | {:.1} | {:.3} | {:.1} | {:.1} |",
            a.p50_us,
            t.p50_us,
            t.p50_us / a.p50_us,
            a.mean_us,
            t.mean_us,
            t.mean_us / a.mean_us,
            a.p99_us,
            t.p99_us
        );
    }
    println!("\n| model loaded | RSS added |\n|---|---|");
    for (name, bytes) in &rss_rows {
        println!("| {name} | {:.2} MiB |", *bytes as f64 / (1 << 20) as f64);
    }
    println!(
        "\nRSS with the runtime and no model: {:.1} MiB; with three: {:.1} MiB",
        base as f64 / (1 << 20) as f64,
        before as f64 / (1 << 20) as f64
    );
    println!("target (issue 12): digits' batch-1 latency with three models loaded within 5 % of digits alone");
}

//! The applications on the devices: a load generator that sends each model's held-out test set (digits
//! images; vibration windows once that model is on the fleet) to every device's local inference API (Open
//! Inference Protocol, JSON) the whole time, and records which model version answered (`digits 2.0.0`),
//! whether the answer was right, and every failure.

use super::fleet::Device;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Per model version, what the applications got.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Answers {
    pub answers: u64,
    pub correct: u64,
}

#[derive(Debug, Clone, Default)]
pub struct LoadStats {
    /// By model version, `digits 2.0.0`.
    pub by_version: BTreeMap<String, Answers>,
    /// Answers per second of the run, by version (for the chart).
    pub per_second: BTreeMap<u64, BTreeMap<String, u64>>,
    /// Failures by HTTP status (0: the connection failed).
    pub failures: BTreeMap<u16, u64>,
    /// Versions each device answered with.
    pub served: BTreeMap<String, std::collections::BTreeSet<String>>,
}

impl LoadStats {
    pub fn total(&self) -> u64 {
        self.by_version.values().map(|a| a.answers).sum::<u64>() + self.failures.values().sum::<u64>()
    }
}

#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    pub stats: Arc<Mutex<LoadStats>>,
    workloads: Arc<Vec<Workload>>,
}

/// One model's traffic: its test set, how its input tensor is named and shaped, and whether the
/// applications ask it yet (a model is asked once it is on the fleet).
#[derive(Debug)]
pub struct Workload {
    pub model: &'static str,
    input: &'static str,
    shape: &'static str,
    samples: Vec<(Vec<f32>, u8)>,
    /// Inputs stay within `0..=max` with the noise (pixels are 0..1).
    max: f32,
    on: AtomicBool,
}

/// The committed test set of `model` (`{model}-test-inputs.f32`, `-labels.u8`), `width` floats a sample.
fn test_set(models: &std::path::Path, model: &str, width: usize) -> anyhow::Result<Vec<(Vec<f32>, u8)>> {
    let raw = std::fs::read(models.join(format!("{model}-test-inputs.f32")))?;
    let labels = std::fs::read(models.join(format!("{model}-test-labels.u8")))?;
    let floats: Vec<f32> = raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    let samples: Vec<Vec<f32>> = floats.chunks_exact(width).map(<[f32]>::to_vec).collect();
    anyhow::ensure!(samples.len() == labels.len(), "{model}: test inputs and labels differ in count");
    Ok(samples.into_iter().zip(labels).collect())
}

/// The demo's two models: digits (360 images of 8×8) asked from the start, vibration (400 windows of
/// 16 band energies) once it is enabled.
pub fn workloads(models: &std::path::Path) -> anyhow::Result<Vec<Workload>> {
    Ok(vec![
        Workload {
            model: "digits",
            input: "input",
            shape: "[1,1,8,8]",
            samples: test_set(models, "digits", 64)?,
            max: 1.0,
            on: AtomicBool::new(true),
        },
        Workload {
            model: "vibration",
            input: "features",
            shape: "[1,16]",
            samples: test_set(models, "vibration", 16)?,
            max: f32::MAX,
            on: AtomicBool::new(false),
        },
    ])
}

impl Load {
    /// Starts `threads` senders sharing the devices, each device asked about `per_device_rps` times a second
    /// per enabled model (below 1: once every `1 / per_device_rps` seconds).
    pub fn start(devices: &[Device], workloads: Vec<Workload>, per_device_rps: f64) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Mutex::new(LoadStats::default()));
        let workloads = Arc::new(workloads);
        let started = Instant::now();
        let threads = 2usize;
        let handles = (0..threads)
            .map(|t| {
                let mine: Vec<(String, SocketAddr)> =
                    devices.iter().skip(t).step_by(threads).map(|d| (d.id.clone(), d.api)).collect();
                let (stop, stats, work) = (stop.clone(), stats.clone(), workloads.clone());
                let period = Duration::from_secs_f64(1.0 / per_device_rps.max(0.001));
                std::thread::spawn(move || sender(&mine, &work, period, started, &stop, &stats))
            })
            .collect();
        Load { stop, threads: handles, stats, workloads }
    }

    /// The applications start asking `model` (it is on the fleet now).
    pub fn enable(&self, model: &str) {
        for w in self.workloads.iter().filter(|w| w.model == model) {
            w.on.store(true, Ordering::Relaxed);
        }
    }

    pub fn snapshot(&self) -> LoadStats {
        self.stats.lock().expect("load stats").clone()
    }

    pub fn finish(self) -> LoadStats {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        self.stats.lock().expect("load stats").clone()
    }
}

fn sender(
    devices: &[(String, SocketAddr)],
    workloads: &[Workload],
    period: Duration,
    started: Instant,
    stop: &AtomicBool,
    stats: &Mutex<LoadStats>,
) {
    let http: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let mut next = Instant::now();
    let mut i = 0usize;
    let mut noise = Noise(0x9e37_79b9_7f4a_7c15 ^ started.elapsed().as_nanos() as u64);
    while !stop.load(Ordering::Relaxed) {
        for ((id, addr), w) in devices.iter().flat_map(|d| workloads.iter().map(move |w| (d, w))) {
            if !w.on.load(Ordering::Relaxed) {
                continue;
            }
            let (sample, label) = &w.samples[i % w.samples.len()];
            i += 1;
            let outcome = ask(&http, *addr, w.model, &noise.body(w, sample));
            let sec = started.elapsed().as_secs();
            let mut s = stats.lock().expect("load stats");
            match outcome {
                Ok((version, class)) => {
                    let version = format!("{} {version}", w.model);
                    let a = s.by_version.entry(version.clone()).or_default();
                    a.answers += 1;
                    a.correct += u64::from(class == Some(*label));
                    *s.per_second.entry(sec).or_default().entry(version.clone()).or_insert(0) += 1;
                    s.served.entry(id.clone()).or_default().insert(version);
                }
                // 404/503 before a device has its first model are expected; counted, shown, not hidden.
                Err(status) => *s.failures.entry(status).or_insert(0) += 1,
            }
        }
        next += period;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now; // Behind (a slow answer): don't burst to catch up.
        }
    }
}

/// Sensor noise: real inputs are never byte-identical twice, so the devices' result caches don't answer
/// the demo's traffic (and latency gates time the models, not the caches). ±0.02 on inputs in 0..1.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> f32 {
        // xorshift64*: plenty for jitter.
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40;
        (x as f32 / (1u64 << 24) as f32 - 0.5) * 0.04
    }

    fn body(&mut self, w: &Workload, sample: &[f32]) -> String {
        let data: Vec<String> = sample.iter().map(|v| format!("{:.4}", (v + self.next()).clamp(0.0, w.max))).collect();
        format!(
            "{{\"inputs\":[{{\"name\":\"{}\",\"shape\":{},\"datatype\":\"FP32\",\"data\":[{}]}}]}}",
            w.input,
            w.shape,
            data.join(",")
        )
    }
}

/// One inference: the answering version and the predicted class, or the HTTP status (0: no connection).
fn ask(http: &ureq::Agent, addr: SocketAddr, model: &str, body: &str) -> Result<(String, Option<u8>), u16> {
    let url = format!("http://{addr}/v2/models/{model}/infer");
    let mut r = http.post(&url).header("Content-Type", "application/json").send(body).map_err(|_| 0u16)?;
    if !r.status().is_success() {
        return Err(r.status().as_u16());
    }
    let v: serde_json::Value = r.body_mut().read_json().map_err(|_| 0u16)?;
    let version = v["model_version"].as_str().unwrap_or("?").to_owned();
    let class = v["outputs"][0]["data"].as_array().and_then(|logits| {
        logits
            .iter()
            .filter_map(serde_json::Value::as_f64)
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(i, _)| i as u8)
    });
    Ok((version, class))
}

//! Counters the runtime keeps for `GET /metrics` (Prometheus text format) and for `status`: `Metrics` for
//! the whole agent, `ModelMetrics` per served model (its series carry a `model` label).

use crate::stats::histogram::{Histogram, LatencyHistogram};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Request counts and latencies over a window that can be taken and restarted: one for telemetry
/// windows, one for the watch after an activation.
#[derive(Debug, Clone, Default)]
pub struct WindowStats {
    pub requests: u64,
    /// Failed inferences (HTTP 500) and timeouts (504): what the watch budget counts as errors.
    pub errors: u64,
    pub timeouts: u64,
    /// Refused before running (429, 503).
    pub rejected: u64,
    pub latency: LatencyHistogram,
}

impl WindowStats {
    /// `cached`: answered from the result cache. Counted as a request, but its latency is the cache's,
    /// not the model's: windows feed latency gates and the watch, which judge the model.
    fn record(&mut self, status: u16, latency: std::time::Duration, cached: bool) {
        self.requests += 1;
        match status {
            200 if cached => {}
            200 => self.latency.record(latency),
            504 => {
                self.errors += 1;
                self.timeouts += 1;
            }
            500 => self.errors += 1,
            429 | 503 => self.rejected += 1,
            _ => {}
        }
    }
}

/// What the runtime counts for one served model.
#[derive(Debug)]
pub struct ModelMetrics {
    telemetry_window: Mutex<WindowStats>,
    watch_window: Mutex<WindowStats>,
    latency: Mutex<LatencyHistogram>,
    batch_sizes: Mutex<Histogram>,
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    pub shadow_skipped: AtomicU64,
    pub model_load_us: AtomicU64,
}

impl Default for ModelMetrics {
    fn default() -> Self {
        ModelMetrics {
            telemetry_window: Mutex::default(),
            watch_window: Mutex::default(),
            latency: Mutex::default(),
            batch_sizes: Mutex::new(Histogram::new(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0])),
            cache_hits: AtomicU64::new(0),
            cache_misses: AtomicU64::new(0),
            shadow_skipped: AtomicU64::new(0),
            model_load_us: AtomicU64::new(0),
        }
    }
}

impl ModelMetrics {
    pub(super) fn request(&self, status: u16, latency: std::time::Duration, cached: bool) {
        if status == 200 {
            self.latency.lock().expect("metrics").record(latency);
        }
        // Client mistakes (400, 404, 413) say nothing about the model's health.
        if !matches!(status, 400 | 404 | 413) {
            self.telemetry_window.lock().expect("metrics").record(status, latency, cached);
            self.watch_window.lock().expect("metrics").record(status, latency, cached);
        }
    }

    /// Takes the telemetry window's figures and starts a new window.
    pub fn take_telemetry_window(&self) -> WindowStats {
        std::mem::take(&mut *self.telemetry_window.lock().expect("metrics"))
    }

    /// The figures since the model's last activation.
    pub fn watch_window(&self) -> WindowStats {
        self.watch_window.lock().expect("metrics").clone()
    }

    pub fn reset_watch_window(&self) {
        *self.watch_window.lock().expect("metrics") = WindowStats::default();
    }

    pub fn batch(&self, rows: usize) {
        self.batch_sizes.lock().expect("metrics").observe(rows as f64);
    }

    pub fn latency(&self) -> LatencyHistogram {
        self.latency.lock().expect("metrics").clone()
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    /// (model, version, HTTP status) → requests, for served models only (names come from URLs).
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    /// Requests naming a model this agent does not serve: one series, whatever the name, so a client
    /// cannot grow `/metrics` without bound by inventing names.
    pub unknown_model_requests: AtomicU64,
    /// Requests the model answered on the caller's thread instead of a worker's (`Runtime::run_inline`).
    pub inline_runs: AtomicU64,
    /// The fleet side's series (link, telemetry queue, updates), appended to `/metrics` once the fleet
    /// started: `fleet/observe.rs`.
    fleet: std::sync::OnceLock<std::sync::Arc<crate::fleet::observe::FleetObserver>>,
}

/// Values read at scrape time from elsewhere in the runtime.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    pub queue_depth: usize,
    pub rss_bytes: u64,
    pub cache_entries: u64,
}

/// One served model as `/metrics` shows it.
#[derive(Debug)]
pub struct ModelView<'a> {
    pub name: &'a str,
    /// The active model's version (`None` while only a candidate is loaded).
    pub version: Option<String>,
    pub shadow_agreement: Option<f64>,
    pub shadow_compared: u64,
    pub metrics: &'a ModelMetrics,
}

impl Metrics {
    /// Hands `/metrics` the fleet side's series (once; a second call changes nothing).
    pub fn set_fleet(&self, observer: std::sync::Arc<crate::fleet::observe::FleetObserver>) {
        let _ = self.fleet.set(observer);
    }

    pub fn fleet(&self) -> Option<&crate::fleet::observe::FleetObserver> {
        self.fleet.get().map(|o| &**o)
    }

    /// The fleet side's series, when the fleet started.
    fn fleet_prometheus(&self, out: &mut String) {
        if let Some(o) = self.fleet.get() {
            let now =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            o.prometheus(now, out);
        }
    }

    pub(super) fn request(&self, model: &str, version: &str, status: u16) {
        *self.requests.lock().expect("metrics").entry((model.into(), version.into(), status)).or_default() += 1;
    }

    pub fn requests_total(&self) -> u64 {
        self.requests.lock().expect("metrics").values().sum::<u64>()
            + self.unknown_model_requests.load(Ordering::Relaxed)
    }

    /// Requests answered for `model`, all versions and statuses.
    pub fn requests_for(&self, model: &str) -> u64 {
        self.requests.lock().expect("metrics").iter().filter(|((m, _, _), _)| m == model).map(|(_, n)| n).sum()
    }

    /// The Prometheus text: each family once, with one series per model where it is per model.
    pub fn prometheus(&self, g: &Gauges, models: &[ModelView<'_>]) -> String {
        let mut out = String::new();
        let head = |out: &mut String, name: &str, help: &str, kind: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        let per_model = |out: &mut String, name: &str, help: &str, kind: &str, value: &dyn Fn(&ModelView) -> String| {
            head(out, name, help, kind);
            for m in models {
                let _ = writeln!(out, "{name}{{model=\"{}\"}} {}", m.name, value(m));
            }
        };
        head(&mut out, "outpost_requests_total", "Inference requests by model, version and HTTP status.", "counter");
        for ((m, v, s), n) in self.requests.lock().expect("metrics").iter() {
            let _ = writeln!(out, "outpost_requests_total{{model=\"{m}\",version=\"{v}\",status=\"{s}\"}} {n}");
        }
        let unknown = self.unknown_model_requests.load(Ordering::Relaxed);
        head(&mut out, "outpost_unknown_model_requests_total", "Requests naming a model not served here.", "counter");
        let _ = writeln!(out, "outpost_unknown_model_requests_total {unknown}");
        head(&mut out, "outpost_request_duration_seconds", "Latency of successful requests, end to end.", "histogram");
        for m in models {
            let latency = Histogram::from(&*m.metrics.latency.lock().expect("metrics"));
            latency.prometheus("outpost_request_duration_seconds", &format!("model=\"{}\"", m.name), &mut out);
        }
        head(&mut out, "outpost_batch_rows", "Rows per model run (dynamic batching).", "histogram");
        for m in models {
            let batches = m.metrics.batch_sizes.lock().expect("metrics");
            batches.prometheus("outpost_batch_rows", &format!("model=\"{}\"", m.name), &mut out);
        }
        let gauge = |out: &mut String, name: &str, help: &str, kind: &str, value: String| {
            head(out, name, help, kind);
            let _ = writeln!(out, "{name} {value}");
        };
        gauge(&mut out, "outpost_queue_depth", "Requests waiting for a worker.", "gauge", g.queue_depth.to_string());
        let inline = self.inline_runs.load(Ordering::Relaxed).to_string();
        let help = "Model runs done on the requesting thread (quick model, idle workers), not handed to a worker.";
        gauge(&mut out, "outpost_inline_runs_total", help, "counter", inline);
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed).to_string();
        per_model(&mut out, "outpost_cache_hits_total", "Result cache hits.", "counter", &|m| {
            load(&m.metrics.cache_hits)
        });
        per_model(&mut out, "outpost_cache_misses_total", "Result cache misses.", "counter", &|m| {
            load(&m.metrics.cache_misses)
        });
        gauge(&mut out, "outpost_cache_entries", "Result cache entries.", "gauge", g.cache_entries.to_string());
        let help = "Top-1 agreement of the shadow candidate.";
        head(&mut out, "outpost_shadow_agreement", help, "gauge");
        for m in models {
            if let Some(a) = m.shadow_agreement {
                let _ = writeln!(out, "outpost_shadow_agreement{{model=\"{}\"}} {a:.6}", m.name);
            }
        }
        per_model(&mut out, "outpost_shadow_compared_total", "Requests compared in shadow.", "counter", &|m| {
            m.shadow_compared.to_string()
        });
        let help = "Shadow samples skipped because the shadow queue was full.";
        per_model(&mut out, "outpost_shadow_skipped_total", help, "counter", &|m| load(&m.metrics.shadow_skipped));
        let help = "Time to load and optimise the active model.";
        per_model(&mut out, "outpost_model_load_seconds", help, "gauge", &|m| {
            format!("{:.6}", m.metrics.model_load_us.load(Ordering::Relaxed) as f64 / 1e6)
        });
        let help = "Resident set size of the agent.";
        gauge(&mut out, "outpost_process_resident_memory_bytes", help, "gauge", g.rss_bytes.to_string());
        head(&mut out, "outpost_model_info", "The active model of each served model name.", "gauge");
        for m in models {
            if let Some(v) = &m.version {
                let _ = writeln!(out, "outpost_model_info{{model=\"{}\",version=\"{v}\"}} 1", m.name);
            }
        }
        self.fleet_prometheus(&mut out);
        out
    }
}

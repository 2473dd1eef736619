//! Counters the runtime keeps for `GET /metrics` (Prometheus text format) and for `status`.

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

#[derive(Debug)]
pub struct Metrics {
    telemetry_window: Mutex<WindowStats>,
    watch_window: Mutex<WindowStats>,
    /// (model, version, HTTP status) → requests.
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    latency: Mutex<LatencyHistogram>,
    batch_sizes: Mutex<Histogram>,
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    pub shadow_skipped: AtomicU64,
    /// Requests the model answered on the caller's thread instead of a worker's (`Runtime::run_inline`).
    pub inline_runs: AtomicU64,
    pub model_load_us: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            telemetry_window: Mutex::default(),
            watch_window: Mutex::default(),
            requests: Mutex::default(),
            latency: Mutex::default(),
            batch_sizes: Mutex::new(Histogram::new(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0])),
            cache_hits: AtomicU64::new(0),
            cache_misses: AtomicU64::new(0),
            shadow_skipped: AtomicU64::new(0),
            inline_runs: AtomicU64::new(0),
            model_load_us: AtomicU64::new(0),
        }
    }
}

/// Values read at scrape time from elsewhere in the runtime.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    pub queue_depth: usize,
    pub shadow_agreement: Option<f64>,
    pub shadow_compared: u64,
    pub rss_bytes: u64,
    pub active: Option<(String, String)>,
    pub cache_entries: u64,
}

impl Metrics {
    pub fn request(&self, model: &str, version: &str, status: u16, latency: std::time::Duration, cached: bool) {
        *self.requests.lock().expect("metrics").entry((model.into(), version.into(), status)).or_default() += 1;
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

    /// The figures since the last activation.
    pub fn watch_window(&self) -> WindowStats {
        self.watch_window.lock().expect("metrics").clone()
    }

    pub fn reset_watch_window(&self) {
        *self.watch_window.lock().expect("metrics") = WindowStats::default();
    }

    pub fn batch(&self, rows: usize) {
        self.batch_sizes.lock().expect("metrics").observe(rows as f64);
    }

    pub fn requests_total(&self) -> u64 {
        self.requests.lock().expect("metrics").values().sum()
    }

    pub fn latency(&self) -> LatencyHistogram {
        self.latency.lock().expect("metrics").clone()
    }

    pub fn prometheus(&self, g: &Gauges) -> String {
        let mut out = String::new();
        out.push_str("# HELP outpost_requests_total Inference requests by model, version and HTTP status.\n");
        out.push_str("# TYPE outpost_requests_total counter\n");
        for ((m, v, s), n) in self.requests.lock().expect("metrics").iter() {
            let _ = writeln!(out, "outpost_requests_total{{model=\"{m}\",version=\"{v}\",status=\"{s}\"}} {n}");
        }
        out.push_str("# HELP outpost_request_duration_seconds Latency of successful requests, end to end.\n");
        out.push_str("# TYPE outpost_request_duration_seconds histogram\n");
        let latency = Histogram::from(&*self.latency.lock().expect("metrics"));
        latency.prometheus("outpost_request_duration_seconds", "", &mut out);
        out.push_str("# HELP outpost_batch_rows Rows per model run (dynamic batching).\n");
        out.push_str("# TYPE outpost_batch_rows histogram\n");
        self.batch_sizes.lock().expect("metrics").prometheus("outpost_batch_rows", "", &mut out);
        let gauge = |out: &mut String, name: &str, help: &str, kind: &str, value: String| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        };
        gauge(&mut out, "outpost_queue_depth", "Requests waiting for a worker.", "gauge", g.queue_depth.to_string());
        let inline = self.inline_runs.load(Ordering::Relaxed).to_string();
        let help = "Model runs done on the requesting thread (quick model, idle workers), not handed to a worker.";
        gauge(&mut out, "outpost_inline_runs_total", help, "counter", inline);
        let hits = self.cache_hits.load(Ordering::Relaxed);
        let misses = self.cache_misses.load(Ordering::Relaxed);
        gauge(&mut out, "outpost_cache_hits_total", "Result cache hits.", "counter", hits.to_string());
        gauge(&mut out, "outpost_cache_misses_total", "Result cache misses.", "counter", misses.to_string());
        gauge(&mut out, "outpost_cache_entries", "Result cache entries.", "gauge", g.cache_entries.to_string());
        if let Some(a) = g.shadow_agreement {
            gauge(
                &mut out,
                "outpost_shadow_agreement",
                "Top-1 agreement of the shadow candidate.",
                "gauge",
                format!("{a:.6}"),
            );
        }
        gauge(
            &mut out,
            "outpost_shadow_compared_total",
            "Requests compared in shadow.",
            "counter",
            g.shadow_compared.to_string(),
        );
        let skipped = self.shadow_skipped.load(Ordering::Relaxed).to_string();
        gauge(
            &mut out,
            "outpost_shadow_skipped_total",
            "Shadow samples skipped because the shadow queue was full.",
            "counter",
            skipped,
        );
        let load = self.model_load_us.load(Ordering::Relaxed) as f64 / 1e6;
        gauge(
            &mut out,
            "outpost_model_load_seconds",
            "Time to load and optimise the active model.",
            "gauge",
            format!("{load:.6}"),
        );
        gauge(
            &mut out,
            "outpost_process_resident_memory_bytes",
            "Resident set size of the agent.",
            "gauge",
            g.rss_bytes.to_string(),
        );
        if let Some((m, v)) = &g.active {
            let _ = writeln!(
                out,
                "# HELP outpost_model_info The active model.\n# TYPE outpost_model_info gauge\noutpost_model_info{{model=\"{m}\",version=\"{v}\"}} 1"
            );
        }
        out
    }
}

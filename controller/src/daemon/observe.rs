//! What the controller observes as it runs, beyond the state it stores: message and enrollment counters,
//! telemetry lag, and short histories for the console's charts (each device's recent inference windows,
//! each rollout's gate figures over time). In memory, bounded, reset by a restart: the decision trail
//! with each decision's evidence is what is stored (`rollout::AuditEntry`).

use super::prom::Histogram;
use crate::rollout::{Evidence, Rollout};
use outpost_protocol::messages::TelemetryBatch;
use outpost_protocol::telemetry::{InferenceWindow, RecordBody};
use outpost_protocol::{DeviceId, UnixTime};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Inference windows kept per device (two hours at the agent's default 60 s window).
pub const WINDOWS_KEPT: usize = 120;
/// Gate evaluations kept per rollout (one per change of its evidence).
pub const GATE_POINTS_KEPT: usize = 600;

/// One inference window as the console charts it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WindowPoint {
    /// When the window started (the device's clock).
    pub at: UnixTime,
    pub secs: u32,
    pub model: String,
    pub version: String,
    pub requests: u64,
    pub errors: u64,
    /// Errors and timeouts over requests; `None` without requests.
    pub error_rate: Option<f64>,
    pub p95_us: u32,
    /// Top-1 agreement of the shadow candidate, when one ran.
    pub shadow_agreement: Option<f64>,
    /// The largest PSI over input tensors and output classes, when the model carries a reference profile.
    pub psi: Option<f32>,
}

impl WindowPoint {
    pub fn of(at: UnixTime, w: &InferenceWindow) -> WindowPoint {
        // `errors` already counts the timeouts (the agent's runtime/metrics.rs); never more than requests.
        let errors = w.errors.max(w.timeouts).min(w.requests);
        // The same rule as the drift gate: a PSI over too few samples is noise, not a point to chart.
        let (psi, _) = crate::rollout::window_psi(w);
        WindowPoint {
            at,
            secs: w.window_secs,
            model: w.model.to_string(),
            version: w.version.to_string(),
            requests: w.requests,
            errors,
            error_rate: (w.requests > 0).then(|| errors as f64 / w.requests as f64),
            p95_us: w.latency_p95_us,
            shadow_agreement: w
                .shadow
                .as_ref()
                .filter(|s| s.compared > 0)
                .map(|s| s.agreed_top1.min(s.compared) as f64 / s.compared as f64),
            psi,
        }
    }
}

#[derive(Debug)]
pub struct Observations {
    /// Publishes received, by topic kind (`hello`, `telemetry`, `events`, ..., `enroll`, `other`).
    mqtt_in: Mutex<BTreeMap<&'static str, u64>>,
    mqtt_in_bytes: AtomicU64,
    /// Publishes the controller sent (desired states, acks, chunks, enrollment answers).
    pub mqtt_out: AtomicU64,
    telemetry_batches: AtomicU64,
    telemetry_records: AtomicU64,
    /// Seconds between a record's making (device clock) and its arrival; clamped at 0.
    pub telemetry_lag: Histogram,
    /// Enrollment requests by result (`issued`, `pending`, `refused`) and refusal reason.
    enrollments: Mutex<BTreeMap<(String, String), u64>>,
    windows: Mutex<HashMap<DeviceId, VecDeque<WindowPoint>>>,
    gates: Mutex<BTreeMap<String, VecDeque<Evidence>>>,
}

impl Default for Observations {
    fn default() -> Self {
        Observations {
            mqtt_in: Mutex::default(),
            mqtt_in_bytes: AtomicU64::new(0),
            mqtt_out: AtomicU64::new(0),
            telemetry_batches: AtomicU64::new(0),
            telemetry_records: AtomicU64::new(0),
            telemetry_lag: Histogram::new(&[1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 21_600.0, 86_400.0]),
            enrollments: Mutex::default(),
            windows: Mutex::default(),
            gates: Mutex::default(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Observations {
    pub fn message_in(&self, topic: &str, bytes: usize) {
        let kind = if outpost_protocol::enroll::parse_request_topic(topic).is_some() {
            "enroll"
        } else {
            match outpost_protocol::topics::parse(topic) {
                Some(outpost_protocol::topics::Parsed::Up(_, kind)) => kind.as_str(),
                _ => "other",
            }
        };
        *lock(&self.mqtt_in).entry(kind).or_default() += 1;
        self.mqtt_in_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub fn message_out(&self) {
        self.mqtt_out.fetch_add(1, Ordering::Relaxed);
    }

    /// A telemetry batch about to be applied: counts, lag, and the device's window history. Records the
    /// registry will find duplicate are counted too (they were received); the history skips them.
    pub fn telemetry(&self, device: &DeviceId, batch: &TelemetryBatch, acked_up_to: u64, now: UnixTime) {
        self.telemetry_batches.fetch_add(1, Ordering::Relaxed);
        self.telemetry_records.fetch_add(batch.records.len() as u64, Ordering::Relaxed);
        let mut fresh = Vec::new();
        for r in &batch.records {
            self.telemetry_lag.observe(now.saturating_sub(r.at) as f64);
            if let RecordBody::Inference(w) = &r.body
                && r.seq > acked_up_to
            {
                fresh.push(WindowPoint::of(w.window_start, w));
            }
        }
        if fresh.is_empty() {
            return;
        }
        let mut all = lock(&self.windows);
        let list = all.entry(device.clone()).or_default();
        for p in fresh {
            list.push_back(p);
        }
        while list.len() > WINDOWS_KEPT {
            list.pop_front();
        }
    }

    pub fn windows(&self, device: &DeviceId) -> Vec<WindowPoint> {
        lock(&self.windows).get(device).map(|l| l.iter().cloned().collect()).unwrap_or_default()
    }

    pub fn enrollment(&self, result: &str, reason: &str) {
        *lock(&self.enrollments).entry((result.to_owned(), reason.to_owned())).or_default() += 1;
    }

    /// Takes each rollout's latest evidence when it changed since the last call (every evaluation).
    pub fn sample_gates(&self, rollouts: &[Rollout]) {
        let mut all = lock(&self.gates);
        for r in rollouts {
            let Some(e) = &r.state.last_evidence else { continue };
            let list = all.entry(r.spec.id.clone()).or_default();
            if list.back().is_some_and(|last| last == e) {
                continue;
            }
            list.push_back(e.clone());
            while list.len() > GATE_POINTS_KEPT {
                list.pop_front();
            }
        }
    }

    /// A rollout's gate figures over time: the evidence of each recorded decision (stored, so it survives
    /// restarts) merged with every evaluation seen since this controller started, in time order.
    pub fn gate_series(&self, r: &Rollout) -> Vec<Evidence> {
        let mut out: Vec<Evidence> = r.state.history.iter().filter_map(|h| h.evidence.clone()).collect();
        if let Some(seen) = lock(&self.gates).get(&r.spec.id) {
            out.extend(seen.iter().cloned());
        }
        out.sort_by_key(|e| e.at);
        out.dedup();
        out
    }

    pub fn mqtt_in(&self) -> BTreeMap<&'static str, u64> {
        lock(&self.mqtt_in).clone()
    }

    pub fn mqtt_in_bytes(&self) -> u64 {
        self.mqtt_in_bytes.load(Ordering::Relaxed)
    }

    pub fn telemetry_counts(&self) -> (u64, u64) {
        (self.telemetry_batches.load(Ordering::Relaxed), self.telemetry_records.load(Ordering::Relaxed))
    }

    pub fn enrollments(&self) -> BTreeMap<(String, String), u64> {
        lock(&self.enrollments).clone()
    }
}

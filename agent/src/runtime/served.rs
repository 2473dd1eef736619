//! One model name the runtime serves: its active model and shadow candidate, and what the runtime keeps
//! per model (shadow sampling and agreement, the drift window, request windows and counters). Workers,
//! queues and the result cache are shared by every model (`Runtime`).

use super::metrics::ModelMetrics;
use super::model::LoadedModel;
use crate::stats::drift::{DriftAccumulator, DriftSnapshot};
use crate::stats::shadow::ShadowAccumulator;
use outpost_protocol::Digest;
use outpost_protocol::telemetry::ShadowStats;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

#[derive(Debug)]
pub struct Served {
    name: String,
    active: RwLock<Option<Arc<LoadedModel>>>,
    candidate: RwLock<Option<Arc<LoadedModel>>>,
    pub(super) drift: Mutex<Option<(Digest, DriftAccumulator)>>,
    pub(super) shadow: Mutex<ShadowAccumulator>,
    finished_shadow: Mutex<Option<ShadowStats>>,
    requests_seen: AtomicU64,
    shadow_percent: AtomicU8,
    /// Rows observed by the drift window so far (drift is recorded after the answers are sent).
    pub(super) drift_rows: AtomicU64,
    pub metrics: ModelMetrics,
}

impl Served {
    pub(super) fn new(name: &str) -> Served {
        Served {
            name: name.to_owned(),
            active: RwLock::new(None),
            candidate: RwLock::new(None),
            drift: Mutex::new(None),
            shadow: Mutex::new(ShadowAccumulator::new()),
            finished_shadow: Mutex::new(None),
            requests_seen: AtomicU64::new(0),
            shadow_percent: AtomicU8::new(0),
            drift_rows: AtomicU64::new(0),
            metrics: ModelMetrics::default(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn active(&self) -> Option<Arc<LoadedModel>> {
        self.active.read().expect("active lock").clone()
    }

    pub fn candidate(&self) -> Option<Arc<LoadedModel>> {
        self.candidate.read().expect("candidate lock").clone()
    }

    pub(super) fn set_active(&self, model: Arc<LoadedModel>) {
        self.metrics.model_load_us.store(model.load_time.as_micros() as u64, Ordering::Relaxed);
        *self.active.write().expect("active lock") = Some(model);
        self.metrics.reset_watch_window();
    }

    pub(super) fn set_candidate(&self, model: Option<LoadedModel>, sample_percent: u8) {
        self.shadow_percent.store(sample_percent.min(100), Ordering::Relaxed);
        // The outgoing candidate's figures belong to the current window: keep them for the next report.
        if let Some(old) = self.take_shadow_stats() {
            *self.finished_shadow.lock().expect("shadow lock") = Some(old);
        }
        *self.candidate.write().expect("candidate lock") = model.map(Arc::new);
        *self.shadow.lock().expect("shadow lock") = ShadowAccumulator::new();
    }

    pub fn shadow_agreement(&self) -> Option<f64> {
        self.shadow.lock().expect("shadow lock").agreement()
    }

    pub fn shadow_compared(&self) -> u64 {
        self.shadow.lock().expect("shadow lock").compared()
    }

    /// Takes the shadow window's statistics (and starts a new window). A candidate that was replaced
    /// or dropped during the window still reports what it saw.
    pub fn take_shadow_stats(&self) -> Option<ShadowStats> {
        let finished = self.finished_shadow.lock().expect("shadow lock").take();
        let current = self.candidate().and_then(|cand| {
            self.shadow.lock().expect("shadow lock").snapshot(cand.manifest.version, cand.digest, cand.mem_bytes)
        });
        current.or(finished)
    }

    /// Takes the drift window's statistics for the active model (and starts a new window).
    pub fn take_drift(&self) -> Option<(Digest, DriftSnapshot)> {
        let mut d = self.drift.lock().expect("drift lock");
        self.drift_rows.store(0, Ordering::Relaxed);
        d.as_mut().map(|(digest, acc)| (*digest, acc.snapshot()))
    }

    /// Rows the current drift window has observed.
    pub fn drift_rows(&self) -> u64 {
        self.drift_rows.load(Ordering::Relaxed)
    }

    /// Spreads the configured share of requests evenly: request n is sampled when ⌊(n+1)·p/100⌋ grows.
    pub(super) fn sample_for_shadow(&self) -> bool {
        if self.candidate.read().expect("candidate lock").is_none() {
            return false;
        }
        let p = u64::from(self.shadow_percent.load(Ordering::Relaxed));
        let n = self.requests_seen.fetch_add(1, Ordering::Relaxed);
        (n + 1) * p / 100 > n * p / 100
    }
}

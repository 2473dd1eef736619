//! What a device operator alerts on, for the agent's `/metrics`: is the device connected to its broker,
//! how often it reconnects, how much telemetry waits and how old the oldest of it is, what it dropped,
//! where each model's update stands, and which rollbacks and refusals happened for which reason.
//!
//! Kept apart from the runtime's request metrics (`runtime/metrics.rs`): the link, the telemetry queue and
//! the update driver feed this, and the runtime only appends its text to `/metrics`
//! (`Metrics::set_fleet`). Every series is listed in docs/metrics.md.

use crate::telemetry::queue::TelemetryQueue;
use outpost_protocol::telemetry::{UpdateEvent, UpdateStage};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug)]
pub struct FleetObserver {
    queue: Arc<TelemetryQueue>,
    /// False until a broker is configured and the link connects.
    link_configured: AtomicBool,
    connected: AtomicBool,
    connects: AtomicU64,
    disconnects: AtomicU64,
    /// The latest stage of each model's update machine, from the events it reported.
    stages: Mutex<BTreeMap<String, UpdateStage>>,
    /// (outcome: `rolled_back` or `rejected`, reason code) → count since the agent started.
    endings: Mutex<BTreeMap<(&'static str, String), u64>>,
}

/// Stage names as the metric's label values (snake case, the wire enum's order).
pub fn stage_name(s: UpdateStage) -> &'static str {
    match s {
        UpdateStage::Idle => "idle",
        UpdateStage::Fetching => "fetching",
        UpdateStage::Verifying => "verifying",
        UpdateStage::Staged => "staged",
        UpdateStage::SelfTest => "self_test",
        UpdateStage::Shadow => "shadow",
        UpdateStage::Activating => "activating",
        UpdateStage::Watching => "watching",
        UpdateStage::Committed => "committed",
        UpdateStage::RolledBack => "rolled_back",
        UpdateStage::Rejected => "rejected",
    }
}

const STAGES: [UpdateStage; 11] = [
    UpdateStage::Idle,
    UpdateStage::Fetching,
    UpdateStage::Verifying,
    UpdateStage::Staged,
    UpdateStage::SelfTest,
    UpdateStage::Shadow,
    UpdateStage::Activating,
    UpdateStage::Watching,
    UpdateStage::Committed,
    UpdateStage::RolledBack,
    UpdateStage::Rejected,
];

impl FleetObserver {
    pub fn new(queue: Arc<TelemetryQueue>) -> Arc<FleetObserver> {
        Arc::new(FleetObserver {
            queue,
            link_configured: AtomicBool::new(false),
            connected: AtomicBool::new(false),
            connects: AtomicU64::new(0),
            disconnects: AtomicU64::new(0),
            stages: Mutex::default(),
            endings: Mutex::default(),
        })
    }

    pub fn link_configured(&self) {
        self.link_configured.store(true, Ordering::Relaxed);
    }

    pub fn connected(&self) {
        self.connected.store(true, Ordering::Relaxed);
        self.connects.fetch_add(1, Ordering::Relaxed);
    }

    pub fn disconnected(&self) {
        self.connected.store(false, Ordering::Relaxed);
        self.disconnects.fetch_add(1, Ordering::Relaxed);
    }

    /// One transition of a model's update machine, as reported to the controller.
    pub fn update_event(&self, e: &UpdateEvent) {
        self.stages.lock().unwrap_or_else(|p| p.into_inner()).insert(e.model.to_string(), e.to);
        let outcome = match e.to {
            UpdateStage::RolledBack => "rolled_back",
            UpdateStage::Rejected => "rejected",
            _ => return,
        };
        let reason = e.reason.map(|r| r.code().to_owned()).unwrap_or_else(|| "unspecified".into());
        *self.endings.lock().unwrap_or_else(|p| p.into_inner()).entry((outcome, reason)).or_default() += 1;
    }

    /// Appends this module's series to a Prometheus text exposition. `now`: Unix seconds.
    pub fn prometheus(&self, now: u64, out: &mut String) {
        let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, String)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let one = |v: u64| vec![(String::new(), v.to_string())];
        let connected = self.connected.load(Ordering::Relaxed);
        let configured = self.link_configured.load(Ordering::Relaxed);
        family(
            "outpost_link_configured",
            "gauge",
            "1 when a broker is configured (the device belongs to a fleet), 0 for a standalone agent.",
            &one(u64::from(configured)),
        );
        family(
            "outpost_broker_connected",
            "gauge",
            "1 while the MQTT connection to the broker is up.",
            &one(u64::from(connected)),
        );
        let connects = self.connects.load(Ordering::Relaxed);
        family(
            "outpost_broker_connects_total",
            "counter",
            "Successful connections to the broker since the agent started (the first one included).",
            &one(connects),
        );
        family(
            "outpost_broker_reconnects_total",
            "counter",
            "Connections after the first: each one followed a lost connection.",
            &one(connects.saturating_sub(1)),
        );
        family(
            "outpost_broker_disconnects_total",
            "counter",
            "Connections to the broker lost since the agent started.",
            &one(self.disconnects.load(Ordering::Relaxed)),
        );
        match self.queue.stats() {
            Ok(s) => {
                family(
                    "outpost_telemetry_queue_records",
                    "gauge",
                    "Telemetry records stored on the device and not yet acknowledged by the controller.",
                    &one(s.len),
                );
                family(
                    "outpost_telemetry_queue_capacity_records",
                    "gauge",
                    "Records the queue keeps at most; beyond it the oldest are dropped.",
                    &one(self.queue.config().max_records),
                );
                family(
                    "outpost_telemetry_dropped_total",
                    "counter",
                    "Telemetry records dropped because the queue was full (persisted across restarts).",
                    &one(s.dropped_total),
                );
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the telemetry queue for /metrics"),
        }
        let oldest = self.queue.oldest_at().ok().flatten().map(|at| now.saturating_sub(at)).unwrap_or(0);
        family(
            "outpost_telemetry_oldest_unsent_age_seconds",
            "gauge",
            "Age of the oldest telemetry record not yet acknowledged (0 when none waits).",
            &one(oldest),
        );
        family(
            "outpost_telemetry_corrupt_skipped_total",
            "counter",
            "Stored telemetry records found corrupt and skipped since the agent started.",
            &one(self.queue.corrupt_skipped()),
        );
        let stages = self.stages.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut samples = Vec::new();
        for (model, stage) in &stages {
            for s in STAGES {
                let v = u64::from(s == *stage);
                samples.push((format!("{{model=\"{model}\",stage=\"{}\"}}", stage_name(s)), v.to_string()));
            }
        }
        family(
            "outpost_update_stage",
            "gauge",
            "Where each model's update machine stands: 1 for the current stage, 0 for the others.",
            &samples,
        );
        let endings = self.endings.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let pick = |outcome: &str| -> Vec<(String, String)> {
            endings
                .iter()
                .filter(|((o, _), _)| *o == outcome)
                .map(|((_, reason), n)| (format!("{{reason=\"{reason}\"}}"), n.to_string()))
                .collect()
        };
        family(
            "outpost_update_rollbacks_total",
            "counter",
            "Updates the device rolled back on its own (self-test, watch budget, restarts), by reason code.",
            &pick("rolled_back"),
        );
        family(
            "outpost_update_refusals_total",
            "counter",
            "Updates the device refused (verification, self-test, unloadable model...), by reason code.",
            &pick("rejected"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::queue::QueueConfig;
    use outpost_protocol::telemetry::RecordBody;
    use outpost_protocol::{Digest, ModelName, RejectReason, Version};

    fn event(to: UpdateStage, reason: Option<RejectReason>) -> UpdateEvent {
        UpdateEvent {
            rollout: None,
            model: ModelName::new("digits").unwrap(),
            version: Version::new(2, 0, 0),
            bundle: Digest::of(b"b"),
            from: UpdateStage::Idle,
            to,
            reason,
            detail: String::new(),
            seq: 0,
        }
    }

    #[test]
    fn series_follow_the_link_the_queue_and_the_update_events() {
        let dir = std::env::temp_dir().join(format!("outpost-observe-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let queue = Arc::new(TelemetryQueue::open(&dir.join("q.redb"), QueueConfig::default()).unwrap());
        queue.append(&[(100, RecordBody::Dropped { count: 0 }), (130, RecordBody::Dropped { count: 0 })]).unwrap();
        let o = FleetObserver::new(queue);
        o.link_configured();
        o.connected();
        o.disconnected();
        o.connected();
        o.update_event(&event(UpdateStage::Fetching, None));
        o.update_event(&event(UpdateStage::Rejected, Some(RejectReason::BadSignature)));
        o.update_event(&event(UpdateStage::RolledBack, Some(RejectReason::SelfTestFailed)));
        let mut text = String::new();
        o.prometheus(160, &mut text);
        for line in [
            "outpost_broker_connected 1",
            "outpost_broker_reconnects_total 1",
            "outpost_broker_disconnects_total 1",
            "outpost_telemetry_queue_records 2",
            "outpost_telemetry_oldest_unsent_age_seconds 60",
            "outpost_update_stage{model=\"digits\",stage=\"rolled_back\"} 1",
            "outpost_update_stage{model=\"digits\",stage=\"fetching\"} 0",
            "outpost_update_refusals_total{reason=\"bad_signature\"} 1",
            "outpost_update_rollbacks_total{reason=\"selftest_failed\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

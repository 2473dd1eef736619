//! `GET /metrics`: the controller in Prometheus text. Fleet figures (devices by status, model version
//! and agent version, skew buckets, rollouts and their gates) are computed from the registry and the
//! rollouts at scrape time, so they equal what the API says at that moment; counters and latencies come
//! from `observe.rs` and the store. Every series is documented in docs/metrics.md (a test checks that the
//! two lists agree).

use super::api::Api;
use super::prom::Text;
use super::registry::DeviceRecord;
use crate::rollout::{GateKind, Phase, Verdict};
use std::collections::BTreeMap;

/// A device's place in the fleet page and in `outpost_devices`: `revoked` and `pending` (waiting for an
/// operator's approval) first, then `online` or `offline` by its last presence.
pub fn device_status(d: &DeviceRecord) -> &'static str {
    use super::enroll::Status;
    match d.enrollment.status {
        Status::Revoked { .. } => "revoked",
        Status::Pending => "pending",
        _ if d.online => "online",
        _ => "offline",
    }
}

pub const DEVICE_STATUSES: [&str; 4] = ["online", "offline", "pending", "revoked"];

pub const PHASES: [&str; 7] =
    ["pending", "progressing", "paused", "completed", "rolled_back", "aborted", "aborted_reverted"];

/// A phase as a label value (snake case; `Phase::name` is for people).
pub fn phase_label(p: &Phase) -> &'static str {
    match p {
        Phase::Pending => "pending",
        Phase::Progressing => "progressing",
        Phase::Paused { .. } => "paused",
        Phase::Completed => "completed",
        Phase::RolledBack { .. } => "rolled_back",
        Phase::Aborted { reverted: false } => "aborted",
        Phase::Aborted { reverted: true } => "aborted_reverted",
    }
}

pub fn gate_label(g: GateKind) -> &'static str {
    match g {
        GateKind::Quorum => "quorum",
        GateKind::InstallFailure => "install_failure",
        GateKind::ErrorRate => "error_rate",
        GateKind::LatencyP95 => "latency_p95",
        GateKind::ShadowAgreement => "shadow_agreement",
        GateKind::Drift => "drift",
    }
}

pub fn verdict_label(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "pass",
        Verdict::Fail => "fail",
        Verdict::Inconclusive => "inconclusive",
    }
}

pub fn render(api: &Api) -> String {
    let mut t = Text::default();
    let devices = api.fleet.devices();
    fleet_series(&mut t, &devices);
    skew_series(&mut t, api);
    rollout_series(&mut t, api);
    ingest_series(&mut t, api, &devices);
    t.finish()
}

fn fleet_series(t: &mut Text, devices: &[DeviceRecord]) {
    let mut by_status: BTreeMap<&str, u64> = DEVICE_STATUSES.iter().map(|s| (*s, 0)).collect();
    let mut agents: BTreeMap<String, u64> = BTreeMap::new();
    for d in devices {
        *by_status.entry(device_status(d)).or_default() += 1;
        let agent = d.agent_version.map(|v| v.to_string()).unwrap_or_else(|| "unknown".into());
        *agents.entry(agent).or_default() += 1;
    }
    t.family(
        "outpost_devices",
        "gauge",
        "Devices the controller knows, by status (online, offline, pending approval, revoked).",
    );
    for (s, n) in &by_status {
        t.sample("outpost_devices", &[("status", s)], *n as f64);
    }
    t.family("outpost_devices_by_agent_version", "gauge", "Devices by the agent version of their last hello.");
    for (v, n) in &agents {
        t.sample("outpost_devices_by_agent_version", &[("version", v)], *n as f64);
    }
}

fn skew_series(t: &mut Text, api: &Api) {
    let skew = super::api::fleet_skew(api);
    t.family(
        "outpost_model_devices",
        "gauge",
        "Devices running each version of each model, online or not (the skew of `outpost skew`).",
    );
    for m in &skew {
        let model = m.model.to_string();
        for v in &m.versions {
            let version = v.version.to_string();
            t.sample(
                "outpost_model_devices",
                &[("model", &model), ("version", &version), ("online", "true")],
                v.online.into(),
            );
            t.sample(
                "outpost_model_devices",
                &[("model", &model), ("version", &version), ("online", "false")],
                v.offline.into(),
            );
        }
    }
    t.family(
        "outpost_model_compliance_devices",
        "gauge",
        "Devices of each model by where they stand against its target release (on_target, behind, ahead, in_progress, failed, unknown).",
    );
    for m in &skew {
        let model = m.model.to_string();
        let c = &m.compliance;
        for (bucket, n) in [
            ("on_target", c.on_target),
            ("behind", c.behind),
            ("ahead", c.ahead),
            ("in_progress", c.in_progress),
            ("failed", c.failed),
            ("unknown", c.unknown),
        ] {
            t.sample("outpost_model_compliance_devices", &[("model", &model), ("bucket", bucket)], n.into());
        }
    }
}

fn rollout_series(t: &mut Text, api: &Api) {
    let rollouts = api.rollouts.list();
    let mut by_phase: BTreeMap<&str, u64> = PHASES.iter().map(|p| (*p, 0)).collect();
    for r in &rollouts {
        *by_phase.entry(phase_label(&r.state.phase)).or_default() += 1;
    }
    t.family("outpost_rollouts", "gauge", "Rollouts by phase.");
    for (p, n) in &by_phase {
        t.sample("outpost_rollouts", &[("phase", p)], *n as f64);
    }
    t.family("outpost_rollout_info", "gauge", "One sample per rollout with its model, version and phase; value 1.");
    for r in &rollouts {
        let (model, version) = (r.spec.release.model.to_string(), r.spec.release.version.to_string());
        let labels = [
            ("rollout", r.spec.id.as_str()),
            ("model", &model),
            ("version", &version),
            ("phase", phase_label(&r.state.phase)),
        ];
        t.sample("outpost_rollout_info", &labels, 1.0);
    }
    t.family("outpost_rollout_wave", "gauge", "The wave each rollout is in, counted from 1.");
    for r in &rollouts {
        t.sample("outpost_rollout_wave", &[("rollout", &r.spec.id)], (r.state.wave + 1) as f64);
    }
    t.family(
        "outpost_rollout_devices",
        "gauge",
        "Devices each rollout told something, by what they were last told (install, revert, withdraw).",
    );
    for r in &rollouts {
        for (intent, n) in r.state.intents() {
            t.sample("outpost_rollout_devices", &[("rollout", &r.spec.id), ("intent", intent)], n.into());
        }
    }
    let gates: Vec<_> = rollouts
        .iter()
        .filter_map(|r| r.state.last_evidence.as_ref().map(|e| (r.spec.id.as_str(), e)))
        .flat_map(|(id, e)| e.gates.iter().map(move |g| (id, g)))
        .collect();
    t.family(
        "outpost_rollout_gate_verdict",
        "gauge",
        "The latest verdict of each gate of each rollout: 1 for the verdict it has, 0 for the others.",
    );
    for (id, g) in &gates {
        for v in [Verdict::Pass, Verdict::Fail, Verdict::Inconclusive] {
            let labels = [("rollout", *id), ("gate", gate_label(g.gate)), ("verdict", verdict_label(v))];
            t.sample("outpost_rollout_gate_verdict", &labels, f64::from(u8::from(g.verdict == v)));
        }
    }
    t.family(
        "outpost_rollout_gate_value",
        "gauge",
        "The wave's latest figure for each gate (a rate, a ratio or a PSI), when it had one.",
    );
    for (id, g) in &gates {
        if let Some(v) = g.value {
            t.sample("outpost_rollout_gate_value", &[("rollout", id), ("gate", gate_label(g.gate))], v);
        }
    }
    t.family("outpost_rollout_gate_threshold", "gauge", "The threshold each gate judges its value against.");
    for (id, g) in &gates {
        t.sample("outpost_rollout_gate_threshold", &[("rollout", id), ("gate", gate_label(g.gate))], g.threshold);
    }
}

fn ingest_series(t: &mut Text, api: &Api, devices: &[DeviceRecord]) {
    let o = &api.fleet.observed;
    t.family(
        "outpost_mqtt_messages_received_total",
        "counter",
        "MQTT publishes the controller received, by topic kind.",
    );
    for (kind, n) in o.mqtt_in() {
        t.sample("outpost_mqtt_messages_received_total", &[("kind", kind)], n as f64);
    }
    t.single(
        "outpost_mqtt_received_bytes_total",
        "counter",
        "Payload bytes of the MQTT publishes received.",
        o.mqtt_in_bytes() as f64,
    );
    t.single(
        "outpost_mqtt_messages_sent_total",
        "counter",
        "MQTT publishes the controller sent (desired states, acks, chunks, enrollment answers).",
        o.mqtt_out.load(std::sync::atomic::Ordering::Relaxed) as f64,
    );
    let (batches, records) = o.telemetry_counts();
    t.single(
        "outpost_telemetry_batches_total",
        "counter",
        "Telemetry batches received since the controller started.",
        batches as f64,
    );
    t.single(
        "outpost_telemetry_records_total",
        "counter",
        "Telemetry records received since the controller started, resent ones included: rate() of it is the ingest rate.",
        records as f64,
    );
    t.histogram(
        "outpost_telemetry_lag_seconds",
        "Seconds from a telemetry record's making (device clock) to its arrival here.",
        &o.telemetry_lag,
    );
    let (mut stored, mut duplicates, mut missing) = (0u64, 0u64, 0u64);
    // Each device's counters come from its unsigned sequence numbers: saturate, never overflow.
    for d in devices {
        stored = stored.saturating_add(d.telemetry.received);
        duplicates = duplicates.saturating_add(d.telemetry.duplicates);
        missing = missing.saturating_add(d.telemetry.missing);
    }
    t.single(
        "outpost_telemetry_records_stored_total",
        "counter",
        "Telemetry records applied to device records, over the controller's lifetime (stored).",
        stored as f64,
    );
    t.single(
        "outpost_telemetry_records_duplicate_total",
        "counter",
        "Telemetry records received twice and ignored, over the controller's lifetime (stored).",
        duplicates as f64,
    );
    t.single(
        "outpost_telemetry_records_missing_total",
        "counter",
        "Telemetry records devices dropped before sending (their queue was full), over the controller's lifetime (stored).",
        missing as f64,
    );
    t.histogram(
        "outpost_store_write_seconds",
        "Duration of the store's durable commits, fsync included.",
        api.store.write_latency(),
    );
    t.family(
        "outpost_enrollment_requests_total",
        "counter",
        "Enrollment requests answered, by result (issued, pending, refused) and refusal reason.",
    );
    for ((result, reason), n) in o.enrollments() {
        t.sample("outpost_enrollment_requests_total", &[("result", &result), ("reason", &reason)], n as f64);
    }
}

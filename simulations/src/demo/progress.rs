//! What the demo prints while it runs: one line per change of the rollout or the fleet, made from the
//! controller's answers (pure: no I/O here).

use outpost_controller::daemon::registry::DeviceRecord;
use outpost_controller::rollout::{GateKind, GateResult, Rollout, Verdict};
use outpost_protocol::telemetry::UpdateStage;
use std::collections::BTreeMap;

/// Devices per running model version (`digits 2.0.0`; `none` for a device that runs no model yet), from
/// the controller's registry. A device running two models counts once for each.
pub fn versions(devices: &[DeviceRecord]) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    for d in devices {
        if d.running.is_empty() {
            *out.entry("none".to_owned()).or_insert(0) += 1;
        }
        for r in &d.running {
            *out.entry(format!("{} {}", r.name, r.version)).or_insert(0) += 1;
        }
    }
    out
}

/// Models whose last update event left them mid-update on a device (fetching up to watching), by stage.
pub fn updating(devices: &[DeviceRecord]) -> BTreeMap<&'static str, u32> {
    let mut out = BTreeMap::new();
    for d in devices {
        for stage in d.last_events().filter_map(|e| mid_update(e.to)) {
            *out.entry(stage).or_insert(0) += 1;
        }
    }
    out
}

/// The stage a model is in when an update event leaves it mid-update (`installing`, `shadowing`,
/// `watching`); `None` once it is settled (idle, committed, refused, rolled back).
pub fn mid_update(to: UpdateStage) -> Option<&'static str> {
    match to {
        UpdateStage::Fetching | UpdateStage::Verifying | UpdateStage::Staged | UpdateStage::SelfTest => {
            Some("installing")
        }
        UpdateStage::Shadow => Some("shadowing"),
        UpdateStage::Activating | UpdateStage::Watching => Some("watching"),
        _ => None,
    }
}

pub fn gate_name(g: GateKind) -> &'static str {
    match g {
        GateKind::Quorum => "quorum",
        GateKind::InstallFailure => "install failures",
        GateKind::ErrorRate => "error rate",
        GateKind::LatencyP95 => "p95 latency",
        GateKind::ShadowAgreement => "shadow agreement",
        GateKind::Drift => "drift (PSI)",
    }
}

/// A gate's figure as people read it: rates in percent, the latency as a ratio to the baseline.
pub fn gate_value(g: &GateResult) -> String {
    let v = match g.value {
        None => "-".to_owned(),
        Some(v) => match g.gate {
            GateKind::LatencyP95 => format!("x{v:.2}"),
            GateKind::Drift => format!("{v:.3}"),
            _ => format!("{:.1}%", v * 100.0),
        },
    };
    let verdict = match g.verdict {
        Verdict::Pass => "pass",
        Verdict::Fail => "FAIL",
        Verdict::Inconclusive => "wait",
    };
    format!("{} {v} {verdict}", gate_name(g.gate))
}

/// One status line: `[ 42s] digits 2.0.0 wave 2/3 (25%) progressing | devices digits 2.0.0:6 digits 1.0.0:14
/// vibration 1.0.0:20 | shadowing:4 | gates`.
pub fn line(elapsed_secs: u64, r: &Rollout, devices: &[DeviceRecord], answers_per_sec: u64) -> String {
    let waves = r.spec.waves.len();
    let wave = r.state.wave.min(waves.saturating_sub(1));
    let mut s = format!(
        "[{elapsed_secs:>4}s] {} {} wave {}/{waves} ({}) {}",
        r.spec.release.model,
        r.spec.release.version,
        wave + 1,
        r.spec.waves[wave].size,
        r.state.phase.name()
    );
    let v = versions(devices);
    s.push_str(" | devices");
    for (version, n) in v.iter().rev() {
        s.push_str(&format!(" {version}:{n}"));
    }
    let u = updating(devices);
    if !u.is_empty() {
        s.push_str(" |");
        for (stage, n) in &u {
            s.push_str(&format!(" {stage}:{n}"));
        }
    }
    if let Some(e) = &r.state.last_evidence {
        let gates: Vec<String> =
            e.gates.iter().filter(|g| g.value.is_some() || g.verdict != Verdict::Pass).map(gate_value).collect();
        if !gates.is_empty() {
            s.push_str(" | ");
            s.push_str(&gates.join(", "));
        }
    }
    s.push_str(&format!(" | {answers_per_sec} answers/s"));
    s
}

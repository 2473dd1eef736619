//! The demo's report: `report/summary.md` (outcomes, rollouts wave by wave with their gate values, what
//! the applications saw, the audit trail) and SVG charts beside it. Pure: the caller writes the files.

use super::load::LoadStats;
use super::progress::{gate_name, gate_value};
use crate::report::svg::{self, Bar, Series};
use outpost_controller::rollout::{AuditEntry, Decision, GateKind, Rollout};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// One expected outcome and whether it happened.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub what: String,
    pub observed: String,
    pub ok: bool,
}

/// Devices per version, sampled about once a second (seconds since the demo started).
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    pub samples: Vec<(f64, BTreeMap<String, u32>)>,
    /// When each rollout started, for the summary.
    pub marks: Vec<(f64, String)>,
}

#[derive(Debug)]
pub struct Inputs<'a> {
    pub devices: usize,
    pub wall_secs: f64,
    pub checks: &'a [Check],
    pub rollouts: &'a [Rollout],
    pub audit: &'a [AuditEntry],
    pub load: &'a LoadStats,
    pub timeline: &'a Timeline,
    pub started_unix: u64,
    /// Final version per device, as each device's own API answered.
    pub final_versions: &'a BTreeMap<String, String>,
    /// The controller's console while the fleet keeps running (`--keep-running`): its address and where
    /// the sign-in token is.
    pub console: Option<(String, String)>,
}

/// The files of the report: (file name, contents).
pub fn render(i: &Inputs) -> Vec<(String, String)> {
    let mut files = vec![("devices-per-version.svg".to_owned(), devices_chart(i.timeline))];
    files.push(("answers-per-version.svg".to_owned(), answers_chart(i.load)));
    let mut charts = vec!["devices-per-version.svg", "answers-per-version.svg"];
    for (kind, file, unit) in [
        (GateKind::ShadowAgreement, "gate-shadow-agreement.svg", "%"),
        (GateKind::ErrorRate, "gate-error-rate.svg", "%"),
        (GateKind::LatencyP95, "gate-p95-latency.svg", "x baseline"),
    ] {
        if let Some(chart) = gate_chart(i.audit, kind, unit) {
            files.push((file.to_owned(), chart));
            charts.push(file);
        }
    }
    files.push(("summary.md".to_owned(), summary(i, &charts)));
    files
}

fn devices_chart(t: &Timeline) -> String {
    let versions: BTreeSet<&String> = t.samples.iter().flat_map(|(_, m)| m.keys()).collect();
    let series: Vec<Series> = versions
        .into_iter()
        .map(|v| Series {
            name: v.clone(),
            points: t.samples.iter().map(|(x, m)| (*x, f64::from(m.get(v).copied().unwrap_or(0)))).collect(),
        })
        .collect();
    svg::line_chart("Devices per model version", "seconds", "devices", &series)
}

fn answers_chart(l: &LoadStats) -> String {
    let versions: BTreeSet<&String> = l.per_second.values().flat_map(|m| m.keys()).collect();
    let series: Vec<Series> = versions
        .into_iter()
        .map(|v| Series {
            name: v.clone(),
            points: l.per_second.iter().map(|(s, m)| (*s as f64, m.get(v).copied().unwrap_or(0) as f64)).collect(),
        })
        .collect();
    svg::line_chart("Answers to applications per second, by model version", "seconds", "answers/s", &series)
}

/// The gate's figure at every wave decision (advance, completion or failure), one bar per wave.
fn gate_chart(audit: &[AuditEntry], kind: GateKind, unit: &str) -> Option<String> {
    let mut bars = Vec::new();
    let mut threshold = None;
    for e in audit.iter().filter(|e| judged(&e.decision)) {
        let Some(g) = e.evidence.as_ref().and_then(|ev| ev.gates.iter().find(|g| g.gate == kind)) else { continue };
        let Some(value) = g.value else { continue };
        let scale = if unit == "%" { 100.0 } else { 1.0 };
        // The latency gate's threshold is the allowed regression (0.5: +50 %); its figure is a ratio. The
        // error-rate gate's limit moves with the baseline, shown as its own bar.
        threshold = match kind {
            GateKind::LatencyP95 => Some(1.0 + g.threshold),
            GateKind::ErrorRate => None,
            _ => Some(g.threshold * scale),
        };
        let group = format!("{} w{}", e.rollout.trim_start_matches("digits-"), judged_wave(e) + 1);
        bars.push(Bar { group: group.clone(), name: "wave".into(), value: value * scale });
        if let Some(b) = g.baseline {
            bars.push(Bar { group, name: "baseline".into(), value: b * scale });
        }
    }
    if bars.is_empty() {
        return None;
    }
    let title = format!("{} per wave", gate_name(kind));
    Some(svg::bar_chart(&title, unit, &bars, threshold.map(|t| (t, "threshold"))))
}

/// The wave a decision judged (0-based): an advance is recorded in the wave it opened.
fn judged_wave(e: &AuditEntry) -> usize {
    match e.decision {
        Decision::Advanced { to } => to.saturating_sub(1),
        _ => e.wave,
    }
}

fn judged(d: &Decision) -> bool {
    matches!(d, Decision::Advanced { .. } | Decision::Completed | Decision::GateFailed { .. })
}

fn summary(i: &Inputs, charts: &[&str]) -> String {
    let mut s = String::new();
    let passed = i.checks.iter().all(|c| c.ok);
    let _ = writeln!(s, "# Outpost quick-start demo\n");
    let _ = writeln!(
        s,
        "**{}** — {} devices, {:.0} s. Controller with its embedded MQTT broker and {} real agents on \
         loopback (tract runtime, local inference API, telemetry store, update machine), each serving two \
         models: digits and the vibration anomaly detector; a load generator sent the held-out digits images \
         to every device the whole time, and the held-out vibration windows once that model was on the fleet.\n",
        if passed { "Every expected outcome happened" } else { "Some expected outcomes did NOT happen" },
        i.devices,
        i.wall_secs,
        i.devices
    );
    let _ = writeln!(s, "## Expected outcomes\n\n| | expected | observed |\n|---|---|---|");
    for c in i.checks {
        let _ = writeln!(s, "| {} | {} | {} |", if c.ok { "✅" } else { "❌" }, c.what, c.observed);
    }
    let _ = writeln!(s, "\n## Rollouts\n");
    for r in i.rollouts {
        let waves: Vec<String> = r.spec.waves.iter().map(|w| w.size.to_string()).collect();
        let _ = writeln!(
            s,
            "### {} {}: {}\n\nWaves {}; bake {} s; shadow {}; on failure: {:?}.\n",
            r.spec.release.model,
            r.spec.release.version,
            r.state.phase.name(),
            waves.join(", "),
            r.spec.waves.first().map(|w| w.bake_secs).unwrap_or(0),
            r.spec.shadow.map(|p| format!("{} s", p.secs)).unwrap_or_else(|| "none".into()),
            r.spec.on_failure
        );
        let _ = writeln!(s, "| wave | decision | gates |\n|---|---|---|");
        for e in r.state.history.iter().filter(|e| judged(&e.decision)) {
            let gates = e
                .evidence
                .as_ref()
                .map(|ev| ev.gates.iter().map(gate_value).collect::<Vec<_>>().join("; "))
                .unwrap_or_default();
            let decision = match e.decision {
                Decision::Advanced { .. } => "passed: next wave".to_owned(),
                Decision::Completed => "passed: completed".to_owned(),
                Decision::GateFailed { rolled_back: true } => "FAILED: rolled back".to_owned(),
                ref d => format!("{d:?}"),
            };
            let _ = writeln!(s, "| {} | {decision} | {gates} |", judged_wave(e) + 1);
        }
        s.push('\n');
    }
    let _ = writeln!(s, "## What the applications saw\n\n| model version | answers | correct |\n|---|---|---|");
    for (v, a) in &i.load.by_version {
        let pct = if a.answers == 0 { 0.0 } else { a.correct as f64 * 100.0 / a.answers as f64 };
        let _ = writeln!(s, "| {v} | {} | {:.1} % |", a.answers, pct);
    }
    if i.load.failures.is_empty() {
        let _ = writeln!(s, "\nNo request failed.");
    } else {
        let f: Vec<String> = i
            .load
            .failures
            .iter()
            .map(|(code, n)| if *code == 0 { format!("{n} × no connection") } else { format!("{n} × HTTP {code}") })
            .collect();
        let _ = writeln!(
            s,
            "\nFailed requests: {} (a device answers 404 or 503 for a model until it is installed).",
            f.join(", ")
        );
    }
    let _ =
        writeln!(s, "\n## Devices at the end\n\n| device | serving | versions it ever answered with |\n|---|---|---|");
    for (id, v) in i.final_versions {
        let served =
            i.load.served.get(id).map(|s| s.iter().cloned().collect::<Vec<_>>().join(", ")).unwrap_or_default();
        let _ = writeln!(s, "| {id} | {v} | {served} |");
    }
    let _ = writeln!(s, "\n## Charts\n");
    for c in charts {
        let _ = writeln!(s, "![{c}]({c})\n");
    }
    let _ =
        writeln!(s, "## Audit trail\n\n| t (s) | rollout | wave | decision | by | reason |\n|---|---|---|---|---|---|");
    for e in i.audit {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:?} | {:?} | {} |",
            e.at.saturating_sub(i.started_unix),
            e.rollout,
            e.wave + 1,
            e.decision,
            e.by,
            e.reason.replace('|', "\\|")
        );
    }
    if let Some((url, token_file)) = &i.console {
        let _ = writeln!(
            s,
            "\n## The console\n\nThe fleet kept running: watch it at <{url}> (sign in with the token in \
             `{token_file}`).",
        );
    }
    s
}

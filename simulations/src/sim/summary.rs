//! The run's report: a markdown summary and SVG charts, all a pure function of the [`Outcome`], so the
//! same seed gives the same bytes. Wall time and memory are not: they go into a separate `timing.md`.

use super::world::{ModelOutcome, Outcome};
use crate::report::svg::{self, Bar, Series};
use crate::report::table;
use outpost_controller::rollout::{Decision, Evidence, GateKind};
use std::fmt::Write as _;
use std::path::Path;

/// The report's files: (name, contents).
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub files: Vec<(String, String)>,
}

fn secs(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

fn span(ms: u64) -> String {
    let s = ms / 1000;
    format!("{} ({}h {:02}m {:02}s)", secs(ms), s / 3600, s / 60 % 60, s % 60)
}

pub fn render(o: &Outcome) -> Report {
    let mut md = String::new();
    let _ = writeln!(md, "# Fleet simulation: {}\n", o.scenario);
    if !o.description.is_empty() {
        let _ = writeln!(md, "{}\n", o.description.trim());
    }
    let verdict = if o.ok() { "PASS" } else { "FAIL" };
    let mut rows = vec![
        vec!["result".into(), format!("**{verdict}**: {}", o.expectation_note())],
        vec!["seed".into(), o.seed.to_string()],
        vec!["devices".into(), o.devices.to_string()],
    ];
    for m in &o.models {
        let of = if o.models.len() > 1 { format!(" ({})", m.model) } else { String::new() };
        rows.push(vec![format!("expected{of}"), m.expect.name().into()]);
        rows.push(vec![
            format!("rollout ended{of}"),
            m.phase.clone() + &m.phase_reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default(),
        ]);
        rows.push(vec![format!("release{of}"), format!("{} (previous: {})", m.target_label, m.base_label)]);
    }
    md.push_str(&table(&["", ""], &rows));

    md.push_str("\n## Figures\n\n");
    let started = o.rollout_started_ms.unwrap_or(0);
    let mut rows = vec![
        vec!["rollout started (virtual)".into(), secs(started)],
        vec![
            "time to converge (virtual, from the first rollout's start)".into(),
            o.converged_ms.map_or("did not converge".into(), |c| span(c - started)),
        ],
    ];
    for m in &o.models {
        if o.models.len() > 1 {
            rows.push(vec![
                format!("rollout of {} started (virtual)", m.model),
                m.rollout_started_ms.map_or("never".into(), secs),
            ]);
        }
        let exposed =
            if m.release_is_bad { "devices ever exposed to the bad model" } else { "devices that ran the release" };
        let exposed = if o.models.len() > 1 { format!("{} ({})", exposed, m.model) } else { exposed.into() };
        rows.push(vec![exposed, m.ever_on_target.to_string()]);
        rows.push(vec![format!("devices on {} at the end", m.target_label), m.final_on_target.to_string()]);
        rows.push(vec![format!("devices on {} at the end", m.base_label), m.final_on_base.to_string()]);
        if m.started_without > 0 {
            rows.push(vec![format!("devices without {} at the start", m.model), m.started_without.to_string()]);
            rows.push(vec![format!("devices the rollout added {} to", m.model), m.added.to_string()]);
            rows.push(vec![format!("devices without {} at the end", m.model), m.final_without.to_string()]);
        }
        let of = if o.models.len() > 1 { format!(" of {}", m.model) } else { String::new() };
        rows.push(vec![
            format!("devices whose install{of} failed (refused or rolled back by their watch)"),
            m.failed_installs.to_string(),
        ]);
    }
    rows.extend([
        vec!["invariant violations".into(), u32::from(o.violation.is_some()).to_string()],
        vec!["steps (events processed)".into(), o.steps.to_string()],
        vec!["virtual time simulated".into(), span(o.end_ms)],
        vec!["connections made (incl. reconnects)".into(), o.reconnects.to_string()],
        vec!["power losses mid-update".into(), o.power_losses.to_string()],
        vec!["controller restarts".into(), o.controller_restarts.to_string()],
        vec!["planner actions lost in the crash".into(), o.actions_lost_in_crash.to_string()],
    ]);
    md.push_str(&table(&["figure", "value"], &rows));
    if let Some(v) = &o.violation {
        let _ = writeln!(md, "\n**{v}**");
    }

    md.push_str("\n## Messages\n\n");
    md.push_str(
        "Bytes are real frame sizes: the codec's 4-byte header plus the postcard encoding of the \
         `outpost_protocol` message carried (telemetry uncompressed). A dropped message was sent and counted.\n\n",
    );
    let mut rows: Vec<Vec<String>> = o
        .traffic
        .kinds
        .iter()
        .map(|(k, v)| {
            vec![
                k.to_string(),
                v.sent.to_string(),
                v.dropped.to_string(),
                v.duplicated.to_string(),
                v.bytes.to_string(),
            ]
        })
        .collect();
    let t = o.traffic.total();
    rows.push(vec![
        "**total**".into(),
        t.sent.to_string(),
        t.dropped.to_string(),
        t.duplicated.to_string(),
        t.bytes.to_string(),
    ]);
    md.push_str(&table(&["topic", "sent", "dropped", "duplicated", "bytes"], &rows));
    let _ = writeln!(
        md,
        "\nChunks corrupted in transit: {}. Published to a disconnected device: {}.",
        o.traffic.corrupted_chunks, o.traffic.undeliverable
    );

    for m in &o.models {
        if o.models.len() > 1 {
            let _ = writeln!(md, "\n## Decisions: {}\n", m.model);
        } else {
            md.push_str("\n## Decisions\n\n");
        }
        let rows: Vec<Vec<String>> = m
            .history
            .iter()
            .map(|e| {
                vec![
                    secs((e.at - super::world::T0) * 1000),
                    (e.wave + 1).to_string(),
                    decision(e.decision),
                    e.reason.clone(),
                ]
            })
            .collect();
        md.push_str(&table(&["at (virtual)", "wave", "decision", "reason"], &rows));
    }

    let mut files = Vec::new();
    md.push_str("\n## Charts\n\n![devices per version](versions.svg)\n");
    files.push(("versions.svg".to_string(), versions_chart(o)));
    for (i, m) in o.models.iter().enumerate() {
        // The first model's charts keep their one-model names.
        let prefix = if i == 0 { String::new() } else { format!("{}-", m.model) };
        for (name, chart) in gate_charts(&o.scenario, m) {
            let name = format!("{prefix}{name}");
            let _ = writeln!(md, "\n![{name}]({name})");
            files.push((name, chart));
        }
    }
    files.insert(0, ("report.md".to_string(), md));
    Report { files }
}

/// One model's rollout in one line: how it ended and where the devices are.
pub fn model_line(m: &ModelOutcome) -> String {
    let without = if m.started_without > 0 {
        format!(", {} without it ({} at the start, {} had it added)", m.final_without, m.started_without, m.added)
    } else {
        String::new()
    };
    format!(
        "{}: {}{}; {} device(s) on {}, {} on {}{without}, {} failed install(s), {} ever ran the release",
        m.model,
        m.phase,
        m.phase_reason.as_ref().map(|r| format!(" ({r})")).unwrap_or_default(),
        m.final_on_target,
        m.target_label,
        m.final_on_base,
        m.base_label,
        m.failed_installs,
        m.ever_on_target
    )
}

/// A decision in words (waves 1-based, as people count them).
fn decision(d: Decision) -> String {
    match d {
        Decision::Advanced { to } => format!("advanced to wave {}", to + 1),
        Decision::GateFailed { rolled_back: true } => "gate failed: rolled back".into(),
        Decision::GateFailed { rolled_back: false } => "gate failed: paused".into(),
        Decision::Promoted { full } => if full { "promoted to completion" } else { "promoted" }.into(),
        Decision::Aborted { revert } => if revert { "aborted and reverted" } else { "aborted" }.into(),
        Decision::PausedInconclusive => "paused: inconclusive".into(),
        Decision::LateDevices => "late devices".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

fn versions_chart(o: &Outcome) -> String {
    let x = |ms: u64| ms as f64 / 60_000.0;
    let series = |name: String, f: &dyn Fn(&super::world::Sample) -> u32| Series {
        name,
        points: o.samples.iter().map(|s| (x(s.at_ms), f64::from(f(s)))).collect(),
    };
    let mut lines = Vec::new();
    for (i, m) in o.models.iter().enumerate() {
        lines.push(series(m.base_label.clone(), &|s| s.on.get(i).map_or(0, |p| p.0)));
        lines.push(series(m.target_label.clone(), &|s| s.on.get(i).map_or(0, |p| p.1)));
    }
    lines.push(series("updating".into(), &|s| s.updating));
    lines.push(series("disconnected".into(), &|s| s.offline));
    svg::line_chart(&format!("{}: devices per version", o.scenario), "virtual time (min)", "devices", &lines)
}

/// One chart per gate: the wave's figure (and the baseline's) at the decision that closed each wave.
fn gate_charts(scenario: &str, m: &ModelOutcome) -> Vec<(String, String)> {
    let mut last: Vec<(usize, &Evidence)> = Vec::new();
    for e in &m.history {
        let closes = matches!(
            e.decision,
            Decision::Advanced { .. }
                | Decision::GateFailed { .. }
                | Decision::Completed
                | Decision::PausedInconclusive
        );
        if let (true, Some(ev)) = (closes, e.evidence.as_ref()) {
            last.retain(|(w, _)| *w != ev.wave);
            last.push((ev.wave, ev));
        }
    }
    let kinds = [
        (GateKind::Quorum, "quorum", "share of the wave reporting"),
        (GateKind::InstallFailure, "install-failure", "failed ÷ finished installs"),
        (GateKind::ErrorRate, "error-rate", "errors ÷ requests"),
        (GateKind::LatencyP95, "latency-p95", "median p95 ÷ baseline"),
        (GateKind::ShadowAgreement, "shadow-agreement", "top-1 agreement"),
    ];
    let mut out = Vec::new();
    for (kind, file, y) in kinds {
        let mut bars = Vec::new();
        let mut threshold = None;
        for (wave, ev) in &last {
            let Some(g) = ev.gates.iter().find(|g| g.gate == kind) else { continue };
            let group = format!("wave {}", wave + 1);
            if let Some(v) = g.value {
                bars.push(Bar {
                    group: group.clone(),
                    name: format!("wave ({:?})", g.verdict).to_lowercase(),
                    value: v,
                });
            }
            if let Some(b) = g.baseline {
                bars.push(Bar { group, name: "baseline".into(), value: b });
            }
            threshold = Some(match kind {
                GateKind::LatencyP95 => (1.0 + g.threshold, "most allowed"),
                GateKind::ErrorRate => (g.baseline.unwrap_or(0.0) + g.threshold, "limit (last wave)"),
                GateKind::Quorum | GateKind::ShadowAgreement => (g.threshold, "least needed"),
                _ => (g.threshold, "most allowed"),
            });
        }
        if bars.is_empty() {
            continue;
        }
        let title = format!("{scenario}: {} {file} gate per wave", m.model);
        out.push((format!("gate-{file}.svg"), svg::bar_chart(&title, y, &bars, threshold)));
    }
    out
}

/// Wall time and memory: true of this run on this machine, so kept out of the reproducible report.
pub fn timing(o: &Outcome, wall: std::time::Duration) -> String {
    let mut md = String::from("# Run timing (not reproducible)\n\n");
    let rows = vec![
        vec!["wall time".into(), format!("{:.2} s", wall.as_secs_f64())],
        vec!["peak memory (VmHWM)".into(), peak_memory().unwrap_or_else(|| "unknown".into())],
        vec!["steps per second".into(), format!("{:.0}", o.steps as f64 / wall.as_secs_f64().max(1e-9))],
        vec!["virtual ÷ wall time".into(), format!("{:.0}×", o.end_ms as f64 / 1000.0 / wall.as_secs_f64().max(1e-9))],
    ];
    md.push_str(&table(&["", ""], &rows));
    md
}

/// The process's peak resident set, from `/proc/self/status` (Linux).
pub fn peak_memory() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(format!("{:.1} MiB", kb as f64 / 1024.0))
}

pub fn write(dir: &Path, report: &Report, timing: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, contents) in &report.files {
        std::fs::write(dir.join(name), contents)?;
    }
    std::fs::write(dir.join("timing.md"), timing)
}

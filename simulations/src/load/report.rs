//! The load run's report: the figures as markdown tables, and SVG charts of versions, memory and CPU over
//! time. Pure: marks in, file names and contents out.

use super::meter::{Mark, Span, span};
use crate::report::svg::{self, Series};
use crate::report::table;

/// One rollout as the run followed it.
#[derive(Debug, Clone, Default)]
pub struct RolloutRun {
    pub id: String,
    pub version: String,
    pub waves: String,
    pub start: Mark,
    pub end: Mark,
    /// Run seconds at which each wave was first seen.
    pub wave_starts: Vec<f64>,
    pub converged: bool,
    pub phase: String,
    pub advanced: usize,
    pub on_target: usize,
    pub failed_installs: usize,
    pub note: String,
}

impl RolloutRun {
    pub fn span(&self) -> Span {
        span(&self.start, &self.end)
    }
}

#[derive(Debug, Clone)]
pub struct Inputs {
    pub devices: usize,
    pub waves: String,
    pub bake: u64,
    pub window: u64,
    pub controller_separate: bool,
    /// digits 2.0.0 and vibration 1.1.0 rolled out at the same time (`--together`).
    pub together: bool,
    pub spawned_secs: f64,
    pub register_secs: Option<f64>,
    pub fds_agents: usize,
    pub serving: usize,
    /// Inference requests sent to the devices' local APIs over the run, and per device per second.
    pub requests: u64,
    pub rps: f64,
    /// Requests that failed (any HTTP error or no connection) while v2 rolled out, of how many.
    pub failed_during_v2: u64,
    /// The same failures by HTTP status (0: no connection, no answer within the sender's 5 s, or an
    /// unreadable one).
    pub failed_by_status: std::collections::BTreeMap<u16, u64>,
    pub requests_during_v2: u64,
    pub before_agents: Mark,
    pub after_register: Mark,
    pub quiet: (Mark, Mark),
    pub rollouts: Vec<RolloutRun>,
    pub timeline: Vec<Mark>,
    pub wall_secs: f64,
}

const MB: f64 = 1024.0 * 1024.0;

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / MB)
}

fn kib(bytes: u64) -> String {
    format!("{:.1} KiB", bytes as f64 / 1024.0)
}

/// Resident memory this process gained per device once the agents started, and the figure at the end.
pub fn memory_per_device(i: &Inputs) -> (u64, u64) {
    let n = i.devices.max(1) as u64;
    let last = i.timeline.last().map(|m| m.this.rss).unwrap_or(0);
    let base = i.before_agents.this.rss;
    (i.after_register.this.rss.saturating_sub(base) / n, last.saturating_sub(base) / n)
}

/// `: HTTP 503 ×3, no answer ×1`, or nothing when nothing failed.
fn statuses(by_status: &std::collections::BTreeMap<u16, u64>) -> String {
    let parts: Vec<String> = by_status
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(s, n)| if *s == 0 { format!("no answer ×{n}") } else { format!("HTTP {s} ×{n}") })
        .collect();
    if parts.is_empty() { String::new() } else { format!(": {}", parts.join(", ")) }
}

fn peak(i: &Inputs, f: impl Fn(&Mark) -> u64) -> u64 {
    i.timeline.iter().map(f).max().unwrap_or(0)
}

fn sys(s: &Span, k: &str) -> String {
    s.sys.get(k).map_or("n/a".into(), |v| v.to_string())
}

fn span_row(name: &str, s: &Span) -> Vec<String> {
    vec![
        name.into(),
        format!("{:.1}", s.secs),
        format!("{:.2}", s.broker_cores),
        s.controller_cores.map_or("in process".into(), |c| format!("{c:.2}")),
        format!("{:.2}", s.this_cores),
        s.sys.get("bytes/received").map_or("n/a".into(), |v| mb(*v)),
        s.sys.get("bytes/sent").map_or("n/a".into(), |v| mb(*v)),
        sys(s, "publish/messages/received"),
        sys(s, "publish/messages/sent"),
        format!("{:.1}", s.telemetry_per_sec),
    ]
}

pub fn render(i: &Inputs) -> Vec<(String, String)> {
    let mut md = String::new();
    let converged = !i.rollouts.is_empty() && i.rollouts.iter().all(|r| r.converged) && i.serving == i.devices;
    md.push_str(&format!(
        "# Outpost load run: {} devices\n\n**{}** in {:.0} s wall.\n\n",
        i.devices,
        if converged { "Converged" } else { "DID NOT CONVERGE" },
        i.wall_secs
    ));
    md.push_str(&format!(
        "Each device is a real `outpost-agent` (`outpost_agent::serve::serve`) in this process: its own data \
         directory, device id, MQTT connection to mosquitto, durable telemetry queue (redb, one fsync per record, \
         a window every {} s), update driver, model store with slots, and a tract runtime (1 inference worker, \
         batches of 1 so calibration only times three runs, no result cache) behind its local inference API on a loopback port. \
         Every device fetches the signed bundle in chunks from the controller over MQTT, verifies it, runs its \
         self-tests, activates and reports. The controller is the real daemon ({}); the broker is Debian's \
         mosquitto. An application on each device asks its local API about {} digits image(s) a second, and as \
         many vibration windows once that model is on the device (each device serves both models).\n\n",
        i.window,
        if i.controller_separate {
            "`outpost serve`, a separate process"
        } else {
            "in this process: its CPU and memory count in \"this process\""
        },
        i.rps
    ));

    let (per_dev_reg, per_dev_end) = memory_per_device(i);
    let mut rows = vec![
        vec!["devices".into(), i.devices.to_string()],
        vec!["agents started (spawned)".into(), format!("{:.1} s", i.spawned_secs)],
        vec![
            "all devices registered (online at the controller)".into(),
            i.register_secs.map_or("never".into(), |s| format!("{s:.1} s")),
        ],
    ];
    for r in &i.rollouts {
        let s = r.span();
        rows.push(vec![
            format!("rollout {} (waves {}) converged", r.version, r.waves),
            if r.converged { format!("{:.1} s", s.secs) } else { format!("no: {}", r.note) },
        ]);
    }
    rows.push(vec![
        "devices whose own API serves the last release of both models".into(),
        format!("{} of {}", i.serving, i.devices),
    ]);
    rows.push(vec![
        "inference requests failed while digits 2.0.0 and vibration 1.1.0 rolled out".into(),
        format!(
            "{} of {}{} ({} over the run)",
            i.failed_during_v2,
            i.requests_during_v2,
            statuses(&i.failed_by_status),
            i.requests
        ),
    ]);
    rows.push(vec!["broker peak RSS".into(), mb(peak(i, |m| m.broker.rss))]);
    if i.controller_separate {
        rows.push(vec!["controller peak RSS".into(), mb(peak(i, |m| m.controller.map_or(0, |c| c.rss)))]);
        let end = i.quiet.1.controller.map_or(0, |c| c.rss);
        rows.push(vec!["controller RSS per device at the end".into(), kib(end / i.devices.max(1) as u64)]);
    }
    rows.push(vec!["this process (agents) peak RSS".into(), mb(peak(i, |m| m.this.rss))]);
    rows.push(vec![
        "device listing (GET /api/v1/devices) at the end / largest".into(),
        format!("{} / {}", mb(i.quiet.1.listing_bytes), mb(peak(i, |m| m.listing_bytes))),
    ]);
    rows.push(vec![
        "memory per device after registering / at the end".into(),
        format!("{} / {}", kib(per_dev_reg), kib(per_dev_end)),
    ]);
    rows.push(vec![
        "file descriptors per device (this process)".into(),
        format!("{:.1}", i.fds_agents as f64 / i.devices.max(1) as f64),
    ]);
    let q = span(&i.quiet.0, &i.quiet.1);
    rows.push(vec![
        "telemetry ingest, steady state (records/s at the controller)".into(),
        format!("{:.1}", q.telemetry_per_sec),
    ]);
    let whole = span(&i.after_register, &i.quiet.1);
    rows.push(vec![
        "telemetry ingest, registration to end (records/s)".into(),
        format!("{:.1}", whole.telemetry_per_sec),
    ]);
    rows.push(vec!["telemetry records stored by the controller".into(), i.quiet.1.telemetry.to_string()]);
    let all = span(&i.before_agents, &i.quiet.1);
    for (k, label) in [("bytes/received", "bytes into the broker"), ("bytes/sent", "bytes out of the broker")] {
        rows.push(vec![label.into(), all.sys.get(k).map_or("n/a".into(), |v| mb(*v))]);
    }
    md.push_str("## Figures\n\n");
    md.push_str(&table(&["what", "value"], &rows));

    md.push_str("\n## Per phase\n\nCPU as cores busy on average (this machine has 2). Bytes and publishes are mosquitto's own `$SYS/broker` counters.");
    if i.together {
        md.push_str(" digits 2.0.0 and vibration 1.1.0 rolled out at the same time: their spans overlap, so what both moved counts in both rows.");
    }
    md.push_str("\n\n");
    let mut phases = vec![span_row("registration", &span(&i.before_agents, &i.after_register))];
    for r in &i.rollouts {
        phases.push(span_row(&format!("rollout {}", r.version), &r.span()));
    }
    phases.push(span_row("quiet (telemetry only)", &q));
    md.push_str(&table(
        &[
            "phase",
            "s",
            "broker",
            "controller",
            "this process",
            "bytes in",
            "bytes out",
            "publishes in",
            "publishes out",
            "telemetry rec/s",
        ],
        &phases,
    ));

    md.push_str("\n## Rollouts\n\n");
    let rrows: Vec<Vec<String>> = i
        .rollouts
        .iter()
        .map(|r| {
            let waves: Vec<String> = r.wave_starts.iter().map(|t| format!("{:.0}", t - r.start.at)).collect();
            vec![
                r.id.clone(),
                r.waves.clone(),
                r.phase.clone(),
                r.advanced.to_string(),
                waves.join(", "),
                format!("{} of {}", r.on_target, i.devices),
                r.failed_installs.to_string(),
                format!("{:.1}", r.span().secs),
            ]
        })
        .collect();
    md.push_str(&table(
        &["rollout", "waves", "phase", "advances", "wave starts (s)", "on target", "failed installs", "converge s"],
        &rrows,
    ));
    md.push_str(&format!(
        "\nGates: install failures ≤ 2 %, quorum 80 % of the wave reporting; bake {} s per \
         wave; agents watch 2 s before committing.\n\n![versions](versions.svg)\n\n\
         ![memory](memory.svg)\n\n![cpu](cpu.svg)\n",
        i.bake
    ));
    vec![
        ("summary.md".into(), md),
        ("versions.svg".into(), versions_chart(i)),
        ("memory.svg".into(), memory_chart(i)),
        ("cpu.svg".into(), cpu_chart(i)),
    ]
}

fn versions_chart(i: &Inputs) -> String {
    let mut names: Vec<String> = i.timeline.iter().flat_map(|m| m.versions.keys().cloned()).collect();
    names.sort();
    names.dedup();
    let mut series: Vec<Series> = names
        .iter()
        .map(|v| Series {
            name: v.clone(),
            points: i.timeline.iter().map(|m| (m.at, f64::from(m.versions.get(v).copied().unwrap_or(0)))).collect(),
        })
        .collect();
    series.push(Series { name: "online".into(), points: i.timeline.iter().map(|m| (m.at, m.online as f64)).collect() });
    svg::line_chart("Devices per running version (controller's view)", "seconds", "devices", &series)
}

fn memory_chart(i: &Inputs) -> String {
    let pts = |f: &dyn Fn(&Mark) -> Option<u64>| {
        i.timeline.iter().filter_map(|m| f(m).map(|b| (m.at, b as f64 / MB))).collect()
    };
    let mut series = vec![
        Series { name: "mosquitto".into(), points: pts(&|m| Some(m.broker.rss)) },
        Series { name: "this process (agents)".into(), points: pts(&|m| Some(m.this.rss)) },
    ];
    if i.controller_separate {
        series.push(Series { name: "controller".into(), points: pts(&|m| m.controller.map(|c| c.rss)) });
    }
    svg::line_chart("Resident memory", "seconds", "MB", &series)
}

fn cpu_chart(i: &Inputs) -> String {
    let rate = |f: &dyn Fn(&Span) -> Option<f64>| -> Vec<(f64, f64)> {
        i.timeline.windows(2).filter_map(|w| f(&span(&w[0], &w[1])).map(|c| (w[1].at, c * 100.0))).collect()
    };
    let mut series = vec![
        Series { name: "mosquitto".into(), points: rate(&|s| Some(s.broker_cores)) },
        Series { name: "this process (agents)".into(), points: rate(&|s| Some(s.this_cores)) },
    ];
    if i.controller_separate {
        series.push(Series { name: "controller".into(), points: rate(&|s| s.controller_cores) });
    }
    svg::line_chart("CPU (100 % = one core)", "seconds", "% of a core", &series)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::procstat::Sample;

    fn mark(at: f64, rss: u64) -> Mark {
        Mark { at, this: Sample { rss, ..Sample::default() }, ..Mark::default() }
    }

    #[test]
    fn memory_per_device_is_the_growth_of_this_process_over_the_fleet() {
        let i = Inputs {
            devices: 10,
            waves: "100%".into(),
            bake: 1,
            window: 1,
            controller_separate: false,
            together: false,
            spawned_secs: 0.0,
            register_secs: Some(1.0),
            fds_agents: 50,
            serving: 10,
            requests: 0,
            rps: 0.1,
            failed_during_v2: 0,
            failed_by_status: Default::default(),
            requests_during_v2: 0,
            before_agents: mark(0.0, 1000),
            after_register: mark(1.0, 11_000),
            quiet: (mark(2.0, 0), mark(3.0, 0)),
            rollouts: vec![],
            timeline: vec![mark(0.0, 1000), mark(3.0, 21_000)],
            wall_secs: 3.0,
        };
        assert_eq!(memory_per_device(&i), (1000, 2000));
        let files = render(&i);
        assert_eq!(files.len(), 4);
        assert!(files[0].1.contains("DID NOT CONVERGE"), "no rollouts ran");
    }
}

//! 32 concurrent clients: batching off and on (over HTTP, and in-process for digits), and shadow
//! evaluation off and on (over HTTP).

use crate::http::{self, Agent, AgentSettings};
use crate::models::BenchModel;
use crate::report::{Summary, Table, dur, rate, ratio};
use crate::{CLIENTS, Counts, Verdict, parts, verdict};
use std::time::Duration;

/// Counters read from `/metrics` over the timed part of a run.
#[derive(Debug)]
struct Metrics {
    rows_per_run: f64,
    shadow_compared: f64,
    shadow_skipped: f64,
}

/// Runs the `CLIENTS`-client load against a fresh agent; returns the summary, failures, the agent (for
/// its status) and the `/metrics` deltas.
fn load_run(
    m: &BenchModel,
    s: &AgentSettings,
    per_client: usize,
    candidate: bool,
) -> anyhow::Result<(Summary, usize, Agent, Metrics)> {
    let cand = candidate.then(|| (&m.candidate.0[..], &m.candidate.1));
    let agent = Agent::start(s, (&m.bytes, &m.manifest), cand)?;
    let tokio_rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let before = agent.metrics()?;
    let (summary, errors) = tokio_rt.block_on(http::clients(agent.addr, m, CLIENTS, per_client, 1))?;
    let after = agent.metrics()?;
    let delta = |k: &str| after.get(k).copied().unwrap_or(0.0) - before.get(k).copied().unwrap_or(0.0);
    let metrics = Metrics {
        rows_per_run: delta("outpost_batch_rows_sum") / delta("outpost_batch_rows_count").max(1.0),
        shadow_compared: after.get("outpost_shadow_compared_total").copied().unwrap_or(0.0),
        shadow_skipped: delta("outpost_shadow_skipped_total"),
    };
    Ok((summary, errors, agent, metrics))
}

/// The three batching settings compared, for `workers` inference threads.
fn settings(workers: usize) -> [(&'static str, AgentSettings); 3] {
    let off = AgentSettings { workers, max_batch: 1, max_delay: None, shadow_percent: None };
    let on = AgentSettings { max_batch: 8, ..off };
    let no_wait = AgentSettings { max_delay: Some(Duration::ZERO), ..on };
    [("off", off), ("on", on), ("on, max_delay 0", no_wait)]
}

pub fn batching_table(models: &[&(BenchModel, Counts)]) -> anyhow::Result<Vec<Verdict>> {
    println!("## {CLIENTS} concurrent clients over HTTP: batching\n");
    println!(
        "Each client is a tokio task (all on one client thread) with its own keep-alive connection, sending \
         its requests one after the other; throughput counts answered requests over the wall time. \
         `on` = max_batch 8, calibrated at activation, default max_delay (500 µs).\n"
    );
    let mut table = Table::new(&[
        "model",
        "workers",
        "batching",
        "max batch kept",
        "rows/run",
        "throughput",
        "p50",
        "p95",
        "vs off",
        "errors",
    ]);
    let mut calib = Vec::new();
    let mut verdicts = Vec::new();
    for (m, c) in models {
        for workers in [1, 2] {
            let mut base = None;
            for (label, s) in settings(workers) {
                let (sum, errors, agent, metrics) = load_run(m, &s, c.per_client, false)?;
                let status = agent.status()?;
                drop(agent);
                let kept = status["active"]["max_batch"].as_u64().unwrap_or(0);
                let vs = sum.throughput / *base.get_or_insert(sum.throughput);
                table.row(vec![
                    m.label.clone(),
                    workers.to_string(),
                    label.into(),
                    kept.to_string(),
                    format!("{:.2}", metrics.rows_per_run),
                    rate(sum.throughput),
                    dur(sum.median),
                    dur(sum.p95),
                    ratio(vs),
                    errors.to_string(),
                ]);
                if label == "on" {
                    verdicts.push(batching_verdict(m, workers, "HTTP", vs));
                    let per_row = &status["active"]["calibration_us_per_row"];
                    let cell = |b: &str| per_row[b].as_f64().map_or("–".into(), |us| format!("{us:.0}"));
                    let who = format!("{} (workers {workers} run)", m.label);
                    calib.push(vec![who, cell("1"), cell("2"), cell("4"), cell("8"), kept.to_string()]);
                }
            }
        }
    }
    table.print();
    println!("Calibration at activation (µs per row at each compiled batch size; sizes above the best are dropped):\n");
    let mut t = Table::new(&["model", "batch 1", "batch 2", "batch 4", "batch 8", "kept"]);
    for row in calib {
        t.row(row);
    }
    t.print();
    Ok(verdicts)
}

fn batching_verdict(m: &BenchModel, workers: usize, how: &str, vs: f64) -> Verdict {
    let need = if m.name == "digits" { 1.3 } else { 1.0 };
    verdict(
        &format!("batching on ≥ {need}× unbatched throughput, {CLIENTS} clients"),
        &format!("{} ({how}, workers {workers})", m.label),
        ratio(vs),
        vs >= need,
    )
}

/// The same comparison without HTTP: `CLIENTS` tasks calling `Runtime::infer`.
pub fn batching_in_process(m: &BenchModel, c: Counts) -> anyhow::Result<Vec<Verdict>> {
    println!("## {CLIENTS} concurrent callers in-process (Runtime::infer, no HTTP): batching, {}\n", m.label);
    let mut t =
        Table::new(&["workers", "batching", "max batch kept", "rows/run", "throughput", "p50", "p95", "vs off"]);
    let mut verdicts = Vec::new();
    for workers in [1, 2] {
        let mut base = None;
        for (label, s) in settings(workers) {
            let (sum, kept, rows_per_run) = parts::in_process_clients(m, &s, CLIENTS, c.per_client * 2)?;
            let vs = sum.throughput / *base.get_or_insert(sum.throughput);
            t.row(vec![
                workers.to_string(),
                label.into(),
                kept.to_string(),
                format!("{rows_per_run:.2}"),
                rate(sum.throughput),
                dur(sum.median),
                dur(sum.p95),
                ratio(vs),
            ]);
            if label == "on" {
                verdicts.push(batching_verdict(m, workers, "in-process", vs));
            }
        }
    }
    t.print();
    Ok(verdicts)
}

pub fn shadow_table(models: &[(BenchModel, Counts)]) -> anyhow::Result<()> {
    println!("## {CLIENTS} concurrent clients over HTTP: shadow evaluation\n");
    println!(
        "workers 1, default batching (max_batch 8 calibrated, max_delay 500 µs); the candidate is digits-v2 for \
         digits, a second copy of the model otherwise. `compared` counts classifier rows compared (from \
         /metrics); `skipped` counts samples dropped because the shadow queue was full.\n"
    );
    let mut table = Table::new(&[
        "model",
        "shadow",
        "primary p50",
        "primary p95",
        "throughput",
        "compared",
        "skipped",
        "p95 vs off",
    ]);
    for (m, c) in models {
        let mut base = None;
        for (label, percent) in [("off", None), ("on, 10 % (default)", Some(10)), ("on, 100 %", Some(100))] {
            let s = AgentSettings { workers: 1, max_batch: 8, max_delay: None, shadow_percent: percent };
            let (sum, errors, agent, metrics) = load_run(m, &s, c.per_client, percent.is_some())?;
            drop(agent);
            if errors > 0 {
                println!("({} shadow {label}: {errors} failed requests)", m.label);
            }
            let p95_off = *base.get_or_insert(sum.p95);
            table.row(vec![
                m.label.clone(),
                label.into(),
                dur(sum.median),
                dur(sum.p95),
                rate(sum.throughput),
                format!("{:.0}", metrics.shadow_compared),
                format!("{:.0}", metrics.shadow_skipped),
                ratio(sum.p95.as_secs_f64() / p95_off.as_secs_f64()),
            ]);
        }
    }
    table.print();
    Ok(())
}

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
    let agent = Agent::start(s, (&m.nnef, &m.manifest), cand)?;
    let tokio_rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let before = agent.metrics()?;
    let (summary, errors) =
        tokio_rt.block_on(http::clients(agent.addr, m, http::Wire::Json, CLIENTS, per_client, 1))?;
    let after = agent.metrics()?;
    let delta = |k: &str| after.get(k).copied().unwrap_or(0.0) - before.get(k).copied().unwrap_or(0.0);
    let metrics = Metrics {
        rows_per_run: delta("outpost_batch_rows_sum") / delta("outpost_batch_rows_count").max(1.0),
        shadow_compared: after.get("outpost_shadow_compared_total").copied().unwrap_or(0.0),
        shadow_skipped: delta("outpost_shadow_skipped_total"),
    };
    Ok((summary, errors, agent, metrics))
}

/// The batching settings compared, for `workers` inference threads: off, on (the defaults: max_batch 8
/// calibrated, max_delay 0) and on with the old default max_delay of 500 µs. The last only matters where
/// calibration can keep a batch above 1, which the models exported with a fixed batch never do.
fn settings(workers: usize, with_wait: bool) -> Vec<(&'static str, AgentSettings)> {
    let off = AgentSettings { workers, max_batch: 1, max_delay: None, shadow_percent: None, threads: 1 };
    let on = AgentSettings { max_batch: 8, ..off };
    let waiting = AgentSettings { max_delay: Some(Duration::from_micros(500)), ..on };
    let mut v = vec![("off", off), ("on", on)];
    if with_wait {
        v.push(("on, max_delay 500 µs", waiting));
    }
    v
}

/// One repetition of one configuration.
#[derive(Debug)]
struct Rep {
    sum: Summary,
    errors: usize,
    kept: u64,
    metrics: Metrics,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Medians over repetitions: throughput, p50, p95, rows per run; the throughput range; kept sizes.
fn row_cells(reps: &[Rep], base_tp: f64) -> (Vec<String>, f64) {
    let tp = median(reps.iter().map(|r| r.sum.throughput).collect());
    let lo = reps.iter().map(|r| r.sum.throughput).fold(f64::INFINITY, f64::min);
    let hi = reps.iter().map(|r| r.sum.throughput).fold(0.0, f64::max);
    let secs = |f: fn(&Summary) -> Duration| {
        Duration::from_secs_f64(median(reps.iter().map(|r| f(&r.sum).as_secs_f64()).collect()))
    };
    let kept: Vec<String> = reps.iter().map(|r| r.kept.to_string()).collect();
    let vs = tp / base_tp;
    let cells = vec![
        kept.join(","),
        format!("{:.2}", median(reps.iter().map(|r| r.metrics.rows_per_run).collect())),
        rate(tp),
        format!("{}–{}", rate(lo), rate(hi)),
        dur(secs(|s| s.median)),
        dur(secs(|s| s.p95)),
        ratio(vs),
        reps.iter().map(|r| r.errors).sum::<usize>().to_string(),
    ];
    (cells, vs)
}

pub fn batching_table(models: &[&(BenchModel, Counts)]) -> anyhow::Result<Vec<Verdict>> {
    println!("## {CLIENTS} concurrent clients over HTTP: batching\n");
    println!(
        "Each client is a tokio task (all on one client thread) with its own keep-alive connection, sending \
         its requests one after the other; throughput counts answered requests over the wall time. \
         `on` = max_batch 8, calibrated at activation, default max_delay (0). Each configuration runs \
         `reps` times, interleaved with the others, on a fresh agent each time; the table shows medians and \
         the range of throughput, and the batch size calibration kept in each repetition.\n"
    );
    let mut table = Table::new(&[
        "model",
        "workers",
        "batching",
        "batch kept",
        "rows/run",
        "throughput",
        "range",
        "p50",
        "p95",
        "vs off",
        "errors",
    ]);
    let mut calib = Vec::new();
    let mut verdicts = Vec::new();
    for (m, c) in models {
        for workers in [1, 2] {
            let configs = settings(workers, m.name == "digits");
            let mut reps: Vec<Vec<Rep>> = configs.iter().map(|_| Vec::new()).collect();
            for rep in 0..c.reps {
                for (i, (label, s)) in configs.iter().enumerate() {
                    let (sum, errors, agent, metrics) = load_run(m, s, c.per_client, false)?;
                    let status = agent.status()?;
                    drop(agent);
                    let kept = status["models"][m.name]["active"]["max_batch"].as_u64().unwrap_or(0);
                    if *label == "on" && rep == 0 {
                        let per_row = &status["models"][m.name]["active"]["calibration_us_per_row"];
                        let cell = |b: &str| per_row[b].as_f64().map_or("–".into(), |us| format!("{us:.0}"));
                        let who = format!("{} (workers {workers} run)", m.label);
                        calib.push(vec![who, cell("1"), cell("2"), cell("4"), cell("8"), kept.to_string()]);
                    }
                    reps[i].push(Rep { sum, errors, kept, metrics });
                }
            }
            let base_tp = median(reps[0].iter().map(|r| r.sum.throughput).collect());
            for ((label, _), reps) in configs.iter().zip(&reps) {
                let (cells, vs) = row_cells(reps, base_tp);
                let mut row = vec![m.label.clone(), workers.to_string(), (*label).into()];
                row.extend(cells);
                table.row(row);
                if *label == "on" {
                    verdicts.push(batching_verdict(m, workers, "HTTP", vs, reps));
                }
            }
        }
    }
    table.print();
    println!(
        "Calibration at activation, first repetition (µs per row at each compiled batch size; the agent keeps sizes up to the smallest within 5 % of the best):\n"
    );
    let mut t = Table::new(&["model", "batch 1", "batch 2", "batch 4", "batch 8", "kept"]);
    for row in calib {
        t.row(row);
    }
    t.print();
    Ok(verdicts)
}

/// A ratio from runs where calibration kept batch 1 every time compares two identical configurations:
/// it is noise, and said so rather than marked met or missed.
fn batching_verdict(m: &BenchModel, workers: usize, how: &str, vs: f64, on: &[Rep]) -> Verdict {
    let need = if m.name == "digits" { 1.3 } else { 1.0 };
    let mut v = verdict(
        &format!("batching on ≥ {need}× unbatched throughput, {CLIENTS} clients"),
        &format!("{} ({how}, workers {workers})", m.label),
        ratio(vs),
        vs >= need,
    );
    if on.iter().all(|r| r.kept == 1) {
        v[3] = "n/a: calibration kept batch 1, so `on` ran as `off`".into();
    }
    v
}

/// The same comparison without HTTP: `CLIENTS` tasks calling `Runtime::infer`.
pub fn batching_in_process(m: &BenchModel, c: Counts) -> anyhow::Result<Vec<Verdict>> {
    println!("## {CLIENTS} concurrent callers in-process (Runtime::infer, no HTTP): batching, {}\n", m.label);
    let mut t = Table::new(&[
        "workers",
        "batching",
        "batch kept",
        "rows/run",
        "throughput",
        "range",
        "p50",
        "p95",
        "vs off",
        "errors",
    ]);
    let mut verdicts = Vec::new();
    for workers in [1, 2] {
        let configs = settings(workers, true);
        let mut reps: Vec<Vec<Rep>> = configs.iter().map(|_| Vec::new()).collect();
        for _ in 0..c.reps {
            for (i, (_, s)) in configs.iter().enumerate() {
                let (sum, kept, rows_per_run) = parts::in_process_clients(m, s, CLIENTS, c.per_client)?;
                let metrics = Metrics { rows_per_run, shadow_compared: 0.0, shadow_skipped: 0.0 };
                reps[i].push(Rep { sum, errors: 0, kept: kept as u64, metrics });
            }
        }
        let base_tp = median(reps[0].iter().map(|r| r.sum.throughput).collect());
        for ((label, _), reps) in configs.iter().zip(&reps) {
            let (cells, vs) = row_cells(reps, base_tp);
            let mut row = vec![workers.to_string(), (*label).into()];
            row.extend(cells);
            t.row(row);
            if *label == "on" {
                verdicts.push(batching_verdict(m, workers, "in-process", vs, reps));
            }
        }
    }
    t.print();
    Ok(verdicts)
}

pub fn shadow_table(models: &[&(BenchModel, Counts)]) -> anyhow::Result<()> {
    println!("## {CLIENTS} concurrent clients over HTTP: shadow evaluation\n");
    println!(
        "workers 1, default batching (max_batch 8 calibrated, max_delay 0); the candidate is digits-v2 for \
         digits, a second copy of the model otherwise. Medians over the repetitions. `compared` counts \
         classifier rows compared (from /metrics; mobilenet_v2's fixed-batch `[1,1000]` rows count as a \
         classifier's); `skipped` counts samples dropped because the shadow queue was full.\n"
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
        "errors",
    ]);
    for (m, c) in models {
        let configs = [("off", None), ("on, 10 % (default)", Some(10)), ("on, 100 %", Some(100))];
        let mut reps: Vec<Vec<Rep>> = configs.iter().map(|_| Vec::new()).collect();
        for _ in 0..c.reps {
            for (i, (_, percent)) in configs.iter().enumerate() {
                let s =
                    AgentSettings { workers: 1, max_batch: 8, max_delay: None, shadow_percent: *percent, threads: 1 };
                let (sum, errors, agent, metrics) = load_run(m, &s, c.per_client, percent.is_some())?;
                drop(agent);
                reps[i].push(Rep { sum, errors, kept: 0, metrics });
            }
        }
        let p95 = |reps: &[Rep]| median(reps.iter().map(|r| r.sum.p95.as_secs_f64()).collect());
        let p95_off = p95(&reps[0]);
        for ((label, _), reps) in configs.iter().zip(&reps) {
            let p50 = median(reps.iter().map(|r| r.sum.median.as_secs_f64()).collect());
            table.row(vec![
                m.label.clone(),
                (*label).into(),
                dur(Duration::from_secs_f64(p50)),
                dur(Duration::from_secs_f64(p95(reps))),
                rate(median(reps.iter().map(|r| r.sum.throughput).collect())),
                format!("{:.0}", median(reps.iter().map(|r| r.metrics.shadow_compared).collect())),
                format!("{:.0}", median(reps.iter().map(|r| r.metrics.shadow_skipped).collect())),
                ratio(p95(reps) / p95_off),
                reps.iter().map(|r| r.errors).sum::<usize>().to_string(),
            ]);
        }
    }
    table.print();
    Ok(())
}

//! `inference.threads` 1 against 2 (issue 13): tract's multithreaded matrix products (the agent's
//! `multithread` feature: a rayon pool shared by the workers), at batch 1 and under concurrent in-process
//! callers; and the int8 (QDQ) MobileNetV2 beside its FP32 original, with onnxruntime at 1 and 2 threads
//! on the same inputs.

use crate::http::{self, AgentSettings};
use crate::latency;
use crate::models::{self, BenchModel, Prep};
use crate::report::{Summary, Table, dur, rate, ratio};
use crate::{CLIENTS, Counts, parts};
use outpost_agent::runtime::Runtime;

/// The thread counts this build can run: 2 only with the `multithread` feature (config validation refuses
/// it otherwise, and the runtime would run single-threaded).
fn thread_counts() -> &'static [usize] {
    if cfg!(feature = "multithread") { &[1, 2] } else { &[1] }
}

fn settings(workers: usize, threads: usize) -> AgentSettings {
    AgentSettings { workers, max_batch: 1, max_delay: None, shadow_percent: None, threads }
}

/// Per model: (b) at 1 thread and (d) onnxruntime at 1 thread, for the int8/FP32 comparison.
struct Medians {
    label: String,
    b1: Summary,
    d1: Option<Summary>,
}

pub fn tables(runs: &[&(BenchModel, Counts)]) -> anyhow::Result<()> {
    if !cfg!(feature = "multithread") {
        println!(
            "(inference.threads 2 skipped: this bench was built without the agent's `multithread` feature; \
             run it with `--features outpost-agent/multithread`)\n"
        );
    }
    println!("## inference.threads: sequential requests at batch 1\n");
    println!(
        "(b) is the agent runtime in-process (workers 1, max_batch 1) at each `inference.threads`; (a) and \
         (d) as above. Ratios against (b) at 1 thread.\n"
    );
    let mut t = Table::new(&["model", "path", "median", "p95", "throughput", "vs (b) 1 thread", "vs (d) 1 thread"]);
    let mut medians = Vec::new();
    for (m, c) in runs {
        let (plan, _) = models::prepare(&m.bytes, &m.shape1, Prep::Concrete)?;
        let reference = models::run_once(&plan, &m.shape1, &m.rows[0])?;
        drop(plan);
        let mut rows =
            vec![("(a) tract direct, 1 thread".to_owned(), Some(latency::direct(m, Prep::Concrete, c.seq)?.0))];
        let mut b1 = None;
        for &threads in thread_counts() {
            let (b, _) = latency::in_process(m, &settings(1, threads), true, c.seq, &reference)?;
            b1.get_or_insert(b);
            rows.push((format!("(b) agent in-process, inference.threads {threads}"), Some(b)));
        }
        reset_executor();
        let ort_n = if m.name == "digits" { c.seq.max(10_000) } else { c.seq };
        let d1 = latency::ort(m, ort_n, 1);
        rows.push(("(d) onnxruntime, 1 thread".into(), d1));
        rows.push(("(d) onnxruntime, 2 threads".into(), latency::ort(m, ort_n, 2)));
        let b1 = b1.expect("threads 1 always runs");
        for (path, s) in rows {
            let Some(s) = s else {
                t.row(vec![m.label.clone(), path, "skipped".into()]);
                continue;
            };
            t.row(vec![
                m.label.clone(),
                path,
                dur(s.median),
                dur(s.p95),
                rate(s.throughput),
                ratio(s.median.as_secs_f64() / b1.median.as_secs_f64()),
                d1.map_or("–".into(), |d| ratio(s.median.as_secs_f64() / d.median.as_secs_f64())),
            ]);
        }
        medians.push(Medians { label: m.label.clone(), b1, d1 });
    }
    t.print();
    concurrent(runs)?;
    int8_summary(&medians);
    Ok(())
}

/// `CLIENTS` in-process callers (no HTTP), batching off, at each worker count and thread count; each
/// configuration `reps` times, interleaved; medians.
fn concurrent(runs: &[&(BenchModel, Counts)]) -> anyhow::Result<()> {
    println!("## inference.threads: {CLIENTS} concurrent in-process callers (Runtime::infer, no HTTP, max_batch 1)\n");
    let mut t = Table::new(&["model", "workers", "threads", "throughput", "range", "p50", "p95", "vs threads 1"]);
    for (m, c) in runs {
        for workers in [1, 2] {
            let mut reps: Vec<Vec<Summary>> = thread_counts().iter().map(|_| Vec::new()).collect();
            for _ in 0..c.reps {
                for (k, &threads) in thread_counts().iter().enumerate() {
                    reps[k].push(parts::in_process_clients(m, &settings(workers, threads), CLIENTS, c.per_client)?.0);
                }
            }
            let median = |v: &[Summary], f: fn(&Summary) -> f64| {
                let mut x: Vec<f64> = v.iter().map(f).collect();
                x.sort_by(f64::total_cmp);
                x[x.len() / 2]
            };
            let base = median(&reps[0], |s| s.throughput);
            for (k, &threads) in thread_counts().iter().enumerate() {
                let tp = median(&reps[k], |s| s.throughput);
                let lo = reps[k].iter().map(|s| s.throughput).fold(f64::INFINITY, f64::min);
                let hi = reps[k].iter().map(|s| s.throughput).fold(0.0, f64::max);
                let secs = |f: fn(&Summary) -> f64| dur(std::time::Duration::from_secs_f64(median(&reps[k], f)));
                t.row(vec![
                    m.label.clone(),
                    workers.to_string(),
                    threads.to_string(),
                    rate(tp),
                    format!("{}–{}", rate(lo), rate(hi)),
                    secs(|s| s.median.as_secs_f64()),
                    secs(|s| s.p95.as_secs_f64()),
                    ratio(tp / base),
                ]);
            }
        }
    }
    reset_executor();
    t.print();
    Ok(())
}

/// int8 against FP32, when both MobileNetV2 files ran: the agent and onnxruntime, 1 thread each.
fn int8_summary(medians: &[Medians]) {
    let find = |label: &str| medians.iter().find(|m| m.label == label);
    let (Some(fp32), Some(int8)) = (find("mobilenet_v2"), find("mobilenet_v2 int8")) else { return };
    println!("## int8 (QDQ) against FP32, mobilenet_v2, batch 1, 1 thread\n");
    let mut t = Table::new(&["runtime", "FP32 median", "int8 median", "int8 / FP32"]);
    let row = |name: &str, a: Summary, b: Summary| {
        vec![name.into(), dur(a.median), dur(b.median), ratio(b.median.as_secs_f64() / a.median.as_secs_f64())]
    };
    t.row(row("(b) agent in-process (tract, NNEF)", fp32.b1, int8.b1));
    if let (Some(a), Some(b)) = (fp32.d1, int8.d1) {
        t.row(row("(d) onnxruntime", a, b));
    }
    t.print();
}

/// tract's executor is process-wide and the last runtime started sets it: leave it single-threaded, as the
/// other tables measure it.
fn reset_executor() {
    Runtime::start(outpost_agent::serve::runtime_config(&http::bench_config(&settings(1, 1)))).shutdown();
}

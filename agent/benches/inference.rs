//! Inference benchmark: the same inputs through (a) tract called directly, (b) the agent runtime in-process,
//! (c) the agent over local HTTP and (d) onnxruntime (Python, 1 thread); then 32 concurrent HTTP clients
//! with batching off and on, and with shadow evaluation off and on; and tract preparation options. Then
//! typed inputs against onnxruntime, and `inference.threads` 1 against 2 with the int8 (QDQ) MobileNetV2.
//! Prints Markdown tables and ratios; asserts no timing (BENCHMARKS.md holds the figures and the targets).
//!
//! ```sh
//! cargo bench --workspace --bench inference --features outpost-agent/multithread
//! ```
//! `OUTPOST_BENCH_SCALE=0.2` scales every iteration count (quick look); `OUTPOST_BENCH_ONLY=digits` (or
//! `mobilenet`, `typed`, `threads`) runs one part. Without the `multithread` feature the threads tables
//! show 1 thread only. The result cache is off everywhere, so no figure is a cache hit.

#[path = "inference/http.rs"]
mod http;
#[path = "inference/latency.rs"]
mod latency;
#[path = "inference/load.rs"]
mod load;
#[path = "inference/models.rs"]
mod models;
#[path = "inference/parts.rs"]
mod parts;
#[path = "inference/report.rs"]
mod report;
#[path = "inference/threads.rs"]
mod threads;
#[path = "inference/typed.rs"]
mod typed;

use models::BenchModel;
use report::Table;
use std::path::Path;
use std::time::Duration;

/// Concurrent clients in the batching and shadow tables.
const CLIENTS: usize = 32;
/// The calibration budget `install::load_slot` gives a model at activation.
const CALIBRATION: Duration = Duration::from_millis(300);
const ORT_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/ort_bench.py");

/// Iteration counts for one model (before `OUTPOST_BENCH_SCALE`).
#[derive(Debug, Clone, Copy)]
pub struct Counts {
    /// Sequential batch-1 requests per row of the latency table.
    pub seq: usize,
    /// Requests per client in the concurrency tables.
    pub per_client: usize,
    /// Repetitions of each concurrent configuration (medians are reported).
    pub reps: usize,
}

fn main() -> anyhow::Result<()> {
    let scale: f64 = std::env::var("OUTPOST_BENCH_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1.0);
    let only = std::env::var("OUTPOST_BENCH_ONLY").unwrap_or_default();
    let scaled = |c: Counts| Counts {
        seq: ((c.seq as f64 * scale) as usize).max(10),
        per_client: ((c.per_client as f64 * scale) as usize).max(2),
        reps: c.reps,
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_owned();
    let tmp = std::env::temp_dir().join(format!("outpost-bench-inputs-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    machine();
    let (started, cpu0) = (std::time::Instant::now(), cpu_seconds());

    // The main tables run per model; the threads tables need both models too.
    let part = |name: &str| only.is_empty() || only == name;
    let mut runs: Vec<(BenchModel, Counts)> = Vec::new();
    let mut batch_n: Option<(BenchModel, Counts)> = None;
    let mut int8: Option<(BenchModel, Counts)> = None;
    if part("digits") || part("threads") {
        let dir = root.join("simulations/models");
        let inputs = dir.join("digits-test-inputs.f32");
        let rows = models::read_rows(&inputs, 64)?;
        let m = BenchModel::new(
            "digits",
            "digits",
            &dir.join("digits-v1.onnx"),
            &dir.join("digits-v2.onnx"),
            rows,
            inputs,
        )?;
        runs.push((m, scaled(Counts { seq: 3000, per_client: 500, reps: 3 })));
    }
    if part("mobilenet") || part("threads") {
        let path = root.join("simulations/models/bench/mobilenet_v2.onnx");
        if path.exists() {
            let rows_file = tmp.join("mobilenet-inputs.f32");
            let rows = models::random_rows(20240616, 8, 3 * 224 * 224, &rows_file)?;
            let counts = scaled(Counts { seq: 150, per_client: 6, reps: 2 });
            let fixed = BenchModel::new("mobilenet_v2", "mobilenet_v2", &path, &path, rows.clone(), rows_file.clone())?;
            // The stand-in is exported with a fixed batch of 1; a copy with a symbolic batch lets the agent
            // batch it (and shows what a symbolic dimension costs tract).
            let sym = tmp.join("mobilenet_v2_batchN.onnx");
            let made = std::process::Command::new("python3")
                .args([ORT_SCRIPT, "--symbolic-batch"])
                .arg(&path)
                .arg(&sym)
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            if made {
                let m =
                    BenchModel::new("mobilenet_v2", "mobilenet_v2 [N]", &sym, &sym, rows.clone(), rows_file.clone())?;
                batch_n = Some((m, counts));
            } else {
                println!("(no symbolic-batch copy of mobilenet_v2: python3 with the `onnx` package is needed)\n");
            }
            runs.push((fixed, counts));
            // The int8 (QDQ) copy, in the threads tables only. A model the NNEF conversion refuses is a
            // finding, printed rather than fatal.
            let q = root.join("simulations/models/bench/mobilenet_v2_int8.onnx");
            if !q.exists() {
                println!("mobilenet_v2 int8 skipped: make it with make_models.py --mobilenet --int8\n");
            } else if part("threads") {
                match BenchModel::new("mobilenet_v2", "mobilenet_v2 int8", &q, &q, rows, rows_file) {
                    Ok(mut m) => {
                        // The agent runs bundle create's int8 rewrite (QDQ convolutions fused, onnxruntime's
                        // float requantization); tract direct runs the QDQ graph as tract-onnx reads it.
                        // Both round to the output's quantization steps (scale 0.022): allow 3 of them.
                        m.tolerance = 0.07;
                        int8 = Some((m, counts));
                    }
                    Err(e) => println!("mobilenet_v2 int8 does not load: {e:#}\n"),
                }
            }
        } else {
            println!(
                "mobilenet_v2 skipped: {} is missing. Make it with\n    python3 simulations/models/make_models.py --mobilenet\n",
                path.display()
            );
        }
    }

    let mut verdicts = Vec::new();
    let main_runs: Vec<&(BenchModel, Counts)> =
        runs.iter().filter(|(m, _)| part(if m.name == "digits" { "digits" } else { "mobilenet" })).collect();
    for (m, counts) in main_runs.iter().copied() {
        let batch_n = batch_n.as_ref().map(|(b, _)| b).filter(|_| m.name != "digits");
        verdicts.extend(latency::tables(m, *counts, batch_n)?);
    }
    if !main_runs.is_empty() {
        let mut load_models = main_runs.clone();
        load_models.extend(batch_n.as_ref());
        verdicts.extend(load::batching_table(&load_models)?);
        for (m, counts) in main_runs.iter().copied().filter(|(m, _)| m.name == "digits") {
            verdicts.extend(load::batching_in_process(m, *counts)?);
        }
        load::shadow_table(&main_runs)?;
    }
    if part("typed") {
        typed::table(&root, ((3000.0 * scale) as usize).max(10))?;
    }
    if part("threads") {
        let mut thread_runs: Vec<&(BenchModel, Counts)> = runs.iter().collect();
        thread_runs.extend(int8.as_ref());
        threads::tables(&thread_runs)?;
    }

    println!("## Targets\n");
    let mut t = Table::new(&["target", "model", "measured", "met"]);
    for v in verdicts {
        t.row(v);
    }
    t.print();
    println!("load average at the end: {}", loadavg());
    if let (Some((busy0, me0)), Some((busy1, me1))) = (cpu0, cpu_seconds()) {
        let others = (busy1 - busy0) - (me1 - me0);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let share = others / (started.elapsed().as_secs_f64() * cores) * 100.0;
        println!(
            "CPU used by other processes during the run: {others:.1} core-seconds ({share:.1} % of the machine); \
             figures from a run where this is above a few % are skewed."
        );
    }
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}

/// CPU time (seconds) the whole machine spent busy, and this process with its children (onnxruntime), from
/// `/proc`: the difference over the run is what other processes took, which skews every figure.
fn cpu_seconds() -> Option<(f64, f64)> {
    let tick = 100.0; // USER_HZ on Linux
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu: Vec<f64> = stat.lines().next()?.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal
    let busy = cpu.iter().enumerate().filter(|(i, _)| ![3, 4].contains(i)).take(6).map(|(_, v)| v).sum::<f64>();
    let me = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<f64> =
        me.rsplit_once(')')?.1.split_whitespace().skip(11).take(4).filter_map(|v| v.parse().ok()).collect();
    Some((busy / tick, fields.iter().sum::<f64>() / tick))
}

/// `/proc/loadavg`'s first three fields: anything else running skews every figure.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn machine() {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("# Outpost inference benchmark\n");
    println!("machine: {cores} CPUs, {cpu}; {} {}", std::env::consts::OS, std::env::consts::ARCH);
    println!("load average at start: {}", loadavg());
    if cfg!(debug_assertions) {
        println!("WARNING: built without optimisations; run it with `cargo bench`.");
    }
    println!();
}

/// One row of the targets table: target, model, measured, met.
pub type Verdict = Vec<String>;

pub fn verdict(target: &str, model: &str, measured: String, met: bool) -> Verdict {
    vec![target.into(), model.into(), measured, if met { "yes".into() } else { "**no**".into() }]
}

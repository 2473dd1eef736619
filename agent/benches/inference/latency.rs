//! Sequential requests at batch 1: (a) tract direct, (b) the agent runtime in-process, (c) the agent over
//! HTTP, (d) onnxruntime; tract's preparation options; and where the agent's extra time goes.

use crate::http::{self, Agent, AgentSettings, Client, Wire};
use crate::models::{self, BenchModel, Prep};
use crate::report::{Summary, Table, dur, rate, ratio};
use crate::{CALIBRATION, Counts, ORT_SCRIPT, Verdict, parts, verdict};
use anyhow::{Context, bail};
use outpost_agent::runtime::model::LoadedModel;
use outpost_agent::runtime::{InferRequest, InferResponse, InputTensor, Runtime, TensorData};
use outpost_protocol::manifest::{Dim, Manifest};
use std::time::{Duration, Instant};

/// Prints the latency, preparation and attribution tables of one model; returns its target verdicts.
pub fn tables(m: &BenchModel, c: Counts, batch_n: Option<&BenchModel>) -> anyhow::Result<Vec<Verdict>> {
    println!("## {}: sequential requests at batch 1 ({} each)\n", m.label, c.seq);
    let (plan, _) = models::prepare(&m.bytes, &m.shape1, Prep::Concrete)?;
    let reference = models::run_once(&plan, &m.shape1, &m.rows[0])?;
    drop(plan);
    let a = direct(m, Prep::Concrete, c.seq)?.0;
    let off = AgentSettings { workers: 1, max_batch: 1, max_delay: None, shadow_percent: None, threads: 1 };
    let b = in_process(m, &off, true, c.seq, &reference)?;
    let b_handed = in_process(m, &off, false, c.seq, &reference)?;
    let cc = over_http(m, &off, Wire::Json, c.seq, &reference)?;
    let cb = over_http(m, &off, Wire::Binary, c.seq, &reference)?;
    let mut rows: Vec<(String, Option<Summary>)> = vec![
        ("(a) tract direct (concrete [1,…] plan)".into(), Some(a)),
        ("(b) agent runtime in-process, max_batch 1".into(), Some(b.0)),
        ("(b) the same from a current-thread runtime (always handed to a worker)".into(), Some(b_handed.0)),
        ("(c) agent over HTTP, JSON, max_batch 1".into(), Some(cc.0)),
        ("(c) agent over HTTP, binary tensors, max_batch 1".into(), Some(cb.0)),
    ];
    // With a batch dimension the default config batches (max_batch 8, calibrated; max_delay 0). With the
    // old default max_delay of 500 µs a lone request waited that long for company.
    let batchable = matches!(m.manifest.interface.inputs[0].shape.first(), Some(Dim::Symbolic(_)));
    let mut defaults = Vec::new();
    if batchable {
        let default = AgentSettings { max_batch: 8, ..off };
        let waiting = AgentSettings { max_delay: Some(Duration::from_micros(500)), ..default };
        for (what, s) in [("default config", default), ("default config but max_delay 500 µs", waiting)] {
            let (bs, kept) = in_process(m, &s, true, c.seq, &reference)?;
            rows.push((format!("(b) agent runtime in-process, {what} (batch kept: {kept})"), Some(bs)));
            let (cs, kept) = over_http(m, &s, Wire::Json, c.seq, &reference)?;
            rows.push((format!("(c) agent over HTTP, JSON, {what} (batch kept: {kept})"), Some(cs)));
            defaults.push((what, bs, cs));
        }
    }
    let ort_n = if m.name == "digits" { c.seq.max(10_000) } else { c.seq };
    let d = ort(m, ort_n, 1);
    rows.push(("(d) onnxruntime, 1 thread".into(), d));
    rows.push(("(d) onnxruntime, 2 threads (for reference)".into(), ort(m, ort_n, 2)));
    let mut t = Table::new(&["path", "median", "p95", "throughput", "median vs (a)", "median vs (d)"]);
    for (name, s) in rows {
        let Some(s) = s else {
            t.row(vec![name, "skipped".into()]);
            continue;
        };
        t.row(vec![
            name,
            dur(s.median),
            dur(s.p95),
            rate(s.throughput),
            ratio(s.median.as_secs_f64() / a.median.as_secs_f64()),
            d.map_or("–".into(), |d| ratio(s.median.as_secs_f64() / d.median.as_secs_f64())),
        ]);
    }
    t.print();

    options(m, c, batch_n, &a)?;
    attribution(m, c, &a, &b.0, &cc.0)?;

    let vs_a = |s: &Summary| s.median.as_secs_f64() / a.median.as_secs_f64();
    let mut v = vec![verdict(
        "(b) median within 5 % of (a)",
        &format!("{} (max_batch 1)", m.label),
        ratio(vs_a(&b.0)),
        vs_a(&b.0) <= 1.05,
    )];
    for (what, bs, _) in defaults.iter().take(1) {
        v.push(verdict(
            "(b) median within 5 % of (a)",
            &format!("{} ({what})", m.label),
            ratio(vs_a(bs)),
            vs_a(bs) <= 1.05,
        ));
    }
    if m.name != "digits" {
        for (wire, s) in [("JSON", &cc.0), ("binary tensors", &cb.0)] {
            v.push(verdict(
                "(c) median within 1.3× of (a)",
                &format!("{} ({wire}, max_batch 1)", m.label),
                ratio(vs_a(s)),
                vs_a(s) <= 1.3,
            ));
        }
    }
    if let Some(d) = d {
        let vs_d = |s: &Summary| ratio(s.median.as_secs_f64() / d.median.as_secs_f64());
        v.push(vec![
            "report: median / onnxruntime 1 thread".into(),
            m.label.clone(),
            format!(
                "agent (c) JSON {}, (c) binary {}, agent (b) {}, tract (a) {}",
                vs_d(&cc.0),
                vs_d(&cb.0),
                vs_d(&b.0),
                vs_d(&a)
            ),
            "–".into(),
        ]);
    }
    Ok(v)
}

/// tract's preparation choices, each measured on tract directly.
fn options(m: &BenchModel, c: Counts, batch_n: Option<&BenchModel>, a: &Summary) -> anyhow::Result<()> {
    println!("### {}: tract preparation options (tract direct, sequential, batch 1)\n", m.label);
    let mut t = Table::new(&["preparation", "load + optimise", "median", "p95", "median vs (a)"]);
    let mut row = |name: &str, s: &Summary, load: Option<Duration>| {
        t.row(vec![
            name.into(),
            load.map_or("–".into(), dur),
            dur(s.median),
            dur(s.p95),
            ratio(s.median.as_secs_f64() / a.median.as_secs_f64()),
        ]);
    };
    let slow = (c.seq / 5).max(10);
    let (s, load) = direct(m, Prep::Concrete, c.seq)?;
    row("concrete [1,…], into_optimized (the agent's way; (a) again)", &s, Some(load));
    let sym_source = if m.name == "digits" { Some(m) } else { batch_n };
    if let Some(src) = sym_source {
        let (s, load) = direct(src, Prep::Symbolic, slow)?;
        row("symbolic batch N, into_optimized", &s, Some(load));
    }
    let (s, load) = direct(m, Prep::DeclutterOnly, slow)?;
    row("concrete, declutter only (no codegen)", &s, Some(load));
    let (s, load) = direct(m, Prep::SimpleOrder, c.seq)?;
    row("concrete, into_optimized, plan with skip_order_opt_ram", &s, Some(load));
    let s = direct_reused_state(m, c.seq)?;
    row("concrete, into_optimized, one state reused across runs", &s, None);
    t.print();
    Ok(())
}

/// Each piece of the request path on its own, to account for (b) − (a) and (c) − (b).
fn attribution(m: &BenchModel, c: Counts, a: &Summary, b: &Summary, cc: &Summary) -> anyhow::Result<()> {
    println!("### {}: where the agent's time goes (medians, each piece timed alone)\n", m.label);
    let mut t = Table::new(&["piece", "median", "p95"]);
    let mut row = |name: &str, s: &Summary| t.row(vec![name.into(), dur(s.median), dur(s.p95)]);
    row("tract run, concrete plan ((a))", a);
    let handoff = parts::queue_round_trip(c.seq, Duration::from_micros(20))?;
    row(
        "queue hand-off to a worker thread and back (a 20 µs job, its 20 µs taken off; only when a worker must run it)",
        &handoff,
    );
    row("drift statistics over every input value (the runtime before the change)", &parts::drift(m, c.seq, None));
    let sampled = parts::drift(m, c.seq, Some(4096));
    row("drift statistics over a strided sample of ≤ 4096 values (the runtime now)", &sampled);
    row("(b) − (a) for comparison", &diff(b, a));
    row("decode one request body (api::oip::InferRequestJson)", &parts::json_decode(m, c.seq));
    row("decode one binary request body (api::binary::decode_request)", &parts::binary_decode(m, c.seq));
    row("HTTP keep-alive round trip without inference (GET /v2/health/live)", &parts::http_floor(m, c.seq)?);
    row("(c) − (b) for comparison", &diff(cc, b));
    t.print();
    Ok(())
}

fn diff(x: &Summary, y: &Summary) -> Summary {
    Summary { median: x.median.saturating_sub(y.median), p95: x.p95.saturating_sub(y.p95), throughput: 0.0 }
}

fn warmup(n: usize) -> usize {
    (n / 10).clamp(3, 50)
}

/// (a): tract alone. Returns the summary and the load + optimise time.
pub fn direct(m: &BenchModel, prep: Prep, n: usize) -> anyhow::Result<(Summary, Duration)> {
    let (plan, load) = models::prepare(&m.bytes, &m.shape1, prep)?;
    for i in 0..warmup(n) {
        models::run_once(&plan, &m.shape1, &m.rows[i % m.rows.len()])?;
    }
    let mut lat = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        std::hint::black_box(models::run_once(&plan, &m.shape1, &m.rows[i % m.rows.len()])?);
        lat.push(t.elapsed());
    }
    Ok((Summary::new(lat, start.elapsed()), load))
}

fn direct_reused_state(m: &BenchModel, n: usize) -> anyhow::Result<Summary> {
    let (plan, _) = models::prepare(&m.bytes, &m.shape1, Prep::Concrete)?;
    let mut state = plan.spawn()?;
    for i in 0..warmup(n) {
        models::run_on_state(&mut state, &m.shape1, &m.rows[i % m.rows.len()])?;
    }
    let mut lat = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        std::hint::black_box(models::run_on_state(&mut state, &m.shape1, &m.rows[i % m.rows.len()])?);
        lat.push(t.elapsed());
    }
    Ok(Summary::new(lat, start.elapsed()))
}

/// (b): `Runtime::start` + `activate` + `infer`, from a tokio runtime like the agent's server (multi-thread,
/// 2 workers), where a quick model may run on the caller's thread; or from a current-thread runtime, where
/// every request is handed to a worker thread. Returns the summary and the batch size calibration kept.
pub fn in_process(
    m: &BenchModel,
    s: &AgentSettings,
    multi_thread: bool,
    n: usize,
    reference: &[f32],
) -> anyhow::Result<(Summary, usize)> {
    let request = |i: usize| InferRequest {
        model: m.name.to_owned(),
        inputs: vec![InputTensor {
            name: m.input.clone(),
            shape: m.shape1.clone(),
            data: TensorData::F32(m.rows[i % m.rows.len()].clone()),
        }],
        outputs: None,
    };
    let first = |r: &InferResponse| check(m, "(b)", r.outputs[0].data.as_f32().context("FP32 logits")?, reference);
    in_process_requests((&m.nnef, &m.manifest), s, multi_thread, n, request, first)
}

/// (b) for any model and requests: activates `model` (NNEF and its manifest) in a fresh runtime with
/// settings `s`, checks the answer to request 0 with `first`, then times `n` sequential requests made by
/// `request(i)` after a warm-up. Returns the summary and the batch size calibration kept.
pub fn in_process_requests(
    model: (&[u8], &Manifest),
    s: &AgentSettings,
    multi_thread: bool,
    n: usize,
    request: impl Fn(usize) -> InferRequest,
    first: impl FnOnce(&InferResponse) -> anyhow::Result<()>,
) -> anyhow::Result<(Summary, usize)> {
    let cfg = http::bench_config(s);
    let rt = Runtime::start(outpost_agent::serve::runtime_config(&cfg));
    let mut loaded = LoadedModel::load(model.0, model.1.clone(), s.max_batch)?;
    loaded.calibrate(CALIBRATION);
    let kept = loaded.max_rows();
    rt.activate(loaded);
    let tokio_rt = if multi_thread {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?
    } else {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    };
    let result = tokio_rt.block_on(async {
        first(&rt.infer(request(0)).await?)?;
        for i in 0..warmup(n) {
            rt.infer(request(i)).await?;
        }
        let mut lat = Vec::with_capacity(n);
        let start = Instant::now();
        for i in 0..n {
            let req = request(i);
            let t = Instant::now();
            std::hint::black_box(rt.infer(req).await?);
            lat.push(t.elapsed());
        }
        anyhow::Ok(Summary::new(lat, start.elapsed()))
    });
    rt.shutdown();
    Ok((result?, kept))
}

/// (c): `serve::serve` on loopback and one keep-alive client posting JSON bodies, or binary tensors.
fn over_http(
    m: &BenchModel,
    s: &AgentSettings,
    wire: Wire,
    n: usize,
    reference: &[f32],
) -> anyhow::Result<(Summary, usize)> {
    let agent = Agent::start(s, (&m.nnef, &m.manifest), None)?;
    let kept = agent.status()?["models"][m.name]["active"]["max_batch"].as_u64().unwrap_or(0) as usize;
    let addr = agent.addr;
    let tokio_rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let summary = tokio_rt.block_on(async {
        let mut client = Client::connect(addr).await?;
        let got: Vec<f32> = match wire {
            Wire::Json => {
                let body = client.infer(m.name, &m.bodies[0]).await?;
                let json: serde_json::Value = serde_json::from_slice(&body)?;
                json["outputs"][0]["data"]
                    .as_array()
                    .context("no outputs[0].data")?
                    .iter()
                    .map(|v| v.as_f64().unwrap_or(f64::NAN) as f32)
                    .collect()
            }
            Wire::Binary => {
                let (body, header_len) = &m.binary_bodies[0];
                let out = client.infer_binary(m.name, body, *header_len).await?;
                // The JSON header ends where its one value ends; the raw logits follow.
                let mut values = serde_json::Deserializer::from_slice(&out).into_iter::<serde_json::Value>();
                values.next().context("no JSON header")??;
                let raw = &out[values.byte_offset()..];
                raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
            }
        };
        check(m, "(c)", &got, reference)?;
        let (summary, errors) = http::clients(addr, m, wire, 1, n, warmup(n)).await?;
        if errors > 0 {
            bail!("{errors} failed requests in the sequential HTTP run");
        }
        anyhow::Ok(summary)
    })?;
    Ok((summary, kept))
}

/// (d): onnxruntime through `ort_bench.py`; `None` (and a note) when python3 or onnxruntime is missing.
pub fn ort(m: &BenchModel, n: usize, threads: usize) -> Option<Summary> {
    let args = [m.path.as_os_str(), m.rows_file.as_os_str()];
    ort_with(&args, n, threads)
}

/// `ort_bench.py ARGS... N THREADS`, its JSON line as a summary.
pub fn ort_with(args: &[&std::ffi::OsStr], n: usize, threads: usize) -> Option<Summary> {
    let out = std::process::Command::new("python3")
        .arg(ORT_SCRIPT)
        .args(args)
        .arg(n.to_string())
        .arg(threads.to_string())
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
            Summary::from_ort(&v)
        }
        Ok(o) => {
            println!("(onnxruntime skipped: {})\n", String::from_utf8_lossy(&o.stderr).trim());
            None
        }
        Err(e) => {
            println!("(onnxruntime skipped: python3: {e})\n");
            None
        }
    }
}

/// Every path must compute the same thing: compare with tract's own output for the first row.
pub fn check(m: &BenchModel, path: &str, got: &[f32], want: &[f32]) -> anyhow::Result<()> {
    let diff = models::max_abs_diff(got, want);
    if diff > m.tolerance {
        bail!("{} {path}: output differs from tract direct by {diff} (allowed {})", m.label, m.tolerance);
    }
    Ok(())
}

//! Typed inputs (issue 13): the fixtures of `simulations/models/typed/` (UINT8 camera, INT64 token ids with
//! a mask, BOOL flags, FP16 sensor) through the agent runtime in-process at batch 1, against onnxruntime on
//! the same samples (`ort_bench.py --typed`). The 640×640 detector is left out: its input is a formula the
//! tests rebuild, not a sample file both sides can read.

use crate::http::AgentSettings;
use crate::latency::{self, in_process_requests};
use crate::models;
use crate::report::{Table, dur, ratio};
use anyhow::Context;
use outpost_agent::runtime::{InferRequest, InputTensor, TensorData};
use outpost_protocol::Version;
use outpost_protocol::manifest::DType;
use serde_json::Value;
use std::ffi::OsStr;
use std::path::Path;

/// One input of a fixture: its name, batch-1 shape, and one tensor per sample.
struct Input {
    name: String,
    shape1: Vec<usize>,
    samples: Vec<TensorData>,
}

/// The fixture's inputs from `typed.json`, each sample file cut into its batch-1 rows.
fn inputs(dir: &Path, m: &Value) -> anyhow::Result<Option<Vec<Input>>> {
    let samples = m["samples"].as_u64().context("samples")? as usize;
    let mut out = Vec::new();
    for t in m["inputs"].as_array().context("inputs")? {
        let name = t["name"].as_str().context("input name")?.to_owned();
        let Some(file) = m["files"][&name].as_str() else { return Ok(None) };
        let dtype = t["datatype"].as_str().and_then(DType::parse).context("datatype")?;
        let dims = t["shape"].as_array().context("shape")?;
        let shape1: Vec<usize> = std::iter::once(Some(1))
            .chain(dims[1..].iter().map(|d| d.as_u64().map(|d| d as usize)))
            .collect::<Option<_>>()
            .context("a symbolic dimension after the batch")?;
        let bytes = std::fs::read(dir.join(file)).with_context(|| file.to_owned())?;
        let per = bytes.len() / samples;
        let rows = bytes.chunks_exact(per).map(|b| TensorData::from_le_bytes(dtype, b)).collect::<Result<_, _>>()?;
        out.push(Input { name, shape1, samples: rows });
    }
    Ok(Some(out))
}

/// Prints the typed-input table: `n` sequential batch-1 requests per model on each side.
pub fn table(root: &Path, n: usize) -> anyhow::Result<()> {
    let dir = root.join("simulations/models/typed");
    let index_path = dir.join("typed.json");
    let index: Value = serde_json::from_slice(&std::fs::read(&index_path).context("typed.json")?)?;
    println!("## Typed inputs: sequential requests at batch 1 ({n} each)\n");
    println!(
        "The agent runtime in-process (workers 1, max_batch 1, from a 2-thread tokio runtime, as (b) above) and \
         onnxruntime (1 thread) cycle through the same committed samples of each fixture.\n"
    );
    let mut t = Table::new(&["model", "inputs", "(b) median", "(b) p95", "(d) median", "(d) p95", "(b) / (d)"]);
    for m in index["models"].as_array().context("models")? {
        let name = m["name"].as_str().context("name")?;
        let Some(inputs) = inputs(&dir, m)? else { continue };
        let nnef = models::to_nnef(&std::fs::read(dir.join(m["file"].as_str().context("file")?))?)?;
        let manifest = models::manifest(name, Version::new(1, 0, 0), &nnef)?;
        let request = |i: usize| InferRequest {
            model: name.to_owned(),
            inputs: inputs
                .iter()
                .map(|x| InputTensor {
                    name: x.name.clone(),
                    shape: x.shape1.clone(),
                    data: x.samples[i % x.samples.len()].clone(),
                })
                .collect(),
            outputs: None,
        };
        let off = AgentSettings { workers: 1, max_batch: 1, max_delay: None, shadow_percent: None, threads: 1 };
        let (b, _) = in_process_requests((&nnef, &manifest), &off, true, n, request, |_| Ok(()))?;
        let d = latency::ort_with(&[OsStr::new("--typed"), index_path.as_os_str(), OsStr::new(name)], n, 1);
        let types: Vec<String> = m["inputs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|i| format!("{} {}", i["name"].as_str().unwrap_or("?"), i["datatype"].as_str().unwrap_or("?")))
            .collect();
        let (dm, dp, r) = match d {
            Some(d) => (dur(d.median), dur(d.p95), ratio(b.median.as_secs_f64() / d.median.as_secs_f64())),
            None => ("skipped".into(), "–".into(), "–".into()),
        };
        t.row(vec![name.into(), types.join(", "), dur(b.median), dur(b.p95), dm, dp, r]);
    }
    t.print();
    Ok(())
}

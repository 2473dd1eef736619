//! The benchmarked models and their inputs, unsigned manifests built the way release tooling would, and
//! tract driven directly (row (a) and the optimiser experiments).

use anyhow::Context;
use outpost_models::nnef::read_interface;
use outpost_protocol::manifest::{
    Compression, MANIFEST_FORMAT, Manifest, ModelFormat, Payload, SelfTestSection, Targets,
};
use outpost_protocol::{Digest, ModelName, Version};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tract_onnx::prelude::*;

/// A model under test and the inputs every row of the table uses.
#[derive(Debug)]
pub struct BenchModel {
    /// The model's name in manifests and URLs.
    pub name: &'static str,
    /// What the table calls it.
    pub label: String,
    pub path: PathBuf,
    /// The ONNX file: what tract direct (row (a)) and onnxruntime run.
    pub bytes: Vec<u8>,
    /// The model as bundles carry it (NNEF converted from `bytes`): what the agent loads.
    pub nnef: Vec<u8>,
    pub manifest: Manifest,
    /// The shadow candidate (NNEF): another model with the same interface.
    pub candidate: (Vec<u8>, Manifest),
    /// The input tensor's name and its shape at batch 1.
    pub input: String,
    pub shape1: Vec<usize>,
    /// Rows of input, cycled through; the same file feeds onnxruntime.
    pub rows: Vec<Vec<f32>>,
    pub rows_file: PathBuf,
    /// `{"inputs":[...]}` for each row, encoded once.
    pub bodies: Arc<Vec<Vec<u8>>>,
    /// The same requests with the binary tensor extension: (body, JSON header length).
    pub binary_bodies: Arc<Vec<(Vec<u8>, usize)>>,
    /// How far the agent's answer may be from tract direct's (largest absolute difference): 1e-3, unless the
    /// NNEF conversion computes the model differently (the int8 rewrite).
    pub tolerance: f32,
}

/// An unsigned manifest for NNEF `bytes`: interface as tract reads it, digests of the bytes, no self-test.
pub fn manifest(name: &str, version: Version, bytes: &[u8]) -> anyhow::Result<Manifest> {
    let digest = Digest::of(bytes);
    Ok(Manifest {
        format: MANIFEST_FORMAT,
        name: ModelName::new(name)?,
        version,
        sequence: 1,
        payload: Payload {
            format: ModelFormat::Nnef,
            compression: Compression::Full,
            compressed_size: bytes.len() as u64,
            compressed_sha256: digest,
            model_size: bytes.len() as u64,
            model_sha256: digest,
        },
        targets: Targets { archs: Vec::new(), min_agent: Version::new(0, 0, 0) },
        interface: read_interface(bytes)?,
        selftest: SelfTestSection::encode(&[]).0,
        created: 0,
        expires: u64::MAX,
        reference: None,
    })
}

impl BenchModel {
    /// `rows` of the model's batch-1 input shape; `rows_file` already holds them as raw f32.
    pub fn new(
        name: &'static str,
        label: &str,
        path: &Path,
        candidate_path: &Path,
        rows: Vec<Vec<f32>>,
        rows_file: PathBuf,
    ) -> anyhow::Result<BenchModel> {
        let bytes = std::fs::read(path).with_context(|| path.display().to_string())?;
        let nnef = to_nnef(&bytes)?;
        let active = manifest(name, Version::new(1, 0, 0), &nnef)?;
        let cand = std::fs::read(candidate_path).with_context(|| candidate_path.display().to_string())?;
        let cand = to_nnef(&cand)?;
        let cand_manifest = manifest(name, Version::new(2, 0, 0), &cand)?;
        let spec = &active.interface.inputs[0];
        let shape1: Vec<usize> = std::iter::once(1)
            .chain(spec.shape.iter().skip(1).map(|d| match d {
                outpost_protocol::manifest::Dim::Fixed(n) => *n as usize,
                outpost_protocol::manifest::Dim::Symbolic(_) => 1,
            }))
            .collect();
        let per: usize = shape1.iter().product();
        anyhow::ensure!(rows.iter().all(|r| r.len() == per), "{label}: input rows are not of shape {shape1:?}");
        let bodies: Vec<Vec<u8>> = rows
            .iter()
            .map(|r| {
                serde_json::to_vec(&serde_json::json!({
                    "inputs": [{"name": spec.name, "shape": shape1, "datatype": "FP32", "data": r}]
                }))
                .expect("encode")
            })
            .collect();
        // The same rows with the binary tensor extension: a JSON header, then the raw little-endian values;
        // the logits come back raw too.
        let binary_bodies: Vec<(Vec<u8>, usize)> = rows
            .iter()
            .map(|r| {
                let mut body = serde_json::to_vec(&serde_json::json!({
                    "inputs": [{"name": spec.name, "shape": shape1, "datatype": "FP32",
                        "parameters": {"binary_data_size": r.len() * 4}}],
                    "parameters": {"binary_data_output": true}
                }))
                .expect("encode");
                let header_len = body.len();
                body.extend(r.iter().flat_map(|v| v.to_le_bytes()));
                (body, header_len)
            })
            .collect();
        Ok(BenchModel {
            name,
            label: label.to_owned(),
            path: path.to_owned(),
            input: spec.name.clone(),
            bytes,
            nnef,
            manifest: active.clone(),
            candidate: (cand, cand_manifest),
            shape1,
            rows,
            rows_file,
            bodies: Arc::new(bodies),
            binary_bodies: Arc::new(binary_bodies),
            tolerance: 1e-3,
        })
    }
}

/// ONNX → NNEF exactly as `outpost bundle create` converts (the shared model library).
pub fn to_nnef(onnx_bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    Ok(outpost_models::onnx::to_nnef(onnx_bytes)?)
}

/// Reads `n` rows of `per` floats from a raw little-endian f32 file.
pub fn read_rows(path: &Path, per: usize) -> anyhow::Result<Vec<Vec<f32>>> {
    let bytes = std::fs::read(path).with_context(|| path.display().to_string())?;
    let floats: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    Ok(floats.chunks_exact(per).map(<[f32]>::to_vec).collect())
}

/// `n` rows of `per` uniform [0, 1) floats from a fixed seed (splitmix64), also written to `path`.
pub fn random_rows(seed: u64, n: usize, per: usize, path: &Path) -> anyhow::Result<Vec<Vec<f32>>> {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let rows: Vec<Vec<f32>> =
        (0..n).map(|_| (0..per).map(|_| (next() >> 40) as f32 / (1u64 << 24) as f32).collect()).collect();
    let bytes: Vec<u8> = rows.iter().flatten().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, bytes).with_context(|| path.display().to_string())?;
    Ok(rows)
}

/// How tract is asked to prepare the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prep {
    /// `with_input_fact([1,…])` → `into_optimized` → `into_runnable`: what the agent does per batch size.
    Concrete,
    /// No input fact: the batch stays the symbol `N` in the plan (the ONNX file's own facts).
    Symbolic,
    /// Concrete, but only decluttered (no codegen into tract's optimised kernels).
    DeclutterOnly,
    /// Concrete and optimised; the plan built with `skip_order_opt_ram` (simple evaluation order).
    SimpleOrder,
}

/// A prepared plan and how long parsing and optimising took.
pub fn prepare(bytes: &[u8], shape1: &[usize], prep: Prep) -> TractResult<(Arc<TypedRunnableModel>, Duration)> {
    let start = Instant::now();
    let mut model = tract_onnx::onnx().model_for_read(&mut &bytes[..])?;
    if prep != Prep::Symbolic {
        model = model.with_input_fact(0, f32::fact(shape1).into())?;
    }
    let plan = match prep {
        Prep::Concrete | Prep::Symbolic => model.into_optimized()?.into_runnable()?,
        Prep::DeclutterOnly => model.into_typed()?.into_decluttered()?.into_runnable()?,
        Prep::SimpleOrder => model
            .into_optimized()?
            .into_runnable_with_options(&RunOptions { skip_order_opt_ram: true, ..RunOptions::default() })?,
    };
    Ok((plan, start.elapsed()))
}

/// Runs one row the naive way: a fresh tensor from the caller's slice, `plan.run` (which spawns a fresh
/// state each call, as the agent's `LoadedModel::run` does). Returns the first output's values.
pub fn run_once(plan: &Arc<TypedRunnableModel>, shape1: &[usize], row: &[f32]) -> TractResult<Vec<f32>> {
    let input = Tensor::from_shape(shape1, row)?;
    let out = plan.run(tvec!(input.into_tvalue()))?;
    Ok(out[0].to_plain_array_view::<f32>()?.iter().copied().collect())
}

/// Like `run_once` on a state spawned once and reused for every run.
pub fn run_on_state(state: &mut TypedSimpleState, shape1: &[usize], row: &[f32]) -> TractResult<Vec<f32>> {
    let input = Tensor::from_shape(shape1, row)?;
    let out = state.run(tvec!(input.into_tvalue()))?;
    Ok(out[0].to_plain_array_view::<f32>()?.iter().copied().collect())
}

/// Largest absolute difference between two output vectors (sanity check across rows of the table).
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return f32::INFINITY;
    }
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

//! Self-test vectors: inputs a device runs before it activates a model, with the outputs tract computed
//! here, every tensor in its own type. Inputs come from sample files (one per input) or from a seeded
//! generator, so the same command always makes the same bundle. A model that fails on the seeded inputs
//! (an INT64 index out of range, say) is refused with a request for real samples: signing vectors that
//! fail would make every device refuse the bundle.

use super::ReleaseError;
use outpost_models::interface::Serving;
use outpost_models::onnx::Converted;
use outpost_models::tensor::{self, TensorData, element_count};
use outpost_models::{ModelError, f16};
use outpost_protocol::manifest::{DType, SelfTestVector, Tolerance};

/// One `--selftest-input [NAME=]FILE`: raw little-endian values of the input's own type (a BOOL is one
/// byte, 0 or 1), one batch-1 sample after another.
#[derive(Debug, Clone)]
pub struct SampleFile {
    /// The input it feeds; `None` in the single-input form (`--selftest-input FILE`).
    pub input: Option<String>,
    pub path: String,
    pub bytes: Vec<u8>,
}

/// Where the inputs come from.
#[derive(Debug, Clone)]
pub enum Inputs {
    Files(Vec<SampleFile>),
    /// From a fixed seed: floats uniform in [0, 1), booleans fair coins, 8-bit integers over their whole
    /// range, wider integers in [0, 256) (small non-negative values: token ids, positions and counts).
    Seeded,
}

/// One set of inputs, in the model's input order: each input's shape and values.
pub type Sample = Vec<(Vec<usize>, TensorData)>;

pub fn make_vectors(probe: &Converted, inputs: &Inputs, count: usize) -> Result<Vec<SelfTestVector>, ReleaseError> {
    // What devices would refuse to serve, bundle create refuses to sign: the same rule in one place.
    Serving::of(&probe.interface).map_err(|e| ReleaseError::Invalid(e.to_string()))?;
    let sets: Vec<Sample> = match inputs {
        Inputs::Seeded => (0..count).map(|v| seeded(probe, v as u64)).collect(),
        Inputs::Files(files) => samples(probe, files)?.into_iter().take(count).collect(),
    };
    sets.into_iter()
        .enumerate()
        .map(|(v, sample)| {
            let outputs = probe.run(sample.clone()).map_err(|e| refuse(probe, inputs, v, e))?;
            Ok(SelfTestVector {
                inputs: named(&probe.interface.inputs, &sample),
                expected: named(&probe.interface.outputs, &outputs),
                tolerance: Tolerance::default(),
            })
        })
        .collect()
}

fn named(specs: &[outpost_protocol::manifest::TensorSpec], values: &Sample) -> Vec<outpost_protocol::manifest::Tensor> {
    specs.iter().zip(values).map(|(spec, (shape, data))| tensor::to_manifest(&spec.name, shape, data)).collect()
}

/// The refusal for a run that failed: seeded values are arbitrary, so ask for real samples.
fn refuse(probe: &Converted, inputs: &Inputs, vector: usize, e: ModelError) -> ReleaseError {
    match inputs {
        Inputs::Seeded => {
            let typed: Vec<String> = probe
                .interface
                .inputs
                .iter()
                .filter(|t| !t.dtype.is_float())
                .map(|t| format!("{} ({})", t.name, t.dtype))
                .collect();
            let which = if typed.is_empty() { String::new() } else { format!(" for {}", typed.join(", ")) };
            ReleaseError::Invalid(format!(
                "the model fails on seeded random self-test inputs ({e}); it needs real values{which}: give samples \
                 with --selftest-input NAME=FILE (raw little-endian values of the input's type at batch 1, one \
                 file per input) so devices get a self-test that passes"
            ))
        }
        Inputs::Files(_) => ReleaseError::Invalid(format!("self-test sample {vector} fails: {e}")),
    }
}

/// splitmix64: tiny, well-distributed, and the same on every platform.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn seeded(probe: &Converted, vector: u64) -> Sample {
    probe
        .interface
        .inputs
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let shape = probe.unit_shape(i);
            let n: usize = shape.iter().product();
            let mut state = (vector << 16 | i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let mut next = move || splitmix(&mut state);
            let unit = |z: u64| (z >> 40) as f32 / (1u64 << 24) as f32;
            let small = |z: u64| z >> 56; // [0, 256)
            let data = match spec.dtype {
                DType::F32 => TensorData::F32((0..n).map(|_| unit(next())).collect()),
                DType::F64 => TensorData::F64((0..n).map(|_| f64::from(unit(next()))).collect()),
                DType::F16 => TensorData::F16((0..n).map(|_| f16::from_f32(unit(next()))).collect()),
                DType::Bool => TensorData::Bool((0..n).map(|_| next() >> 63 == 1).collect()),
                DType::U8 => TensorData::U8((0..n).map(|_| small(next()) as u8).collect()),
                DType::I8 => TensorData::I8((0..n).map(|_| small(next()) as u8 as i8).collect()),
                DType::U16 => TensorData::U16((0..n).map(|_| small(next()) as u16).collect()),
                DType::U32 => TensorData::U32((0..n).map(|_| small(next()) as u32).collect()),
                DType::U64 => TensorData::U64((0..n).map(|_| small(next())).collect()),
                DType::I16 => TensorData::I16((0..n).map(|_| small(next()) as i16).collect()),
                DType::I32 => TensorData::I32((0..n).map(|_| small(next()) as i32).collect()),
                DType::I64 => TensorData::I64((0..n).map(|_| small(next()) as i64).collect()),
            };
            (shape, data)
        })
        .collect()
}

/// Every sample in the `--selftest-input` files, as batch-1 inputs in the model's input order. Each input
/// needs exactly one file and every file the same number of samples.
pub fn samples(probe: &Converted, files: &[SampleFile]) -> Result<Vec<Sample>, ReleaseError> {
    let specs = &probe.interface.inputs;
    let invalid = |m: String| ReleaseError::Invalid(m);
    for f in files {
        match &f.input {
            None if specs.len() != 1 || files.len() != 1 => {
                let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
                return Err(invalid(format!(
                    "{}: the model has {} inputs ({}); name the input of each file with --selftest-input NAME=FILE",
                    f.path,
                    specs.len(),
                    names.join(", ")
                )));
            }
            Some(name) if !specs.iter().any(|s| &s.name == name) => {
                let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
                return Err(invalid(format!("the model has no input {name:?}; its inputs are {}", names.join(", "))));
            }
            _ => {}
        }
    }
    let mut per_input: Vec<Vec<(Vec<usize>, TensorData)>> = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        let mut mine = files.iter().filter(|f| f.input.as_deref().is_none_or(|n| n == spec.name));
        let (Some(file), None) = (mine.next(), mine.next()) else {
            return Err(invalid(format!(
                "input {} needs exactly one --selftest-input {}=FILE when any is given",
                spec.name, spec.name
            )));
        };
        let shape = probe.unit_shape(i);
        let per = element_count(&shape)
            .and_then(|n| n.checked_mul(spec.dtype.size()))
            .ok_or_else(|| invalid(format!("input {} is too large to sample", spec.name)))?;
        if per == 0 || file.bytes.is_empty() || !file.bytes.len().is_multiple_of(per) {
            return Err(invalid(format!(
                "{}: {} bytes is not a whole number of {per}-byte {} samples of shape {shape:?} (input {})",
                file.path,
                file.bytes.len(),
                spec.dtype,
                spec.name
            )));
        }
        let values = file
            .bytes
            .chunks_exact(per)
            .map(|b| TensorData::from_le_bytes(spec.dtype, b).map(|d| (shape.clone(), d)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(format!("{}: {e}", file.path)))?;
        per_input.push(values);
    }
    let n = per_input.first().map_or(0, Vec::len);
    if let Some((i, other)) = per_input.iter().enumerate().find(|(_, v)| v.len() != n) {
        return Err(invalid(format!(
            "the sample files disagree: {} samples for input {}, {} for input {}",
            n,
            specs[0].name,
            other.len(),
            specs[i].name
        )));
    }
    Ok((0..n).map(|k| per_input.iter().map(|v| v[k].clone()).collect()).collect())
}

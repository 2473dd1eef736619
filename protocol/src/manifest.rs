//! The manifest: everything a device needs to decide whether to take a model, signed as exact bytes.

use crate::UnixTime;
use crate::digest::Digest;
use crate::names::{Arch, ModelName};
use crate::version::Version;
use serde::{Deserialize, Serialize};

pub const MANIFEST_FORMAT: u16 = 1;

/// Postcard-encoded, signed by release keys. Only append fields at the end or variants to enums:
/// postcard is not self-describing, and old agents must keep decoding what they can verify.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u16,
    pub name: ModelName,
    pub version: Version,
    /// Monotonically increasing per model across all releases; the device's floor is the highest it
    /// committed. Re-releasing an old model means signing it again with a higher sequence.
    pub sequence: u64,
    pub payload: Payload,
    pub targets: Targets,
    pub interface: ModelInterface,
    pub selftest: Vec<SelfTestVector>,
    pub created: UnixTime,
    pub expires: UnixTime,
    /// What inputs and outputs looked like on the data the release was validated on: devices compare
    /// their live traffic against it (PSI) to report drift.
    pub reference: Option<ReferenceProfile>,
}

/// The input and output distributions a model was released against.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReferenceProfile {
    pub inputs: Vec<TensorProfile>,
    /// Share of each top-1 output class (sums to 1); empty for non-classifiers.
    pub output_classes: Vec<f32>,
    /// How many samples the profile was computed from.
    pub samples: u64,
}

/// A histogram of one input tensor's element values, as shares of the total (sums to 1), in the same
/// layout as `telemetry::FeatureStats::bins`: underflow, `n` even bins over `[lo, hi)`, overflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorProfile {
    pub tensor: String,
    pub lo: f32,
    pub hi: f32,
    pub shares: Vec<f32>,
    pub mean: f64,
    pub std: f64,
}

/// How the model travels and what it must be after decompression.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload {
    pub format: ModelFormat,
    pub compression: Compression,
    /// Bytes of the payload as stored in the bundle (compressed).
    pub compressed_size: u64,
    pub compressed_sha256: Digest,
    /// Bytes of the model after decompression; decompression stops past this (bomb guard).
    pub model_size: u64,
    pub model_sha256: Digest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ModelFormat {
    Onnx,
    Nnef,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Compression {
    /// A zstd frame of the whole model.
    Full,
    /// A zstd frame compressed with the base model as reference prefix; needs exactly that base.
    Delta { base_sha256: Digest, base_size: u64 },
}

/// Which devices may run the model. An empty `archs` list means any architecture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Targets {
    pub archs: Vec<Arch>,
    pub min_agent: Version,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelInterface {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<Dim>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Dim {
    Fixed(u64),
    /// A symbolic dimension such as the batch size `N`.
    Symbolic(String),
}

/// Tensor element types (the Open Inference Protocol's names). Only append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DType {
    F32,
    F64,
    I32,
    I64,
    U8,
    I8,
    Bool,
}

impl DType {
    pub fn as_str(self) -> &'static str {
        match self {
            DType::F32 => "FP32",
            DType::F64 => "FP64",
            DType::I32 => "INT32",
            DType::I64 => "INT64",
            DType::U8 => "UINT8",
            DType::I8 => "INT8",
            DType::Bool => "BOOL",
        }
    }
}

/// A concrete tensor: shape and little-endian f32 values (the only element type self-tests use today).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<u64>,
    pub data: Vec<f32>,
}

/// Inputs the device runs before activating the model, and the outputs it must reproduce.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelfTestVector {
    pub inputs: Vec<Tensor>,
    pub expected: Vec<Tensor>,
    pub tolerance: Tolerance,
}

/// `|got - want| <= abs + rel * |want|` per element.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Tolerance {
    pub abs: f32,
    pub rel: f32,
}

impl Default for Tolerance {
    fn default() -> Self {
        // Different CPUs and SIMD paths (x86 AVX vs NEON) reorder float sums; 1e-3 absorbs that on logits.
        Tolerance { abs: 1e-3, rel: 1e-3 }
    }
}

impl Tolerance {
    pub fn accepts(&self, got: f32, want: f32) -> bool {
        (got - want).abs() <= self.abs + self.rel * want.abs()
    }
}

/// Why two tensors differ, for self-test reports.
pub fn compare(got: &Tensor, want: &Tensor, tol: Tolerance) -> Result<(), String> {
    if got.shape != want.shape {
        return Err(format!("output {}: shape {:?}, expected {:?}", want.name, got.shape, want.shape));
    }
    let worst = got.data.iter().zip(&want.data).enumerate().find(|(_, (g, w))| !tol.accepts(**g, **w) || g.is_nan());
    match worst {
        Some((i, (g, w))) => Err(format!("output {}[{i}] = {g}, expected {w} (tolerance {:?})", want.name, tol)),
        None => Ok(()),
    }
}

impl Manifest {
    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("manifest encodes")
    }
}

//! The manifest: everything a device needs to decide whether to take a model, signed as exact bytes.

use crate::UnixTime;
use crate::digest::Digest;
use crate::names::{Arch, ModelName};
use crate::version::Version;
use serde::{Deserialize, Serialize};

/// 2: typed self-test tensors, moved out of the manifest into the bundle's self-test section.
pub const MANIFEST_FORMAT: u16 = 2;

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
    /// The self-test vectors travel in the bundle after the payload, bound here by count, size and digest:
    /// they grow with the input (four 640×640×3 FP32 inputs are 20 MB), and the signed manifest must stay
    /// small whatever the model.
    pub selftest: SelfTestSection,
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

/// Tensor element types: every Open Inference Protocol type that tract runs (BYTES, strings, is not one).
/// Only append: postcard encodes a variant as its index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DType {
    F32,
    F64,
    I32,
    I64,
    U8,
    I8,
    Bool,
    U16,
    U32,
    U64,
    I16,
    F16,
}

impl DType {
    /// Every type, in the Open Inference Protocol's order.
    pub const ALL: [DType; 12] = [
        DType::Bool,
        DType::U8,
        DType::U16,
        DType::U32,
        DType::U64,
        DType::I8,
        DType::I16,
        DType::I32,
        DType::I64,
        DType::F16,
        DType::F32,
        DType::F64,
    ];

    /// The Open Inference Protocol's name (`FP32`, `INT64`, `BOOL`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            DType::F32 => "FP32",
            DType::F64 => "FP64",
            DType::F16 => "FP16",
            DType::I32 => "INT32",
            DType::I64 => "INT64",
            DType::I16 => "INT16",
            DType::I8 => "INT8",
            DType::U8 => "UINT8",
            DType::U16 => "UINT16",
            DType::U32 => "UINT32",
            DType::U64 => "UINT64",
            DType::Bool => "BOOL",
        }
    }

    /// The type an Open Inference Protocol name stands for; `None` for anything else (`BYTES` included).
    pub fn parse(name: &str) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.as_str() == name)
    }

    /// Bytes per element in the binary tensor encoding (little-endian; a BOOL is one byte, 0 or 1).
    pub fn size(self) -> usize {
        match self {
            DType::Bool | DType::U8 | DType::I8 => 1,
            DType::U16 | DType::I16 | DType::F16 => 2,
            DType::U32 | DType::I32 | DType::F32 => 4,
            DType::U64 | DType::I64 | DType::F64 => 8,
        }
    }

    /// Floating-point types compare within a tolerance; integers and booleans compare exactly.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F16 | DType::F32 | DType::F64)
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A concrete tensor in its own type: shape and the values' little-endian bytes (a BOOL is one byte, 0 or
/// 1). `outpost-models` turns it into typed values, checking the length against the shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tensor {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<u64>,
    pub data: Vec<u8>,
}

/// Inputs the device runs before activating the model, and the outputs it must reproduce: integers and
/// booleans exactly, floats within the tolerance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelfTestVector {
    pub inputs: Vec<Tensor>,
    pub expected: Vec<Tensor>,
    pub tolerance: Tolerance,
}

/// Where a bundle's self-test vectors are: `size` bytes after the payload, a postcard list of
/// [`SelfTestVector`] with `vectors` entries whose SHA-256 is `sha256`. `verify` checks all three, so the
/// section is exactly as signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelfTestSection {
    pub vectors: u32,
    pub size: u64,
    pub sha256: crate::digest::Digest,
}

impl Default for SelfTestSection {
    /// No section yet: `bundle::create` fills in the real one for the vectors it is given.
    fn default() -> Self {
        SelfTestSection { vectors: 0, size: 0, sha256: crate::digest::Digest([0; 32]) }
    }
}

impl SelfTestSection {
    /// The section for `vectors` and its bytes.
    pub fn encode(vectors: &[SelfTestVector]) -> (SelfTestSection, Vec<u8>) {
        let bytes = postcard::to_allocvec(vectors).expect("self-test vectors encode");
        let section = SelfTestSection {
            vectors: u32::try_from(vectors.len()).unwrap_or(u32::MAX),
            size: bytes.len() as u64,
            sha256: crate::digest::Digest::of(&bytes),
        };
        (section, bytes)
    }

    /// Decodes section bytes already checked against this section's size and digest (by `verify`). A
    /// section whose vector count differs from the one declared is malformed.
    pub fn decode(&self, bytes: &[u8]) -> Result<Vec<SelfTestVector>, String> {
        let vectors: Vec<SelfTestVector> =
            postcard::from_bytes(bytes).map_err(|e| format!("self-test section: {e}"))?;
        if vectors.len() as u64 != u64::from(self.vectors) {
            return Err(format!(
                "self-test section holds {} vectors; the manifest declares {}",
                vectors.len(),
                self.vectors
            ));
        }
        Ok(vectors)
    }
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

impl Manifest {
    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("manifest encodes")
    }
}

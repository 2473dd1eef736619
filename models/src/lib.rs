//! Outpost's one model library, shared by the agent, the controller's release tooling, tests and
//! benchmarks, so that what `outpost bundle create` checks is exactly what devices run:
//!
//! - [`nnef`]: reading the NNEF archives bundles carry, with tract-core's operators only (what devices link);
//! - [`onnx`] (feature `onnx`, release tooling only): ONNX → NNEF conversion, checked to keep the interface,
//!   with ONNX operators devices could not load from NNEF rewritten into tract-core's (`lrn`: LRN;
//!   `pool_ceil`: pooling with `ceil_mode`, which NNEF would round down; `qdq_conv`: quantized (QDQ)
//!   convolutions fused into tract-core's int8 convolution; `qdq_core`: the rest of quantize/dequantize;
//!   `gelu`: exact GELU, which decluttering fuses into an operator NNEF cannot write);
//! - [`interface`]: a model's interface as tract sees it, the check that a file presents the interface its
//!   manifest promises, and [`interface::Serving`], the one rule for which interfaces a device serves;
//! - [`tensor`]: typed tensor values for every Open Inference Protocol type tract runs, to and from
//!   little-endian bytes and tract tensors, and their comparison (integers exact, floats within a tolerance);
//! - [`bounds`]: inputs that index a table (token ids into an embedding) and the range their values must
//!   lie in, checked before a run because tract would index out of bounds (a panic; an abort on devices);
//! - [`run`]: one run of a model on concrete inputs (release tooling and tests; the agent compiles its own
//!   plans per batch size).
//!
//! Dependencies point one way: `outpost-protocol` ← `outpost-models` ← {agent, controller}.

pub mod bounds;
#[cfg(feature = "onnx")]
mod gelu;
pub mod interface;
#[cfg(feature = "onnx")]
mod lrn;
pub mod nnef;
#[cfg(feature = "onnx")]
pub mod onnx;
#[cfg(feature = "onnx")]
mod pool_ceil;
#[cfg(feature = "onnx")]
mod qdq_conv;
#[cfg(feature = "onnx")]
mod qdq_core;
pub mod run;
pub mod tensor;

pub use tensor::{TensorData, TensorError, f16};
/// tract's typed graph, for callers that compile their own plans (the agent).
pub use tract_nnef::prelude::TypedModel;

/// Why a model cannot be converted, loaded, served or run. Each says what exactly was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("tract cannot load the model: {0}")]
    Load(String),
    #[error("tract cannot convert the model to NNEF for devices: {0}")]
    Convert(String),
    #[error("unsupported model: {0}")]
    Unsupported(String),
    #[error("the model's interface differs from its manifest: {0}")]
    InterfaceMismatch(String),
    #[error("inference failed: {0}")]
    Run(String),
    /// The inputs cannot be run (an index out of its table's range): the caller's to fix.
    #[error("invalid input: {0}")]
    BadInput(String),
}

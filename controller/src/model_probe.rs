//! Loads a model with tract at packaging time: converts it to the NNEF devices run ([`nnef`]), proves the
//! converted model runs, reads its interface, and computes the self-test vectors' expected outputs with it,
//! so a bundle that would fail on every device is never signed and its vectors check exactly what devices run.

pub mod nnef;

use outpost_protocol::manifest::{DType, Dim, ModelInterface, Tensor, TensorSpec};
use std::collections::HashMap;
use tract_onnx::prelude::*;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("tract cannot load the model: {0}")]
    Load(String),
    #[error("tract cannot convert the model to NNEF for devices: {0}")]
    Convert(String),
    #[error("tract cannot run the model: {0}")]
    Run(String),
    #[error("unsupported model: {0}")]
    Unsupported(String),
}

/// A model as devices will load it: the NNEF bytes a bundle carries and tract-core's model of them (not
/// yet shape-specialised).
#[derive(Debug)]
pub struct Probe {
    model: TypedModel,
    pub interface: ModelInterface,
    /// The NNEF archive (tar) that goes into the bundle.
    pub nnef: Vec<u8>,
}

/// Converts an ONNX model to NNEF and loads the result the way the agent does (tract-core ops only).
pub fn load(onnx: &[u8]) -> Result<Probe, ProbeError> {
    let onnx_interface = interface(&nnef::onnx_typed(onnx)?)?;
    let bytes = nnef::convert(onnx)?;
    let model = nnef::load(&bytes)?;
    let interface = interface(&model)?;
    // Devices match request and self-test tensors by name, and the manifest promises the exported model's
    // interface: the conversion must not rename or reshape anything.
    if interface != onnx_interface {
        return Err(ProbeError::Convert(format!(
            "the NNEF model's interface {interface:?} differs from the ONNX model's {onnx_interface:?}"
        )));
    }
    Ok(Probe { model, interface, nnef: bytes })
}

/// Names, types and shapes (symbolic dimensions by name) of a model's inputs and outputs, as tract sees them.
fn interface(typed: &TypedModel) -> Result<ModelInterface, ProbeError> {
    let spec = |outlet: OutletId| -> Result<TensorSpec, ProbeError> {
        let fact = typed.outlet_fact(outlet).map_err(|e| ProbeError::Load(e.to_string()))?;
        let name = typed.outlet_label(outlet).unwrap_or(&typed.node(outlet.node).name).to_owned();
        let shape = fact
            .shape
            .iter()
            .map(|d| match d.to_i64() {
                Ok(n) => Dim::Fixed(n as u64),
                Err(_) => Dim::Symbolic(d.to_string()),
            })
            .collect();
        Ok(TensorSpec { name, dtype: dtype(fact.datum_type)?, shape })
    };
    let inputs = typed.input_outlets().map_err(|e| ProbeError::Load(e.to_string()))?.to_vec();
    let outputs = typed.output_outlets().map_err(|e| ProbeError::Load(e.to_string()))?.to_vec();
    Ok(ModelInterface {
        inputs: inputs.into_iter().map(spec).collect::<Result<_, _>>()?,
        outputs: outputs.into_iter().map(spec).collect::<Result<_, _>>()?,
    })
}

fn dtype(dt: DatumType) -> Result<DType, ProbeError> {
    Ok(match dt {
        DatumType::F32 => DType::F32,
        DatumType::F64 => DType::F64,
        DatumType::I32 => DType::I32,
        DatumType::I64 => DType::I64,
        DatumType::U8 => DType::U8,
        DatumType::I8 => DType::I8,
        DatumType::Bool => DType::Bool,
        other => return Err(ProbeError::Unsupported(format!("tensor type {other:?}"))),
    })
}

impl Probe {
    /// Runs one set of f32 inputs (shapes concrete) and returns the named outputs. The plan is compiled
    /// for these exact shapes: tract runs concrete plans far faster than symbolic ones (DESIGN.md).
    pub fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, ProbeError> {
        let run_err = |e: TractError| ProbeError::Run(format!("{e:#}"));
        let input_outlets = self.model.input_outlets().map_err(run_err)?;
        let mut symbols = HashMap::new();
        let mut values = TVec::new();
        for (t, outlet) in inputs.iter().zip(input_outlets) {
            let shape: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
            let fact = self.model.outlet_fact(*outlet).map_err(run_err)?;
            for (dim, &n) in fact.shape.iter().zip(&shape) {
                if let TDim::Sym(s) = dim {
                    symbols.insert(s.clone(), TDim::Val(n as i64));
                }
            }
            values.push(tract_onnx::prelude::Tensor::from_shape(&shape, &t.data).map_err(run_err)?.into_tvalue());
        }
        let model = self.model.set_symbols(&symbols).map_err(run_err)?;
        let plan = model.into_optimized().map_err(run_err)?.into_runnable().map_err(run_err)?;
        let outputs = plan.run(values).map_err(run_err)?;
        outputs
            .iter()
            .zip(&self.interface.outputs)
            .map(|(v, spec)| {
                let arr = v
                    .to_plain_array_view::<f32>()
                    .map_err(|e| ProbeError::Unsupported(format!("output {}: {e}", spec.name)))?;
                Ok(Tensor {
                    name: spec.name.clone(),
                    shape: arr.shape().iter().map(|&d| d as u64).collect(),
                    data: arr.iter().copied().collect(),
                })
            })
            .collect()
    }

    /// The concrete shape of input `i` with every symbolic dimension (the batch) set to 1.
    pub fn unit_shape(&self, i: usize) -> Vec<u64> {
        self.interface.inputs[i]
            .shape
            .iter()
            .map(|d| match d {
                Dim::Fixed(n) => *n,
                Dim::Symbolic(_) => 1,
            })
            .collect()
    }
}

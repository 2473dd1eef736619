//! Loads a model with tract at packaging time: proves it runs, reads its interface, and computes the
//! self-test vectors' expected outputs, so a bundle that would fail on every device is never signed.

use outpost_protocol::manifest::{DType, Dim, ModelInterface, Tensor, TensorSpec};
use tract_onnx::prelude::*;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("tract cannot load the model: {0}")]
    Load(String),
    #[error("tract cannot run the model: {0}")]
    Run(String),
    #[error("unsupported model: {0}")]
    Unsupported(String),
}

/// A loaded (not yet shape-specialised) ONNX model.
#[derive(Debug)]
pub struct Probe {
    model: InferenceModel,
    pub interface: ModelInterface,
}

pub fn load(bytes: &[u8]) -> Result<Probe, ProbeError> {
    let model = tract_onnx::onnx().model_for_read(&mut &bytes[..]).map_err(|e| ProbeError::Load(format!("{e:#}")))?;
    let typed = model.clone().into_typed().map_err(|e| ProbeError::Load(format!("{e:#}")))?;
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
    let interface = ModelInterface {
        inputs: inputs.into_iter().map(spec).collect::<Result<_, _>>()?,
        outputs: outputs.into_iter().map(spec).collect::<Result<_, _>>()?,
    };
    Ok(Probe { model, interface })
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
        let mut model = self.model.clone();
        let mut values = TVec::new();
        for (i, t) in inputs.iter().enumerate() {
            let shape: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
            model = model.with_input_fact(i, f32::fact(&shape).into()).map_err(run_err)?;
            values.push(tract_onnx::prelude::Tensor::from_shape(&shape, &t.data).map_err(run_err)?.into_tvalue());
        }
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

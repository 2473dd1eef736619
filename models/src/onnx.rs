//! ONNX → NNEF, at packaging time (feature `onnx`; release tooling, tests and benchmarks only). The
//! conversion is tract's own serialiser run on the decluttered typed model, keeping a symbolic batch
//! dimension as an NNEF `tract_symbol`; the result is loaded back as devices load it and must present the
//! same interface, so a model that would fail on every device is refused before it is signed.

use crate::{ModelError, TensorData, interface, nnef, run};
use outpost_protocol::manifest::ModelInterface;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::TractErrorContext;

/// The ONNX model as tract's typed (shape-inferred, decluttered) graph.
pub fn typed(onnx: &[u8]) -> Result<TypedModel, ModelError> {
    let load = |e: TractError| ModelError::Load(format!("{e:#}"));
    let framework = tract_onnx::onnx();
    let mut proto = framework.proto_model_for_read(&mut &onnx[..]).context("Reading proto model").map_err(load)?;
    // Quantized (QDQ) convolutions as tract-core's int8 convolutions, as onnxruntime runs them; then what is
    // left of quantize/dequantize as core operators, before decluttering could fold it into forms NNEF lacks.
    if let Some(graph) = proto.graph.as_mut() {
        crate::qdq_conv::fuse(graph).map_err(load)?;
    }
    let model = framework.model_for_proto_model(&proto).context("Translating proto model to model").map_err(load)?;
    let mut model = model.into_typed().map_err(load)?;
    crate::qdq_core::rewrite(&mut model).map_err(load)?;
    let mut model = model.into_decluttered().map_err(load)?;
    // Operators tract runs from ONNX but devices could not load from NNEF, rewritten into tract-core's; and
    // pooling that rounds up, which NNEF would write as rounding down.
    let rewritten =
        crate::lrn::rewrite(&mut model).map_err(load)? + crate::pool_ceil::rewrite(&mut model).map_err(load)?;
    if rewritten > 0 {
        model = model.into_decluttered().map_err(load)?;
    }
    // Last, as decluttering would fuse it again: exact GELU as its erf arithmetic, which NNEF can write.
    if crate::gelu::unfuse(&mut model).map_err(load)? > 0 {
        model.compact().map_err(load)?;
    }
    integer_outputs(model).map_err(load)
}

/// tract computes some integer arithmetic on its symbolic dimension type (an INT64 `ReduceSum` of a cast
/// BOOL comes out as TDim); the ONNX model declares INT64, and clients expect INT64, so such outputs get a
/// cast back to INT64 under their own name.
fn integer_outputs(mut model: TypedModel) -> TractResult<TypedModel> {
    let outputs = model.output_outlets()?.to_vec();
    let mut wired = Vec::with_capacity(outputs.len());
    for outlet in outputs {
        if model.outlet_fact(outlet)?.datum_type != DatumType::TDim {
            wired.push(outlet);
            continue;
        }
        let name =
            model.outlet_label(outlet).map(str::to_owned).unwrap_or_else(|| model.node(outlet.node).name.clone());
        model.set_outlet_label(outlet, format!("{name}.tdim"))?;
        let cast_op = tract_onnx::tract_core::ops::cast::cast(DatumType::I64);
        let cast = model.wire_node(format!("{name}.i64"), cast_op, &[outlet])?[0];
        model.set_outlet_label(cast, name)?;
        wired.push(cast);
    }
    model.select_output_outlets(&wired)?;
    Ok(model)
}

/// The NNEF archive for an ONNX model (deterministic: see [`nnef::write`]).
pub fn to_nnef(onnx: &[u8]) -> Result<Vec<u8>, ModelError> {
    nnef::write(&typed(onnx)?)
}

/// A model as devices will load it: the NNEF bytes a bundle carries, tract-core's model of them (not yet
/// shape-specialised) and its interface.
#[derive(Debug)]
pub struct Converted {
    pub model: TypedModel,
    pub interface: ModelInterface,
    pub nnef: Vec<u8>,
    /// Each input's name in the ONNX model, which NNEF may spell otherwise (`gpu_0/data_0`, served as
    /// `gpu_0_data_0`): release engineers know the model by these.
    pub onnx_inputs: Vec<String>,
}

/// Converts an ONNX model to NNEF and loads the result the way the agent does.
pub fn convert(onnx: &[u8]) -> Result<Converted, ModelError> {
    let original = typed(onnx)?;
    let onnx_interface = interface::read(&original)?;
    let bytes = nnef::write(&original)?;
    let model = nnef::read(&bytes)?;
    let iface = interface::read(&model)?;
    // Devices match request and self-test tensors by name, and the manifest promises the exported model's
    // interface: the conversion must not rename, retype or reshape anything.
    if let Some(difference) = interface_difference(&onnx_interface, &iface) {
        return Err(ModelError::Convert(format!(
            "the NNEF model's interface differs from the ONNX model's: {difference}"
        )));
    }
    let onnx_inputs = onnx_interface.inputs.into_iter().map(|t| t.name).collect();
    Ok(Converted { model, interface: iface, nnef: bytes, onnx_inputs })
}

/// The first tensor whose name, type or shape the conversion changed, said as "output 2 (\"y\"): ONNX has
/// …, NNEF has …", or `None` when both interfaces are the same.
fn interface_difference(onnx: &ModelInterface, nnef: &ModelInterface) -> Option<String> {
    for (side, a, b) in [("input", &onnx.inputs, &nnef.inputs), ("output", &onnx.outputs, &nnef.outputs)] {
        if a.len() != b.len() {
            return Some(format!("the ONNX model has {} {side}s, the NNEF model {}", a.len(), b.len()));
        }
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            // NNEF identifiers cannot hold every ONNX name ("gpu_0/data_0" is written "gpu_0_data_0"): devices
            // serve the NNEF name, which the manifest declares and model metadata reports. Type and shape
            // must not change.
            if x.dtype == y.dtype && x.shape == y.shape && nnef_identifier(&x.name) == y.name {
                continue;
            }
            if x != y {
                let show = |t: &outpost_protocol::manifest::TensorSpec| {
                    format!("{:?} {} {:?}", t.name, t.dtype.as_str(), t.shape)
                };
                return Some(format!("{side} {i}: ONNX has {}, NNEF has {}", show(x), show(y)));
            }
        }
    }
    None
}

/// An ONNX tensor name as tract's NNEF writer spells it (tract-nnef `write_identifier`, without the extended
/// syntax): `_` before a first character that is not a letter or `_`, and `_` for every character that is not
/// a letter or digit.
fn nnef_identifier(name: &str) -> String {
    let direct = name.chars().next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_alphanumeric() || c == '_');
    if direct || name.is_empty() {
        return name.to_owned();
    }
    let prefix = if name.chars().next().is_some_and(|c| c.is_alphabetic() || c == '_') { "" } else { "_" };
    prefix.chars().chain(name.chars().map(|c| if c.is_alphanumeric() { c } else { '_' })).collect()
}

impl Converted {
    /// Runs one set of inputs (in interface order, shapes concrete) on a plan compiled for those shapes.
    pub fn run(&self, inputs: Vec<(Vec<usize>, TensorData)>) -> Result<Vec<(Vec<usize>, TensorData)>, ModelError> {
        run::run_once(&self.model, inputs)
    }

    /// The input called `name` in NNEF's spelling (what devices serve) or in the ONNX model's.
    pub fn input_index(&self, name: &str) -> Option<usize> {
        let nnef = self.interface.inputs.iter().position(|t| t.name == name);
        nnef.or_else(|| self.onnx_inputs.iter().position(|n| n == name))
    }

    /// The concrete shape of input `i` with every symbolic dimension (the batch) set to 1.
    pub fn unit_shape(&self, i: usize) -> Vec<usize> {
        interface::unit_shape(&self.interface.inputs[i])
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    fn digits(name: &str) -> Vec<u8> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../simulations/models");
        std::fs::read(dir.join(format!("digits-{name}.onnx"))).unwrap()
    }

    #[test]
    fn converting_the_same_model_twice_gives_the_same_bytes() {
        let (a, b) = (super::to_nnef(&digits("v1")).unwrap(), super::to_nnef(&digits("v1")).unwrap());
        assert!(a == b, "two conversions differ");
        assert_ne!(a, super::to_nnef(&digits("v2")).unwrap());
    }

    #[test]
    fn the_converted_model_keeps_the_symbolic_batch_and_the_names() {
        let c = super::convert(&digits("v1")).unwrap();
        let (input, output) = (&c.interface.inputs[0], &c.interface.outputs[0]);
        assert_eq!((input.name.as_str(), output.name.as_str()), ("input", "logits"));
        assert!(matches!(input.shape[0], outpost_protocol::manifest::Dim::Symbolic(_)), "{:?}", input.shape);
        assert_eq!(c.unit_shape(0), vec![1, 1, 8, 8]);
        assert_eq!((c.input_index("input"), c.input_index("logits")), (Some(0), None));
    }

    #[test]
    fn names_nnef_cannot_spell_are_served_as_nnef_spells_them() {
        assert_eq!(super::nnef_identifier("gpu_0/data_0"), "gpu_0_data_0");
        assert_eq!(super::nnef_identifier("0:out"), "_0_out");
        assert_eq!(super::nnef_identifier("logits"), "logits");
    }

    #[test]
    fn bytes_that_are_not_onnx_are_refused_as_a_load_error() {
        assert!(matches!(super::to_nnef(b"not a model"), Err(super::ModelError::Load(_))));
    }
}

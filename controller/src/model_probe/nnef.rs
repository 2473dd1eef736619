//! ONNX → NNEF, at packaging time. Devices run NNEF (tract's own format) loaded with tract-core's ops only,
//! so the agent links neither the ONNX parser (protobuf) nor tract-hir's inference layer: about a third of
//! the tract code in its binary (cross/README.md "Size"). The conversion is tract's own serialiser, run on
//! the decluttered typed model, keeping a symbolic batch dimension as an NNEF `tract_symbol`.

use super::ProbeError;
use tract_onnx::prelude::*;

/// The ONNX model as tract's typed (shape-inferred, decluttered) graph.
pub fn onnx_typed(onnx: &[u8]) -> Result<TypedModel, ProbeError> {
    let load = |e: TractError| ProbeError::Load(format!("{e:#}"));
    let model = tract_onnx::onnx().model_for_read(&mut &onnx[..]).map_err(load)?;
    model.into_typed().map_err(load)?.into_decluttered().map_err(load)
}

/// The NNEF archive (an uncompressed tar: the bundle is zstd-compressed already) for an ONNX model.
/// Deterministic (fixed timestamps, sorted entries), so the same model always gives the same bytes: a
/// delta bundle's base, converted again, has the digest devices hold.
pub fn convert(onnx: &[u8]) -> Result<Vec<u8>, ProbeError> {
    let typed = onnx_typed(onnx)?;
    // Only tract-core's registry, as on devices: an op outside it (an ONNX-only operator of
    // tract-onnx-opl) fails here, at packaging, instead of on every device.
    tract_nnef::nnef()
        .write_to_tar_with_config(&typed, Vec::new(), false, true)
        .map_err(|e| ProbeError::Convert(format!("{e:#}")))
}

/// Loads NNEF bytes exactly as the agent does (agent/src/runtime/model.rs).
pub fn load(nnef: &[u8]) -> Result<TypedModel, ProbeError> {
    tract_nnef::nnef().model_for_read(&mut &nnef[..]).map_err(|e| ProbeError::Convert(format!("{e:#}")))
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
        let (a, b) = (super::convert(&digits("v1")).unwrap(), super::convert(&digits("v1")).unwrap());
        assert!(a == b, "two conversions differ");
        assert_ne!(a, super::convert(&digits("v2")).unwrap());
    }

    #[test]
    fn the_converted_model_keeps_the_symbolic_batch_and_the_names() {
        let probe = super::super::load(&digits("v1")).unwrap();
        let (input, output) = (&probe.interface.inputs[0], &probe.interface.outputs[0]);
        assert_eq!((input.name.as_str(), output.name.as_str()), ("input", "logits"));
        assert!(matches!(input.shape[0], outpost_protocol::manifest::Dim::Symbolic(_)), "{:?}", input.shape);
    }

    #[test]
    fn bytes_that_are_not_onnx_are_refused_as_a_load_error() {
        assert!(matches!(super::convert(b"not a model"), Err(super::ProbeError::Load(_))));
    }
}

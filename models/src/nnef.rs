//! NNEF, tract's own format: what bundles carry and devices load, with tract-core's operators only, so the
//! agent links neither the ONNX parser (protobuf) nor tract-hir (cross/README.md "Size").

use crate::ModelError;
use tract_nnef::prelude::*;

/// Parses an NNEF archive (an uncompressed tar) exactly as devices do.
pub fn read(bytes: &[u8]) -> Result<TypedModel, ModelError> {
    tract_nnef::nnef().model_for_read(&mut &bytes[..]).map_err(|e| ModelError::Load(format!("{e:#}")))
}

/// Writes `typed` as an NNEF archive: an uncompressed tar (bundles are zstd-compressed already) with fixed
/// timestamps and sorted entries, so the same model always gives the same bytes (a delta bundle's base,
/// converted again, has the digest devices hold). Only tract-core's registry, as on devices: an operator
/// outside it fails here, at packaging, instead of on every device.
pub fn write(typed: &TypedModel) -> Result<Vec<u8>, ModelError> {
    tract_nnef::nnef().write_to_tar_with_config(typed, Vec::new(), false, true).map_err(|e| {
        let text = format!("{e:#}");
        // tract names the node it could not write by its Display form; say which operator and which of the
        // model's nodes it is, so the release engineer knows what to change in the model.
        match typed.nodes().iter().find(|n| text.contains(&format!("No serializer found for node {n}"))) {
            Some(n) => ModelError::Convert(format!(
                "operator {} (node {:?}) has no NNEF form that devices load (docs/release-engineering.md \
                 lists the ONNX operators in this case)",
                n.op.name(),
                n.name
            )),
            None => ModelError::Convert(text),
        }
    })
}

/// The interface of an NNEF archive: what a manifest for it must declare.
pub fn read_interface(bytes: &[u8]) -> Result<outpost_protocol::manifest::ModelInterface, ModelError> {
    crate::interface::read(&read(bytes)?)
}

//! The `.obundle` file: a signed manifest, then the zstd payload and the self-test section back to back as
//! the framing's `rest` ([`crate::signed`]):
//!
//! ```text
//! OBUNDLE1 | manifest | signatures | payload (manifest.payload.compressed_size bytes)
//!                                  | self-test section (manifest.selftest.size bytes, postcard vectors)
//! ```
//!
//! Building and inspecting live here; deciding whether to trust one lives in [`crate::verify`].

use crate::compress;
use crate::digest::Digest;
use crate::keys::{self, Domain, KeyId, PrivateKey, Signature};
use crate::limits::Limits;
use crate::manifest::{Compression, Manifest, ModelFormat, Payload, SelfTestSection, SelfTestVector};
use crate::rejection::{RejectReason, Rejection};
use crate::signed;

pub const BUNDLE_MAGIC: &[u8; 8] = b"OBUNDLE1";

/// Compresses a model, fully or as a delta against `base`, and describes the result for the manifest.
pub fn prepare_payload(model: &[u8], base: Option<&[u8]>, format: ModelFormat) -> (Payload, Vec<u8>) {
    let (compression, bytes) = match base {
        None => (Compression::Full, compress::compress_full(model)),
        Some(base) => (
            Compression::Delta { base_sha256: Digest::of(base), base_size: base.len() as u64 },
            compress::compress_delta(base, model),
        ),
    };
    let payload = Payload {
        format,
        compression,
        compressed_size: bytes.len() as u64,
        compressed_sha256: Digest::of(&bytes),
        model_size: model.len() as u64,
        model_sha256: Digest::of(model),
    };
    (payload, bytes)
}

/// Encodes a bundle of `payload` and `selftest`, signed by every key in `keys`. The manifest's `selftest`
/// section is filled in here from the vectors, so it always describes the section that follows.
pub fn create(manifest: &Manifest, keys: &[PrivateKey], payload: &[u8], selftest: &[SelfTestVector]) -> Vec<u8> {
    let (section, vectors) = SelfTestSection::encode(selftest);
    let mut manifest = manifest.clone();
    manifest.selftest = section;
    let body = manifest.to_bytes();
    let sigs: Vec<Signature> = keys.iter().map(|k| keys::sign(k, Domain::Manifest, &body)).collect();
    let mut rest = Vec::with_capacity(payload.len() + vectors.len());
    rest.extend_from_slice(payload);
    rest.extend_from_slice(&vectors);
    signed::encode(BUNDLE_MAGIC, &body, &sigs, &rest)
}

/// Adds `key`'s signature to an existing bundle (for k-of-n thresholds, each key holder signs in turn).
/// Signing twice with one key changes nothing: thresholds count distinct keys.
pub fn add_signature(bundle: &[u8], key: &PrivateKey, limits: &Limits) -> Result<Vec<u8>, Rejection> {
    let file = signed::parse(bundle, BUNDLE_MAGIC, "bundle", limits.max_manifest, limits)?;
    let mut sigs = file.signatures;
    let id = KeyId::of(&key.verifying_key());
    if !sigs.iter().any(|s| s.key_id == id) {
        sigs.push(keys::sign(key, Domain::Manifest, file.body));
    }
    Ok(signed::encode(BUNDLE_MAGIC, file.body, &sigs, file.rest))
}

/// A bundle decoded without any trust decision: for `inspect`, the controller's catalogue, and tests.
#[derive(Debug, Clone)]
pub struct Inspected {
    pub manifest: Manifest,
    pub signatures: Vec<Signature>,
    /// Bytes after the signatures: the payload and the self-test section.
    pub payload_len: u64,
    /// SHA-256 of the whole bundle file: its content address.
    pub digest: Digest,
}

pub fn inspect(bundle: &[u8], limits: &Limits) -> Result<Inspected, Rejection> {
    let file = signed::parse(bundle, BUNDLE_MAGIC, "bundle", limits.max_manifest, limits)?;
    Ok(Inspected {
        manifest: decode_manifest(file.body)?,
        signatures: file.signatures,
        payload_len: file.rest.len() as u64,
        digest: Digest::of(bundle),
    })
}

pub(crate) fn decode_manifest(body: &[u8]) -> Result<Manifest, Rejection> {
    // The format comes first and is read on its own: a manifest of another format does not decode as this
    // one's fields, and "format 1 is not supported" says more than a postcard error.
    let format = postcard::take_from_bytes::<u16>(body).map(|(f, _)| f);
    if let Ok(format) = format
        && format != crate::manifest::MANIFEST_FORMAT
    {
        return Err(Rejection::new(
            RejectReason::Malformed,
            format!(
                "manifest format {format} is not supported by this agent (it reads format {})",
                crate::manifest::MANIFEST_FORMAT
            ),
        ));
    }
    postcard::from_bytes(body).map_err(|e| Rejection::new(RejectReason::Malformed, format!("manifest: {e}")))
}

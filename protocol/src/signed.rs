//! The framing shared by trust policies and bundles, and the threshold check over their signatures.
//!
//! ```text
//! magic (8 bytes) | body length (u32 LE) | body | signatures length (u32 LE) | signatures | rest
//! ```
//! The body is signed as exact bytes and only decoded after its signatures verify, so the decoder never
//! sees unauthenticated input. `rest` is the bundle payload (empty for a policy).

use crate::keys::{self, Domain, KeyId, PublicKey, Signature};
use crate::rejection::{RejectReason, Rejection};
use std::collections::BTreeSet;

/// A parsed signed file, borrowing from the input.
#[derive(Debug, Clone)]
pub struct SignedFile<'a> {
    pub body: &'a [u8],
    pub signatures: Vec<Signature>,
    pub rest: &'a [u8],
}

/// Splits `bytes` into body, signatures and rest, bounding every length before use.
pub fn parse<'a>(
    bytes: &'a [u8],
    magic: &[u8; 8],
    what: &str,
    max_body: usize,
    limits: &crate::limits::Limits,
) -> Result<SignedFile<'a>, Rejection> {
    let max_signatures = limits.max_signatures;
    let truncated = |part: &str| Rejection::new(RejectReason::Truncated, format!("{what} ends inside its {part}"));
    if bytes.len() < 8 {
        return Err(truncated("header"));
    }
    if &bytes[..8] != magic {
        return Err(Rejection::new(
            RejectReason::Malformed,
            format!("not a {what}: expected magic {:?}", String::from_utf8_lossy(magic)),
        ));
    }
    let (body, after) =
        length_prefixed(&bytes[8..], max_body, what, "body").map_err(|e| e.unwrap_or_else(|| truncated("body")))?;
    // Bound the list's bytes before decoding it.
    let max_sig_bytes = limits.max_signature_bytes();
    let (sig_bytes, rest) = length_prefixed(after, max_sig_bytes, what, "signature list")
        .map_err(|e| e.unwrap_or_else(|| truncated("signature list")))?;
    let signatures: Vec<Signature> = postcard::from_bytes(sig_bytes)
        .map_err(|e| Rejection::new(RejectReason::Malformed, format!("{what} signature list: {e}")))?;
    if signatures.len() > max_signatures {
        return Err(Rejection::new(
            RejectReason::OverLimits,
            format!("{what} carries {} signatures; the limit is {max_signatures}", signatures.len()),
        ));
    }
    Ok(SignedFile { body, signatures, rest })
}

/// `Ok(None)` means truncated; the caller supplies the message.
fn length_prefixed<'a>(
    bytes: &'a [u8],
    max: usize,
    what: &str,
    part: &str,
) -> Result<(&'a [u8], &'a [u8]), Option<Rejection>> {
    let len_bytes: [u8; 4] = bytes.get(..4).ok_or(None)?.try_into().expect("4 bytes");
    let len = u32::from_le_bytes(len_bytes) as usize;
    if len > max {
        return Err(Some(Rejection::new(
            RejectReason::OverLimits,
            format!("{what} {part} declares {len} bytes; the limit is {max}"),
        )));
    }
    let body = bytes.get(4..4 + len).ok_or(None)?;
    Ok((body, &bytes[4 + len..]))
}

/// Writes the framing. `rest` is appended as is.
pub fn encode(magic: &[u8; 8], body: &[u8], signatures: &[Signature], rest: &[u8]) -> Vec<u8> {
    let sigs = postcard::to_allocvec(signatures).expect("signature list encodes");
    let mut out = Vec::with_capacity(16 + body.len() + sigs.len() + rest.len());
    out.extend_from_slice(magic);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
    out.extend_from_slice(&(sigs.len() as u32).to_le_bytes());
    out.extend_from_slice(&sigs);
    out.extend_from_slice(rest);
    out
}

/// Outcome of checking signatures against a key set and threshold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThresholdMet {
    /// Distinct keys whose signatures verified.
    pub signers: BTreeSet<KeyId>,
}

/// Counts distinct valid signatures by `trusted` keys over `body` in `domain`. A key signing twice counts
/// once (a single stolen key cannot fake a k-of-n threshold by repeating itself). A signature that claims
/// a trusted key but does not verify is refused outright: the bytes or the signature were tampered with.
/// Signatures by unknown keys are ignored unless they are all there is.
pub fn check_threshold(
    trusted: &[PublicKey],
    threshold: usize,
    domain: Domain,
    body: &[u8],
    signatures: &[Signature],
    what: &str,
    trusted_by: &str,
) -> Result<ThresholdMet, Rejection> {
    let mut signers = BTreeSet::new();
    let mut unknown = Vec::new();
    for sig in signatures {
        match trusted.iter().find(|k| KeyId::of(k) == sig.key_id) {
            Some(key) if keys::verify_one(key, domain, body, sig) => {
                signers.insert(sig.key_id);
            }
            Some(_) => {
                return Err(Rejection::new(
                    RejectReason::BadSignature,
                    format!("{what}: the signature by key {} does not verify", sig.key_id),
                ));
            }
            None => unknown.push(sig.key_id),
        }
    }
    if signers.len() >= threshold.max(1) {
        return Ok(ThresholdMet { signers });
    }
    if signers.is_empty() && !unknown.is_empty() {
        let ids: Vec<String> = unknown.iter().map(|k| k.to_string()).collect();
        return Err(Rejection::new(
            RejectReason::UnknownKey,
            format!("{what} is signed only by keys {trusted_by} does not list: {}", ids.join(", ")),
        ));
    }
    Err(Rejection::new(
        RejectReason::BelowThreshold,
        format!(
            "{what} has {} distinct valid signature(s) by keys {trusted_by} lists; {} required",
            signers.len(),
            threshold.max(1)
        ),
    ))
}

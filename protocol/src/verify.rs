//! `verify`: the one gate between bytes from the network and a model slot. A pure function of
//! (trust policy, pinned roots, bundle bytes, now, sequence floor, device facts, base model, limits).
//! It returns `Verified<VerifiedBundle>`, the only form the agent's update machine accepts.

use crate::UnixTime;
use crate::bundle::{self, BUNDLE_MAGIC};
use crate::compress::{self, DecompressError};
use crate::digest::Digest;
use crate::keys::{Domain, KeyId};
use crate::limits::Limits;
use crate::manifest::{Compression, Manifest, SelfTestVector};
use crate::names::Arch;
use crate::rejection::{RejectReason, Rejection};
use crate::signed;
use crate::trust::{self, RootKeys};
use crate::version::Version;

/// Proof that a value passed verification. Only this crate can make one.
#[derive(Debug, Clone)]
pub struct Verified<T>(T);

impl<T> Verified<T> {
    pub(crate) fn new(value: T) -> Self {
        Verified(value)
    }
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> std::ops::Deref for Verified<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// What the device is, for target checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceFacts {
    pub arch: Arch,
    pub agent_version: Version,
}

/// Everything `verify` needs. `base` is the model a delta applies to (the device's active model).
#[derive(Debug, Clone)]
pub struct VerifyRequest<'a> {
    pub policy: &'a [u8],
    pub roots: &'a RootKeys,
    pub bundle: &'a [u8],
    pub now: UnixTime,
    /// Seconds of tolerance on expiry checks, for devices whose clock may lag (no RTC, no NTP yet).
    pub expiry_grace: u64,
    /// The highest release sequence this device has committed for the model; only higher ones pass.
    pub floor: u64,
    /// The highest trust policy version this device has accepted; older policies are refused.
    pub policy_floor: u64,
    pub device: &'a DeviceFacts,
    pub base: Option<&'a [u8]>,
    pub limits: &'a Limits,
}

#[derive(Debug, Clone)]
pub struct VerifiedBundle {
    pub manifest: Manifest,
    /// The decompressed model, its SHA-256 equal to `manifest.payload.model_sha256`.
    pub model: Vec<u8>,
    /// The self-test vectors, from a section whose size, SHA-256 and count are the manifest's.
    pub selftest: Vec<SelfTestVector>,
    /// The self-test section's bytes as signed (what the device stores beside the model).
    pub selftest_bytes: Vec<u8>,
    pub signers: Vec<KeyId>,
    pub policy_version: u64,
    pub bundle_digest: Digest,
}

pub fn verify(req: &VerifyRequest<'_>) -> Result<Verified<VerifiedBundle>, Rejection> {
    let limits = req.limits;
    if req.bundle.len() as u64 > limits.max_bundle() {
        return Err(Rejection::new(
            RejectReason::OverLimits,
            format!("bundle is {} bytes; the limit is {}", req.bundle.len(), limits.max_bundle()),
        ));
    }
    let policy = trust::verify_policy(req.policy, req.roots, req.now, req.expiry_grace, req.policy_floor, limits)?;
    let file = signed::parse(req.bundle, BUNDLE_MAGIC, "bundle", limits.max_manifest, limits)?;
    // Signatures first, over the exact bytes; the manifest is decoded only once it is authentic.
    let signers = signed::check_threshold(
        &policy.release_keys,
        usize::from(policy.policy.threshold),
        Domain::Manifest,
        file.body,
        &file.signatures,
        "manifest",
        "the trust policy",
    )?;
    let m = bundle::decode_manifest(file.body)?;
    let what = format!("{} {} (sequence {})", m.name, m.version, m.sequence);

    // Freeze / replay: an expired release must not install, even if correctly signed.
    if req.now > m.expires.saturating_add(req.expiry_grace) {
        return Err(Rejection::new(
            RejectReason::ManifestExpired,
            format!("{what} expired at {} (now {}, grace {} s)", m.expires, req.now, req.expiry_grace),
        ));
    }
    // Rollback: an old, correctly signed release with a known flaw must not come back.
    if m.sequence <= req.floor {
        return Err(Rejection::new(
            RejectReason::Rollback,
            format!("{what} is at or below this device's release floor {}", req.floor),
        ));
    }
    if !m.targets.archs.is_empty() && !m.targets.archs.contains(&req.device.arch) {
        let archs: Vec<&str> = m.targets.archs.iter().map(|a| a.as_str()).collect();
        return Err(Rejection::new(
            RejectReason::WrongArch,
            format!("{what} targets {}; this device is {}", archs.join(", "), req.device.arch),
        ));
    }
    if req.device.agent_version < m.targets.min_agent {
        return Err(Rejection::new(
            RejectReason::AgentTooOld,
            format!("{what} needs agent {} or newer; this agent is {}", m.targets.min_agent, req.device.agent_version),
        ));
    }
    // Endless data: declared sizes must fit the device before anything is read or allocated by them.
    let p = &m.payload;
    if p.compressed_size > limits.max_payload || p.model_size > limits.max_model {
        return Err(Rejection::new(
            RejectReason::OverLimits,
            format!(
                "{what} declares a {} byte payload and a {} byte model; limits are {} and {}",
                p.compressed_size, p.model_size, limits.max_payload, limits.max_model
            ),
        ));
    }
    let st = &m.selftest;
    if st.size > limits.max_selftest {
        return Err(Rejection::new(
            RejectReason::OverLimits,
            format!("{what} declares a {} byte self-test section; the limit is {}", st.size, limits.max_selftest),
        ));
    }
    // Both sizes are bounded above, so the sum cannot overflow.
    let declared = p.compressed_size + st.size;
    if file.rest.len() as u64 != declared {
        return Err(Rejection::new(
            RejectReason::PayloadSizeMismatch,
            format!(
                "{what}: payload and self-test section are {} bytes; the manifest declares {} + {}",
                file.rest.len(),
                p.compressed_size,
                st.size
            ),
        ));
    }
    let (payload, section) = file.rest.split_at(p.compressed_size as usize);
    // Mix-and-match: self-test vectors from another release would test (and pass) the wrong model.
    let section_digest = Digest::of(section);
    if section_digest != st.sha256 {
        return Err(Rejection::new(
            RejectReason::PayloadDigestMismatch,
            format!(
                "{what}: self-test section sha256 {} differs from the manifest's {}",
                section_digest.short(),
                st.sha256.short()
            ),
        ));
    }
    let selftest = st.decode(section).map_err(|e| Rejection::new(RejectReason::Malformed, format!("{what}: {e}")))?;
    // Mix-and-match: a valid manifest glued to another payload.
    let payload_digest = Digest::of(payload);
    if payload_digest != p.compressed_sha256 {
        return Err(Rejection::new(
            RejectReason::PayloadDigestMismatch,
            format!(
                "{what}: payload sha256 {} differs from the manifest's {}",
                payload_digest.short(),
                p.compressed_sha256.short()
            ),
        ));
    }
    let base = match &p.compression {
        Compression::Full => None,
        Compression::Delta { base_sha256, base_size } => match req.base {
            Some(b) if b.len() as u64 == *base_size && Digest::of(b) == *base_sha256 => Some(b),
            Some(b) => {
                return Err(Rejection::new(
                    RejectReason::DeltaBaseMismatch,
                    format!(
                        "{what} is a delta against {} but the device's base model is {}",
                        base_sha256.short(),
                        Digest::of(b).short()
                    ),
                ));
            }
            None => {
                return Err(Rejection::new(
                    RejectReason::DeltaBaseMismatch,
                    format!("{what} is a delta against {} and the device has no base model", base_sha256.short()),
                ));
            }
        },
    };
    let model = compress::decompress_capped(payload, base, p.model_size).map_err(|e| match e {
        DecompressError::TooLarge { .. } => Rejection::new(RejectReason::DecompressionBomb, format!("{what}: {e}")),
        DecompressError::TooSmall { .. } => Rejection::new(RejectReason::PayloadSizeMismatch, format!("{what}: {e}")),
        DecompressError::Corrupt(_) => Rejection::new(RejectReason::Malformed, format!("{what}: payload: {e}")),
    })?;
    let model_digest = Digest::of(&model);
    if model_digest != p.model_sha256 {
        return Err(Rejection::new(
            RejectReason::PayloadDigestMismatch,
            format!(
                "{what}: model sha256 {} differs from the manifest's {}",
                model_digest.short(),
                p.model_sha256.short()
            ),
        ));
    }
    Ok(Verified::new(VerifiedBundle {
        selftest_bytes: section.to_vec(),
        manifest: m,
        model,
        selftest,
        signers: signers.signers.into_iter().collect(),
        policy_version: policy.policy.version,
        bundle_digest: Digest::of(req.bundle),
    }))
}

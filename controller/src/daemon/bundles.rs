//! The bundle catalogue: pushed bundles are verified (against the controller's copy of the trust root)
//! before they are stored, content-addressed, so a rollout can only ever ship what devices will accept.

use super::store::{Store, Table};
use outpost_protocol::bundle;
use outpost_protocol::manifest::Compression;
use outpost_protocol::trust::RootKeys;
use outpost_protocol::verify::{self, DeviceFacts, VerifyRequest};
use outpost_protocol::{Arch, Digest, Limits, Version};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BundleMeta {
    pub digest: String,
    pub name: String,
    pub version: String,
    pub sequence: u64,
    pub size: u64,
    pub compression: String,
    pub base_sha256: Option<String>,
    pub model_sha256: String,
    pub archs: Vec<String>,
    pub expires: u64,
    pub pushed_at: u64,
    pub signers: Vec<String>,
    /// The oldest agent the bundle runs on (`outpost skew --agents`); absent in bundles pushed before.
    #[serde(default)]
    pub min_agent: Option<Version>,
}

/// The trust material the controller checks pushed bundles with: the same policy and roots the devices pin.
#[derive(Debug, Clone)]
pub struct Trust {
    pub policy: Vec<u8>,
    pub roots: RootKeys,
}

/// Verifies `bytes` as a device would (any architecture it targets, the newest agent, no floor) and
/// stores it. A delta is checked against its base, which must have been pushed before.
pub fn push(store: &Store, trust: &Trust, bytes: &[u8], now: u64) -> Result<BundleMeta, String> {
    let limits = Limits::default();
    let inspected = bundle::inspect(bytes, &limits).map_err(|r| format!("rejected: {r}"))?;
    let m = &inspected.manifest;
    let base = match &m.payload.compression {
        Compression::Full => None,
        Compression::Delta { base_sha256, .. } => Some(base_model(store, trust, base_sha256, now)?),
    };
    let arch = m.targets.archs.first().copied().unwrap_or(Arch::X86_64);
    let device = DeviceFacts { arch, agent_version: Version::new(u32::MAX, 0, 0) };
    let verified = verify::verify(&VerifyRequest {
        policy: &trust.policy,
        roots: &trust.roots,
        bundle: bytes,
        now,
        expiry_grace: 0,
        floor: 0,
        policy_floor: 0,
        device: &device,
        base: base.as_deref(),
        limits: &limits,
    })
    .map_err(|r| format!("rejected: {r}"))?;
    let digest = Digest::of(bytes);
    let path = store.bundle_path(&digest);
    crate::files::write_atomic(&path, bytes, None).map_err(|e| e.to_string())?;
    let (compression, base_sha256) = match &m.payload.compression {
        Compression::Full => ("full".to_string(), None),
        Compression::Delta { base_sha256, .. } => ("delta".to_string(), Some(base_sha256.to_hex())),
    };
    let meta = BundleMeta {
        digest: digest.to_hex(),
        name: m.name.to_string(),
        version: m.version.to_string(),
        sequence: m.sequence,
        size: bytes.len() as u64,
        compression,
        base_sha256,
        model_sha256: m.payload.model_sha256.to_hex(),
        archs: m.targets.archs.iter().map(|a| a.to_string()).collect(),
        expires: m.expires,
        pushed_at: now,
        signers: verified.signers.iter().map(|k| k.to_string()).collect(),
        min_agent: Some(m.targets.min_agent),
    };
    store.put(Table::Bundles, &meta.digest, &meta).map_err(|e| e.to_string())?;
    Ok(meta)
}

/// The decompressed model of a stored full bundle whose model digest is `model_sha256`.
fn base_model(store: &Store, trust: &Trust, model_sha256: &Digest, now: u64) -> Result<Vec<u8>, String> {
    let all: Vec<BundleMeta> = store.all(Table::Bundles).map_err(|e| e.to_string())?;
    let hex = model_sha256.to_hex();
    let meta = all.iter().find(|b| b.model_sha256 == hex && b.compression == "full").ok_or_else(|| {
        format!("delta against model {}, which no pushed full bundle contains: push it first", model_sha256.short())
    })?;
    let digest: Digest = meta.digest.parse()?;
    let bytes = std::fs::read(store.bundle_path(&digest)).map_err(|e| e.to_string())?;
    let device = DeviceFacts { arch: Arch::X86_64, agent_version: Version::new(u32::MAX, 0, 0) };
    let archs: Vec<Arch> = meta.archs.iter().filter_map(|a| a.parse().ok()).collect();
    let device = DeviceFacts { arch: archs.first().copied().unwrap_or(device.arch), ..device };
    let verified = verify::verify(&VerifyRequest {
        policy: &trust.policy,
        roots: &trust.roots,
        bundle: &bytes,
        now,
        expiry_grace: u64::MAX / 4,
        floor: 0,
        policy_floor: 0,
        device: &device,
        base: None,
        limits: &Limits::default(),
    })
    .map_err(|r| format!("base bundle {}: {r}", meta.digest))?;
    Ok(verified.into_inner().model)
}

/// Finds a stored bundle by `name@version` or by (a prefix of) its digest.
pub fn find(store: &Store, spec: &str) -> Result<BundleMeta, String> {
    let all: Vec<BundleMeta> = store.all(Table::Bundles).map_err(|e| e.to_string())?;
    let hits: Vec<&BundleMeta> = match spec.split_once('@') {
        Some((name, version)) => all.iter().filter(|b| b.name == name && b.version == version).collect(),
        None => all.iter().filter(|b| spec.len() >= 6 && b.digest.starts_with(spec)).collect(),
    };
    match hits.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(format!("no pushed bundle matches {spec:?} (use NAME@VERSION or a digest prefix)")),
        many => Err(format!("{spec:?} matches {} bundles; use the digest", many.len())),
    }
}

/// The pushed bundle of `model` with the highest release sequence: what a removal rollout names.
pub fn newest(store: &Store, model: &str) -> Result<BundleMeta, String> {
    let all: Vec<BundleMeta> = store.all(Table::Bundles).map_err(|e| e.to_string())?;
    all.into_iter().filter(|b| b.name == model).max_by_key(|b| b.sequence).ok_or_else(|| {
        format!(
            "no bundle of {model} was pushed: a removal names the model's release in each device's desired \
             state; push the release the devices run first (outpost bundle push)"
        )
    })
}

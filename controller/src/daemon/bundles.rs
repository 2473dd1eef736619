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
    pick(&all, spec).cloned()
}

/// [`find`] over a list. A refusal says what to type instead: the matching bundles with their digests
/// when the name is ambiguous, the pushed versions when only a model name was given.
pub fn pick<'a>(all: &'a [BundleMeta], spec: &str) -> Result<&'a BundleMeta, String> {
    let line = |b: &BundleMeta| {
        format!("  {}  {}@{}  sequence {}  pushed {}", b.digest, b.name, b.version, b.sequence, utc(b.pushed_at))
    };
    let listed = |hits: &[&BundleMeta]| hits.iter().map(|b| line(b)).collect::<Vec<_>>().join("\n");
    let hits: Vec<&BundleMeta> = match spec.split_once('@') {
        Some((name, version)) => all.iter().filter(|b| b.name == name && b.version == version).collect(),
        None => all.iter().filter(|b| spec.len() >= 6 && b.digest.starts_with(spec)).collect(),
    };
    match hits.as_slice() {
        [one] => Ok(one),
        [] => {
            let name = spec.split_once('@').map_or(spec, |(n, _)| n);
            let mut same: Vec<&BundleMeta> = all.iter().filter(|b| b.name == name).collect();
            same.sort_by_key(|b| b.sequence);
            if same.is_empty() {
                Err(format!(
                    "no pushed bundle matches {spec:?}: give NAME@VERSION or a digest prefix of 6 or more hex digits \
                     (outpost bundle list shows them)"
                ))
            } else {
                Err(format!(
                    "no pushed bundle matches {spec:?}; the pushed bundles of {name} are:\n{}\ngive NAME@VERSION or a digest prefix",
                    listed(&same)
                ))
            }
        }
        many => Err(format!(
            "{spec:?} matches {} bundles:\n{}\ngive a longer digest prefix to choose one",
            many.len(),
            listed(many)
        )),
    }
}

/// `2026-12-06 08:00:00 UTC`, or `-` for an unknown time.
fn utc(secs: u64) -> String {
    if secs == 0 { "-".into() } else { format!("{} UTC", crate::duration::utc(secs)) }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(digest: &str, name: &str, version: &str, sequence: u64) -> BundleMeta {
        BundleMeta {
            digest: digest.into(),
            name: name.into(),
            version: version.into(),
            sequence,
            size: 1,
            compression: "full".into(),
            base_sha256: None,
            model_sha256: String::new(),
            archs: vec![],
            expires: 0,
            pushed_at: 1_796_515_200,
            signers: vec![],
            min_agent: None,
        }
    }

    #[test]
    fn an_ambiguous_bundle_name_lists_the_matching_digests_and_a_bare_model_name_its_versions() {
        let all = [
            meta("aaaaaa11", "digits", "2.0.0", 2),
            meta("aaaaaa22", "digits", "2.0.0", 3),
            meta("bbbbbb33", "digits", "1.0.0", 1),
            meta("cccccc44", "kws", "1.0.0", 1),
        ];
        assert_eq!(pick(&all, "digits@1.0.0").unwrap().digest, "bbbbbb33");
        assert_eq!(pick(&all, "aaaaaa2").unwrap().digest, "aaaaaa22");
        let e = pick(&all, "digits@2.0.0").unwrap_err();
        assert!(e.starts_with("\"digits@2.0.0\" matches 2 bundles:\n"), "{e}");
        assert!(e.contains("  aaaaaa11  digits@2.0.0  sequence 2  pushed 2026-12-06 00:00:00 UTC\n"), "{e}");
        assert!(e.contains("  aaaaaa22  digits@2.0.0  sequence 3"), "{e}");
        assert!(pick(&all, "aaaaaa").unwrap_err().contains("matches 2 bundles"));
        let e = pick(&all, "digits").unwrap_err();
        assert!(e.contains("the pushed bundles of digits are:\n  bbbbbb33  digits@1.0.0"), "{e}");
        assert!(!e.contains("kws"), "{e}");
        let e = pick(&all, "vision@1.0.0").unwrap_err();
        assert!(e.contains("outpost bundle list"), "{e}");
    }
}

//! The release engineer's part of the demo, done with the controller's own release code (what `outpost
//! keys gen`, `trust init` and `bundle create` run): root and release keys, the trust policy devices pin,
//! and the three signed digits bundles.

use outpost_controller::release::bundle::{self, Create};
use outpost_controller::release::keys::{self, TrustInit};
use outpost_protocol::{ModelName, Version};
use std::path::{Path, PathBuf};

/// A release the demo rolls out.
#[derive(Debug, Clone)]
pub struct Release {
    pub version: Version,
    pub bundle: PathBuf,
}

impl Release {
    /// How the controller names a pushed bundle.
    pub fn reference(&self) -> String {
        format!("digits@{}", self.version)
    }
}

/// What devices and the controller need to trust releases.
#[derive(Debug, Clone)]
pub struct Trust {
    pub policy: PathBuf,
    pub root_pub: PathBuf,
}

/// Makes the keys and the policy in `out/keys` and `out/trust.policy`, and the bundles in `out/bundles`:
/// v1 (1.0.0), v2 (2.0.0, retrained head) and `digits-subtle` (2.1.0: classes 3 and 8 swapped — it
/// loads, passes the structural checks and never errs; only comparing its answers shows it is worse).
pub fn prepare(out: &Path, models: &Path) -> anyhow::Result<(Trust, Vec<Release>)> {
    let keys_dir = out.join("keys");
    let (root_key, root_pub, _) = keys::generate(&keys_dir, "root")?;
    let (release_key, release_pub, _) = keys::generate(&keys_dir, "release")?;
    let now = outpost_controller::release::now();
    let policy = out.join("trust.policy");
    keys::trust_init(&TrustInit {
        root_keys: vec![root_key],
        release_pubs: vec![release_pub],
        threshold: 1,
        version: 1,
        now,
        lifetime_secs: 365 * 86_400,
        out: policy.clone(),
    })?;
    let bundles = out.join("bundles");
    std::fs::create_dir_all(&bundles)?;
    let mut releases = Vec::new();
    for (i, (model, version)) in [("v1", "1.0.0"), ("v2", "2.0.0"), ("subtle", "2.1.0")].into_iter().enumerate() {
        let version: Version = version.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
        let path = bundles.join(format!("digits-{version}.obundle"));
        bundle::create(&Create {
            model: models.join(format!("digits-{model}.onnx")),
            name: ModelName::new("digits")?,
            version,
            sequence: i as u64 + 1,
            keys: vec![release_key.clone()],
            base: None,
            // Self-test vectors and the drift reference come from the held-out digits.
            selftest_inputs: vec![(None, models.join("digits-test-inputs.f32"))],
            selftest_count: 8,
            archs: vec![],
            min_agent: Version::new(0, 1, 0),
            now,
            lifetime_secs: 30 * 86_400,
            out: path.clone(),
        })?;
        releases.push(Release { version, bundle: path });
    }
    Ok((Trust { policy, root_pub }, releases))
}

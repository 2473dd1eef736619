//! The release engineer's part of the demo, done with the controller's own release code (what `outpost
//! keys gen`, `trust init` and `bundle create` run): root and release keys, the trust policy devices pin,
//! the three signed digits bundles and the two vibration bundles.

use outpost_controller::release::bundle::{self, Create};
use outpost_controller::release::keys::{self, TrustInit};
use outpost_protocol::{Limits, ModelName, Version};
use std::path::{Path, PathBuf};

/// A release the demo rolls out.
#[derive(Debug, Clone)]
pub struct Release {
    pub model: &'static str,
    pub version: Version,
    pub bundle: PathBuf,
}

impl Release {
    /// How the controller names a pushed bundle.
    pub fn reference(&self) -> String {
        format!("{}@{}", self.model, self.version)
    }

    /// `digits 2.0.0`: how the demo's load, progress and report name a model version.
    pub fn label(&self) -> String {
        format!("{} {}", self.model, self.version)
    }
}

/// What devices and the controller need to trust releases.
#[derive(Debug, Clone)]
pub struct Trust {
    pub policy: PathBuf,
    pub root_pub: PathBuf,
    /// The controller's director key, named in the policy: devices take its reverts and removals.
    pub director_key: PathBuf,
}

/// Makes the keys and the policy in `out/keys` and `out/trust.policy`, and the bundles in `out/bundles`:
/// digits v1 (1.0.0), v2 (2.0.0, retrained head) and `digits-subtle` (2.1.0: classes 3 and 8 swapped — it
/// loads, passes the structural checks and never errs; only comparing its answers shows it is worse),
/// then vibration 1.0.0 and 1.1.0 (the machine-vibration anomaly detector, trained on).
pub fn prepare(out: &Path, models: &Path) -> anyhow::Result<(Trust, Vec<Release>)> {
    let keys_dir = out.join("keys");
    let (root_key, root_pub, _) = keys::generate(&keys_dir, "root")?;
    let (release_key, release_pub, _) = keys::generate(&keys_dir, "release")?;
    let (director_key, director_pub, _) = keys::generate(&keys_dir, "director")?;
    let now = outpost_controller::release::now();
    let policy = out.join("trust.policy");
    keys::trust_init(&TrustInit {
        root_keys: vec![root_key],
        release_pubs: vec![release_pub],
        director_pubs: vec![director_pub],
        threshold: 1,
        version: 1,
        now,
        lifetime_secs: 365 * 86_400,
        out: policy.clone(),
    })?;
    let bundles = out.join("bundles");
    std::fs::create_dir_all(&bundles)?;
    let mut releases = Vec::new();
    let releases_to_make = [
        ("digits", "v1", "1.0.0", 1),
        ("digits", "v2", "2.0.0", 2),
        ("digits", "subtle", "2.1.0", 3),
        ("vibration", "v1", "1.0.0", 1),
        ("vibration", "v2", "1.1.0", 2),
    ];
    for (name, file, version, sequence) in releases_to_make {
        let version: Version = version.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
        let path = bundles.join(format!("{name}-{version}.obundle"));
        bundle::create(&Create {
            model: models.join(format!("{name}-{file}.onnx")),
            name: ModelName::new(name)?,
            version,
            sequence,
            keys: vec![release_key.clone()],
            base: None,
            // Self-test vectors and the drift reference come from the model's held-out test set.
            selftest_inputs: vec![(None, models.join(format!("{name}-test-inputs.f32")))],
            selftest_count: 8,
            archs: vec![],
            min_agent: Version::new(0, 1, 0),
            now,
            lifetime_secs: 30 * 86_400,
            out: path.clone(),
            limits: Limits::default(),
        })?;
        releases.push(Release { model: name, version, bundle: path });
    }
    Ok((Trust { policy, root_pub, director_key }, releases))
}

//! The releases of the simulated world: for every model of the run, the baseline every device runs at the
//! start and the release being rolled out. Bundles are small but real bytes, cut into chunks with real
//! SHA-256 digests in the `BundleRef`, so a chunk corrupted in transit really fails its digest on the device.
//!
//! Releases are numbered across models: model `m`'s baseline is release [`base`]`(m)`, its release
//! [`target`]`(m)`. The first model's are [`BASE`] and [`TARGET`].

use super::rng::Rng;
use super::scenario::ModelCfg;
use outpost_protocol::messages::{BundleRef, RunningModel};
use outpost_protocol::{Digest, ModelName, Version};

/// The first model's baseline: every device runs it (verified, committed) when the run starts.
pub const BASE: u8 = 0;
/// The first model's release being rolled out.
pub const TARGET: u8 = 1;

/// Model `m`'s baseline.
pub const fn base(m: u8) -> u8 {
    2 * m
}

/// Model `m`'s release being rolled out.
pub const fn target(m: u8) -> u8 {
    2 * m + 1
}

#[derive(Debug, Clone)]
pub struct ReleaseInfo {
    /// Index of the model this is a release of.
    pub model: u8,
    pub running: RunningModel,
    pub bundle: BundleRef,
    pub chunk_data: Vec<Vec<u8>>,
    /// Signed by the release key the devices' trust policy lists.
    pub signed: bool,
    pub error_rate: f64,
    pub p95_us: u32,
}

#[derive(Debug, Clone)]
pub struct Catalog {
    pub models: Vec<ModelName>,
    pub releases: Vec<ReleaseInfo>,
}

impl Catalog {
    pub fn new(models: &[ModelCfg]) -> Catalog {
        // Content comes from a fixed seed: the bytes (and so the digests) do not depend on the run's seed.
        let mut rng = Rng::new(0x6f75_7470_6f73_7421);
        let mut releases = Vec::with_capacity(2 * models.len());
        let mut names = Vec::with_capacity(models.len());
        for (m, cfg) in models.iter().enumerate() {
            let model = ModelName::new(&cfg.name).expect("validated with the scenario");
            let mut make = |version: Version, sequence: u64, signed: bool, b: (f64, u32), chunks: u32, size: u32| {
                let chunk_data: Vec<Vec<u8>> =
                    (0..chunks).map(|_| (0..size).map(|_| rng.next_u64() as u8).collect()).collect();
                let all: Vec<u8> = chunk_data.concat();
                let model_digest = Digest::of(format!("model {model} {version} seq {sequence}").as_bytes());
                ReleaseInfo {
                    model: m as u8,
                    running: RunningModel { name: model.clone(), version, digest: model_digest, sequence },
                    bundle: BundleRef {
                        digest: Digest::of(&all),
                        size: all.len() as u64,
                        chunk_size: size,
                        chunks: chunk_data.iter().map(|c| Digest::of(c)).collect(),
                    },
                    chunk_data,
                    signed,
                    error_rate: b.0,
                    p95_us: b.1,
                }
            };
            let (bl, r) = (&cfg.baseline, &cfg.release);
            releases.push(make(Version::new(1, 0, 0), 10, true, (bl.error_rate, bl.p95_us), 2, 64));
            releases.push(make(Version::new(1, 1, 0), 11, r.signed, (r.error_rate, r.p95_us), r.chunks, r.chunk_size));
            names.push(model);
        }
        Catalog { models: names, releases }
    }

    /// The first model's name.
    pub fn model(&self) -> &ModelName {
        &self.models[0]
    }

    /// Index of the model called `name`.
    pub fn index(&self, name: &str) -> Option<u8> {
        self.models.iter().position(|m| m.as_str() == name).map(|i| i as u8)
    }

    pub fn by_bundle(&self, digest: &Digest) -> Option<u8> {
        self.releases.iter().position(|r| &r.bundle.digest == digest).map(|i| i as u8)
    }

    pub fn by_model(&self, digest: &Digest) -> Option<u8> {
        self.releases.iter().position(|r| &r.running.digest == digest).map(|i| i as u8)
    }

    pub fn get(&self, r: u8) -> &ReleaseInfo {
        &self.releases[r as usize]
    }

    /// A release as people read it: `v1.1.0`, with the model's name when the run has several.
    pub fn label(&self, r: Option<u8>) -> String {
        match r {
            Some(r) if self.models.len() > 1 => {
                let info = self.get(r);
                format!("{} v{}", info.running.name, info.running.version)
            }
            Some(r) => format!("v{}", self.get(r).running.version),
            None => "none".into(),
        }
    }
}

//! The releases of the simulated world: the baseline every device runs at the start and the release being
//! rolled out. Bundles are small but real bytes, cut into chunks with real SHA-256 digests in the
//! `BundleRef`, so a chunk corrupted in transit really fails its digest on the device.

use super::rng::Rng;
use super::scenario::{Model, Release as ReleaseCfg};
use outpost_protocol::messages::{BundleRef, RunningModel};
use outpost_protocol::{Digest, ModelName, Version};

/// Index of the model every device runs (verified, committed) when the run starts.
pub const BASE: u8 = 0;
/// Index of the release being rolled out.
pub const TARGET: u8 = 1;

#[derive(Debug, Clone)]
pub struct ReleaseInfo {
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
    pub releases: Vec<ReleaseInfo>,
}

impl Catalog {
    pub fn new(baseline: &Model, release: &ReleaseCfg) -> Catalog {
        let model = ModelName::new("digits").expect("a valid name");
        // Content comes from a fixed seed: the bytes (and so the digests) do not depend on the run's seed.
        let mut rng = Rng::new(0x0u64.wrapping_add(0x6f75_7470_6f73_7421));
        let mut make = |version: Version, sequence: u64, signed: bool, m: (f64, u32), chunks: u32, size: u32| {
            let chunk_data: Vec<Vec<u8>> =
                (0..chunks).map(|_| (0..size).map(|_| rng.next_u64() as u8).collect()).collect();
            let all: Vec<u8> = chunk_data.concat();
            let model_digest = Digest::of(format!("model {model} {version} seq {sequence}").as_bytes());
            ReleaseInfo {
                running: RunningModel { name: model.clone(), version, digest: model_digest, sequence },
                bundle: BundleRef {
                    digest: Digest::of(&all),
                    size: all.len() as u64,
                    chunk_size: size,
                    chunks: chunk_data.iter().map(|c| Digest::of(c)).collect(),
                },
                chunk_data,
                signed,
                error_rate: m.0,
                p95_us: m.1,
            }
        };
        let base = make(Version::new(1, 0, 0), 10, true, (baseline.error_rate, baseline.p95_us), 2, 64);
        let target = make(
            Version::new(1, 1, 0),
            11,
            release.signed,
            (release.error_rate, release.p95_us),
            release.chunks,
            release.chunk_size,
        );
        Catalog { releases: vec![base, target] }
    }

    /// The model every release is of.
    pub fn model(&self) -> &ModelName {
        &self.releases[BASE as usize].running.name
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

    pub fn label(&self, r: Option<u8>) -> String {
        match r {
            Some(r) => format!("v{}", self.get(r).running.version),
            None => "none".into(),
        }
    }
}

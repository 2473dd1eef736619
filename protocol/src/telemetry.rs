//! Telemetry records: what devices measure, buffered on the device and shipped in batches.

use crate::UnixTime;
use crate::digest::Digest;
use crate::names::ModelName;
use crate::rejection::RejectReason;
use crate::version::Version;
use serde::{Deserialize, Serialize};

/// Upper bounds (µs) of the latency histogram buckets; the last bucket is open-ended. Fixed in the
/// protocol so every device's histograms add up at the controller.
pub const LATENCY_BUCKETS_US: [u32; 15] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000,
];

/// One buffered record, numbered by the device's telemetry queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub seq: u64,
    pub at: UnixTime,
    pub body: RecordBody,
}

/// Only append variants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RecordBody {
    Inference(InferenceWindow),
    Update(UpdateEvent),
    Health(DeviceHealth),
    /// The queue hit its cap and dropped this many oldest records (drop-oldest policy).
    Dropped {
        count: u64,
    },
    /// The device received the fleet's trust (`outpost/v1/fleet/trust`) and took it or refused it.
    Trust(TrustEvent),
}

/// What a device did with a trust update. Recorded when the outcome changes, not for every redelivery of
/// the retained message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustEvent {
    /// The root and policy versions the device holds afterwards.
    pub root_version: u64,
    pub policy_version: u64,
    /// `None`: taken (a newer root, policy or both). Otherwise why the chain or the policy was refused.
    pub reason: Option<RejectReason>,
    pub detail: String,
}

/// Aggregates over one window of local inference for one model version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InferenceWindow {
    pub model: ModelName,
    pub version: Version,
    pub digest: Digest,
    pub window_start: UnixTime,
    pub window_secs: u32,
    /// Every request asked of the model, whatever its answer.
    pub requests: u64,
    /// Answers the application did not get (failed inferences and timeouts): at most `requests`.
    pub errors: u64,
    /// Of `errors`, those that timed out.
    pub timeouts: u64,
    /// Refused before running (queue full, not ready); not errors.
    pub rejected: u64,
    /// Counts per [`LATENCY_BUCKETS_US`] bucket plus one overflow bucket, of the answers the model
    /// computed: result-cache hits are left out (they time the cache, and a model that was just activated
    /// has a cold cache), so latency gates compare models. 0 for p50/p95 when the model computed nothing.
    pub latency_hist: Vec<u64>,
    pub latency_p50_us: u32,
    pub latency_p95_us: u32,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub shadow: Option<ShadowStats>,
    /// Per input tensor drift statistics (PSI between canary and baseline, or against the reference).
    pub features: Vec<FeatureStats>,
    /// How often each output class was the top-1 answer (classifiers; empty otherwise).
    pub output_classes: Vec<u64>,
    /// PSI of the output class distribution against the reference profile, when there is one.
    pub class_psi: Option<f32>,
}

/// The candidate model run beside the active one on sampled live requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowStats {
    pub candidate_version: Version,
    pub candidate_digest: Digest,
    pub compared: u64,
    /// Requests where both models' top-1 class agreed.
    pub agreed_top1: u64,
    pub max_abs_diff: f32,
    pub candidate_p95_us: u32,
    pub candidate_mem_bytes: u64,
}

/// Drift statistics of one input tensor over the window: running moments over all its elements and a
/// fixed-bin histogram. The bins are the reference profile's when the manifest has one (so PSI compares
/// like with like), else the agent's configured range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureStats {
    pub tensor: String,
    pub count: u64,
    pub mean: f64,
    pub variance: f64,
    pub lo: f32,
    pub hi: f32,
    /// `bins[0]` counts values below `lo`, `bins[last]` values at or above `hi`; the rest split
    /// `[lo, hi)` evenly.
    pub bins: Vec<u64>,
    /// Population stability index against the manifest's reference profile, when it has one.
    pub psi: Option<f32>,
}

/// Stages of the device's update machine. Only append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum UpdateStage {
    Idle,
    Fetching,
    Verifying,
    Staged,
    SelfTest,
    Shadow,
    Activating,
    Watching,
    Committed,
    RolledBack,
    Rejected,
}

/// A transition of the update machine, with the reason when it ended badly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdateEvent {
    pub rollout: Option<String>,
    pub model: ModelName,
    pub version: Version,
    pub bundle: Digest,
    pub from: UpdateStage,
    pub to: UpdateStage,
    pub reason: Option<RejectReason>,
    pub detail: String,
    /// Orders this device's events of this model: it grows with every event the device's update machine
    /// emits for the model (and starts from the device's clock in ms when that is ahead, so a device whose
    /// update state was wiped still counts upwards). The controller orders a device's evidence by it, not
    /// by arrival: a late copy (telemetry after the live event, or the reverse) never moves it backwards.
    pub seq: u64,
}

/// Device resource use. Fields a device cannot read are `None`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceHealth {
    pub rss_bytes: u64,
    pub cpu_percent: f32,
    pub disk_free_bytes: u64,
    pub uptime_secs: u64,
    pub temperature_c: Option<f32>,
    pub queue_len: u64,
    pub dropped_total: u64,
}

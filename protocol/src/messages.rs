//! Every message on the wire. Each topic carries one [`Message`] variant inside the codec's versioned
//! frame. Only append variants and trailing fields: postcard is not self-describing, and golden fixtures
//! under `tests/data/` pin the bytes.

use crate::UnixTime;
use crate::digest::Digest;
use crate::keys::SigBytes;
use crate::names::{Arch, DeviceId, ModelName};
use crate::telemetry::{Record, UpdateEvent};
use crate::version::Version;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Message {
    Hello(Hello),
    Telemetry(TelemetryBatch),
    TelemetryAck(TelemetryAck),
    Event(UpdateEvent),
    Desired(DesiredState),
    ChunkRequest(ChunkRequest),
    Chunk(Chunk),
    Report(SignedVersionReport),
    Presence(Presence),
    /// `enroll/{id}/request` (see `enroll.rs`).
    EnrollRequest(crate::enroll::EnrollRequest),
    /// `enroll/{id}/response`.
    EnrollResponse(crate::enroll::EnrollResponse),
}

/// Online / offline (`up/presence`, retained). The offline form is the device's MQTT last will, so the
/// broker publishes it when the connection dies without a goodbye.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    pub device: DeviceId,
    pub online: bool,
    pub boot_id: u64,
}

/// Sent on every connect (`up/hello`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub device: DeviceId,
    pub arch: Arch,
    pub agent_version: Version,
    pub labels: Vec<(String, String)>,
    pub running: Option<RunningModel>,
    /// Boot-unique id: a new one tells the controller the device restarted.
    pub boot_id: u64,
    /// Largest MQTT packet the device accepts; the controller sizes chunks below it.
    pub max_packet: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningModel {
    pub name: ModelName,
    pub version: Version,
    pub digest: Digest,
    pub sequence: u64,
}

/// A batch of buffered records with consecutive sequence numbers `first_seq..=last_seq` (`up/telemetry`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TelemetryBatch {
    pub first_seq: u64,
    pub last_seq: u64,
    pub records: Vec<Record>,
}

/// The controller stored everything up to and including `up_to_seq` (`down/ack`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TelemetryAck {
    pub up_to_seq: u64,
}

/// What the device should run (`down/desired`, retained).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesiredState {
    pub model: ModelName,
    pub version: Version,
    pub sequence: u64,
    pub bundle: BundleRef,
    pub rollout: Option<String>,
    pub mode: Mode,
    pub issued_at: UnixTime,
    /// How the device judges the new model after activation, and when it rolls back on its own.
    pub watch: Watch,
}

/// The post-activation health budget. The device rolls back if, within `secs` after activation, the
/// self-test fails, the error rate or p95 latency exceed their budget (judged once `min_requests`
/// requests were seen), or the agent restarts `max_restarts` times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watch {
    pub secs: u32,
    /// Errors per million requests (errors include non-finite outputs); 0 disables the check.
    pub max_error_ppm: u32,
    /// p95 latency in µs; 0 disables the check.
    pub max_p95_us: u32,
    pub min_requests: u32,
    pub max_restarts: u8,
}

impl Default for Watch {
    fn default() -> Self {
        Watch { secs: 300, max_error_ppm: 20_000, max_p95_us: 0, min_requests: 20, max_restarts: 3 }
    }
}

/// Where to fetch a bundle: its digest, size and the digest of each chunk, so a device checks every
/// chunk as it arrives and re-requests only the bad ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleRef {
    pub digest: Digest,
    pub size: u64,
    pub chunk_size: u32,
    pub chunks: Vec<Digest>,
}

/// Only append variants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Mode {
    /// Verify, self-test, activate, watch.
    Activate,
    /// Run the candidate beside the active model on sampled requests before activating.
    Shadow { secs: u32, sample_percent: u8 },
    /// Switch back to the verified model kept in the `previous` slot (fleet `abort --revert`).
    Revert,
}

/// Ask for `count` chunks of a bundle starting at `first` (`up/fetch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRequest {
    pub bundle: Digest,
    pub first: u32,
    pub count: u32,
}

/// One chunk of a bundle (`down/chunk`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    pub bundle: Digest,
    pub index: u32,
    pub total: u32,
    pub data: Vec<u8>,
}

/// What a device runs, signed by its device key so a compromised broker or replica cannot forge the
/// fleet's compliance view (Uptane's version reports). `report` is a postcard [`VersionReport`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignedVersionReport {
    pub report: Vec<u8>,
    pub device_key: [u8; 32],
    pub signature: SigBytes,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionReport {
    pub device: DeviceId,
    /// Grows with every report: a replayed old report is recognisable.
    pub counter: u64,
    pub at: UnixTime,
    pub running: Option<RunningModel>,
    pub previous: Option<RunningModel>,
    pub floor: u64,
}

impl SignedVersionReport {
    pub fn sign(report: &VersionReport, key: &crate::keys::PrivateKey) -> Self {
        let bytes = postcard::to_allocvec(report).expect("report encodes");
        let sig = crate::keys::sign(key, crate::keys::Domain::VersionReport, &bytes);
        SignedVersionReport { report: bytes, device_key: key.verifying_key().to_bytes(), signature: sig.sig }
    }

    /// Checks the signature and decodes the report. The caller checks `device_key` is the one enrolled.
    pub fn open(&self) -> Option<VersionReport> {
        let key = crate::keys::public_key_from_bytes(&self.device_key)?;
        let sig = crate::keys::Signature { key_id: crate::keys::KeyId::of(&key), sig: self.signature.clone() };
        if !crate::keys::verify_one(&key, crate::keys::Domain::VersionReport, &self.report, &sig) {
            return None;
        }
        postcard::from_bytes(&self.report).ok()
    }
}

//! Every message on the wire. Each topic carries one [`Message`] variant inside the codec's versioned
//! frame. Only append variants and trailing fields: postcard is not self-describing, and golden fixtures
//! under `tests/data/` pin the bytes.

use crate::UnixTime;
use crate::digest::Digest;
use crate::limits::Limits;
use crate::names::{Arch, DeviceId, ModelName};
use crate::rejection::{RejectReason, Rejection};
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
    /// `fleet/trust` (retained): the fleet's root chain and current trust policy.
    Trust(TrustUpdate),
    /// `down/desired/{model}` (retained): a desired state the controller signed for the device with its
    /// director key (`director.rs`). A revert or removal is taken only in this form.
    SignedDesired(crate::director::SignedDesired),
}

pub use crate::report::{SignedVersionReport, VersionReport};

/// The fleet's trust as the controller publishes it (`outpost/v1/fleet/trust`, retained): the root
/// documents from `first_root` on and the current trust policy, signed by the last of them (or by the
/// image's root when there are none). Everything in it is signed; a device takes what verifies against the
/// root it pins (`trust_update::apply`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustUpdate {
    /// The version of `roots[0]` (2 for a chain that starts right after the image's root).
    pub first_root: u64,
    /// Root documents (`OPROOT01`), versions `first_root`, `first_root + 1`, … in order.
    pub roots: Vec<Vec<u8>>,
    /// The current trust policy (`OPTRUST1`).
    pub policy: Vec<u8>,
}

/// Online / offline (`up/presence`, retained). The offline form is the device's MQTT last will, so the
/// broker publishes it when the connection dies without a goodbye.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    pub device: DeviceId,
    pub online: bool,
    pub boot_id: u64,
}

/// Sent on every connect and whenever a model changes (`up/hello`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub device: DeviceId,
    pub arch: Arch,
    pub agent_version: Version,
    pub labels: Vec<(String, String)>,
    /// Every model the device serves, one entry per model name, in name order. Unsigned: what the device
    /// claims (its signed version report is the attested form).
    pub running: Vec<RunningModel>,
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
    /// The controller has not heard this device's hello since it started (it subscribed after the
    /// device connected, or restarted while the device stayed connected): the device says hello again,
    /// so what it runs is never stale for longer than a telemetry window.
    pub hello_wanted: bool,
}

/// What the device should run of one model (`down/desired/{model}`, retained; the topic's model and
/// `model` must agree). Unsigned: the device takes it as a request to fetch and verify, never as a fact
/// (floors, names and versions come from the verified manifest; [`BundleRef::check`] bounds every size).
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

impl BundleRef {
    /// Checks every size the (unsigned) reference names against `limits`, before the device allocates a
    /// staging file, a chunk buffer or a chunk table by them: stops a ~100-byte desired state from making
    /// the device reserve gigabytes, or abort on allocation at every restart.
    pub fn check(&self, limits: &Limits) -> Result<(), Rejection> {
        let over = |what: String| Err(Rejection::new(RejectReason::OverLimits, what));
        if self.size == 0 {
            return Err(Rejection::new(RejectReason::Malformed, "the bundle reference names an empty bundle"));
        }
        if self.size > limits.max_bundle() {
            return over(format!("bundle of {} bytes; the limit is {}", self.size, limits.max_bundle()));
        }
        if self.chunk_size == 0 || self.chunk_size as usize > limits.max_chunk {
            return over(format!("chunk size {}; it must be 1..={}", self.chunk_size, limits.max_chunk));
        }
        let needed = self.size.div_ceil(u64::from(self.chunk_size));
        if needed > u64::from(limits.max_chunks) {
            return over(format!("{needed} chunks; the limit is {}", limits.max_chunks));
        }
        if self.chunks.len() as u64 != needed {
            return Err(Rejection::new(
                RejectReason::Malformed,
                format!(
                    "{} chunk digests for {} bytes in chunks of {}: {needed} expected",
                    self.chunks.len(),
                    self.size,
                    self.chunk_size
                ),
            ));
        }
        Ok(())
    }
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
    /// Stop serving this model and drop its slots (a removal rollout). `version`, `sequence` and `bundle`
    /// name the release the controller last knew the device to run; the device removes the model whatever
    /// it runs, and keeps its floor, so a removed release cannot come back below it.
    Remove,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle_ref(size: u64, chunk_size: u32, chunks: usize) -> BundleRef {
        BundleRef { digest: Digest::of(b"b"), size, chunk_size, chunks: vec![Digest::of(b"c"); chunks] }
    }

    #[test]
    fn a_consistent_bundle_reference_within_the_limits_passes() {
        let l = Limits::default();
        assert_eq!(bundle_ref(1, 1, 1).check(&l), Ok(()));
        assert_eq!(bundle_ref(300 << 10, 256 << 10, 2).check(&l), Ok(()));
        assert_eq!(bundle_ref(256 << 10, 256 << 10, 1).check(&l), Ok(()));
    }

    #[test]
    fn bundle_references_an_attacker_could_send_are_refused_by_their_numbers() {
        let l = Limits::default();
        let code = |r: BundleRef| r.check(&l).unwrap_err().reason;
        // Sizes that would make the device reserve disk or memory it has not got.
        assert_eq!(code(bundle_ref(l.max_bundle() + 1, 256 << 10, 0)), RejectReason::OverLimits);
        assert_eq!(code(bundle_ref(u64::MAX, 256 << 10, 1)), RejectReason::OverLimits);
        assert_eq!(code(bundle_ref(1 << 20, u32::MAX, 1)), RejectReason::OverLimits, "a 4 GiB chunk buffer");
        assert_eq!(code(bundle_ref(1 << 20, 0, 1)), RejectReason::OverLimits, "division by zero");
        assert_eq!(code(bundle_ref(l.max_bundle(), 1, 0)), RejectReason::OverLimits, "a chunk table of 512 M entries");
        // Digest lists that do not match the size.
        assert_eq!(code(bundle_ref(3 << 20, 256 << 10, 1)), RejectReason::Malformed);
        assert_eq!(code(bundle_ref(1, 1, 2)), RejectReason::Malformed);
        assert_eq!(code(bundle_ref(0, 1, 0)), RejectReason::Malformed);
    }
}

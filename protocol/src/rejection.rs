//! Why a bundle or trust policy was refused. Reason codes are stable on the wire and in logs: devices
//! report them to the controller, and operators read them in `rollout status`.

use serde::{Deserialize, Serialize};
use std::fmt;

/// One distinct code per refusal. Only append variants: postcard encodes the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RejectReason {
    /// A signature made by a key the trust policy lists does not verify (tampered manifest or signature).
    BadSignature,
    /// Signatures present, but none by a key the trust policy lists.
    UnknownKey,
    /// Fewer distinct valid release keys than the policy's threshold (each key counts once).
    BelowThreshold,
    /// The trust policy does not carry enough valid signatures by the pinned root keys.
    PolicyNotSignedByRoot,
    /// The trust policy's expiry (plus grace) has passed: stops freeze attacks on the key set.
    PolicyExpired,
    /// The manifest's expiry (plus grace) has passed: stops replaying an old, since-withdrawn release.
    ManifestExpired,
    /// Release sequence at or below the device's floor: stops rollback to a vulnerable model.
    Rollback,
    /// The payload's SHA-256 differs from the manifest's: stops mix-and-match of manifest and payload.
    PayloadDigestMismatch,
    /// The payload's length differs from the manifest's: stops endless-data and truncation.
    PayloadSizeMismatch,
    /// Decompression produced more than the declared model size: stops decompression bombs.
    DecompressionBomb,
    /// A declared or actual size exceeds the device's `Limits`.
    OverLimits,
    /// The input ends before its structure does.
    Truncated,
    /// The input is not a bundle / policy / message of a known format.
    Malformed,
    /// The manifest targets other CPU architectures.
    WrongArch,
    /// The manifest needs a newer agent than the device runs.
    AgentTooOld,
    /// A delta payload names a base model the device does not have.
    DeltaBaseMismatch,
    /// Self-test vectors did not reproduce on the device (reported by the agent, not by `verify`).
    SelfTestFailed,
    /// The model could not be loaded or its interface differs from the manifest (reported by the agent).
    ModelUnloadable,
    /// The trust policy is older than one the device already accepted: stops an attacker from
    /// reinstating a policy that still lists a since-revoked release key.
    PolicyRollback,
    /// After activation, the inference error rate exceeded the watch budget (the agent rolled back).
    UnhealthyErrors,
    /// After activation, p95 latency exceeded the watch budget (the agent rolled back).
    UnhealthyLatency,
    /// The agent restarted repeatedly while watching a new model (the agent rolled back).
    CrashLoop,
    /// The bundle could not be fetched (chunks missing or corrupt after every retry).
    FetchFailed,
    /// A newer desired state replaced this update before it finished.
    Superseded,
    /// The verified manifest names another model, version or sequence than the (unsigned) desired state
    /// asked for: stops a forged desired state from smuggling a genuine bundle of another release in.
    DesiredMismatch,
    /// Loading the model would take the device over its memory budget; the models it serves keep serving.
    InsufficientMemory,
    /// The root chain skips a version, or starts past the one after the device's root: each root must be
    /// signed by the one before it, so a step that is not there cannot be checked.
    RootVersionGap,
    /// The root chain goes back: its newest root is older than the one the device pins, or a document's
    /// signed version is below its place in the chain. Stops reinstating a root whose keys were rotated out.
    RootRollback,
    /// A root document lacks a threshold of valid signatures by the previous root's keys or by its own:
    /// stops one stolen old key, or keys nobody holds, from taking over the fleet's root.
    RootBelowThreshold,
    /// A root document or trust policy requires 0 signatures: a naive verifier would take any document.
    ThresholdZero,
    /// A root document or trust policy lists more keys than a signed file may carry signatures
    /// (`Limits::max_signatures`): a threshold above that could never be met again, and a long key list
    /// only makes every check slower.
    TooManyKeys,
    /// A root document or trust policy lists one key twice: it inflates n, and a verifier counting list
    /// entries instead of distinct keys would let one key sign twice.
    DuplicateKeys,
    /// A threshold above the number of keys listed: nothing could ever be signed again.
    ThresholdUnreachable,
    /// The device's newest root has expired, so a policy it signs is not taken: a withheld root rotation
    /// does not keep an old root's keys in power forever (freeze).
    RootExpired,
    /// A revert or removal without the controller's (director's) signature: only a statement signed by a
    /// director key the trust policy names may take a model off a device or switch it back.
    UnsignedRequest,
    /// A director statement signed for another device, replayed on this one's topic.
    WrongDevice,
    /// A director statement issued before one the device already took for this model: an old revert or
    /// removal replayed after the controller told the device something newer.
    StaleRequest,
}

impl RejectReason {
    pub const ALL: [RejectReason; 37] = [
        RejectReason::BadSignature,
        RejectReason::UnknownKey,
        RejectReason::BelowThreshold,
        RejectReason::PolicyNotSignedByRoot,
        RejectReason::PolicyExpired,
        RejectReason::ManifestExpired,
        RejectReason::Rollback,
        RejectReason::PayloadDigestMismatch,
        RejectReason::PayloadSizeMismatch,
        RejectReason::DecompressionBomb,
        RejectReason::OverLimits,
        RejectReason::Truncated,
        RejectReason::Malformed,
        RejectReason::WrongArch,
        RejectReason::AgentTooOld,
        RejectReason::DeltaBaseMismatch,
        RejectReason::SelfTestFailed,
        RejectReason::ModelUnloadable,
        RejectReason::PolicyRollback,
        RejectReason::UnhealthyErrors,
        RejectReason::UnhealthyLatency,
        RejectReason::CrashLoop,
        RejectReason::FetchFailed,
        RejectReason::Superseded,
        RejectReason::DesiredMismatch,
        RejectReason::InsufficientMemory,
        RejectReason::RootVersionGap,
        RejectReason::RootRollback,
        RejectReason::RootBelowThreshold,
        RejectReason::ThresholdZero,
        RejectReason::TooManyKeys,
        RejectReason::DuplicateKeys,
        RejectReason::ThresholdUnreachable,
        RejectReason::RootExpired,
        RejectReason::UnsignedRequest,
        RejectReason::WrongDevice,
        RejectReason::StaleRequest,
    ];

    /// The stable snake_case code printed by the CLI and stored by the controller.
    pub fn code(self) -> &'static str {
        match self {
            RejectReason::BadSignature => "bad_signature",
            RejectReason::UnknownKey => "unknown_key",
            RejectReason::BelowThreshold => "below_threshold",
            RejectReason::PolicyNotSignedByRoot => "policy_not_signed_by_root",
            RejectReason::PolicyExpired => "policy_expired",
            RejectReason::ManifestExpired => "manifest_expired",
            RejectReason::Rollback => "rollback",
            RejectReason::PayloadDigestMismatch => "payload_digest_mismatch",
            RejectReason::PayloadSizeMismatch => "payload_size_mismatch",
            RejectReason::DecompressionBomb => "decompression_bomb",
            RejectReason::OverLimits => "over_limits",
            RejectReason::Truncated => "truncated",
            RejectReason::Malformed => "malformed",
            RejectReason::WrongArch => "wrong_arch",
            RejectReason::AgentTooOld => "agent_too_old",
            RejectReason::DeltaBaseMismatch => "delta_base_mismatch",
            RejectReason::SelfTestFailed => "selftest_failed",
            RejectReason::ModelUnloadable => "model_unloadable",
            RejectReason::PolicyRollback => "policy_rollback",
            RejectReason::UnhealthyErrors => "unhealthy_errors",
            RejectReason::UnhealthyLatency => "unhealthy_latency",
            RejectReason::CrashLoop => "crash_loop",
            RejectReason::FetchFailed => "fetch_failed",
            RejectReason::Superseded => "superseded",
            RejectReason::DesiredMismatch => "desired_mismatch",
            RejectReason::InsufficientMemory => "insufficient_memory",
            RejectReason::RootVersionGap => "root_version_gap",
            RejectReason::RootRollback => "root_rollback",
            RejectReason::RootBelowThreshold => "root_below_threshold",
            RejectReason::ThresholdZero => "threshold_zero",
            RejectReason::TooManyKeys => "too_many_keys",
            RejectReason::DuplicateKeys => "duplicate_keys",
            RejectReason::ThresholdUnreachable => "threshold_unreachable",
            RejectReason::RootExpired => "root_expired",
            RejectReason::UnsignedRequest => "unsigned_request",
            RejectReason::WrongDevice => "wrong_device",
            RejectReason::StaleRequest => "stale_request",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A refusal: the code, and a sentence saying what exactly was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct Rejection {
    pub reason: RejectReason,
    pub detail: String,
}

impl Rejection {
    pub fn new(reason: RejectReason, detail: impl Into<String>) -> Self {
        Rejection { reason, detail: detail.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_reason_has_its_own_code() {
        let codes: HashSet<_> = RejectReason::ALL.iter().map(|r| r.code()).collect();
        assert_eq!(codes.len(), RejectReason::ALL.len());
    }
}

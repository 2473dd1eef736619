//! What the update machine (`machine.rs`) keeps and exchanges with its shell: its persisted state (the
//! job, and a desired state waiting for a watch), the verified release, its inputs and its effects.

use outpost_protocol::messages::DesiredState;
use outpost_protocol::telemetry::UpdateStage;
use outpost_protocol::{Digest, ModelName, RejectReason, Version};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UpdateState {
    pub job: Option<Job>,
    /// Whether the fleet's retained desired state names this model (`outpost-agent remove` refuses it).
    #[serde(default)]
    pub retained: bool,
    /// A desired state that arrived while the job was activated and under watch. The desired state is
    /// unsigned: it may not undo a verified activation (for a first install that would leave the model
    /// unserved if the new bundle were then refused), so it waits for the watch to end and the shell
    /// starts it then (`Machine::ready_queued`).
    #[serde(default)]
    pub queued: Option<DesiredState>,
    /// The `issued_at` of the newest director statement taken for this model: a signed revert or removal
    /// issued before it is a replay (`stale_request`). Only verified statements raise it.
    #[serde(default)]
    pub director_floor: u64,
    /// The `seq` of the last update event reported for this model (`UpdateEvent::seq`).
    #[serde(default)]
    pub event_seq: u64,
}

/// Whose word a desired state is. The shell checks the director's signature against the trust policy
/// held now; the machine decides what each may ask.
#[derive(Debug, Clone, PartialEq)]
pub enum Authority {
    /// Unsigned (or a policy without director keys): it may ask for an install, which the bundle's
    /// signed manifest then decides. It may not revert or remove.
    Unsigned,
    /// A director statement for this device, its signature verified.
    Director,
    /// A director statement whose signature or device did not verify: refused, whatever it asks.
    Refused(RejectReason, String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub desired: DesiredState,
    pub stage: UpdateStage,
    /// Which chunks of the bundle are in the staging file and matched their digest.
    pub have: Vec<bool>,
    pub requested_at_ms: u64,
    /// End (exclusive) of the chunk window last requested.
    pub requested_until: u32,
    pub retries: u32,
    /// End of the shadow period, of the time an activation may take to load, or of the watch window.
    pub deadline_ms: u64,
    /// Agent restarts while the candidate was being tested, activated or watched (see `restarted`).
    pub restarts: u8,
    pub outcome: Option<(RejectReason, String)>,
    /// What verification proved the bundle to be. Floors and slots take their numbers from here, never
    /// from the (unsigned) desired state.
    #[serde(default)]
    pub verified: Option<Release>,
}

/// A release as its verified manifest names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub name: ModelName,
    pub version: Version,
    pub sequence: u64,
    /// The model's digest (the store's key).
    pub model: Digest,
    /// Memory the model took when loaded for verification (the budget's count).
    #[serde(default)]
    pub mem_bytes: u64,
}

impl Job {
    pub fn bundle(&self) -> Digest {
        self.desired.bundle.digest
    }
    pub(super) fn next_missing(&self) -> Option<u32> {
        self.have.iter().position(|h| !h).map(|i| i as u32)
    }
    pub(super) fn in_progress(&self) -> bool {
        !matches!(
            self.stage,
            UpdateStage::Committed | UpdateStage::RolledBack | UpdateStage::Rejected | UpdateStage::Idle
        )
    }
}

/// What the shell observed of the model under watch, cumulative since activation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Health {
    pub requests: u64,
    pub errors: u64,
    pub p95_us: u32,
    pub selftest_ok: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// The retained desired state. `already_active`: the active model is exactly this release.
    Desired {
        desired: DesiredState,
        already_active: bool,
        authority: Authority,
    },
    /// A chunk arrived; `valid` when its digest matched and the shell wrote it to the staging file.
    Chunk {
        bundle: Digest,
        index: u32,
        valid: bool,
    },
    Tick,
    /// The staged bundle verified and its model was stored (or it was refused): what the verified
    /// manifest says it is.
    Verified(Result<Release, (RejectReason, String)>),
    SelfTested(Result<(), (RejectReason, String)>),
    Activated(Result<(), String>),
    Health(Health),
    /// The controller cleared the retained desired state (a rollout stopped, or its gates failed).
    Withdrawn,
    /// The agent started; `valid_chunks` is the staging file re-checked against the chunk digests.
    Restarted {
        valid_chunks: Vec<bool>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// A desired state refused before it started anything (an unsigned or forged revert or removal, a
    /// replayed statement): reported, and nothing else changes. The event names no rollout and no bundle,
    /// so a forged request cannot write itself into a rollout's evidence.
    Refused {
        desired: DesiredState,
        reason: RejectReason,
        detail: String,
    },
    /// A transition of the job for `bundle` (which may no longer be the current job when superseded).
    Event {
        bundle: Digest,
        from: UpdateStage,
        to: UpdateStage,
        reason: Option<RejectReason>,
        detail: String,
    },
    /// Create an empty staging file for a bundle of `size` bytes.
    PrepareStaging {
        bundle: Digest,
        size: u64,
    },
    /// Ask the controller for chunks `first..first + count` of `bundle`.
    RequestChunks {
        bundle: Digest,
        first: u32,
        count: u32,
    },
    /// Verify the staging file of `bundle` and store its model (no slot changes); answer `Verified`.
    Verify {
        bundle: Digest,
    },
    /// Load the stored `model` and run its self-test vectors; answer `SelfTested`.
    SelfTest {
        model: Digest,
    },
    StartShadow {
        sample_percent: u8,
    },
    StopShadow,
    /// `model` serves; the active one becomes previous; answer `Activated`. `mem_bytes` is the footprint
    /// the memory budget counts for it from now on.
    Activate {
        model: Digest,
        mem_bytes: u64,
    },
    /// Previous → active: undo an activation that failed its watch.
    RollBack,
    /// Raise the model's release floor to `sequence` (the verified manifest's); forget the staging file.
    Commit {
        sequence: u64,
    },
    /// The verified model becomes the model's candidate (stored by `Verify`, matched against the
    /// desired state).
    Stage {
        model: Digest,
    },
    /// Stop serving the model and empty its slots, keeping its floor (`Mode::Remove`).
    Remove,
    /// Switch to the verified model kept in this model's previous slot (fleet `abort --revert`).
    Revert,
    DiscardStaging {
        bundle: Digest,
    },
}

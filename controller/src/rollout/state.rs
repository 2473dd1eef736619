//! Everything about a rollout that changes, and what the planner asks the daemon to do. All plain data:
//! the daemon persists [`RolloutState`] after every step and a reloaded state continues where it was.

use super::gates::{BaselineSnapshot, Evidence};
use super::view::Counted;
use outpost_protocol::messages::DesiredState;
use outpost_protocol::{DeviceId, UnixTime};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutState {
    pub phase: Phase,
    /// Index of the current wave (0-based; shown 1-based to people).
    pub wave: usize,
    /// Start of the current wave's bake; reset by resume and promote.
    pub wave_started_at: UnixTime,
    /// Set once the bake ended with inconclusive gates, so "holding" is recorded once.
    pub holding: bool,
    /// Every device ever told about this rollout, and what it was last told. Sticky: a device stays in
    /// the wave it was put in even when the selection around it changes.
    pub members: BTreeMap<DeviceId, Member>,
    /// The last baseline seen with evidence: used once every device of the selection joined the rollout
    /// (the last wave) or the remaining baseline went quiet.
    pub baseline: Option<BaselineSnapshot>,
    pub last_evidence: Option<Evidence>,
    /// Every decision, as also emitted in [`Action::Audit`].
    pub history: Vec<AuditEntry>,
    /// Where every member stands now, all waves together, refreshed at each step in every phase (a
    /// completed rollout's count still moves as late devices install): what status and the console show.
    #[serde(default)]
    pub progress: Progress,
    /// The daemon numbers rollouts as they start (1, 2, ...): which of two rollouts of a model started in
    /// the same second is the newer (0: stored before rollouts were numbered).
    #[serde(default)]
    pub order: u64,
    /// The operator who started it (from their API token or console session): the `Started` decision
    /// names them. `None`: started before rollouts recorded it, or by a caller with no operator (tests).
    #[serde(default)]
    pub started_by: Option<String>,
}

/// Members by where they stand with the release. Counts only, so refreshing it changes the stored
/// rollout only when a device moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Devices the selector and the release's targets allow now.
    pub selected: u32,
    /// Members told to install (or, for a removal, to remove) and not withdrawn since.
    pub told: u32,
    /// Running the release (for a removal: no longer running the model).
    pub installed: u32,
    /// Of those, past their watch.
    pub committed: u32,
    pub in_progress: u32,
    pub failed: u32,
    /// Switched back (or had the model removed) on the rollout's request.
    pub reverted: u32,
    /// Desired state cleared before they installed.
    pub withdrawn: u32,
}

impl Default for RolloutState {
    fn default() -> Self {
        RolloutState {
            phase: Phase::Pending,
            wave: 0,
            wave_started_at: 0,
            holding: false,
            members: BTreeMap::new(),
            baseline: None,
            last_evidence: None,
            history: Vec::new(),
            progress: Progress::default(),
            order: 0,
            started_by: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Created; the first evaluation starts the first wave.
    Pending,
    Progressing,
    /// No device is told anything new until resumed or promoted.
    Paused {
        reason: String,
    },
    /// Every wave passed (or was promoted). Devices that match the selector later still join.
    Completed,
    /// The failure policy or `undo` reverted the rollout. Terminal.
    RolledBack {
        reason: String,
    },
    /// Stopped by an operator; `reverted` when its devices were told to switch back. Terminal.
    Aborted {
        reverted: bool,
    },
}

impl Phase {
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Pending => "pending",
            Phase::Progressing => "progressing",
            Phase::Paused { .. } => "paused",
            Phase::Completed => "completed",
            Phase::RolledBack { .. } => "rolled back",
            Phase::Aborted { reverted: false } => "aborted",
            Phase::Aborted { reverted: true } => "aborted and reverted",
        }
    }

    /// Phases in which devices that got the new release are told to switch back.
    pub fn reverting(&self) -> bool {
        matches!(self, Phase::RolledBack { .. } | Phase::Aborted { reverted: true })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The wave the device's rank put it in (0-based).
    pub wave: usize,
    /// The wave that was current when the device was first told: its evidence is judged in that wave.
    /// Later than `wave` for a device that joined late (offline, or selected after its wave began).
    pub told_in: usize,
    pub intent: Intent,
    /// When the current intent was first issued; republishing reuses it, so the bytes do not change.
    pub issued_at: UnixTime,
    /// The device did not run the model when it was first told: the rollout adds the model there. It is
    /// told to activate without a shadow period (there is no active model to shadow), and reverting it
    /// removes the model (there is no previous model to switch back to).
    #[serde(default)]
    pub fresh: bool,
    /// The device's summed requests and errors on the release when it was told ([`Counted`]): an
    /// earlier rollout of the same bytes left them, and they say nothing about this one. `None`: it had
    /// none (the usual case), or the member was stored before sums were kept.
    #[serde(default)]
    pub counted_before: Option<Counted>,
}

/// What the controller last told a device on behalf of this rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Intent {
    /// Install the release (`Mode::Activate`, or `Mode::Shadow` first).
    Install,
    /// Switch back to the model in the previous slot (`Mode::Revert`).
    Revert,
    /// The device's retained desired state was cleared before it installed anything.
    Withdraw,
    /// Drop the model (`Mode::Remove`): the members of a removal rollout, and reverted devices that did
    /// not run the model before this rollout added it.
    Remove,
}

/// What the daemon does after a step, in order, after persisting the new state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Action {
    /// Publish `desired` retained on the device's `down/desired/{model}` topic.
    Desire { device: DeviceId, desired: DesiredState },
    /// Clear the device's retained desired state of `model` (an empty retained publish; its other
    /// models' states stay), so a device that has not started installing never will, and one fetching,
    /// verifying, self-testing or shadowing cancels (the candidate never serves). A device already
    /// activated finishes its watch; if the rollout is reverting, a later evaluation sees it on the new
    /// release and tells it to revert.
    Withdraw { device: DeviceId, model: outpost_protocol::ModelName },
    /// Append to the audit log.
    Audit(AuditEntry),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at: UnixTime,
    pub rollout: String,
    /// The wave the decision was taken in (0-based).
    pub wave: usize,
    pub decision: Decision,
    pub by: Actor,
    /// One line for people: why.
    pub reason: String,
    /// Device actions emitted with this decision.
    pub installs: u32,
    pub reverts: u32,
    pub withdrawals: u32,
    /// The numbers the decision rests on, per gate.
    pub evidence: Option<Evidence>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Actor {
    Planner,
    Operator(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Decision {
    Started,
    /// The previous wave passed its gates; `to` began.
    Advanced {
        to: usize,
    },
    /// The bake ended without conclusive evidence; waiting up to the hold time.
    Holding,
    /// Evidence stayed inconclusive past the hold: paused.
    PausedInconclusive,
    /// A gate failed; `rolled_back` tells which policy applied.
    GateFailed {
        rolled_back: bool,
    },
    Completed,
    /// Devices joined their waves after them (late, or newly selected), or were told to revert late.
    LateDevices,
    Paused,
    Resumed,
    Promoted {
        full: bool,
    },
    Aborted {
        revert: bool,
    },
    Undone,
}

impl Decision {
    /// The decision as people read it (waves 1-based, like everything shown).
    pub fn describe(self) -> String {
        match self {
            Decision::Started => "started".into(),
            Decision::Advanced { to } => format!("advanced to wave {}", to + 1),
            Decision::Holding => "holding".into(),
            Decision::PausedInconclusive => "paused (inconclusive)".into(),
            Decision::GateFailed { rolled_back: false } => "gate failed, paused".into(),
            Decision::GateFailed { rolled_back: true } => "gate failed, rolled back".into(),
            Decision::Completed => "completed".into(),
            Decision::LateDevices => "late devices".into(),
            Decision::Paused => "paused".into(),
            Decision::Resumed => "resumed".into(),
            Decision::Promoted { full: false } => "promoted".into(),
            Decision::Promoted { full: true } => "promoted --full".into(),
            Decision::Aborted { revert: false } => "aborted".into(),
            Decision::Aborted { revert: true } => "aborted --revert".into(),
            Decision::Undone => "undone".into(),
        }
    }
}

impl Actor {
    pub fn name(&self) -> &str {
        match self {
            Actor::Planner => "planner",
            Actor::Operator(who) => who,
        }
    }
}

impl RolloutState {
    /// Who the `Started` decision names: the operator who started the rollout, else the planner.
    pub fn starter(&self) -> Actor {
        self.started_by.clone().map_or(Actor::Planner, Actor::Operator)
    }

    /// Device count per wave (by the wave each member was put in), for status tables.
    pub fn members_per_wave(&self, waves: usize) -> Vec<u32> {
        let mut counts = vec![0u32; waves];
        for m in self.members.values() {
            if let Some(c) = counts.get_mut(m.wave) {
                *c += 1;
            }
        }
        counts
    }

    /// How many members were last told each intent.
    pub fn intents(&self) -> BTreeMap<&'static str, u32> {
        let mut out = BTreeMap::new();
        for m in self.members.values() {
            let key = match m.intent {
                Intent::Install => "install",
                Intent::Revert => "revert",
                Intent::Withdraw => "withdraw",
                Intent::Remove => "remove",
            };
            *out.entry(key).or_insert(0) += 1;
        }
        out
    }
}

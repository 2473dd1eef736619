//! The rollout planner: pure. A [`Rollout`] (spec + state), the fleet as [`DeviceView`]s and `now` (Unix
//! seconds) go in; the changed state and a list of [`Action`]s come out. No clock, no I/O, no async.
//!
//! # How the daemon drives it
//! Load the rollout → [`Rollout::evaluate`] (on a timer and when evidence arrives) or
//! [`Rollout::command`] (operator verbs) → persist the rollout → perform the actions in order: publish
//! each [`Action::Desire`] retained, clear the retained desired state for [`Action::Withdraw`], append
//! each [`Action::Audit`]. Persisting first means a crash can lose actions but never repeat a decision;
//! on start the daemon republishes [`Rollout::desired_states`] of every rollout it still owns devices
//! for, terminal ones included (a retained revert must reach a device that is offline now). It must
//! anyway: rumqttd keeps retained messages in memory only. That covers the lost actions.
//!
//! # Waves
//! A device's rank is a hash of (rollout id, device id) ([`waves`]); wave `k` is the lowest `size(k)`
//! ranks of the selection, sizes cumulative, percentages rounded up (1 % of 50 devices is one device). So
//! waves nest, the canary is the same at every evaluation, and a device that matches later falls into a
//! wave by its rank. The selection is the selector (label equality; `arch` also matches the reported
//! architecture) plus the release's targets (architecture, minimum agent version), minus devices that
//! already run a later release of the model: those would refuse the bundle as a rollback and count as
//! failures.
//!
//! # What the state remembers
//! Every device ever told, its wave, the wave that was current when it was told, and what it was told
//! ([`Member`], [`Intent`]). An action goes out only when a device's intent changes, so evaluating twice
//! with the same inputs emits nothing twice (and leaves the state as it was), and a growing fleet never
//! takes a device out of a wave. Desired states are complete, ready to publish: the spec carries the
//! release's [`outpost_protocol::messages::BundleRef`] (chunk digests included), which the daemon takes
//! from its bundle store when the rollout starts. Devices are told whether online or not; the retained
//! message reaches an offline device when it returns.
//!
//! # Gates
//! Each evaluation judges the devices told during the current wave (late joiners of earlier waves
//! included) against the selected devices still on another release of the model ([`gates`]); earlier
//! waves were judged in their turn, so promoting past a failure is not undone by the failed wave. When no
//! baseline device has fresh evidence (the 100 % wave, or a quiet fleet) the last baseline seen is used,
//! and the evidence says from when. The figures:
//! - install failure rate: failed ÷ finished (a device superseded or reverted on request is not a
//!   failure); judged once `min_finished` finished, or at once when the failures alone already exceed
//!   the rate over the whole wave;
//! - error rate: the wave's errors ÷ requests may exceed the baseline's by `max_increase` (absolute),
//!   because field conditions raise both; with no baseline at all it is an absolute limit. A wave device's
//!   requests and errors are summed over every window since it was told ([`view::Counted`]), so the
//!   evidence grows while the wave bakes; a baseline device counts its latest window;
//! - p95 latency: the median of device p95s against the baseline's median, as a ratio (device p95s
//!   cannot be pooled exactly, and the median ignores one odd device);
//! - shadow agreement: agreed ÷ compared, whatever its age (it is bound to the candidate and ends when
//!   the candidate goes live);
//! - drift: the median device's PSI (baseline shown beside it);
//!
//! Device reports are unsigned, so no device weighs more than one device ([`per_device`]): windows are
//! clamped on arrival to what they can hold; the two ratios pool counts with each device's count capped
//! at the median device's (a device moves them by its share of the wave at most, a real failure on one
//! device keeps that share); latency and drift take the median device (the worse middle one of an even
//! count); each judges only once three devices have a figure (or every device of a smaller wave). The
//! install gate counts devices. The shadow agreement fails only when sure: the 95 % Wilson interval of
//! the fraction lies wholly under the floor ([`confidence`]); under it without that certainty it is
//! undecided: inconclusive during the bake, a pass once the bake is over (its comparisons end when the
//! candidate goes live). The error rate too: it fails when the interval lies wholly over its limit,
//! passes when wholly within it, and otherwise waits; after the bake an undecided rate passes if its
//! figure is within the limit and holds otherwise (its sums keep growing). A device whose install failed
//! weighs a median device in it ([`confidence`] says why).
//! - quorum: the share of the wave's devices (failed installs aside) with evidence newer than the maximum
//!   age. It passes or is inconclusive, never fails.
//!
//! A failure applies the policy at once, even mid-bake. Pass after the bake advances. Inconclusive after
//! the bake holds (recorded once), and pauses with the reason when the hold (default: one more bake)
//! runs out: no data pauses, it does not fail. Late devices are told after the judgement, so a failing
//! wave does not grow first. A paused rollout tells no one anything new; paused by a failed gate, it also
//! withdraws the desired state of devices that have not activated the release yet (still fetching,
//! self-testing or shadowing), so a release that failed a gate goes live nowhere; resuming or promoting
//! tells them again. Evidence counts only from when a device was told: its windows, update events and
//! shadow comparisons from before (an earlier rollout of the same bytes) are left out.
//!
//! # Rollback
//! The `rollback` policy, `abort --revert` and `undo` revert the whole rollout: every device on the
//! release is told `Mode::Revert` (the agent switches to its previous slot), devices told but not on it
//! have their desired state withdrawn. It is re-checked at every evaluation, so a device that finishes
//! installing later is reverted then. A device still in its watch window is withdrawn, not reverted, and
//! reverted once it commits: the agent today answers a revert during its watch by rolling back and then
//! switching slots once more, one model too far. Devices that moved on to a later release are left alone.
//!
//! # Ownership
//! A device belongs to at most one live rollout per model. When a newer rollout of the model takes a
//! device, the daemon drops the older rollout's actions for it: a withdraw or revert from the old one
//! would otherwise clear or override the new desired state. A completed rollout keeps enrolling devices
//! that match later, until a newer rollout of the model supersedes it.

mod add_remove;
pub mod confidence;
pub mod fleet_rules;
pub mod gates;
pub mod per_device;
pub mod planner;
mod progress;
pub mod spec;
pub mod state;
pub mod verbs;
pub mod view;
pub mod waves;

pub use fleet_rules::{may_command, may_start, newest_per_model, next_order, started, still_reverting, terminal};
pub use gates::{BaselineSnapshot, Evidence, GateKind, GateResult, Verdict};
pub use planner::Rollout;
pub use spec::{
    DriftGate, ErrorRateGate, FailurePolicy, Gates, InstallGate, Kind, LatencyGate, Percent, Quorum, Release,
    RolloutSpec, Selector, ShadowGate, ShadowPeriod, SpecError, Wave, WaveSize,
};
pub use state::{Action, Actor, AuditEntry, Decision, Intent, Member, Phase, Progress, RolloutState};
pub use verbs::{Verb, VerbError};
pub use view::{
    Counted, DeviceView, InstallStatus, MIN_PSI_SAMPLES_PER_BIN, ShadowView, UpdateView, WindowView, window_psi,
};

#[cfg(test)]
pub(crate) mod testkit;
#[cfg(test)]
mod tests_fleet_property;
#[cfg(test)]
mod tests_forged;
#[cfg(test)]
mod tests_gates;
#[cfg(test)]
mod tests_models;
#[cfg(test)]
mod tests_off_path;
#[cfg(test)]
mod tests_planner;
#[cfg(test)]
mod tests_property;
#[cfg(test)]
mod tests_restart;
#[cfg(test)]
mod tests_spec;
#[cfg(test)]
mod tests_verbs;

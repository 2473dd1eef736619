//! Rules across the rollouts of one model, pure so a property test can drive random verb sequences
//! through them exactly as the daemon does: which rollout speaks for a model's devices, when a new one
//! may start, and which one may switch devices back.

use super::planner::Rollout;
use super::spec::RolloutSpec;
use super::state::{Intent, Phase};
use super::verbs::Verb;
use super::view::DeviceView;
use outpost_protocol::telemetry::UpdateStage;
use std::collections::BTreeMap;

/// When a rollout started, for ordering: its first decision, then the daemon's number (two rollouts can
/// start in the same second: `abort` then `start` from a script), then its id.
pub fn started(r: &Rollout) -> (u64, u64, String) {
    (r.state.history.first().map(|e| e.at).unwrap_or(0), r.state.order, r.spec.id.clone())
}

/// The number the next rollout to start gets.
pub fn next_order(list: &[Rollout]) -> u64 {
    list.iter().map(|r| r.state.order).max().unwrap_or(0) + 1
}

/// Aborted or rolled back: it will never tell a device to install again.
pub fn terminal(p: &Phase) -> bool {
    matches!(p, Phase::RolledBack { .. } | Phase::Aborted { .. })
}

/// The newest rollout of each model (by its start): it alone speaks for the model's devices, whatever its
/// phase. A rolled-back one keeps reverting devices that commit the release late (they were mid-watch when
/// the gate failed); a completed one keeps enrolling devices that match later. Older rollouts are history:
/// evaluating them would let a superseded release enrol new devices, or revert devices a newer rollout
/// moved on.
pub fn newest_per_model(list: impl IntoIterator<Item = Rollout>) -> Vec<Rollout> {
    let mut newest: BTreeMap<String, Rollout> = BTreeMap::new();
    for r in list {
        let model = r.spec.release.model.to_string();
        if newest.get(&model).is_none_or(|old| started(old) < started(&r)) {
            newest.insert(model, r);
        }
    }
    newest.into_values().collect()
}

/// Online devices a reverting rollout has not finished switching back: they still run its release and
/// have not answered the instruction. A device that is offline gets the retained revert when it returns;
/// one that answered and still runs the release had nothing to go back to: neither may hold the fleet.
pub fn still_reverting(owner: &Rollout, views: &[DeviceView]) -> usize {
    let r = &owner.spec.release;
    views
        .iter()
        .filter(|d| d.online && d.runs(&r.model).is_some_and(|m| m.digest == r.model_digest))
        .filter(|d| {
            owner.state.members.get(&d.id).is_some_and(|m| {
                let answered = m.intent == Intent::Revert
                    && d.update_for(&r.bundle.digest).is_some_and(|u| {
                        matches!(u.stage, UpdateStage::RolledBack | UpdateStage::Rejected) && u.at >= m.issued_at
                    });
                !answered
            })
        })
        .count()
}

/// Whether a rollout of `spec` may start next to `list`. One live rollout per model (a device must never
/// be told two things at once), and not while the model's newest rollout is still switching online
/// devices back.
pub fn may_start(list: &[Rollout], spec: &RolloutSpec, views: &[DeviceView]) -> Result<(), String> {
    let model = &spec.release.model;
    if let Some(other) = list
        .iter()
        .find(|r| &r.spec.release.model == model && !terminal(&r.state.phase) && r.state.phase != Phase::Completed)
    {
        return Err(format!("rollout {} of {model} is still live: abort it or wait for it", other.spec.id));
    }
    if let Some(owner) = newest_per_model(list.iter().cloned()).into_iter().find(|r| &r.spec.release.model == model)
        && owner.state.phase.reverting()
    {
        let left = still_reverting(&owner, views);
        if left > 0 {
            return Err(format!(
                "rollout {} is still switching {left} online device(s) back from {} {}: wait a few seconds \
                 (devices that are offline or answered without switching back do not hold a new rollout)",
                owner.spec.id, owner.spec.release.model, owner.spec.release.version
            ));
        }
    }
    if list.iter().any(|r| r.spec.id == spec.id) {
        return Err(format!("a rollout named {} exists", spec.id));
    }
    Ok(())
}

/// Whether `verb` may be applied to `rollout` next to `list` (the rollout's own phase rules are
/// [`Rollout::command`]'s). Only the newest rollout of a model speaks for its devices: an older one is
/// history (completed or ended, since only one is live at a time). Switching back is the newest's to do,
/// since an older one's "previous model" is whatever newer rollouts left there (an aborted release even:
/// the agent's revert swaps its active and previous slots); and an older one's `abort` would withdraw
/// the desired state a newer rollout has since published for the same devices.
pub fn may_command(list: &[Rollout], rollout: &Rollout, verb: Verb) -> Result<(), String> {
    let model = &rollout.spec.release.model;
    let Some(owner) = newest_per_model(list.iter().cloned()).into_iter().find(|r| &r.spec.release.model == model)
    else {
        return Ok(());
    };
    if owner.spec.id == rollout.spec.id {
        return Ok(());
    }
    let what = if matches!(verb, Verb::Undo | Verb::Abort { revert: true }) {
        "only the newest rollout of a model can switch its devices back"
    } else {
        "only the newest rollout of a model speaks for its devices"
    };
    Err(format!(
        "rollout {} was followed by rollout {} of {model} ({}): {what}; `{}` {} or roll out the release you want",
        rollout.spec.id,
        owner.spec.id,
        owner.state.phase.name(),
        verb.name(),
        owner.spec.id,
    ))
}

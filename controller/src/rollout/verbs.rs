//! Operator verbs as pure transitions: `pause`, `resume`, `promote [--full]`, `abort [--revert]`, `undo`.
//! Each checks the phase first (a refused verb changes nothing), changes the phase, brings the devices in
//! line with it and records who did it and why.

use super::planner::Rollout;
use super::state::{Action, Actor, Decision, Phase};
use super::view::DeviceView;
use outpost_protocol::UnixTime;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verb {
    /// Stop telling devices anything new; devices already told keep their desired state.
    Pause,
    /// Continue a paused rollout; the current wave's bake starts again.
    Resume,
    /// Skip the rest of the current wave's bake and gates and start the next wave (`full`: all waves).
    Promote { full: bool },
    /// Stop for good. Without `revert`, devices on the new release keep it and devices not yet on it have
    /// their desired state withdrawn; with `revert`, devices on it switch back to their previous model.
    Abort { revert: bool },
    /// Roll the whole rollout back: every device on the new release switches back. Also after completion.
    Undo,
}

impl Verb {
    pub fn name(self) -> &'static str {
        match self {
            Verb::Pause => "pause",
            Verb::Resume => "resume",
            Verb::Promote { full: false } => "promote",
            Verb::Promote { full: true } => "promote --full",
            Verb::Abort { revert: false } => "abort",
            Verb::Abort { revert: true } => "abort --revert",
            Verb::Undo => "undo",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerbError {
    #[error("rollout {rollout}: cannot {verb} a rollout that is {phase}")]
    NotAllowed { rollout: String, verb: &'static str, phase: &'static str },
    #[error(
        "rollout {rollout} removes {model}: cannot {verb} it (the devices that removed the model have nothing to \
         switch back to); to bring the model back, roll it out again"
    )]
    Removal { rollout: String, model: String, verb: &'static str },
}

impl Rollout {
    /// Applies an operator verb. `by` names the operator in the audit log. The returned actions include
    /// the device actions the new phase needs right away (the next wave's installs, reverts).
    pub fn command(
        &mut self,
        verb: Verb,
        by: &str,
        devices: &[DeviceView],
        now: UnixTime,
    ) -> Result<Vec<Action>, VerbError> {
        // A pending rollout counts as progressing in wave 1: the daemon evaluates a new rollout at once.
        let phase = if self.state.phase == Phase::Pending { Phase::Progressing } else { self.state.phase.clone() };
        let allowed = match verb {
            Verb::Pause => phase == Phase::Progressing,
            Verb::Resume => matches!(phase, Phase::Paused { .. }),
            Verb::Promote { .. } => matches!(phase, Phase::Progressing | Phase::Paused { .. }),
            Verb::Abort { .. } => matches!(phase, Phase::Progressing | Phase::Paused { .. } | Phase::Completed),
            Verb::Undo => !phase.reverting(),
        };
        if self.spec.kind == super::spec::Kind::Remove && matches!(verb, Verb::Undo | Verb::Abort { revert: true }) {
            return Err(VerbError::Removal {
                rollout: self.spec.id.clone(),
                model: self.spec.release.model.to_string(),
                verb: verb.name(),
            });
        }
        if !allowed {
            return Err(VerbError::NotAllowed {
                rollout: self.spec.id.clone(),
                verb: verb.name(),
                phase: phase.name(),
            });
        }
        let mut out = Vec::new();
        let survey = self.survey(devices);
        if self.state.phase == Phase::Pending {
            // Started, but nobody is told before the verb applies: `abort` on a new rollout tells no one.
            self.begin(now);
            let reason = self.started_reason(&survey);
            let by = self.state.starter();
            self.audit(&mut out, now, Decision::Started, by, reason, Default::default(), None);
        }
        let k = self.state.wave;
        let (decision, reason) = match verb {
            Verb::Pause => {
                self.state.phase = Phase::Paused { reason: format!("paused by {by}") };
                (Decision::Paused, format!("paused by {by} in wave {}", k + 1))
            }
            Verb::Resume => {
                self.restart_wave(k, now);
                (Decision::Resumed, format!("resumed by {by}; wave {}'s bake starts again", k + 1))
            }
            Verb::Promote { full } => {
                let last = self.spec.waves.len() - 1;
                if full || k == last {
                    self.state.wave = last;
                    self.state.phase = Phase::Completed;
                    (Decision::Promoted { full }, format!("promoted by {by} from wave {} to completion", k + 1))
                } else {
                    self.restart_wave(k + 1, now);
                    (Decision::Promoted { full }, format!("promoted by {by} from wave {} to wave {}", k + 1, k + 2))
                }
            }
            Verb::Abort { revert } => {
                self.state.phase = Phase::Aborted { reverted: revert };
                let what = if revert { "devices on the release switch back" } else { "devices keep what they run" };
                (Decision::Aborted { revert }, format!("aborted by {by} in wave {}: {what}", k + 1))
            }
            Verb::Undo => {
                let reason = format!("undone by {by}");
                self.state.phase = Phase::RolledBack { reason: reason.clone() };
                (Decision::Undone, format!("{reason}: every device on the release switches back"))
            }
        };
        let counts = self.sync(&survey, devices, now, &mut out);
        let evidence = self.state.last_evidence.clone();
        self.audit(&mut out, now, decision, Actor::Operator(by.to_owned()), reason, counts, evidence);
        self.refresh_progress(devices);
        Ok(out)
    }

    fn restart_wave(&mut self, wave: usize, now: UnixTime) {
        self.state.phase = Phase::Progressing;
        self.state.wave = wave;
        self.state.wave_started_at = now;
        self.state.holding = false;
    }
}

//! What changes when a rollout adds a model to devices that do not run it, and how a removal rollout
//! is judged. Both are per model like every rollout: the evidence is the model's own, so a rollout of
//! another model on the same devices neither feeds nor blocks these judgements.
//!
//! # Adding a model
//! A device the rollout adds the model to (a "fresh" member) has no baseline of its own and no active
//! model of that name, so:
//! - it activates without a shadow period, and the shadow gate judges only the wave's devices that ran
//!   the model before; a wave of fresh devices only passes it with a note saying there was nothing to
//!   shadow against;
//! - the error-rate gate compares with the selection's devices on another release of the model when
//!   there are any, and is an absolute limit when no device has the model yet (`gates.rs`);
//! - the latency gate passes with a note when no selected device ever ran another release of the model
//!   during the rollout (nothing to compare p95 with; each device's own watch budget, `max_p95_us`,
//!   still applies), and judges as usual once there is a baseline;
//! - install failures, drift (against the release's reference profile) and the quorum judge as for any
//!   device.
//!
//! # Removal
//! A removal rollout's wave is judged on the devices' own word of what they run: a member has removed
//! the model once its hello no longer lists it, and failed when it answered the removal with a refusal
//! (an update event naming the release with a reason, received after it was told). The quorum is the
//! share of the wave (failures aside) that confirmed the removal; the install-failure gate, if set,
//! counts the refusals.

use super::gates::{self, Evidence, GateKind, GateResult, Tally, Verdict};
use super::planner::{Rollout, Survey};
use super::spec::Gates;
use super::state::Intent;
use super::view::DeviceView;
use outpost_protocol::UnixTime;
use outpost_protocol::telemetry::UpdateStage;

impl Rollout {
    /// Adjusts the latency and shadow verdicts for the wave's fresh devices (module docs).
    pub(super) fn judge_newcomers(
        &self,
        results: &mut [GateResult],
        devices: &[DeviceView],
        baseline_devices: u32,
        fresh_since: UnixTime,
    ) {
        let model = &self.spec.release.model;
        if self.state.baseline.is_none() && baseline_devices == 0 {
            for g in results.iter_mut().filter(|g| g.gate == GateKind::LatencyP95) {
                g.verdict = Verdict::Pass;
                g.note = format!(
                    "no baseline: no selected device runs another release of {model} (the model is new on \
                     these devices); each device's own watch budget applies"
                );
            }
        }
        let Some(shadow) = self.spec.gates.shadow else { return };
        let wave: Vec<(&DeviceView, bool)> = devices
            .iter()
            .filter_map(|d| {
                let m = self.state.members.get(&d.id)?;
                (m.intent == Intent::Install && m.told_in == self.state.wave).then_some((d, m.fresh))
            })
            .collect();
        if !wave.iter().any(|(_, fresh)| *fresh) {
            return;
        }
        let mut tally = Tally::default();
        for (d, _) in wave.iter().filter(|(_, fresh)| !fresh) {
            tally.add_wave_device(d, &self.spec.release, fresh_since);
        }
        let only_shadow = Gates { shadow: Some(shadow), quorum: self.spec.gates.quorum, ..Gates::default() };
        let judged = gates::judge(&only_shadow, &mut tally, None);
        let fresh = wave.iter().filter(|(_, fresh)| *fresh).count();
        for g in results.iter_mut().filter(|g| g.gate == GateKind::ShadowAgreement) {
            match judged.iter().find(|j| j.gate == GateKind::ShadowAgreement) {
                Some(j) if tally.devices > 0 => {
                    *g = j.clone();
                    g.note = format!("{}; {fresh} device(s) new to {model} not shadowed", j.note);
                }
                _ => {
                    g.verdict = Verdict::Pass;
                    g.note = format!(
                        "no device of this wave ran {model} before: nothing to shadow against ({fresh} device(s) \
                         activated it directly)"
                    );
                }
            }
        }
    }

    /// The evidence of a removal wave (module docs).
    pub(super) fn judge_removal(&mut self, s: &Survey, devices: &[DeviceView], now: UnixTime) -> Evidence {
        let r = &self.spec.release;
        let (mut cohort, mut removed, mut failed, mut pending) = (0u32, 0u32, 0u32, 0u32);
        for d in devices {
            let Some(m) = self.state.members.get(&d.id) else { continue };
            if m.intent != Intent::Remove || m.told_in != self.state.wave {
                continue;
            }
            cohort += 1;
            let refused = d.update_for(&r.bundle.digest).is_some_and(|u| {
                u.at >= m.issued_at
                    && u.reason.is_some()
                    && matches!(u.stage, UpdateStage::Rejected | UpdateStage::RolledBack)
            });
            if d.runs(&r.model).is_none() {
                removed += 1;
            } else if refused {
                failed += 1;
            } else {
                pending += 1;
            }
        }
        let q = self.spec.gates.quorum;
        let can_report = cohort - failed;
        let need = ((q.min_fraction * f64::from(can_report)).ceil() as u32).max(q.min_devices.min(can_report));
        let share = if can_report == 0 { 0.0 } else { f64::from(removed) / f64::from(can_report) };
        let mut results = vec![GateResult {
            gate: GateKind::Quorum,
            verdict: if can_report > 0 && removed >= need { Verdict::Pass } else { Verdict::Inconclusive },
            value: Some(share),
            baseline: None,
            threshold: q.min_fraction,
            samples: removed.into(),
            note: format!(
                "{removed} of {can_report} device(s) confirmed the removal (their hello no longer lists {}), {need} needed",
                r.model
            ),
            undecided: false,
        }];
        if let Some(g) = self.spec.gates.install {
            let finished = removed + failed;
            let rate = if finished == 0 { 0.0 } else { f64::from(failed) / f64::from(finished) };
            let certain = failed > 0 && f64::from(failed) / f64::from(cohort) > g.max_failure_rate;
            let judged = finished >= g.min_finished.clamp(1, cohort.max(1));
            let verdict = match (certain, judged) {
                (true, _) => Verdict::Fail,
                (false, true) if rate > g.max_failure_rate => Verdict::Fail,
                (false, true) => Verdict::Pass,
                (false, false) => Verdict::Inconclusive,
            };
            results.push(GateResult {
                gate: GateKind::InstallFailure,
                verdict,
                value: Some(rate),
                baseline: None,
                threshold: g.max_failure_rate,
                samples: finished.into(),
                note: format!("{failed} of {finished} finished removal(s) refused ({pending} pending)"),
                undecided: false,
            });
        }
        Evidence {
            at: now,
            wave: self.state.wave,
            selected: s.selected(),
            cohort,
            installed: removed,
            in_progress: pending,
            failed,
            finished: removed + failed,
            reporting: removed,
            baseline_devices: 0,
            baseline_reporting: 0,
            baseline_from: None,
            gates: results,
        }
    }
}

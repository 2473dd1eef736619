//! The planner: a rollout's spec and state, the fleet as [`DeviceView`]s and `now` in; the new state and
//! the actions for the daemon out. No clock, no I/O: the same code runs in the daemon, the simulator and
//! these tests.

use super::gates::{self, Evidence, Tally, Verdict};
use super::progress::counted_now;
use super::spec::{FailurePolicy, Kind, RolloutSpec, SpecError};
use super::state::{Action, Actor, AuditEntry, Decision, Intent, Member, Phase, RolloutState};
use super::view::{DeviceView, InstallStatus};
use super::waves::{WavePlan, rank};
use outpost_protocol::messages::{DesiredState, Mode};
use outpost_protocol::{DeviceId, UnixTime};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// A rollout as the daemon stores it: the immutable spec and the state the planner changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    pub spec: RolloutSpec,
    pub state: RolloutState,
}

/// Device actions emitted by one step, for the audit entry that explains them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Counts {
    pub installs: u32,
    pub reverts: u32,
    pub withdrawals: u32,
}

impl Counts {
    fn any(self) -> bool {
        self.installs + self.reverts + self.withdrawals > 0
    }
}

/// The selection at one evaluation: each device's rank if selected (same order as the views), and the
/// wave cut-offs on that selection.
pub(super) struct Survey {
    ranks: Vec<Option<u64>>,
    plan: WavePlan,
    selected: u32,
}

impl Survey {
    /// Devices the selector and the release's targets allow.
    pub(super) fn selected(&self) -> u32 {
        self.selected
    }
}

impl Rollout {
    pub fn new(spec: RolloutSpec) -> Result<Self, SpecError> {
        spec.validate()?;
        Ok(Rollout { spec, state: RolloutState::default() })
    }

    /// One planning step. Evaluating again with the same inputs emits nothing new: device actions go
    /// out only when a device's intent changes, audit entries only with decisions.
    pub fn evaluate(&mut self, devices: &[DeviceView], now: UnixTime) -> Vec<Action> {
        let mut out = Vec::new();
        let survey = self.survey(devices);
        if self.state.phase == Phase::Pending {
            self.begin(now);
            let counts = self.sync(&survey, devices, now, &mut out);
            let by = self.state.starter();
            self.audit(&mut out, now, Decision::Started, by, self.started_reason(&survey), counts, None);
        }
        match self.state.phase {
            Phase::Progressing => self.progress(&survey, devices, now, &mut out),
            Phase::Paused { .. } => self.state.last_evidence = Some(self.judge(&survey, devices, now)),
            _ => {
                let late = self.sync(&survey, devices, now, &mut out);
                if late.any() {
                    self.audit(
                        &mut out,
                        now,
                        Decision::LateDevices,
                        Actor::Planner,
                        self.late_reason(late),
                        late,
                        None,
                    );
                }
            }
        }
        self.refresh_progress(devices);
        out
    }

    /// Every desired state this rollout currently asks for, whether or not it changed: for a daemon that
    /// starts against a broker that lost its retained messages (rumqttd keeps them in memory only).
    pub fn desired_states(&self) -> Vec<Action> {
        let to_action = |(id, m): (&DeviceId, &Member)| match m.intent {
            Intent::Withdraw => Action::Withdraw { device: id.clone(), model: self.spec.release.model.clone() },
            _ => Action::Desire { device: id.clone(), desired: self.desired(m) },
        };
        self.state.members.iter().map(to_action).collect()
    }

    /// How many devices the rollout selects now (selector, targets, and for a removal the model).
    pub fn survey_count(&self, devices: &[DeviceView]) -> u32 {
        devices.iter().filter(|d| self.selects(d)).count() as u32
    }

    pub(super) fn survey(&self, devices: &[DeviceView]) -> Survey {
        let ranks: Vec<Option<u64>> =
            devices.iter().map(|d| self.selects(d).then(|| rank(&self.spec.id, &d.id))).collect();
        let mut selected: Vec<u64> = ranks.iter().flatten().copied().collect();
        let plan = WavePlan::new(&self.spec.waves, &mut selected);
        Survey { ranks, plan, selected: selected.len() as u32 }
    }

    /// The selector matches and the release can run there. A device running a later release of the model
    /// is left out: the agent would refuse the bundle as a rollback and it would count as a failure. A
    /// removal selects the selector's devices that run the model, and keeps its members selected once
    /// they removed it, so the waves do not shift under it.
    fn selects(&self, d: &DeviceView) -> bool {
        let r = &self.spec.release;
        if self.spec.kind == Kind::Remove {
            return self.spec.selector.matches(d)
                && (d.runs(&r.model).is_some() || self.state.members.contains_key(&d.id));
        }
        self.spec.selector.matches(d)
            && (r.targets.archs.is_empty() || d.arch.is_none_or(|a| r.targets.archs.contains(&a)))
            && d.agent_version.is_none_or(|v| v >= r.targets.min_agent)
            && d.runs(&r.model).is_none_or(|m| m.sequence <= r.sequence)
    }

    /// Pending → wave 1. The caller brings the devices in line and records the start.
    pub(super) fn begin(&mut self, now: UnixTime) {
        self.state.phase = Phase::Progressing;
        self.state.wave = 0;
        self.state.wave_started_at = now;
    }

    pub(super) fn started_reason(&self, s: &Survey) -> String {
        format!("{} device(s) selected; wave 1 of {} begins", s.selected, self.spec.waves.len())
    }

    /// Judges the wave, decides, and only then tells devices that joined late: a failing wave must not
    /// grow first.
    fn progress(&mut self, s: &Survey, devices: &[DeviceView], now: UnixTime, out: &mut Vec<Action>) {
        let ev = self.judge(s, devices, now);
        self.state.last_evidence = Some(ev.clone());
        let k = self.state.wave;
        let bake = self.spec.waves[k].bake_secs;
        let bake_end = self.state.wave_started_at.saturating_add(bake);
        let hold_end = bake_end.saturating_add(self.spec.hold_secs.unwrap_or(bake));
        // A later wave that adds no device (25 % of 4 devices after a 1-device canary) has nothing to
        // judge: waiting for its evidence would only pause the rollout. The earlier waves were judged.
        if k > 0 && !self.state.members.values().any(|m| m.told_in == k) {
            self.advance(ev, s, devices, now, out);
            return;
        }
        match ev.verdict() {
            Verdict::Fail => self.fail(ev, s, devices, now, out),
            Verdict::Pass if now >= bake_end => self.advance(ev, s, devices, now, out),
            Verdict::Inconclusive if now >= hold_end => {
                let reason = format!(
                    "wave {}: no conclusive evidence by the end of the hold: {}",
                    k + 1,
                    ev.summary(Verdict::Inconclusive)
                );
                self.state.phase = Phase::Paused { reason: reason.clone() };
                self.audit(out, now, Decision::PausedInconclusive, Actor::Planner, reason, Counts::default(), Some(ev));
            }
            Verdict::Inconclusive if now >= bake_end && !self.state.holding => {
                self.state.holding = true;
                let reason = format!(
                    "wave {}: bake over, holding until {} UTC ({} more): {}",
                    k + 1,
                    crate::duration::utc(hold_end),
                    crate::duration::format(hold_end.saturating_sub(now)),
                    ev.summary(Verdict::Inconclusive)
                );
                self.audit(out, now, Decision::Holding, Actor::Planner, reason, Counts::default(), Some(ev));
            }
            _ => {}
        }
        if matches!(self.state.phase, Phase::Progressing | Phase::Completed) {
            let late = self.sync(s, devices, now, out);
            if late.any() {
                self.state.last_evidence = Some(self.judge(s, devices, now));
                self.audit(out, now, Decision::LateDevices, Actor::Planner, self.late_reason(late), late, None);
            }
        }
    }

    fn advance(&mut self, ev: Evidence, s: &Survey, devices: &[DeviceView], now: UnixTime, out: &mut Vec<Action>) {
        let k = self.state.wave;
        if k + 1 >= self.spec.waves.len() {
            self.state.phase = Phase::Completed;
            let reason = format!("wave {} passed its gates; all waves done", k + 1);
            self.audit(out, now, Decision::Completed, Actor::Planner, reason, Counts::default(), Some(ev));
            return;
        }
        self.state.wave = k + 1;
        self.state.wave_started_at = now;
        self.state.holding = false;
        let counts = self.sync(s, devices, now, out);
        // Status shows the new wave from now on, and evaluating again at `now` changes nothing.
        self.state.last_evidence = Some(self.judge(s, devices, now));
        let reason = format!("wave {} passed its gates; wave {} begins", k + 1, k + 2);
        self.audit(out, now, Decision::Advanced { to: k + 1 }, Actor::Planner, reason, counts, Some(ev));
    }

    fn fail(&mut self, ev: Evidence, s: &Survey, devices: &[DeviceView], now: UnixTime, out: &mut Vec<Action>) {
        let reason = format!("wave {} failed: {}", self.state.wave + 1, ev.summary(Verdict::Fail));
        let rolled_back = self.spec.on_failure == FailurePolicy::Rollback;
        self.state.phase = if rolled_back {
            Phase::RolledBack { reason: reason.clone() }
        } else {
            Phase::Paused { reason: reason.clone() }
        };
        let counts = if rolled_back { self.sync(s, devices, now, out) } else { self.hold_back(devices, now, out) };
        self.audit(out, now, Decision::GateFailed { rolled_back }, Actor::Planner, reason, counts, Some(ev));
    }

    /// Brings every device in line with the phase: enroll into the waves so far while progressing or
    /// completed, nothing while paused, switch back or withdraw in the terminal phases.
    pub(super) fn sync(&mut self, s: &Survey, devices: &[DeviceView], now: UnixTime, out: &mut Vec<Action>) -> Counts {
        match self.state.phase {
            Phase::Progressing => self.enroll(self.state.wave, s, devices, now, out),
            Phase::Completed => self.enroll(self.spec.waves.len() - 1, s, devices, now, out),
            Phase::Pending | Phase::Paused { .. } => Counts::default(),
            Phase::RolledBack { .. } | Phase::Aborted { .. } => self.reconcile(devices, now, out),
        }
    }

    /// Paused by a failed gate: devices that have not activated the release yet (fetching, self-testing,
    /// shadowing) have their desired state withdrawn, so a release that just failed a gate is not
    /// activated anywhere after all. Devices already running it keep it (a pause changes nothing they
    /// run); `resume` or `promote` tells the withdrawn ones again, `abort --revert` switches the others back.
    fn hold_back(&mut self, devices: &[DeviceView], now: UnixTime, out: &mut Vec<Action>) -> Counts {
        let r = &self.spec.release;
        let views: HashMap<&DeviceId, &DeviceView> = devices.iter().map(|d| (&d.id, d)).collect();
        let held: Vec<DeviceId> = self
            .state
            .members
            .iter()
            .filter(|(_, m)| m.intent == Intent::Install)
            .filter(|(id, m)| {
                let status = views.get(id).map(|d| {
                    super::progress::since_told(d, m, &r.bundle.digest, &r.model_digest).install_status(
                        &r.model,
                        &r.bundle.digest,
                        &r.model_digest,
                        r.sequence,
                    )
                });
                matches!(status, None | Some(InstallStatus::NotInstalled | InstallStatus::InProgress(_)))
            })
            .map(|(id, _)| id.clone())
            .collect();
        let mut counts = Counts::default();
        for id in held {
            let m = self.state.members.get_mut(&id).expect("a member");
            m.intent = Intent::Withdraw;
            m.issued_at = now;
            counts.withdrawals += 1;
            out.push(Action::Withdraw { device: id, model: self.spec.release.model.clone() });
        }
        counts
    }

    /// Tells every selected device of waves `..=upto` that was not told yet, online or not: the retained
    /// desired state reaches an offline device when it returns. Members withdrawn by a failed gate's
    /// pause are told again (the operator resumed or promoted).
    fn enroll(
        &mut self,
        upto: usize,
        s: &Survey,
        devices: &[DeviceView],
        now: UnixTime,
        out: &mut Vec<Action>,
    ) -> Counts {
        let mut counts = Counts::default();
        for (d, r) in devices.iter().zip(&s.ranks) {
            let intent = if self.spec.kind == Kind::Remove { Intent::Remove } else { Intent::Install };
            if let Some(m) = self.state.members.get_mut(&d.id) {
                // Only while the device is still selected: one relabelled out while held back stays out.
                if m.intent == Intent::Withdraw && m.wave <= upto && r.is_some() {
                    (m.intent, m.issued_at, m.told_in) = (intent, now, self.state.wave);
                    m.counted_before = counted_now(d, &self.spec.release.model_digest);
                    let desired = self.desired(&self.state.members[&d.id]);
                    out.push(Action::Desire { device: d.id.clone(), desired });
                    counts.installs += 1;
                }
                continue;
            }
            let Some(wave) = r.and_then(|r| s.plan.wave_of(r)).filter(|&w| w <= upto) else { continue };
            let fresh = d.runs(&self.spec.release.model).is_none();
            let counted_before = counted_now(d, &self.spec.release.model_digest);
            let member = Member { wave, told_in: self.state.wave, intent, issued_at: now, fresh, counted_before };
            out.push(Action::Desire { device: d.id.clone(), desired: self.desired(&member) });
            self.state.members.insert(d.id.clone(), member);
            counts.installs += 1;
        }
        counts
    }

    /// In a terminal phase: devices on the new release switch back (if reverting; a device the rollout
    /// added the model to removes it), devices told but not on it have their desired state withdrawn. A
    /// device still watching the release is withdrawn, not reverted: it commits and is reverted then,
    /// since a revert during the watch would make the agent roll back and then also switch to the slot
    /// before. An aborted removal withdraws the devices that still run the model.
    fn reconcile(&mut self, devices: &[DeviceView], now: UnixTime, out: &mut Vec<Action>) -> Counts {
        let reverting = self.state.phase.reverting();
        let r = &self.spec.release;
        let views: HashMap<&DeviceId, &DeviceView> = devices.iter().map(|d| (&d.id, d)).collect();
        let mut changes = Vec::new();
        for (id, m) in &self.state.members {
            let status =
                views.get(id).map(|d| d.install_status(&r.model, &r.bundle.digest, &r.model_digest, r.sequence));
            let next = match (m.intent, status) {
                (Intent::Remove, _) if self.spec.kind == Kind::Remove => {
                    views.get(id).is_some_and(|d| d.runs(&r.model).is_some()).then_some(Intent::Withdraw)
                }
                (Intent::Revert | Intent::Remove, _) | (_, Some(InstallStatus::Ahead)) => None,
                (_, Some(InstallStatus::Installed { committed: true })) if reverting => {
                    Some(if m.fresh { Intent::Remove } else { Intent::Revert })
                }
                (Intent::Install, Some(InstallStatus::Installed { .. })) if !reverting => None,
                (Intent::Install, _) => Some(Intent::Withdraw),
                (Intent::Withdraw, _) => None,
            };
            if let Some(intent) = next {
                changes.push((id.clone(), intent));
            }
        }
        let mut counts = Counts::default();
        for (id, intent) in changes {
            let m = self.state.members.get_mut(&id).expect("a member");
            m.intent = intent;
            m.issued_at = now;
            if intent != Intent::Withdraw {
                counts.reverts += 1;
                let desired = self.desired(&self.state.members[&id]);
                out.push(Action::Desire { device: id, desired });
            } else {
                counts.withdrawals += 1;
                out.push(Action::Withdraw { device: id, model: self.spec.release.model.clone() });
            }
        }
        counts
    }

    /// Judges the devices told during the current wave against the selected devices still on another
    /// release of the model.
    pub(super) fn judge(&mut self, s: &Survey, devices: &[DeviceView], now: UnixTime) -> Evidence {
        if self.spec.kind == Kind::Remove {
            return self.judge_removal(s, devices, now);
        }
        let r = &self.spec.release;
        let fresh_since = now.saturating_sub(self.spec.gates.quorum.max_evidence_age_secs);
        let (mut wave, mut base) = (Tally::default(), Tally::default());
        for (d, rank) in devices.iter().zip(&s.ranks) {
            match self.state.members.get(&d.id) {
                // Only what the device reported since it was told counts: windows, events and shadow
                // comparisons from an earlier rollout of the same bytes say nothing about this one.
                Some(m) if m.intent == Intent::Install && m.told_in == self.state.wave => wave.add_wave_device(
                    &super::progress::since_told(d, m, &r.bundle.digest, &r.model_digest),
                    r,
                    // Strictly after the second it was told: a window received in that same second was
                    // sent before the device could act on the instruction.
                    fresh_since.max(m.issued_at.saturating_add(1)),
                ),
                Some(_) => {}
                None if rank.is_some() && d.runs(&r.model).is_some_and(|m| m.digest != r.model_digest) => {
                    base.add_baseline_device(d, &r.model, fresh_since)
                }
                None => {}
            }
        }
        let (baseline_devices, baseline_reporting) = (base.devices, base.reporting);
        if let Some(snapshot) = base.snapshot(now) {
            self.state.baseline = Some(snapshot);
        }
        let baseline = self.state.baseline.as_ref();
        let mut gates = gates::judge(&self.spec.gates, &mut wave, baseline);
        self.judge_newcomers(&mut gates, devices, baseline_devices, fresh_since);
        // An undecided gate waits through the bake (confidence.rs). A shadow agreement's comparisons end when
        // the candidate goes live, so holding for more would only pause a good rollout: still undecided when
        // the bake is over, it passes (it was not shown under its floor), and the next, larger wave is judged
        // on its own comparisons. An error rate whose figure is within its limit passes too; over it, the wave
        // holds while requests add up: a fail once sure, a pause when the hold runs out.
        let bake_end = self.state.wave_started_at.saturating_add(self.spec.waves[self.state.wave].bake_secs);
        if now >= bake_end {
            for g in gates.iter_mut().filter(|g| g.undecided && g.verdict == Verdict::Inconclusive) {
                if g.passes_after_the_bake() {
                    g.verdict = Verdict::Pass;
                    g.note
                        .push_str("; the bake is over and it was not shown on the wrong side at 95% confidence: pass");
                } else {
                    g.note.push_str("; the bake is over: holding while requests add up");
                }
            }
        }
        Evidence {
            at: now,
            wave: self.state.wave,
            selected: s.selected,
            cohort: wave.devices,
            installed: wave.installed,
            in_progress: wave.in_progress,
            failed: wave.failed,
            finished: wave.finished,
            reporting: wave.reporting,
            baseline_devices,
            baseline_reporting,
            baseline_from: baseline.map(|b| b.at).filter(|&at| at != now),
            gates,
        }
    }

    /// What `m` is told. A device the rollout adds the model to activates at once: it has no active
    /// model to shadow the candidate against.
    pub(super) fn desired(&self, m: &Member) -> DesiredState {
        let r = &self.spec.release;
        let (intent, issued_at) = (m.intent, m.issued_at);
        let mode = match (intent, self.spec.shadow) {
            (Intent::Revert, _) => Mode::Revert,
            (Intent::Remove, _) => Mode::Remove,
            (_, Some(sh)) if !m.fresh => Mode::Shadow { secs: sh.secs, sample_percent: sh.sample_percent },
            (_, _) => Mode::Activate,
        };
        DesiredState {
            model: r.model.clone(),
            version: r.version,
            sequence: r.sequence,
            bundle: r.bundle.clone(),
            rollout: Some(self.spec.id.clone()),
            mode,
            issued_at,
            watch: self.spec.watch,
        }
    }

    fn late_reason(&self, c: Counts) -> String {
        format!(
            "{} device(s) joined their wave late, {} reverted late, {} withdrawn",
            c.installs, c.reverts, c.withdrawals
        )
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn audit(
        &mut self,
        out: &mut Vec<Action>,
        at: UnixTime,
        decision: Decision,
        by: Actor,
        reason: String,
        c: Counts,
        evidence: Option<Evidence>,
    ) {
        let entry = AuditEntry {
            at,
            rollout: self.spec.id.clone(),
            wave: self.state.wave,
            decision,
            by,
            reason,
            installs: c.installs,
            reverts: c.reverts,
            withdrawals: c.withdrawals,
            evidence,
        };
        self.state.history.push(entry.clone());
        out.push(Action::Audit(entry));
    }
}

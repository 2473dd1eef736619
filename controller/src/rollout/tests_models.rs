//! Rollouts per model: two models on overlapping devices, a rollout that adds a model, and removal
//! rollouts. A small world of its own: each device runs a set of models and acts on the desired state of
//! each model apart, as agents that serve several models do.

use super::testkit::{T0, id, spec};
use super::*;
use outpost_protocol::messages::{BundleRef, DesiredState, Mode, RunningModel};
use outpost_protocol::telemetry::UpdateStage;
use outpost_protocol::{DeviceId, Digest, ModelName, RejectReason, UnixTime, Version};
use std::collections::HashMap;

fn name(s: &str) -> ModelName {
    ModelName::new(s).unwrap()
}

/// Release `minor` of `model`: bundle and model digests derived from both, sequence 10 + minor.
fn release_of(model: &str, minor: u32) -> (RunningModel, Digest) {
    let tag = model.bytes().fold(0u8, |a, b| a.wrapping_add(b));
    let digest = Digest([tag.wrapping_add(minor as u8); 32]);
    let bundle = Digest([tag.wrapping_add(minor as u8).wrapping_add(100); 32]);
    let r =
        RunningModel { name: name(model), version: Version::new(1, minor, 0), digest, sequence: 10 + u64::from(minor) };
    (r, bundle)
}

/// A rollout `rid` of `model` 1.`minor`.0 in `waves`, bake `bake`.
fn rollout_of(rid: &str, model: &str, minor: u32, waves: &[&str], bake: u64) -> RolloutSpec {
    let (r, bundle) = release_of(model, minor);
    let mut s = spec(waves, bake);
    s.id = rid.into();
    s.release.model = r.name;
    s.release.version = r.version;
    s.release.sequence = r.sequence;
    s.release.model_digest = r.digest;
    s.release.bundle = BundleRef { digest: bundle, size: 300, chunk_size: 100, chunks: vec![Digest([9; 32]); 3] };
    s
}

fn removal_of(rid: &str, model: &str, waves: &[&str]) -> RolloutSpec {
    let mut s = rollout_of(rid, model, 0, waves, 10);
    s.kind = Kind::Remove;
    s
}

struct World {
    devices: Vec<DeviceView>,
    now: UnixTime,
    /// Retained desired states per (device, model), as the broker keeps them.
    retained: HashMap<(DeviceId, ModelName), DesiredState>,
    /// What each device ran of each model before its last activation (its `previous` slot).
    previous: HashMap<(DeviceId, ModelName), RunningModel>,
    /// Devices that refuse a removal.
    refusing: Vec<DeviceId>,
}

impl World {
    /// `n` online devices, each running `models` (name, minor) and reporting a healthy window for each.
    fn new(n: usize, models: &[(&str, u32)]) -> World {
        let devices = (0..n)
            .map(|i| {
                let mut d = DeviceView::new(id(i));
                d.online = true;
                d.last_seen = T0;
                d.running = models.iter().map(|(m, minor)| release_of(m, *minor).0).collect();
                d
            })
            .collect();
        let mut w =
            World { devices, now: T0, retained: HashMap::new(), previous: HashMap::new(), refusing: Vec::new() };
        w.report();
        w
    }

    fn report(&mut self) {
        for d in self.devices.iter_mut().filter(|d| d.online) {
            d.windows = d
                .running
                .iter()
                .map(|r| WindowView {
                    model: r.name.clone(),
                    version: r.version,
                    digest: r.digest,
                    received_at: self.now,
                    requests: 1_000,
                    errors: 1,
                    p95_us: 2_000,
                    psi: Some(0.02),
                    psi_unscored: false,
                    implausible: false,
                    counted: Counted::default(),
                })
                .collect();
            d.last_seen = self.now;
        }
    }

    fn apply(&mut self, actions: &[Action]) {
        for a in actions {
            match a {
                Action::Desire { device, desired } => {
                    self.retained.insert((device.clone(), desired.model.clone()), desired.clone());
                }
                Action::Withdraw { device, model } => {
                    self.retained.remove(&(device.clone(), model.clone()));
                }
                Action::Audit(_) => {}
            }
        }
        let told: Vec<(DeviceId, DesiredState)> =
            self.retained.iter().map(|((d, _), x)| (d.clone(), x.clone())).collect();
        for (d, desired) in told {
            self.act(&d, &desired);
        }
    }

    /// One model's desired state on one device, as an agent acts on it: the device's other models are
    /// left as they are.
    fn act(&mut self, id: &DeviceId, x: &DesiredState) {
        let now = self.now;
        let refusing = self.refusing.contains(id);
        let key = (id.clone(), x.model.clone());
        let prev = self.previous.get(&key).cloned();
        let d = self.devices.iter_mut().find(|d| &d.id == id).unwrap();
        let current = d.runs(&x.model).cloned();
        let event = |stage, reason| UpdateView { bundle: x.bundle.digest, stage, reason, at: now, seq: 0 };
        match x.mode {
            Mode::Activate | Mode::Shadow { .. } => {
                if current.as_ref().is_some_and(|c| c.sequence >= x.sequence) {
                    return;
                }
                let (release, _) = release_of(x.model.as_str(), x.version.minor);
                d.running.retain(|r| r.name != x.model);
                d.running.push(release);
                d.record_event(&update(x, UpdateStage::Committed, None), now);
                if let Some(c) = current {
                    self.previous.insert(key, c);
                }
            }
            Mode::Revert => {
                if let (Some(c), Some(p)) = (&current, prev)
                    && c.sequence == x.sequence
                {
                    d.running.retain(|r| r.name != x.model);
                    d.running.push(p);
                    d.updates.insert(0, event(UpdateStage::RolledBack, None));
                }
            }
            Mode::Remove => {
                if current.is_none() {
                    return;
                }
                if refusing {
                    if d.update_for(&x.bundle.digest).is_none_or(|u| u.stage != UpdateStage::Rejected) {
                        d.record_event(&update(x, UpdateStage::Rejected, Some(RejectReason::DesiredMismatch)), now);
                    }
                    return;
                }
                d.running.retain(|r| r.name != x.model);
            }
        }
    }

    fn tick(&mut self, r: &mut Rollout, secs: u64) -> Vec<Action> {
        self.now += secs;
        self.report();
        let actions = r.evaluate(&self.devices, self.now);
        self.apply(&actions);
        actions
    }

    fn running(&self, model: &str) -> usize {
        self.devices.iter().filter(|d| d.runs(&name(model)).is_some()).count()
    }

    fn on(&self, model: &str, minor: u32) -> usize {
        let want = release_of(model, minor).0;
        self.devices.iter().filter(|d| d.runs(&name(model)) == Some(&want)).count()
    }
}

fn update(x: &DesiredState, to: UpdateStage, reason: Option<RejectReason>) -> outpost_protocol::telemetry::UpdateEvent {
    outpost_protocol::telemetry::UpdateEvent {
        rollout: x.rollout.clone(),
        model: x.model.clone(),
        version: x.version,
        bundle: x.bundle.digest,
        from: UpdateStage::Idle,
        to,
        reason,
        detail: String::new(),
        seq: 0,
    }
}

fn modes(actions: &[Action]) -> Vec<(DeviceId, ModelName, Mode)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Desire { device, desired } => Some((device.clone(), desired.model.clone(), desired.mode.clone())),
            _ => None,
        })
        .collect()
}

fn models_touched(actions: &[Action]) -> Vec<ModelName> {
    let mut out: Vec<ModelName> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Desire { desired, .. } => Some(desired.model.clone()),
            Action::Withdraw { model, .. } => Some(model.clone()),
            Action::Audit(_) => None,
        })
        .collect();
    out.dedup();
    out
}

#[test]
fn two_rollouts_of_different_models_on_the_same_devices_run_their_own_waves_and_reverts() {
    let mut w = World::new(20, &[("digits", 0), ("kws", 0)]);
    let mut digits = Rollout::new(rollout_of("d1", "digits", 1, &["2", "100%"], 60)).unwrap();
    let mut kws = Rollout::new(rollout_of("k1", "kws", 1, &["5", "50%", "100%"], 30)).unwrap();
    let a = w.tick(&mut digits, 0);
    let b = w.tick(&mut kws, 0);
    assert_eq!(models_touched(&a), vec![name("digits")]);
    assert_eq!(models_touched(&b), vec![name("kws")]);
    assert_eq!((w.on("digits", 1), w.on("kws", 1)), (2, 5), "each rollout's own canary");
    // kws advances on its own clock while digits bakes.
    for _ in 0..2 {
        w.tick(&mut digits, 30);
        w.tick(&mut kws, 0);
    }
    assert_eq!(digits.state.wave, 1, "digits' canary baked 60 s");
    assert_eq!(kws.state.wave, 2, "kws passed two 30 s bakes meanwhile");
    let kws_members = kws.state.members.clone();
    let on_kws = w.on("kws", 1);

    let undo = digits.command(Verb::Abort { revert: true }, "alice", &w.devices, w.now).unwrap();
    w.apply(&undo);
    assert_eq!(models_touched(&undo), vec![name("digits")], "abort --revert of digits speaks only of digits");
    assert!(modes(&undo).iter().all(|(_, _, m)| *m == Mode::Revert));
    assert_eq!((w.on("digits", 1), w.on("digits", 0)), (0, 20), "every device is back on digits 1.0.0");
    assert_eq!(w.on("kws", 1), on_kws, "no kws device moved");
    let after = w.tick(&mut kws, 30);
    assert!(models_touched(&after).iter().all(|m| *m == name("kws")));
    assert!(kws_members.iter().all(|(d, m)| kws.state.members[d] == *m), "kws members untouched");
    assert_eq!(kws.state.phase, Phase::Completed);
    assert_eq!(w.on("kws", 1), 20);
}

#[test]
fn a_rollout_adds_a_model_devices_do_not_run_and_reverting_it_removes_the_model_again() {
    let mut w = World::new(6, &[("kws", 0)]);
    let mut s = rollout_of("d1", "digits", 0, &["100%"], 10);
    s.shadow = Some(ShadowPeriod { secs: 30, sample_percent: 100 });
    s.gates.shadow = Some(ShadowGate { min_agreement: 0.9, min_compared: 10 });
    s.gates.latency = Some(LatencyGate { max_p95_regression: 0.25 });
    s.gates.error_rate = Some(ErrorRateGate { max_increase: 0.01, min_requests: 100 });
    let mut r = Rollout::new(s).unwrap();
    let started = w.tick(&mut r, 0);
    assert!(r.state.members.values().all(|m| m.fresh), "no device ran digits");
    assert!(
        modes(&started).iter().all(|(_, m, mode)| *m == name("digits") && *mode == Mode::Activate),
        "a device without the model has nothing to shadow against: it activates: {:?}",
        modes(&started)
    );
    assert_eq!((w.running("digits"), w.running("kws")), (6, 6), "digits added beside kws");
    w.tick(&mut r, 10);
    assert_eq!(r.state.phase, Phase::Completed, "{:?}", r.state.last_evidence);
    let ev = r.state.history.last().unwrap().evidence.clone().unwrap();
    let gate = |k| ev.gates.iter().find(|g| g.gate == k).unwrap();
    assert_eq!(gate(GateKind::LatencyP95).verdict, Verdict::Pass);
    assert!(gate(GateKind::LatencyP95).note.contains("no baseline"), "{}", gate(GateKind::LatencyP95).note);
    assert_eq!(gate(GateKind::ShadowAgreement).verdict, Verdict::Pass);
    assert!(gate(GateKind::ShadowAgreement).note.contains("nothing to shadow against"));
    assert!(gate(GateKind::ErrorRate).note.contains("no baseline: absolute"), "{}", gate(GateKind::ErrorRate).note);

    let undo = r.command(Verb::Undo, "alice", &w.devices, w.now).unwrap();
    w.apply(&undo);
    assert!(
        modes(&undo).iter().all(|(_, m, mode)| *m == name("digits") && *mode == Mode::Remove),
        "there is no previous digits to switch back to: the model is removed: {:?}",
        modes(&undo)
    );
    assert_eq!((w.running("digits"), w.running("kws")), (0, 6));
}

#[test]
fn a_wave_of_old_and_new_devices_shadows_only_the_devices_that_ran_the_model() {
    let mut w = World::new(4, &[("kws", 0)]);
    // Devices 0 and 1 run digits 1.0.0 as well; 2 and 3 do not.
    for i in 0..2 {
        w.devices[i].running.push(release_of("digits", 0).0);
    }
    w.report();
    let mut s = rollout_of("d1", "digits", 1, &["100%"], 10);
    s.shadow = Some(ShadowPeriod { secs: 30, sample_percent: 100 });
    s.gates.shadow = Some(ShadowGate { min_agreement: 0.9, min_compared: 10 });
    let mut r = Rollout::new(s).unwrap();
    let started = r.evaluate(&w.devices, w.now);
    let mode_of = |i: usize| modes(&started).into_iter().find(|(d, ..)| *d == id(i)).unwrap().2;
    assert!(matches!(mode_of(0), Mode::Shadow { .. }) && matches!(mode_of(1), Mode::Shadow { .. }));
    assert_eq!((mode_of(2), mode_of(3)), (Mode::Activate, Mode::Activate));
    // The two shadowing devices agree 5 of 100: the gate fails on them alone.
    let candidate = release_of("digits", 1).0.digest;
    for i in 0..2 {
        w.devices[i].shadows =
            vec![ShadowView { candidate, compared: 100, agreed: 5, received_at: w.now, implausible: false }];
    }
    let ev = r.judge(&r.survey(&w.devices), &w.devices, w.now);
    let g = ev.gates.iter().find(|g| g.gate == GateKind::ShadowAgreement).unwrap();
    assert_eq!(g.verdict, Verdict::Fail, "{}", g.note);
    assert!(g.note.contains("2 device(s) new to digits not shadowed"), "{}", g.note);
}

#[test]
fn a_removal_tells_mode_remove_in_waves_and_completes_once_devices_stop_listing_the_model() {
    let mut w = World::new(10, &[("digits", 1), ("kws", 0)]);
    // Two devices never had kws: a removal does not select them.
    for i in 8..10 {
        w.devices[i].running.retain(|r| r.name != name("kws"));
    }
    let mut r = Rollout::new(removal_of("rm", "kws", &["2", "100%"])).unwrap();
    assert_eq!(r.survey_count(&w.devices), 8);
    let a = w.tick(&mut r, 0);
    assert_eq!(modes(&a).len(), 2);
    assert!(modes(&a).iter().all(|(_, m, mode)| *m == name("kws") && *mode == Mode::Remove));
    assert_eq!(w.running("kws"), 6);
    assert_eq!(w.running("digits"), 10, "the other model stays");
    w.tick(&mut r, 10);
    assert_eq!(r.state.wave, 1, "the canary confirmed: {:?}", r.state.last_evidence);
    assert_eq!(r.state.members_per_wave(2), vec![2, 6], "the waves did not shift when devices dropped out");
    w.tick(&mut r, 10);
    assert_eq!(r.state.phase, Phase::Completed, "{:?}", r.state.last_evidence);
    assert_eq!(w.running("kws"), 0);
    let ev = r.state.history.last().unwrap().evidence.clone().unwrap();
    assert!(ev.gates[0].note.contains("6 of 6 device(s) confirmed the removal"), "{}", ev.gates[0].note);
    assert_eq!(r.state.intents().get("remove"), Some(&8));
}

#[test]
fn a_refused_removal_fails_the_install_gate_and_pauses_and_abort_withdraws_the_rest() {
    let mut w = World::new(6, &[("kws", 0)]);
    let mut s = removal_of("rm", "kws", &["2", "100%"]);
    s.gates.install = Some(InstallGate { max_failure_rate: 0.0, min_finished: 1 });
    let mut r = Rollout::new(s).unwrap();
    let canary: Vec<DeviceId> = {
        let mut probe = r.clone();
        modes(&probe.evaluate(&w.devices, w.now)).into_iter().map(|(d, ..)| d).collect()
    };
    w.refusing.push(canary[0].clone());
    w.tick(&mut r, 0);
    w.tick(&mut r, 1);
    assert!(matches!(r.state.phase, Phase::Paused { .. }), "{:?}", r.state.phase);
    let failed = r.state.history.iter().find(|e| matches!(e.decision, Decision::GateFailed { rolled_back: false }));
    assert!(failed.unwrap().reason.contains("1 of 2 finished removal(s) refused"), "{:?}", failed);
    let abort = r.command(Verb::Abort { revert: false }, "alice", &w.devices, w.now).unwrap();
    let withdrawn: Vec<&DeviceId> = abort
        .iter()
        .filter_map(|a| if let Action::Withdraw { device, .. } = a { Some(device) } else { None })
        .collect();
    assert_eq!(withdrawn, vec![&canary[0]], "the device that still runs kws keeps it; the removed one stays removed");
}

#[test]
fn a_removal_refuses_revert_undo_rollback_and_measuring_gates() {
    let w = World::new(3, &[("kws", 0)]);
    let mut r = Rollout::new(removal_of("rm", "kws", &["100%"])).unwrap();
    r.evaluate(&w.devices, w.now);
    for verb in [Verb::Undo, Verb::Abort { revert: true }] {
        let e = r.clone().command(verb, "alice", &w.devices, w.now).unwrap_err();
        assert!(e.to_string().contains("roll it out again"), "{e}");
    }
    let mut s = removal_of("rm", "kws", &["100%"]);
    s.on_failure = FailurePolicy::Rollback;
    assert!(matches!(s.validate(), Err(SpecError::NotForRemoval { .. })));
    let mut s = removal_of("rm", "kws", &["100%"]);
    s.gates.latency = Some(LatencyGate { max_p95_regression: 0.1 });
    assert!(s.validate().unwrap_err().to_string().contains("no new release to measure"));
}

#[test]
fn a_newer_rollout_of_one_model_does_not_take_devices_from_a_rollout_of_another() {
    // Ownership is per model: the planner of kws never selects by digits' state and vice versa.
    let w = World::new(5, &[("digits", 2), ("kws", 0)]);
    let old_digits = Rollout::new(rollout_of("d-old", "digits", 1, &["100%"], 10)).unwrap();
    let kws = Rollout::new(rollout_of("k1", "kws", 1, &["100%"], 10)).unwrap();
    assert_eq!(old_digits.survey_count(&w.devices), 0, "devices run a later digits: left out");
    assert_eq!(kws.survey_count(&w.devices), 5, "the digits release is no reason to leave kws out");
}

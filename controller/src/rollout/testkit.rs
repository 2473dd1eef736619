//! Test fixtures: a spec builder and a tiny world of devices that act on desired states like agents do
//! (install at once when online, switch back on revert) and report inference windows.

use super::*;
use outpost_protocol::manifest::Targets;
use outpost_protocol::messages::{BundleRef, DesiredState, Mode, RunningModel, Watch};
use outpost_protocol::telemetry::UpdateStage;
use outpost_protocol::{DeviceId, Digest, ModelName, RejectReason, UnixTime, Version};
use std::collections::HashMap;

pub const T0: UnixTime = 1_760_000_000;
pub const OLD: Digest = Digest([1; 32]);
pub const NEW: Digest = Digest([2; 32]);

pub fn id(i: usize) -> DeviceId {
    DeviceId::new(format!("dev-{i:05}")).unwrap()
}

pub fn model() -> ModelName {
    ModelName::new("digits").unwrap()
}

pub fn running(digest: Digest) -> RunningModel {
    let (version, sequence) = if digest == NEW { (Version::new(1, 1, 0), 11) } else { (Version::new(1, 0, 0), 10) };
    RunningModel { name: model(), version, digest, sequence }
}

/// `waves` like `["1", "50%", "100%"]`, each with `bake` seconds; quorum 80 % of evidence under 600 s.
pub fn spec(waves: &[&str], bake: u64) -> RolloutSpec {
    RolloutSpec {
        id: "r1".into(),
        release: Release {
            model: model(),
            version: Version::new(1, 1, 0),
            sequence: 11,
            bundle: BundleRef { digest: NEW, size: 300, chunk_size: 100, chunks: vec![Digest([9; 32]); 3] },
            model_digest: NEW,
            targets: Targets { archs: vec![], min_agent: Version::new(0, 1, 0) },
        },
        selector: Selector::default(),
        waves: waves.iter().map(|w| Wave { size: w.parse().unwrap(), bake_secs: bake }).collect(),
        gates: Gates::default(),
        on_failure: FailurePolicy::Pause,
        shadow: None,
        watch: Watch::default(),
        hold_secs: None,
        kind: Kind::Install,
    }
}

pub fn window(digest: Digest, at: UnixTime, requests: u64, errors: u64, p95_us: u32) -> WindowView {
    let r = running(digest);
    WindowView {
        model: r.name,
        version: r.version,
        digest,
        received_at: at,
        requests,
        errors,
        p95_us,
        psi: Some(0.02),
        psi_unscored: false,
        implausible: false,
        counted: Counted::default(),
    }
}

/// Health of each release in the world: errors per 1,000 requests and p95.
#[derive(Debug, Clone, Copy)]
pub struct Health {
    pub errors_per_1000: u64,
    pub p95_us: u32,
}

#[derive(Debug)]
pub struct World {
    pub devices: Vec<DeviceView>,
    pub now: UnixTime,
    pub old: Health,
    pub new: Health,
    /// Retained desired states, as the broker keeps them.
    pub retained: HashMap<DeviceId, DesiredState>,
    /// Devices that install but stay in `Watching` instead of committing.
    pub slow: Vec<DeviceId>,
    /// Devices that refuse the bundle.
    pub refusing: Vec<DeviceId>,
}

impl World {
    /// `n` online devices on the old release, each with a fresh healthy window.
    pub fn new(n: usize) -> World {
        let devices = (0..n)
            .map(|i| {
                let mut d = DeviceView::new(id(i));
                d.online = true;
                d.last_seen = T0;
                d.running = vec![running(OLD)];
                d
            })
            .collect();
        let healthy = Health { errors_per_1000: 1, p95_us: 2_000 };
        let mut w = World {
            devices,
            now: T0,
            old: healthy,
            new: healthy,
            retained: HashMap::new(),
            slow: vec![],
            refusing: vec![],
        };
        w.report();
        w
    }

    pub fn device(&mut self, d: &DeviceId) -> &mut DeviceView {
        self.devices.iter_mut().find(|v| &v.id == d).unwrap()
    }

    /// Every online device reports a window for what it runs (summed as the registry sums them).
    pub fn report(&mut self) {
        for d in self.devices.iter_mut().filter(|d| d.online) {
            let Some(r) = d.running.first() else { continue };
            let h = if r.digest == NEW { self.new } else { self.old };
            d.fold_window(window(r.digest, self.now, 1_000, h.errors_per_1000, h.p95_us));
            d.last_seen = self.now;
        }
    }

    /// The broker keeps the actions; online devices act on their desired state at once.
    pub fn apply(&mut self, actions: &[Action]) {
        retain(&mut self.retained, actions);
        let online: Vec<DeviceId> = self.devices.iter().filter(|d| d.online).map(|d| d.id.clone()).collect();
        for d in online {
            self.act(&d);
        }
    }

    fn act(&mut self, id: &DeviceId) {
        let Some(desired) = self.retained.get(id).cloned() else { return };
        let (slow, refusing) = (self.slow.contains(id), self.refusing.contains(id));
        let now = self.now;
        let d = self.device(id);
        let event = |stage, reason| UpdateView { bundle: NEW, stage, reason, at: now, seq: 0 };
        let on_new = d.running.iter().any(|r| r.digest == NEW);
        let last = d.update_for(&NEW).map(|u| u.stage);
        match desired.mode {
            Mode::Revert if on_new => {
                d.running = vec![running(OLD)];
                d.updates = vec![event(UpdateStage::RolledBack, None)];
            }
            Mode::Activate | Mode::Shadow { .. } if !on_new && last.is_none() => {
                if refusing {
                    d.updates = vec![event(UpdateStage::Rejected, Some(RejectReason::SelfTestFailed))];
                } else {
                    d.running = vec![running(NEW)];
                    let stage = if slow { UpdateStage::Watching } else { UpdateStage::Committed };
                    d.updates = vec![event(stage, None)];
                }
            }
            _ => {}
        }
    }

    /// Time passes, devices report, the planner evaluates, devices act.
    pub fn tick(&mut self, r: &mut Rollout, secs: u64) -> Vec<Action> {
        self.now += secs;
        self.report();
        let actions = r.evaluate(&self.devices, self.now);
        self.apply(&actions);
        actions
    }

    pub fn command(&mut self, r: &mut Rollout, verb: Verb) -> Vec<Action> {
        let actions = r.command(verb, "alice", &self.devices, self.now).unwrap();
        self.apply(&actions);
        actions
    }

    pub fn on_new(&self) -> usize {
        self.devices.iter().filter(|d| d.running.iter().any(|r| r.digest == NEW)).count()
    }
}

/// Devices desired to install, in action order.
pub fn installs(actions: &[Action]) -> Vec<DeviceId> {
    desires(actions, |m| !matches!(m, Mode::Revert))
}

pub fn reverts(actions: &[Action]) -> Vec<DeviceId> {
    desires(actions, |m| matches!(m, Mode::Revert))
}

fn desires(actions: &[Action], pick: impl Fn(&Mode) -> bool) -> Vec<DeviceId> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Desire { device, desired } if pick(&desired.mode) => Some(device.clone()),
            _ => None,
        })
        .collect()
}

pub fn withdrawals(actions: &[Action]) -> Vec<DeviceId> {
    actions
        .iter()
        .filter_map(|a| if let Action::Withdraw { device, .. } = a { Some(device.clone()) } else { None })
        .collect()
}

pub fn decisions(actions: &[Action]) -> Vec<Decision> {
    actions.iter().filter_map(|a| if let Action::Audit(e) = a { Some(e.decision) } else { None }).collect()
}

/// What the broker keeps of the planner's actions: each device's last desired state, gone when withdrawn.
pub fn retain(retained: &mut HashMap<DeviceId, DesiredState>, actions: &[Action]) {
    for a in actions {
        match a {
            Action::Desire { device, desired } => {
                retained.insert(device.clone(), desired.clone());
            }
            Action::Withdraw { device, .. } => {
                retained.remove(device);
            }
            Action::Audit(_) => {}
        }
    }
}

/// Any operator verb, each as likely as the others (the property tests draw them).
pub fn any_verb() -> impl proptest::strategy::Strategy<Value = Verb> {
    use proptest::prelude::{Just, prop_oneof};
    prop_oneof![
        Just(Verb::Pause),
        Just(Verb::Resume),
        Just(Verb::Promote { full: false }),
        Just(Verb::Promote { full: true }),
        Just(Verb::Abort { revert: false }),
        Just(Verb::Abort { revert: true }),
        Just(Verb::Undo),
    ]
}

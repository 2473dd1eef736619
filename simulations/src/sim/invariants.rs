//! Fleet invariants. After every step the device the step touched is checked (no other device changed);
//! at the end the whole fleet is. The first violation stops the run with the seed and step number, which
//! replay it exactly.

use super::catalog::{base, target};
use super::device::{Slots, Told};
use super::world::World;
use outpost_agent::update::machine::UpdateState;
use outpost_controller::rollout::Phase;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub invariant: &'static str,
    pub seed: u64,
    pub step: u64,
    pub at_ms: u64,
    pub device: Option<String>,
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "invariant violated: {} at step {} (virtual {:.3} s), seed {}{}: {} (replay with --seed {})",
            self.invariant,
            self.step,
            self.at_ms as f64 / 1000.0,
            self.seed,
            self.device.as_ref().map(|d| format!(", device {d}")).unwrap_or_default(),
            self.detail,
            self.seed
        )
    }
}

pub const UNVERIFIED: &str = "no device runs an unverified model";
pub const OUTSIDE_WAVE: &str = "no device outside the current waves runs the candidate";
pub const ABORTED: &str = "no device runs an aborted release";
pub const FLOOR: &str = "a model's floor never decreases";
pub const ISOLATION: &str = "one model's rollout never touches another model";
pub const END_VERSION: &str =
    "every device ends on the target or the previous version (or without a model it did not have)";
pub const VIEW: &str = "the controller's view converges to the devices' truth";

/// What an event for one model may not change of another: its slots, its floor and its update machine's
/// whole state (job, stage, queued and retained desired state).
type Mark = (Slots, u64, Option<UpdateState>);

impl World {
    pub(super) fn violate(&mut self, invariant: &'static str, device: Option<u32>, detail: String) {
        if self.violation.is_none() {
            self.violation = Some(super::invariants::Violation {
                invariant,
                seed: self.seed,
                step: self.steps,
                at_ms: self.now_ms(),
                device: device.map(|d| self.devices[d as usize].id.to_string()),
                detail,
            });
        }
    }

    fn marks(&self, dev: u32) -> Vec<Mark> {
        let d = &self.devices[dev as usize];
        self.catalog
            .models
            .iter()
            .zip(&d.models)
            .map(|(name, dm)| {
                let machine = d.shell.machine(name.as_str()).map(|m| m.state.clone());
                (dm.slots, d.disk.slots.floor(name.as_str()), machine)
            })
            .collect()
    }

    /// Performs `step`, an event about model `m` on device `dev` (its desired state, a chunk of its
    /// bundle, the answer to its slow work), and checks that no other model of the device changed.
    pub(super) fn for_model(&mut self, dev: u32, m: Option<u8>, step: impl FnOnce(&mut World)) {
        let Some(m) = m.filter(|_| self.catalog.models.len() > 1) else { return step(self) };
        let before = self.marks(dev);
        step(self);
        let after = self.marks(dev);
        for (o, (b, a)) in before.iter().zip(&after).enumerate() {
            if o != m as usize && b != a {
                let what = if b.0 != a.0 {
                    "slots"
                } else if b.1 != a.1 {
                    "floor"
                } else {
                    "update state"
                };
                let stage = |mark: &Mark| mark.2.as_ref().and_then(|s| s.job.as_ref()).map(|j| j.stage);
                let detail = format!(
                    "an event about {} changed {}'s {what} (update stage {:?} -> {:?})",
                    self.catalog.models[m as usize],
                    self.catalog.models[o],
                    stage(b),
                    stage(a)
                );
                return self.violate(ISOLATION, Some(dev), detail);
            }
        }
    }

    /// After a step that touched `dev`: every model of it.
    pub(super) fn check_device(&mut self, dev: u32) {
        for m in 0..self.catalog.models.len() as u8 {
            self.check_model(dev, m);
        }
    }

    fn check_model(&mut self, dev: u32, m: u8) {
        let name = self.catalog.models[m as usize].as_str();
        let d = &self.devices[dev as usize];
        let floor = d.disk.slots.floor(name);
        let dm = &d.models[m as usize];
        let (seen, just_activated, told) = (dm.floor_seen, dm.just_activated, dm.told);
        if floor < seen {
            return self.violate(FLOOR, Some(dev), format!("{name}'s floor went from {seen} down to {floor}"));
        }
        let dm = &mut self.devices[dev as usize].models[m as usize];
        dm.floor_seen = floor;
        dm.just_activated = false;
        let d = &self.devices[dev as usize];
        let Some(active) = d.active(m) else { return };
        if d.verified & (1 << active) == 0 {
            let detail = format!("{} is active but never passed verification here", self.catalog.label(Some(active)));
            return self.violate(UNVERIFIED, Some(dev), detail);
        }
        if active != target(m) {
            return;
        }
        // The rollout as the controller holds it, or as persisted while the controller is down.
        let Some(r) = self.ctl.rollout(m) else {
            return self.violate(OUTSIDE_WAVE, Some(dev), "runs the release before any rollout of it".into());
        };
        // A device activates a release only on an install request still standing: once told to go back
        // (the desired state withdrawn, as an aborted or paused rollout does, or a revert) it must not take
        // the release up until told to install again.
        if just_activated && told != Told::Install {
            let detail = format!(
                "activated {} after {} (rollout {})",
                self.catalog.label(Some(active)),
                if told == Told::Back { "it was told to go back" } else { "no request to install it" },
                r.state.phase.name()
            );
            return self.violate(ABORTED, Some(dev), detail);
        }
        let current = r.state.wave;
        let detail = match r.state.members.get(&d.id) {
            None => Some(format!("runs the release but is in no wave (current wave {})", current + 1)),
            Some(mb) if mb.wave > current && r.state.phase != Phase::Completed => {
                Some(format!("runs the release but belongs to wave {} (current wave {})", mb.wave + 1, current + 1))
            }
            Some(_) => None,
        };
        if let Some(detail) = detail {
            self.violate(OUTSIDE_WAVE, Some(dev), detail);
        }
    }

    /// At the end of the run: versions, aborted releases, and (once converged) the controller's view of
    /// every device.
    pub(super) fn check_end(&mut self) {
        for dev in 0..self.devices.len() as u32 {
            for m in 0..self.catalog.models.len() as u8 {
                let d = &self.devices[dev as usize];
                let active = d.active(m);
                // A device that did not have the model may end without it (never added, or taken off again).
                let absent_ok = active.is_none() && d.models[m as usize].initial.is_none();
                if !(active == Some(base(m)) || active == Some(target(m)) || absent_ok) {
                    let detail = format!("ends on {}", self.catalog.label(active));
                    return self.violate(END_VERSION, Some(dev), detail);
                }
                let reverted = self.ctl.rollout(m).is_some_and(|r| r.state.phase.reverting());
                if reverted && active == Some(target(m)) {
                    let detail = format!("ends on {} after its rollout was reverted", self.catalog.label(active));
                    return self.violate(ABORTED, Some(dev), detail);
                }
            }
        }
        if self.converged_ms.is_none() {
            // Not settled: say which device is furthest from it, so the seed can be replayed and looked at.
            // (While the controller is down its registry is on disk: nothing agrees.)
            let lagging = (0..self.devices.len() as u32).find(|&i| {
                let d = &self.devices[i as usize];
                self.ctl.views.get(i as usize).is_none_or(|v| !d.agrees_with(v, &self.catalog))
            });
            if let Some(dev) = lagging {
                let d = &self.devices[dev as usize];
                let v = &self.ctl.views.get(dev as usize);
                let models = (0..self.catalog.models.len() as u8)
                    .map(|m| {
                        let name = self.catalog.models[m as usize].as_str();
                        let believed = v.and_then(|v| v.runs(&self.catalog.models[m as usize]));
                        format!(
                            "{name}: runs {} ({:?}), the controller believes {} ({:?})",
                            self.catalog.label(d.active(m)),
                            d.stage(&self.catalog, m),
                            believed.map_or("nothing".into(), |r| format!("v{}", r.version)),
                            d.shell
                                .machine(name)
                                .and_then(|mc| mc.state.job.as_ref())
                                .and_then(|j| v.and_then(|v| v.update_for(&j.bundle())))
                                .map(|u| u.stage),
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                let detail = format!(
                    "at the end the device is {} and the controller believes it {}: {models}",
                    if d.link.up { "connected" } else { "disconnected" },
                    if v.is_some_and(|v| v.online) { "online" } else { "offline" },
                );
                self.violate(VIEW, Some(dev), detail);
            }
        }
    }
}

//! Fleet invariants. After every step the device the step touched is checked (no other device changed);
//! at the end the whole fleet is. The first violation stops the run with the seed and step number, which
//! replay it exactly.

use super::catalog::{BASE, TARGET};
use super::world::World;
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
pub const END_VERSION: &str = "every device ends on the target or the previous version";
pub const VIEW: &str = "the controller's view converges to the devices' truth";

impl World {
    fn violate(&mut self, invariant: &'static str, device: Option<u32>, detail: String) {
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

    /// After a step that touched `dev`.
    pub(super) fn check_device(&mut self, dev: u32) {
        let d = &self.devices[dev as usize];
        let Some(active) = d.slots.active else { return };
        if d.verified & (1 << active) == 0 {
            let detail = format!("{} is active but never passed verification here", self.catalog.label(Some(active)));
            return self.violate(UNVERIFIED, Some(dev), detail);
        }
        if active != TARGET {
            return;
        }
        // The rollout as the controller holds it, or as persisted while the controller is down.
        let Some(r) = self.ctl.rollout.as_ref().or(self.ctl.on_disk.as_ref()) else {
            return self.violate(OUTSIDE_WAVE, Some(dev), "runs the release before any rollout of it".into());
        };
        let current = r.state.wave;
        let detail = match r.state.members.get(&d.id) {
            None => Some(format!("runs the release but is in no wave (current wave {})", current + 1)),
            Some(m) if m.wave > current && r.state.phase != Phase::Completed => {
                Some(format!("runs the release but belongs to wave {} (current wave {})", m.wave + 1, current + 1))
            }
            Some(_) => None,
        };
        if let Some(detail) = detail {
            self.violate(OUTSIDE_WAVE, Some(dev), detail);
        }
    }

    /// At the end of the run: versions, and (once converged) the controller's view of every device.
    pub(super) fn check_end(&mut self) {
        for dev in 0..self.devices.len() as u32 {
            let d = &self.devices[dev as usize];
            if !matches!(d.slots.active, Some(BASE) | Some(TARGET)) {
                let detail = format!("ends on {}", self.catalog.label(d.slots.active));
                return self.violate(END_VERSION, Some(dev), detail);
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
                let detail = format!(
                    "at the end the device runs {} ({:?}) and is {}, the controller believes {} ({:?}) and {}",
                    self.catalog.label(d.slots.active),
                    d.stage(&self.catalog),
                    if d.link.up { "connected" } else { "disconnected" },
                    v.and_then(|v| v.running.first()).map_or("nothing".into(), |r| format!("v{}", r.version)),
                    d.shell
                        .machine(self.catalog.model().as_str())
                        .and_then(|m| m.state.job.as_ref())
                        .and_then(|j| v.and_then(|v| v.update_for(&j.bundle())))
                        .map(|u| u.stage),
                    if v.is_some_and(|v| v.online) { "online" } else { "offline" },
                );
                self.violate(VIEW, Some(dev), detail);
            }
        }
    }
}

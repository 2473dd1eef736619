//! A simulated device: the agent's own update shell (`outpost_agent::fleet::shell`: one real update
//! machine per model, the effects performed as the agent performs them, slot switches through
//! `outpost_agent::slots`) over the simulated fabric, the device's skewed clock and an in-memory disk
//! (`device_platform.rs`). Local traffic is drawn from the model's behaviour; telemetry windows and the
//! watch's health figures come from it (`device_local.rs`).

use super::catalog::{Catalog, base, target};
use super::fabric::Down;
use super::rng::Rng;
use super::scenario::{ModelCfg, Scenario};
use super::telemetry::{Body, Queue};
use super::world::{Ev, World};
use outpost_agent::fleet::shell::Shell;
use outpost_protocol::messages::{Hello, Message, Mode, Presence, RunningModel};
use outpost_protocol::telemetry::UpdateStage;
use outpost_protocol::{Arch, DeviceId, Digest, RejectReason, Version};

/// Device clocks start here (ms since the Unix epoch), shifted by each device's skew.
const DEVICE_EPOCH_MS: u64 = super::world::T0 * 1000;
pub const AGENT_VERSION: Version = Version::new(0, 1, 0);

#[path = "device_platform.rs"]
mod platform;
pub(super) use platform::DIRECTOR;
pub use platform::SimDisk;

#[path = "device_local.rs"]
mod local;

#[derive(Debug, Clone, Default)]
pub struct Link {
    pub up: bool,
    /// Incremented on every connect: a message for an older connection is not delivered.
    pub conn: u32,
    /// A reconnect attempt is scheduled.
    pub connecting: bool,
    /// Per model: when the last desired state on its topic is delivered (they are delivered in order).
    pub last_desired_at: Vec<u64>,
}

/// What the simulator last told a device about a model (as received), for the aborted-release invariant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Told {
    #[default]
    Nothing,
    /// A desired state to install a release.
    Install,
    /// A revert, or the desired state withdrawn.
    Back,
}

/// One model on one device: its slots, the traffic it served, how its release behaves here, and what the
/// invariants remember of it.
#[derive(Debug, Clone, Default)]
pub struct DeviceModel {
    /// `disk.slots` of this model as release indices.
    pub slots: Slots,
    window: Traffic,
    /// The traffic of this window that a release served before it stopped being active (an activation,
    /// a rollback, a revert or a removal happened mid-window): reported as that release's own window
    /// at the window's end, as the agent reports a departed model's figures, so the new release is
    /// judged on the requests it served.
    departed: Vec<(Slots, Traffic)>,
    watch: Traffic,
    /// The release is broken on this device / fails its self-test here.
    failing: bool,
    selftest_fails: bool,
    pub ever_on_target: bool,
    /// The release the model ran at the start: its baseline, or none on a device that did not have it.
    pub initial: Option<u8>,
    /// The release became active in the step just performed (checked, then cleared, by the invariants).
    pub just_activated: bool,
    /// The highest floor this model ever had here: it must never go down.
    pub floor_seen: u64,
    pub told: Told,
}

/// One model's slot table as release indices, read from the agent's table (`SimDisk::slots`) after every
/// step of the shell: what serves, what is staged, what is shadowed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Slots {
    pub active: Option<u8>,
    pub candidate: Option<u8>,
    pub shadow_percent: Option<u8>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Traffic {
    requests: u64,
    errors: u64,
    compared: u64,
    agreed: u64,
}

#[derive(Debug)]
pub struct Device {
    pub id: DeviceId,
    pub arch: Arch,
    pub labels: Vec<(String, String)>,
    pub powered: bool,
    /// Counts power cycles; cancels work and ticks of an earlier boot.
    pub boot: u32,
    pub boot_id: u64,
    pub link: Link,
    /// No network before this time (ms): the device is offline from the start.
    pub offline_until_ms: u64,
    pub skew_ms: i64,
    /// The agent's update shell, as the agent runs it.
    pub shell: Shell,
    /// What a power loss keeps: the shell's persisted state, the slot table, the staging file.
    pub disk: SimDisk,
    /// Per model (index as in the catalog).
    pub models: Vec<DeviceModel>,
    /// Bit per release that passed verification on this device (the factory models count as verified).
    pub verified: u32,
    served_until_ms: u64,
    queue: Queue,
    /// Loses power once while an update runs (and has not yet).
    will_lose_power: bool,
    ticking: bool,
}

impl Device {
    pub fn new(i: u32, s: &Scenario, models: &[ModelCfg], catalog: &Catalog, rng: &mut Rng) -> Device {
        let f = &s.fleet;
        let region = &f.regions[i as usize % f.regions.len()];
        let arch_name = &f.archs[(i as usize / f.regions.len()) % f.archs.len()];
        let arch: Arch = arch_name.parse().expect("validated");
        let skew = s.fleet.clock_skew_secs as i64 * 1000;
        let offline = rng.chance(s.faults.offline_fraction);
        let offline_until_ms =
            if offline { rng.range(s.faults.return_min_secs, s.faults.return_max_secs).max(1) * 1000 } else { 0 };
        let labels = vec![("region".into(), region.clone()), ("arch".into(), arch.as_str().into())];
        let installed: Vec<bool> = models.iter().map(|m| m.installed_at_start(&labels)).collect();
        let mut d = Device {
            id: DeviceId::new(format!("dev-{i:06}")).expect("a valid id"),
            arch,
            labels,
            powered: true,
            boot: 0,
            boot_id: rng.next_u64(),
            link: Link::default(),
            offline_until_ms,
            skew_ms: rng.range(0, 2 * skew as u64) as i64 - skew,
            shell: Shell::default(),
            disk: SimDisk::factory(catalog, &installed),
            models: Vec::new(),
            verified: 0,
            served_until_ms: 0,
            queue: Queue::default(),
            will_lose_power: false,
            ticking: false,
        };
        // The draws keep the order of the one-model simulator (first model, power, then the others), so a
        // one-model scenario replays as it did.
        let failing = rng.chance(models[0].release.failing_devices);
        let selftest_fails = rng.chance(models[0].release.selftest_failures);
        d.will_lose_power = rng.chance(s.faults.power_loss);
        d.models.push(DeviceModel { failing, selftest_fails, ..DeviceModel::default() });
        for m in &models[1..] {
            let failing = rng.chance(m.release.failing_devices);
            let selftest_fails = rng.chance(m.release.selftest_failures);
            d.models.push(DeviceModel { failing, selftest_fails, ..DeviceModel::default() });
        }
        for (m, dm) in d.models.iter_mut().enumerate().filter(|(m, _)| installed[*m]) {
            dm.initial = Some(base(m as u8));
            dm.slots = Slots { active: dm.initial, ..Slots::default() };
            dm.floor_seen = catalog.get(base(m as u8)).running.sequence;
            d.verified |= 1 << base(m as u8);
        }
        d
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The device's own clock (ms): virtual time shifted by its skew.
    pub fn clock_ms(&self, now_ms: u64) -> u64 {
        (DEVICE_EPOCH_MS + now_ms).saturating_add_signed(self.skew_ms)
    }

    /// An update is under way (the machine needs ticks).
    pub fn updating(&self) -> bool {
        self.shell.updating()
    }

    /// The update stage of model `m`.
    pub fn stage(&self, catalog: &Catalog, m: u8) -> UpdateStage {
        self.shell.stage(catalog.models[m as usize].as_str())
    }

    /// Model `m`'s active release.
    pub fn active(&self, m: u8) -> Option<u8> {
        self.models[m as usize].slots.active
    }

    /// Every model the device serves, as its hello lists them.
    pub fn running(&self, catalog: &Catalog) -> Vec<RunningModel> {
        self.models.iter().filter_map(|m| m.slots.active).map(|r| catalog.get(r).running.clone()).collect()
    }

    /// Model `m` ended where its rollout's outcome wants it: on `want`, or (when `want` is the release)
    /// with the release refused or rolled back by the device itself. A device that did not have the model
    /// at the start goes back to not having it where the baseline is wanted.
    pub fn settled_on(&self, catalog: &Catalog, m: u8, want: u8) -> bool {
        let want_here = if want == base(m) { self.models[m as usize].initial } else { Some(want) };
        self.active(m) == want_here || (want == target(m) && self.install_failed(&catalog.get(want).bundle.digest))
    }

    /// The device's own update of `bundle` ended in a refusal or a rollback of its own (not a
    /// supersession or a revert on request).
    pub fn install_failed(&self, bundle: &Digest) -> bool {
        self.shell.machines().filter_map(|(_, m)| m.state.job.as_ref()).any(|j| {
            j.bundle() == *bundle
                && matches!(j.stage, UpdateStage::RolledBack | UpdateStage::Rejected)
                && j.outcome.as_ref().is_some_and(|(r, _)| *r != RejectReason::Superseded)
        })
    }

    /// The controller's view says what the device says: the model it runs and where its last update
    /// stands.
    pub fn agrees_with(&self, v: &outpost_controller::rollout::DeviceView, catalog: &Catalog) -> bool {
        let update_known = self
            .shell
            .machines()
            .filter_map(|(_, m)| m.state.job.as_ref())
            .all(|j| v.update_for(&j.bundle()).is_some_and(|u| u.stage == j.stage));
        v.running == self.running(catalog) && update_known
    }
}

impl World {
    fn dev(&mut self, dev: u32) -> &mut Device {
        &mut self.devices[dev as usize]
    }

    fn hello(&self, dev: u32) -> Message {
        let d = &self.devices[dev as usize];
        Message::Hello(Hello {
            device: d.id.clone(),
            arch: d.arch,
            agent_version: AGENT_VERSION,
            labels: d.labels.clone(),
            running: d.running(&self.catalog),
            boot_id: d.boot_id,
            max_packet: 1 << 20,
        })
    }

    /// Whether the device could reach the broker right now.
    fn reachable(&self, dev: u32) -> bool {
        let d = &self.devices[dev as usize];
        d.powered && self.now_ms() >= d.offline_until_ms && self.ctl.broker_up && !self.is_partitioned(dev)
    }

    pub(super) fn device_connect(&mut self, dev: u32) {
        self.dev(dev).link.connecting = false;
        if self.devices[dev as usize].link.up || !self.devices[dev as usize].powered {
            return;
        }
        if !self.reachable(dev) {
            self.schedule_reconnect(dev, 0);
            return;
        }
        self.reconnects += 1;
        let failures = self.scenario.fabric.link_failures_per_hour;
        let fail_after = (failures > 0.0).then(|| self.rng.exp(3_600_000.0 / failures) as u64);
        let d = self.dev(dev);
        d.link.up = true;
        d.link.conn += 1;
        let (id, boot_id, conn) = (d.id.clone(), d.boot_id, d.link.conn);
        if let Some(after) = fail_after {
            self.q.after(after.max(1), Ev::LinkFail { dev, conn });
        }
        self.dev_send(dev, Message::Presence(Presence { device: id, online: true, boot_id }));
        let hello = self.hello(dev);
        self.dev_send(dev, hello);
        // The broker hands a new subscriber the retained desired state of every model.
        for m in 0..self.catalog.models.len() as u8 {
            if self.devices[dev as usize].link.up
                && let Some(desired) = self.ctl.retained_mut(dev as usize, m).clone()
            {
                self.ctl_send(dev, Down::Desired(desired));
            }
        }
        self.ship(dev);
    }

    fn schedule_reconnect(&mut self, dev: u32, after_ms: u64) {
        let f = &self.scenario.fabric;
        let backoff = self.rng.range(f.reconnect_min_secs * 1000, f.reconnect_max_secs * 1000);
        let d = self.dev(dev);
        if d.link.connecting || !d.powered {
            return;
        }
        d.link.connecting = true;
        self.q.after(after_ms + backoff, Ev::Connect { dev });
    }

    pub(super) fn device_link_lost(&mut self, dev: u32, conn: u32) {
        let d = &self.devices[dev as usize];
        if d.link.up || d.link.conn != conn {
            return;
        }
        self.schedule_reconnect(dev, 0);
    }

    pub(super) fn device_receives(&mut self, dev: u32, conn: u32, msg: Down) {
        let d = &self.devices[dev as usize];
        if !d.link.up || d.link.conn != conn || !d.powered {
            return;
        }
        match msg {
            Down::Desired(published) => {
                let desired = &published.desired;
                let m = self.catalog.index(desired.model.as_str());
                let active = m.and_then(|m| d.active(m)).map(|r| &self.catalog.get(r).running);
                let already_active = active.is_some_and(|a| a.name == desired.model && a.sequence == desired.sequence);
                let installs = matches!(desired.mode, Mode::Activate | Mode::Shadow { .. }) && !already_active;
                if installs && d.will_lose_power {
                    // Somewhere in the update: fetching, verifying, shadowing, activating or watching.
                    let r = &self.models[m.unwrap_or(0) as usize].rollout;
                    let span = (u64::from(r.shadow_secs.unwrap_or(0)) + u64::from(r.watch_secs)) * 1000;
                    let at = self.rng.range(50, span.max(100));
                    self.dev(dev).will_lose_power = false;
                    self.q.after(at, Ev::PowerLoss { dev });
                }
                if let Some(m) = m {
                    self.dev(dev).models[m as usize].told =
                        if matches!(desired.mode, Mode::Activate | Mode::Shadow { .. }) {
                            Told::Install
                        } else {
                            Told::Back
                        };
                }
                if desired.mode == Mode::Revert && self.scenario.faults.ignore_revert {
                    return;
                }
                self.for_model(dev, m, |w| w.with_shell(dev, |s, p| s.directed(p, &published.signed)));
            }
            Down::Withdrawn(m) => {
                self.dev(dev).models[m as usize].told = Told::Back;
                let models = if self.scenario.faults.withdraw_all_models {
                    self.catalog.models.clone()
                } else {
                    vec![self.catalog.models[m as usize].clone()]
                };
                self.for_model(dev, Some(m), |w| {
                    w.with_shell(dev, |s, p| models.iter().for_each(|model| s.withdrawn(p, model)))
                });
            }
            Down::Chunk { release, index, corrupt } => self.chunk_arrives(dev, release, index, corrupt),
            Down::Ack(up_to) => {
                let q = &mut self.dev(dev).queue;
                let more = !q.is_empty();
                q.ack(up_to);
                // The shipper sends the next batch of a backlog as soon as the previous one is acked.
                if more && !self.devices[dev as usize].queue.is_empty() {
                    self.ship(dev);
                }
            }
        }
    }

    /// A chunk's bytes reach the shell, which checks them against the digest list before writing them.
    fn chunk_arrives(&mut self, dev: u32, release: u8, index: u32, corrupt: bool) {
        let r = self.catalog.get(release);
        let data = &r.chunk_data[(index as usize).min(r.chunk_data.len() - 1)];
        let data = if corrupt {
            let mut bad = data.clone();
            let mid = bad.len() / 2;
            bad[mid] ^= 0x5a;
            bad
        } else {
            data.clone()
        };
        let (bundle, m) = (r.bundle.digest, r.model);
        self.for_model(dev, Some(m), |w| w.with_shell(dev, |s, p| s.chunk(p, bundle, index, &data)));
    }

    pub(super) fn device_tick(&mut self, dev: u32, boot: u32) {
        let d = self.dev(dev);
        if d.boot != boot {
            return;
        }
        d.ticking = false;
        if !d.powered {
            return;
        }
        self.with_shell(dev, |s, p| s.tick(p));
    }

    pub(super) fn ensure_tick(&mut self, dev: u32) {
        let tick = self.scenario.fleet.tick_secs * 1000;
        let d = self.dev(dev);
        if d.ticking || !d.powered || !d.updating() {
            return;
        }
        d.ticking = true;
        let boot = d.boot;
        self.q.after(tick, Ev::Tick { dev, boot });
    }

    /// Appends to the durable telemetry queue (drop-oldest at its cap, as the agent's queue).
    fn append(&mut self, dev: u32, body: Body) {
        let cap = self.scenario.fleet.queue_records;
        let now = self.now_ms();
        let d = self.dev(dev);
        let at = d.clock_ms(now) / 1000;
        d.queue.append(at, body, cap);
    }

    /// Sends the oldest unacknowledged records (the controller de-duplicates by sequence number).
    pub(super) fn ship(&mut self, dev: u32) {
        let d = &self.devices[dev as usize];
        if !d.link.up {
            return;
        }
        if let Some(batch) = d.queue.batch(self.scenario.fleet.batch_records, &self.catalog) {
            self.dev_send(dev, Message::Telemetry(batch));
        }
    }

    fn announce(&mut self, dev: u32) {
        let hello = self.hello(dev);
        self.dev_send(dev, hello);
    }
}

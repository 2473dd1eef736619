//! A simulated device: the real agent update machine inside a shell that does what the agent's driver
//! (`agent/src/fleet/driver.rs`) does with the machine's effects: staging file of checked chunks, verify
//! into the candidate slot, self-test, slot switches (active / previous / retired / candidate), commit with
//! the release floor, events into the telemetry queue and onto `up/events`, hello after model changes.
//! Local traffic is drawn from the model's behaviour; telemetry windows and the watch's health figures
//! come from it.

use super::catalog::{BASE, Catalog, TARGET};
use super::fabric::Down;
use super::rng::Rng;
use super::scenario::Scenario;
use super::telemetry::{Body, Queue, Window};
use super::world::{Ev, Work, World};
use outpost_agent::update::machine::{Effect, Health, Input, Machine, Release, UpdateState};
use outpost_protocol::messages::{ChunkRequest, DesiredState, Hello, Message, Mode, Presence, RunningModel};
use outpost_protocol::telemetry::{UpdateEvent, UpdateStage};
use outpost_protocol::{Arch, DeviceId, Digest, RejectReason, Version};
use std::collections::VecDeque;

/// Device clocks start here (ms since the Unix epoch), shifted by each device's skew.
const DEVICE_EPOCH_MS: u64 = super::world::T0 * 1000;
const VERIFY_MS: u64 = 200;
const SELFTEST_MS: u64 = 500;
const ACTIVATE_MS: u64 = 300;
pub const AGENT_VERSION: Version = Version::new(0, 1, 0);

#[path = "device_effects.rs"]
mod effects;

#[derive(Debug, Clone, Default)]
pub struct Link {
    pub up: bool,
    /// Incremented on every connect: a message for an older connection is not delivered.
    pub conn: u32,
    /// A reconnect attempt is scheduled.
    pub connecting: bool,
    pub last_desired_at: u64,
}

/// The model slots, as `Slots` in the agent's store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Slots {
    pub active: Option<u8>,
    pub previous: Option<u8>,
    pub retired: Option<u8>,
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
    pub machine: Machine,
    /// The machine's state as last persisted: what a power loss comes back to.
    persisted: UpdateState,
    pub slots: Slots,
    pub floor: u64,
    /// Bit per release that passed verification on this device (the factory model counts as verified).
    pub verified: u8,
    /// The staging file: which chunks of which bundle are written and matched their digest.
    staging: Option<(Digest, Vec<bool>)>,
    last_chunk: Option<u32>,
    served_until_ms: u64,
    window: Traffic,
    watch: Traffic,
    queue: Queue,
    /// The release is broken on this device / fails its self-test here.
    failing: bool,
    selftest_fails: bool,
    /// Loses power once while an update runs (and has not yet).
    will_lose_power: bool,
    ticking: bool,
    pub ever_on_target: bool,
}

impl Device {
    pub fn new(i: u32, s: &Scenario, catalog: &Catalog, rng: &mut Rng) -> Device {
        let f = &s.fleet;
        let region = &f.regions[i as usize % f.regions.len()];
        let arch_name = &f.archs[(i as usize / f.regions.len()) % f.archs.len()];
        let arch: Arch = arch_name.parse().expect("validated");
        let skew = s.fleet.clock_skew_secs as i64 * 1000;
        let offline = rng.chance(s.faults.offline_fraction);
        let offline_until_ms =
            if offline { rng.range(s.faults.return_min_secs, s.faults.return_max_secs).max(1) * 1000 } else { 0 };
        let _ = catalog;
        Device {
            id: DeviceId::new(format!("dev-{i:06}")).expect("a valid id"),
            arch,
            labels: vec![("region".into(), region.clone()), ("arch".into(), arch.as_str().into())],
            powered: true,
            boot: 0,
            boot_id: rng.next_u64(),
            link: Link::default(),
            offline_until_ms,
            skew_ms: rng.range(0, 2 * skew as u64) as i64 - skew,
            machine: Machine::default(),
            persisted: UpdateState::default(),
            slots: Slots { active: Some(BASE), ..Slots::default() },
            floor: 10,
            verified: 1 << BASE,
            staging: None,
            last_chunk: None,
            served_until_ms: 0,
            window: Traffic::default(),
            watch: Traffic::default(),
            queue: Queue::default(),
            failing: rng.chance(s.release.failing_devices),
            selftest_fails: rng.chance(s.release.selftest_failures),
            will_lose_power: rng.chance(s.faults.power_loss),
            ticking: false,
            ever_on_target: false,
        }
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
        !matches!(
            self.machine.stage(),
            UpdateStage::Idle | UpdateStage::Committed | UpdateStage::RolledBack | UpdateStage::Rejected
        )
    }

    pub fn running(&self, catalog: &Catalog) -> Vec<RunningModel> {
        self.slots.active.map(|r| catalog.get(r).running.clone()).into_iter().collect()
    }

    /// The device's own update of `bundle` ended in a refusal or a rollback of its own (not a
    /// supersession or a revert on request).
    pub fn install_failed(&self, bundle: &Digest) -> bool {
        self.machine.state.job.as_ref().is_some_and(|j| {
            j.bundle() == *bundle
                && matches!(j.stage, UpdateStage::RolledBack | UpdateStage::Rejected)
                && j.outcome.as_ref().is_some_and(|(r, _)| *r != RejectReason::Superseded)
        })
    }

    /// The controller's view says what the device says: the model it runs and where its last update
    /// stands.
    pub fn agrees_with(&self, v: &outpost_controller::rollout::DeviceView, catalog: &Catalog) -> bool {
        let update_known = match self.machine.state.job.as_ref() {
            Some(j) => v.update_for(&j.bundle()).is_some_and(|u| u.stage == j.stage),
            None => true,
        };
        v.running == self.running(catalog) && update_known
    }

    fn job_desired(&self) -> Option<DesiredState> {
        self.machine.state.job.as_ref().map(|j| j.desired.clone())
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
        // The broker hands a new subscriber the retained desired state.
        if self.devices[dev as usize].link.up
            && let Some(desired) = self.ctl.retained[dev as usize].clone()
        {
            self.ctl_send(dev, Down::Desired(desired));
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
            Down::Desired(desired) => {
                let active = d.slots.active.map(|r| &self.catalog.get(r).running);
                let already_active = active.is_some_and(|m| m.name == desired.model && m.sequence == desired.sequence);
                let installs = desired.mode != Mode::Revert && !already_active;
                if installs && d.will_lose_power {
                    // Somewhere in the update: fetching, verifying, shadowing, activating or watching.
                    let span = (u64::from(self.scenario.rollout.shadow_secs.unwrap_or(0))
                        + u64::from(self.scenario.rollout.watch_secs))
                        * 1000;
                    let at = self.rng.range(50, span.max(100));
                    self.dev(dev).will_lose_power = false;
                    self.q.after(at, Ev::PowerLoss { dev });
                }
                self.step(dev, Input::Desired { desired: (*desired).clone(), already_active });
            }
            Down::Withdrawn => self.step(dev, Input::Withdrawn),
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

    /// What the driver's `write_chunk` does: check the chunk against the digest list and write it.
    fn chunk_arrives(&mut self, dev: u32, release: u8, index: u32, corrupt: bool) {
        let r = self.catalog.get(release);
        let d = &self.devices[dev as usize];
        let Some(job) = d.machine.state.job.as_ref().filter(|j| j.stage == UpdateStage::Fetching) else { return };
        if job.bundle() != r.bundle.digest {
            return;
        }
        let b = &job.desired.bundle;
        let i = index as usize;
        let data = &r.chunk_data[i.min(r.chunk_data.len() - 1)];
        let digest = if corrupt {
            let mut bad = data.clone();
            let mid = bad.len() / 2;
            bad[mid] ^= 0x5a;
            Digest::of(&bad)
        } else {
            Digest::of(data)
        };
        let valid = i < b.chunks.len() && digest == b.chunks[i];
        let bundle = b.digest;
        let n = b.chunks.len();
        let d = self.dev(dev);
        if valid {
            let staging = d.staging.get_or_insert_with(|| (bundle, vec![false; n]));
            if staging.0 == bundle {
                staging.1[i] = true;
            }
            d.last_chunk = Some(index);
        }
        self.step(dev, Input::Chunk { bundle, index, valid });
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
        self.step(dev, Input::Tick);
        if self.devices[dev as usize].machine.stage() == UpdateStage::Watching {
            self.serve(dev);
            let d = &self.devices[dev as usize];
            let p95 = d.slots.active.map_or(0, |r| self.catalog.get(r).p95_us);
            let h = Health { requests: d.watch.requests, errors: d.watch.errors, p95_us: p95, selftest_ok: true };
            self.step(dev, Input::Health(h));
        }
    }

    /// Steps the machine, persists, and performs the effects (feeding immediate answers back), as the
    /// driver's `handle` does.
    pub(super) fn step(&mut self, dev: u32, input: Input) {
        let mut pending = VecDeque::from([input]);
        while let Some(input) = pending.pop_front() {
            let now = self.now_ms();
            let d = self.dev(dev);
            let previous_job = d.job_desired();
            let effects = d.machine.step(input, d.clock_ms(now));
            if !effects.is_empty() {
                d.persisted = d.machine.state.clone();
            }
            let (events, work): (Vec<Effect>, Vec<Effect>) =
                effects.into_iter().partition(|e| matches!(e, Effect::Event { .. }));
            for e in events {
                if let Effect::Event { bundle, from, to, reason, detail } = e {
                    let current = self.devices[dev as usize].job_desired();
                    let desired =
                        [current, previous_job.clone()].into_iter().flatten().find(|d| d.bundle.digest == bundle);
                    if let Some(desired) = desired {
                        self.report_event(dev, &desired, from, to, reason, detail);
                    }
                }
            }
            for e in work {
                if let Some(next) = self.perform_effect(dev, e) {
                    pending.push_back(next);
                }
            }
        }
        self.ensure_tick(dev);
    }

    fn ensure_tick(&mut self, dev: u32) {
        let tick = self.scenario.fleet.tick_secs * 1000;
        let d = self.dev(dev);
        if d.ticking || !d.powered || !d.updating() {
            return;
        }
        d.ticking = true;
        let boot = d.boot;
        self.q.after(tick, Ev::Tick { dev, boot });
    }

    fn report_event(
        &mut self,
        dev: u32,
        d: &DesiredState,
        from: UpdateStage,
        to: UpdateStage,
        reason: Option<RejectReason>,
        detail: String,
    ) {
        let event = UpdateEvent {
            rollout: d.rollout.clone(),
            model: d.model.clone(),
            version: d.version,
            bundle: d.bundle.digest,
            from,
            to,
            reason,
            detail,
        };
        self.append(dev, Body::Update(Box::new(event.clone())));
        self.dev_send(dev, Message::Event(event));
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

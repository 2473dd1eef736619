//! The controller side: a registry of `DeviceView`s fed only by messages that came through the fabric
//! (following `controller/src/daemon/registry.rs`), the real rollout planner on a virtual timer, its
//! actions published as retained desired states, chunk serving, and a crash with reload.
//!
//! The registry keeps one `DeviceView` per device (plus the telemetry cursor and boot id) instead of the
//! daemon's whole `DeviceRecord`: the record also keeps the last 32 update events with their text, which
//! at 100,000 devices costs gigabytes and feeds nothing the planner reads. The view is updated by the same
//! `record_event` / `record_window` functions the daemon's record uses.

use super::catalog::{Catalog, base, target};
use super::device::DIRECTOR;
use super::device::{AGENT_VERSION, Device};
use super::fabric::{Down, Published};
use super::scenario::ModelCfg;
use super::world::{Ev, World};
use outpost_controller::rollout::{
    Action, DeviceView, ErrorRateGate, FailurePolicy, Gates, InstallGate, LatencyGate, Phase, Quorum, Release, Rollout,
    RolloutSpec, Selector, ShadowGate, ShadowPeriod, Wave, WaveSize, may_start, next_order,
};
use outpost_protocol::manifest::Targets;
use outpost_protocol::messages::{Message, Presence, Watch};
use outpost_protocol::telemetry::RecordBody;
use outpost_protocol::{DeviceId, UnixTime};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// What the registry keeps beside the view: the telemetry cursor and the boot the device last announced.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Meta {
    pub boot_id: u64,
    pub up_to: u64,
    pub duplicates: u64,
    pub missing: u64,
}

#[derive(Debug)]
pub struct Controller {
    pub up: bool,
    pub broker_up: bool,
    /// The registry, by device index.
    pub views: Vec<DeviceView>,
    pub meta: Vec<Meta>,
    /// Each model's rollout, by model index, once started. Rollouts of different models run side by
    /// side, each evaluated on its own over the same registry, as the daemon does.
    pub rollouts: Vec<Option<Rollout>>,
    /// The broker's retained desired states, one topic per device and model (`down/desired/{model}`):
    /// index `device * models + model`.
    pub retained: Vec<Option<Arc<Published>>>,
    /// While the controller is down: the rollouts as persisted (the registry is in `disk`).
    pub on_disk: Option<Vec<Option<Rollout>>>,
    disk: Option<(Vec<u8>, Vec<u8>)>,
    crash_pending: bool,
    pub scratch: Vec<u8>,
}

fn index_of(id: &DeviceId) -> usize {
    id.as_str().strip_prefix("dev-").and_then(|n| n.parse().ok()).expect("simulated device ids are dev-NNNNNN")
}

impl Controller {
    /// Every device is known from an earlier session (enrolled, running the baselines) but not yet online.
    pub fn new(devices: &[Device], catalog: &Catalog) -> Controller {
        let views = devices
            .iter()
            .map(|d| {
                let mut v = DeviceView::new(d.id.clone());
                v.arch = Some(d.arch);
                v.agent_version = Some(AGENT_VERSION);
                v.labels = d.labels.clone();
                v.last_seen = super::world::T0;
                v.running = d.running(catalog);
                v
            })
            .collect();
        Controller {
            up: true,
            broker_up: true,
            views,
            meta: vec![Meta::default(); devices.len()],
            rollouts: vec![None; catalog.models.len()],
            retained: vec![None; devices.len() * catalog.models.len()],
            on_disk: None,
            disk: None,
            crash_pending: false,
            scratch: vec![0; 64 << 10],
        }
    }

    /// Model `m`'s rollout as the controller holds it, or as persisted while the controller is down.
    pub fn rollout(&self, m: u8) -> Option<&Rollout> {
        match &self.on_disk {
            Some(disk) => disk[m as usize].as_ref(),
            None => self.rollouts[m as usize].as_ref(),
        }
    }

    /// The retained desired state of `model` for device `dev`.
    pub fn retained_mut(&mut self, dev: usize, m: u8) -> &mut Option<Arc<Published>> {
        let models = self.rollouts.len();
        &mut self.retained[dev * models + m as usize]
    }
}

/// Model `m`'s rollout spec, built as `outpost rollout start` does from its flags (daemon/rollouts.rs
/// `spec`). Errors name the model's table (`rollout.` for the first model, `models.NAME.rollout.` else).
pub fn spec(cfg: &ModelCfg, m: u8, catalog: &Catalog) -> Result<RolloutSpec, String> {
    spec_of(cfg, m, catalog).map_err(|e| if m == 0 { e } else { format!("models.{}.{e}", cfg.name) })
}

fn spec_of(cfg: &ModelCfg, m: u8, catalog: &Catalog) -> Result<RolloutSpec, String> {
    let r = &cfg.rollout;
    let t = catalog.get(target(m));
    let waves = r
        .waves
        .iter()
        .map(|w| w.parse::<WaveSize>().map(|size| Wave { size, bake_secs: r.bake_secs }))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("rollout.waves: {e}"))?;
    let spec = RolloutSpec {
        id: format!("{}-{}", t.running.name, t.running.version),
        release: Release {
            model: t.running.name.clone(),
            version: t.running.version,
            sequence: t.running.sequence,
            bundle: t.bundle.clone(),
            model_digest: t.running.digest,
            targets: Targets { archs: vec![], min_agent: AGENT_VERSION },
        },
        selector: Selector::parse(&r.selector).map_err(|e| format!("rollout.selector: {e}"))?,
        waves,
        gates: Gates {
            install: r.max_failure_rate.map(|m| InstallGate { max_failure_rate: m, min_finished: r.min_finished }),
            error_rate: r.max_error_increase.map(|m| ErrorRateGate { max_increase: m, min_requests: 20 }),
            latency: r.max_p95_regression.map(|m| LatencyGate { max_p95_regression: m }),
            shadow: r
                .min_shadow_agreement
                .map(|a| ShadowGate { min_agreement: a, min_compared: r.min_shadow_compared }),
            drift: None,
            quorum: Quorum { min_fraction: r.quorum, min_devices: 1, max_evidence_age_secs: r.max_evidence_age_secs },
            defaulted: vec![],
        },
        on_failure: match r.on_failure.as_str() {
            "pause" => FailurePolicy::Pause,
            "rollback" => FailurePolicy::Rollback,
            other => return Err(format!("rollout.on_failure: {other:?} is neither pause nor rollback")),
        },
        shadow: r.shadow_secs.map(|secs| ShadowPeriod { secs, sample_percent: r.shadow_percent }),
        watch: Watch {
            secs: r.watch_secs,
            max_error_ppm: r.watch_max_error_ppm,
            max_p95_us: 0,
            min_requests: r.watch_min_requests,
            max_restarts: 3,
        },
        hold_secs: r.hold_secs,
        kind: outpost_controller::rollout::Kind::Install,
    };
    spec.validate().map_err(|e| format!("rollout: {e}"))?;
    Ok(spec)
}

fn terminal(p: &Phase) -> bool {
    matches!(p, Phase::RolledBack { .. } | Phase::Aborted { .. })
}

impl World {
    pub(super) fn controller_receives(&mut self, dev: u32, msg: Message) {
        if !self.ctl.up {
            return; // Nobody is subscribed: the message is gone.
        }
        let now = self.now_s();
        let i = dev as usize;
        let (view, meta) = (&mut self.ctl.views[i], &mut self.ctl.meta[i]);
        match msg {
            Message::Hello(h) if h.device == view.id => {
                view.arch = Some(h.arch);
                view.agent_version = Some(h.agent_version);
                view.labels = h.labels;
                view.running = h.running;
                view.online = true;
                view.last_seen = now;
                meta.boot_id = h.boot_id;
            }
            Message::Presence(p) if p.device == view.id => presence(view, meta, &p, now),
            Message::Event(e) => {
                view.last_seen = now;
                view.record_event(&e, now);
            }
            Message::Telemetry(batch) => {
                view.last_seen = now;
                view.online = true;
                if batch.last_seq <= meta.up_to {
                    meta.duplicates += batch.records.len() as u64;
                } else {
                    if batch.first_seq > meta.up_to + 1 {
                        meta.missing += batch.first_seq - meta.up_to - 1;
                    }
                    for r in batch.records {
                        if r.seq <= meta.up_to {
                            meta.duplicates += 1;
                            continue;
                        }
                        match r.body {
                            RecordBody::Inference(w) => view.record_window(&w, now),
                            RecordBody::Update(e) => view.record_event(&e, now),
                            RecordBody::Health(_) | RecordBody::Dropped { .. } | RecordBody::Trust(_) => {}
                        }
                    }
                    meta.up_to = batch.last_seq;
                }
                let up_to = meta.up_to;
                self.ctl_send(dev, Down::Ack(up_to));
            }
            Message::ChunkRequest(req) => {
                let Some(release) = self.catalog.by_bundle(&req.bundle) else { return };
                let total = self.catalog.get(release).bundle.chunks.len() as u32;
                // As the daemon: at most 64 chunks per request, never past the end.
                for index in req.first..req.first.saturating_add(req.count.min(64)).min(total) {
                    self.ctl_send(dev, Down::Chunk { release, index, corrupt: false });
                }
            }
            _ => {}
        }
    }

    /// The broker publishes a dead connection's last will (unless the device already came back).
    pub(super) fn broker_last_will(&mut self, dev: u32, conn: u32, boot_id: u64) {
        let d = &self.devices[dev as usize];
        if !self.ctl.broker_up || (d.link.up && d.link.conn != conn) {
            return;
        }
        let p = Presence { device: d.id.clone(), online: false, boot_id };
        // The will travels from the broker to the controller: no device link involved.
        if self.ctl.up {
            let now = self.now_s();
            presence(&mut self.ctl.views[dev as usize], &mut self.ctl.meta[dev as usize], &p, now);
        }
    }

    /// The operator starts model `m`'s rollout. The daemon's own rule decides whether it may start beside
    /// the rollouts already there (`fleet_rules::may_start`): one of another model must never stand in
    /// its way.
    pub(super) fn start_rollout(&mut self, m: u8) {
        let spec = spec(&self.models[m as usize], m, &self.catalog).expect("validated before the run");
        let mut rollout = Rollout::new(spec).expect("validated before the run");
        let list: Vec<Rollout> =
            self.ctl.rollouts.iter().chain(self.ctl.on_disk.iter().flatten()).flatten().cloned().collect();
        if let Err(why) = may_start(&list, &rollout.spec, &self.ctl.views) {
            let detail = format!("{}'s rollout may not start: {why}", self.catalog.models[m as usize]);
            return self.violate(super::invariants::ISOLATION, None, detail);
        }
        rollout.state.order = next_order(&list);
        if let Some(disk) = self.ctl.on_disk.as_mut() {
            // The operator's start reaches a controller that is down: it is taken when it is back.
            disk[m as usize] = Some(rollout);
        } else {
            self.ctl.rollouts[m as usize] = Some(rollout);
        }
        self.rollout_started_ms[m as usize] = Some(self.now_ms());
        if self.ctl.up {
            self.evaluate_once();
        }
    }

    /// The planner's timer.
    pub(super) fn evaluate(&mut self) {
        let every = self.scenario.controller.evaluate_every_secs * 1000;
        if let Some(at) = self.scenario.controller.restart_at_secs
            && self.controller_restarts == 0
            && !self.ctl.crash_pending
            && self.now_ms() >= at * 1000
        {
            self.ctl.crash_pending = true;
        }
        if !self.ctl.up {
            return; // The start event resumes the timer.
        }
        self.evaluate_once();
        self.sample();
        self.check_converged();
        self.q.after(every, Ev::Evaluate);
    }

    /// One evaluation of every model's rollout, each over the same registry; every rollout is persisted
    /// before any action of the step is performed.
    fn evaluate_once(&mut self) {
        let now = self.now_s();
        let daemon_filter = self.scenario.controller.skip_terminal_rollouts;
        let mut actions = Vec::new();
        for (m, rollout) in self.ctl.rollouts.iter_mut().enumerate() {
            let Some(rollout) = rollout.as_mut() else { continue };
            if daemon_filter && terminal(&rollout.state.phase) {
                continue;
            }
            actions.extend(rollout.evaluate(&self.ctl.views, now).into_iter().map(|a| (m as u8, a)));
        }
        if self.ctl.crash_pending {
            // Persisted, then the process dies before performing the actions.
            self.crash(actions.len());
            return;
        }
        self.perform_actions(actions);
    }

    /// Performs model `m`'s rollout's actions. Each must be about model `m`: a rollout that publishes or
    /// clears another model's desired state breaks the isolation invariant.
    fn perform_actions(&mut self, actions: Vec<(u8, Action)>) {
        for (m, a) in actions {
            let name = &self.catalog.models[m as usize];
            let about = match &a {
                Action::Desire { desired, .. } => Some(&desired.model),
                Action::Withdraw { model, .. } => Some(model),
                Action::Audit(_) => None,
            };
            if let Some(other) = about.filter(|other| *other != name) {
                let detail = format!("{name}'s rollout acted on {other}: {a:?}");
                return self.violate(super::invariants::ISOLATION, None, detail);
            }
            match a {
                Action::Desire { device, desired } => {
                    let dev = index_of(&device);
                    // Signed for this device by the controller's director key, as `outpost serve` publishes it.
                    let desired = Arc::new(Published::new(&device, desired, &DIRECTOR));
                    if self.ctl.broker_up {
                        *self.ctl.retained_mut(dev, m) = Some(desired.clone());
                    }
                    self.ctl_send(dev as u32, Down::Desired(desired));
                }
                Action::Withdraw { device, .. } => {
                    let dev = index_of(&device);
                    if self.ctl.broker_up {
                        *self.ctl.retained_mut(dev, m) = None;
                    }
                    self.ctl_send(dev as u32, Down::Withdrawn(m));
                }
                Action::Audit(_) => {} // Kept in the rollout's history, which the report reads.
            }
        }
    }

    /// The controller process dies after persisting its last step. Its rollouts and registry survive as
    /// bytes (serde_json for the rollouts, as the daemon's store writes them; postcard for the registry);
    /// the embedded broker dies with it, taking retained states and every connection.
    fn crash(&mut self, lost: usize) {
        self.ctl.crash_pending = false;
        self.controller_restarts += 1;
        self.actions_lost_in_crash = lost;
        let rollouts = std::mem::take(&mut self.ctl.rollouts);
        let rollout_bytes = serde_json::to_vec(&rollouts).expect("a rollout serializes");
        let registry = (std::mem::take(&mut self.ctl.views), std::mem::take(&mut self.ctl.meta));
        let registry_bytes = postcard::to_allocvec(&registry).expect("the registry serializes");
        self.ctl.on_disk = Some(rollouts);
        self.ctl.disk = Some((rollout_bytes, registry_bytes));
        self.ctl.up = false;
        if self.scenario.controller.embedded_broker {
            for dev in 0..self.devices.len() as u32 {
                self.break_link(dev);
            }
            self.ctl.broker_up = false;
            self.ctl.retained.iter_mut().for_each(|r| *r = None);
        }
        let down = self.scenario.controller.down_secs * 1000;
        self.q.after(down.max(1), Ev::ControllerStart);
    }

    /// Start: load what was persisted, republish every desired state each rollout asks for (the broker
    /// may have lost them), resume the planner's timer. Terminal rollouts included, as the planner's
    /// contract says (a retained revert must reach a device that is offline now); `skip_terminal_rollouts`
    /// does what daemon/rollouts.rs does today instead.
    pub(super) fn controller_start(&mut self) {
        let (rollout_bytes, registry_bytes) = self.ctl.disk.take().expect("a crash left state on disk");
        let mut rollouts: Vec<Option<Rollout>> =
            serde_json::from_slice(&rollout_bytes).expect("the stored rollouts load");
        // A rollout the operator started while the controller was down.
        for (stored, started) in rollouts.iter_mut().zip(self.ctl.on_disk.take().unwrap_or_default()) {
            if stored.is_none() {
                *stored = started;
            }
        }
        let (views, meta): (Vec<DeviceView>, Vec<Meta>) =
            postcard::from_bytes(&registry_bytes).expect("the stored registry loads");
        self.ctl.views = views;
        self.ctl.meta = meta;
        self.ctl.up = true;
        self.ctl.broker_up = true;
        let daemon_filter = self.scenario.controller.skip_terminal_rollouts;
        let republish: Vec<(u8, Action)> = rollouts
            .iter()
            .enumerate()
            .filter_map(|(m, r)| Some((m as u8, r.as_ref()?)))
            .filter(|(_, r)| !(daemon_filter && terminal(&r.state.phase)))
            .flat_map(|(m, r)| r.desired_states().into_iter().map(move |a| (m, a)))
            .collect();
        self.ctl.rollouts = rollouts;
        self.perform_actions(republish);
        let every = self.scenario.controller.evaluate_every_secs * 1000;
        self.q.after(every, Ev::Evaluate);
    }

    /// Where model `m` must end, by its rollout's decision: `Some(release)`, `Some(None)` when any release
    /// will do (paused), `None` while undecided.
    pub(super) fn wanted(&self, m: u8) -> Option<Option<u8>> {
        match self.ctl.rollout(m)?.state.phase {
            Phase::Completed => Some(Some(target(m))),
            Phase::RolledBack { .. } | Phase::Aborted { reverted: true } => Some(Some(base(m))),
            Phase::Paused { .. } => Some(None),
            _ => None,
        }
    }

    /// Converged: every model's rollout reached a decision, no fault is still pending, every device is
    /// powered, back from any outage, idle and on the release each decision implies, and the controller's
    /// view of each matches the device (models and update stages).
    fn check_converged(&mut self) {
        let mut want = Vec::with_capacity(self.catalog.models.len());
        for m in 0..self.catalog.models.len() as u8 {
            let Some(w) = self.wanted(m) else { return };
            want.push(w);
        }
        let now = self.now_ms();
        let s = &self.scenario;
        if s.faults.partitions.iter().any(|p| p.until_secs * 1000 > now)
            || s.controller.restart_at_secs.is_some_and(|_| self.controller_restarts == 0)
        {
            return;
        }
        let settled = self.devices.iter().zip(&self.ctl.views).all(|(d, v)| {
            let on_final = want.iter().enumerate().all(|(m, w)| {
                // A completed rollout's release belongs on its members; the devices it did not select
                // keep the model's baseline.
                let w = match (w, self.ctl.rollout(m as u8)) {
                    (Some(w), Some(r)) if *w == target(m as u8) && !r.state.members.contains_key(&d.id) => {
                        Some(base(m as u8))
                    }
                    (w, _) => *w,
                };
                w.is_none_or(|w| d.settled_on(&self.catalog, m as u8, w))
            });
            // Connections may flap for ever (`link_failures_per_hour`); what must converge is what runs
            // and where each update stands.
            d.powered && now >= d.offline_until_ms && !d.updating() && on_final && d.agrees_with(v, &self.catalog)
        });
        if settled {
            self.converged_ms = Some(now);
        }
    }
}

fn presence(view: &mut DeviceView, meta: &mut Meta, p: &Presence, now: UnixTime) {
    // A last will from an older boot must not mark a device that already came back offline.
    if p.online || p.boot_id == meta.boot_id || meta.boot_id == 0 {
        view.online = p.online;
    }
    view.last_seen = now;
}

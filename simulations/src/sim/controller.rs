//! The controller side: a registry of `DeviceView`s fed only by messages that came through the fabric
//! (following `controller/src/daemon/registry.rs`), the real rollout planner on a virtual timer, its
//! actions published as retained desired states, chunk serving, and a crash with reload.
//!
//! The registry keeps one `DeviceView` per device (plus the telemetry cursor and boot id) instead of the
//! daemon's whole `DeviceRecord`: the record also keeps the last 32 update events with their text, which
//! at 100,000 devices costs gigabytes and feeds nothing the planner reads. The view is updated by the same
//! `record_event` / `record_window` functions the daemon's record uses.

use super::catalog::{BASE, Catalog, TARGET};
use super::device::{AGENT_VERSION, Device};
use super::fabric::Down;
use super::scenario::Scenario;
use super::world::{Ev, World};
use outpost_controller::rollout::{
    Action, DeviceView, ErrorRateGate, FailurePolicy, Gates, InstallGate, LatencyGate, Phase, Quorum, Release, Rollout,
    RolloutSpec, Selector, ShadowGate, ShadowPeriod, Wave, WaveSize,
};
use outpost_protocol::manifest::Targets;
use outpost_protocol::messages::{DesiredState, Message, Presence, Watch};
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
    pub rollout: Option<Rollout>,
    /// The broker's retained desired states, by device index.
    pub retained: Vec<Option<Arc<DesiredState>>>,
    /// While the controller is down: the rollout and registry as persisted (serialized bytes).
    pub on_disk: Option<Rollout>,
    disk: Option<(Vec<u8>, Vec<u8>)>,
    crash_pending: bool,
    pub scratch: Vec<u8>,
}

fn index_of(id: &DeviceId) -> usize {
    id.as_str().strip_prefix("dev-").and_then(|n| n.parse().ok()).expect("simulated device ids are dev-NNNNNN")
}

impl Controller {
    /// Every device is known from an earlier session (enrolled, running the baseline) but not yet online.
    pub fn new(devices: &[Device], catalog: &Catalog, _s: &Scenario) -> Controller {
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
            rollout: None,
            retained: vec![None; devices.len()],
            on_disk: None,
            disk: None,
            crash_pending: false,
            scratch: vec![0; 64 << 10],
        }
    }
}

/// The rollout spec, built as `outpost rollout start` does from its flags (daemon/rollouts.rs `spec`).
pub fn spec(s: &Scenario, catalog: &Catalog) -> Result<RolloutSpec, String> {
    let r = &s.rollout;
    let t = catalog.get(TARGET);
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

    pub(super) fn start_rollout(&mut self) {
        let spec = spec(&self.scenario, &self.catalog).expect("validated before the run");
        let rollout = Rollout::new(spec).expect("validated before the run");
        self.ctl.rollout = Some(rollout);
        self.rollout_started_ms = Some(self.now_ms());
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

    fn evaluate_once(&mut self) {
        let now = self.now_s();
        let daemon_filter = self.scenario.controller.skip_terminal_rollouts;
        let Some(rollout) = self.ctl.rollout.as_mut() else { return };
        if daemon_filter && terminal(&rollout.state.phase) {
            return;
        }
        let actions = rollout.evaluate(&self.ctl.views, now);
        if self.ctl.crash_pending {
            // Persisted, then the process dies before performing the actions.
            self.crash(actions.len());
            return;
        }
        self.perform_actions(actions);
    }

    fn perform_actions(&mut self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Desire { device, desired } => {
                    let dev = index_of(&device);
                    let desired = Arc::new(desired);
                    if self.ctl.broker_up {
                        self.ctl.retained[dev] = Some(desired.clone());
                    }
                    self.ctl_send(dev as u32, Down::Desired(desired));
                }
                Action::Withdraw { device, .. } => {
                    let dev = index_of(&device);
                    if self.ctl.broker_up {
                        self.ctl.retained[dev] = None;
                    }
                    self.ctl_send(dev as u32, Down::Withdrawn);
                }
                Action::Audit(_) => {} // Kept in the rollout's history, which the report reads.
            }
        }
    }

    /// The controller process dies after persisting its last step. Its rollout and registry survive as
    /// bytes (serde_json for the rollout, as the daemon's store writes it; postcard for the registry); the
    /// embedded broker dies with it, taking retained states and every connection.
    fn crash(&mut self, lost: usize) {
        self.ctl.crash_pending = false;
        self.controller_restarts += 1;
        self.actions_lost_in_crash = lost;
        let rollout = self.ctl.rollout.take();
        let rollout_bytes = serde_json::to_vec(&rollout).expect("a rollout serializes");
        let registry = (std::mem::take(&mut self.ctl.views), std::mem::take(&mut self.ctl.meta));
        let registry_bytes = postcard::to_allocvec(&registry).expect("the registry serializes");
        self.ctl.on_disk = rollout;
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

    /// Start: load what was persisted, republish every desired state the rollout asks for (the broker may
    /// have lost them), resume the planner's timer. Terminal rollouts included, as the planner's contract
    /// says (a retained revert must reach a device that is offline now); `skip_terminal_rollouts` does
    /// what daemon/rollouts.rs does today instead.
    pub(super) fn controller_start(&mut self) {
        let (rollout_bytes, registry_bytes) = self.ctl.disk.take().expect("a crash left state on disk");
        let rollout: Option<Rollout> = serde_json::from_slice(&rollout_bytes).expect("the stored rollout loads");
        let (views, meta): (Vec<DeviceView>, Vec<Meta>) =
            postcard::from_bytes(&registry_bytes).expect("the stored registry loads");
        self.ctl.views = views;
        self.ctl.meta = meta;
        self.ctl.on_disk = None;
        self.ctl.up = true;
        self.ctl.broker_up = true;
        let daemon_filter = self.scenario.controller.skip_terminal_rollouts;
        let republish =
            rollout.as_ref().filter(|r| !(daemon_filter && terminal(&r.state.phase))).map(|r| r.desired_states());
        self.ctl.rollout = rollout;
        if let Some(actions) = republish {
            self.perform_actions(actions);
        }
        let every = self.scenario.controller.evaluate_every_secs * 1000;
        self.q.after(every, Ev::Evaluate);
    }

    /// Converged: the rollout reached a decision, no fault is still pending, every device is powered,
    /// back from any outage, idle and on the model the decision implies, and the controller's view of
    /// each matches the device (model and update stage).
    fn check_converged(&mut self) {
        let Some(r) = self.ctl.rollout.as_ref() else { return };
        let want = match r.state.phase {
            Phase::Completed => Some(TARGET),
            Phase::RolledBack { .. } | Phase::Aborted { reverted: true } => Some(BASE),
            Phase::Paused { .. } => None,
            _ => return,
        };
        let now = self.now_ms();
        let s = &self.scenario;
        if s.faults.partitions.iter().any(|p| p.until_secs * 1000 > now)
            || s.controller.restart_at_secs.is_some_and(|_| self.controller_restarts == 0)
        {
            return;
        }
        let target_bundle = self.catalog.get(TARGET).bundle.digest;
        let settled = self.devices.iter().zip(&self.ctl.views).all(|(d, v)| {
            let on_final = match want {
                Some(TARGET) => d.slots.active == Some(TARGET) || d.install_failed(&target_bundle),
                Some(w) => d.slots.active == Some(w),
                None => true,
            };
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

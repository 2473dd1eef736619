//! The simulated world: every device, the controller, the broker and the network between them, driven
//! by one discrete-event queue in virtual time. One closed [`Ev`] enum lists every trigger; [`World::run`]
//! pops events in (time, sequence) order and checks the fleet invariants after each one.

use super::catalog::{Catalog, base, target};
use super::controller::Controller;
use super::device::Device;
use super::fabric::{Down, Traffic};
use super::invariants::Violation;
use super::queue::EventQueue;
use super::rng::Rng;
use super::scenario::{Expect, ModelCfg, Scenario};
use outpost_controller::rollout::{AuditEntry, Phase};
use outpost_protocol::messages::Message;
use outpost_protocol::{Digest, UnixTime};

/// Virtual time 0 on the controller's clock (Unix seconds).
pub const T0: UnixTime = 1_760_000_000;

/// Everything that can happen. Device events carry the device's boot counter where a power loss must
/// cancel them (work in progress, ticks), and messages to a device carry the connection they were sent on.
#[derive(Debug)]
pub enum Ev {
    ToDevice {
        dev: u32,
        conn: u32,
        msg: Down,
    },
    ToController {
        dev: u32,
        msg: Box<Message>,
    },
    Tick {
        dev: u32,
        boot: u32,
    },
    Window {
        dev: u32,
    },
    Work {
        dev: u32,
        boot: u32,
        work: Work,
    },
    Connect {
        dev: u32,
    },
    /// The device's link notices its connection died (keepalive) and starts reconnecting.
    LinkLost {
        dev: u32,
        conn: u32,
    },
    /// Connection `conn` dies on its own (a flaky link).
    LinkFail {
        dev: u32,
        conn: u32,
    },
    /// The broker publishes the device's last will for connection `conn`.
    LastWill {
        dev: u32,
        conn: u32,
        boot_id: u64,
    },
    PowerLoss {
        dev: u32,
    },
    PowerOn {
        dev: u32,
    },
    /// The operator starts model `m`'s rollout.
    StartRollout(u8),
    Evaluate,
    ControllerStart,
    PartitionStart(usize),
    PartitionEnd(usize),
    /// Test knob: a forged desired state reaches one device outside its wave.
    Forge,
}

/// The shell's slow steps (`outpost_agent::fleet::platform::Work`, `Serving::await_active`); their
/// answers go back to the shell when done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work {
    Verify { model: String, bundle: Digest },
    SelfTest { model: String, bundle: Digest, digest: Digest },
    Activate { model: String, digest: Digest },
}

/// Devices on each release over virtual time, sampled at every evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub at_ms: u64,
    /// Per model: devices on its baseline, devices on its release.
    pub on: Vec<(u32, u32)>,
    pub updating: u32,
    pub offline: u32,
}

#[derive(Debug)]
pub struct World {
    pub scenario: Scenario,
    /// Every model of the run, the first one first (`Scenario::models`).
    pub models: Vec<ModelCfg>,
    pub seed: u64,
    pub q: EventQueue<Ev>,
    pub rng: Rng,
    pub catalog: Catalog,
    pub devices: Vec<Device>,
    pub ctl: Controller,
    pub traffic: Traffic,
    pub steps: u64,
    pub violation: Option<Violation>,
    /// When each model's rollout started.
    pub rollout_started_ms: Vec<Option<u64>>,
    pub converged_ms: Option<u64>,
    pub samples: Vec<Sample>,
    /// Per model: devices that ever ran its release (activated it).
    pub ever_on_target: Vec<u32>,
    pub power_losses: u32,
    pub reconnects: u64,
    pub controller_restarts: u32,
    /// Actions the planner decided but the crash kept from going out.
    pub actions_lost_in_crash: usize,
    pub(super) partitioned: Vec<bool>,
    /// Devices whose active model is each release.
    pub(super) on_release: Vec<u32>,
    /// Index of the device the test knob forged a desired state for.
    pub forged: Option<u32>,
}

/// How one model's rollout ended.
#[derive(Debug, Clone)]
pub struct ModelOutcome {
    pub model: String,
    pub expect: Expect,
    /// The rollout's phase at the end ("completed", "rolled back", ...).
    pub phase: String,
    pub phase_reason: Option<String>,
    pub expectation_met: bool,
    pub expectation_note: String,
    pub rollout_started_ms: Option<u64>,
    pub ever_on_target: u32,
    pub release_is_bad: bool,
    pub final_on_base: u32,
    pub final_on_target: u32,
    /// Devices whose own install of the release failed (refused, or rolled back by their watch).
    pub failed_installs: u32,
    /// Devices that did not have the model when the run started, those of them that ran the release at
    /// some point (the rollout added the model), and the devices without the model at the end.
    pub started_without: u32,
    pub added: u32,
    pub final_without: u32,
    pub history: Vec<AuditEntry>,
    pub target_label: String,
    pub base_label: String,
}

/// What a run produced, for the report and the tests.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub scenario: String,
    pub description: String,
    pub seed: u64,
    pub devices: u32,
    /// Every model's rollout, the first model's first.
    pub models: Vec<ModelOutcome>,
    pub violation: Option<Violation>,
    pub steps: u64,
    pub end_ms: u64,
    /// The first rollout's start.
    pub rollout_started_ms: Option<u64>,
    pub converged_ms: Option<u64>,
    pub power_losses: u32,
    pub reconnects: u64,
    pub controller_restarts: u32,
    pub actions_lost_in_crash: usize,
    pub traffic: Traffic,
    pub samples: Vec<Sample>,
}

impl Outcome {
    /// No invariant broke and every rollout ended as the scenario said it would.
    pub fn ok(&self) -> bool {
        self.violation.is_none() && self.models.iter().all(|m| m.expectation_met)
    }

    /// Each model's expectation, in one line (the model named when the run has several).
    pub fn expectation_note(&self) -> String {
        match self.models.as_slice() {
            [one] => one.expectation_note.clone(),
            many => many.iter().map(|m| format!("{}: {}", m.model, m.expectation_note)).collect::<Vec<_>>().join("; "),
        }
    }
}

impl World {
    pub fn new(scenario: Scenario, devices: u32, seed: u64) -> World {
        let mut rng = Rng::new(seed);
        let models = scenario.models();
        let catalog = Catalog::new(&models);
        let devs: Vec<Device> = (0..devices).map(|i| Device::new(i, &scenario, &models, &catalog, &mut rng)).collect();
        let ctl = Controller::new(&devs, &catalog);
        let mut on_release = vec![0; catalog.releases.len()];
        for r in devs.iter().flat_map(|d| d.models.iter().filter_map(|dm| dm.slots.active)) {
            on_release[r as usize] += 1;
        }
        let partitions = scenario.faults.partitions.len();
        let mut w = World {
            q: EventQueue::default(),
            rng,
            catalog,
            ctl,
            traffic: Traffic::default(),
            steps: 0,
            violation: None,
            rollout_started_ms: vec![None; models.len()],
            converged_ms: None,
            samples: Vec::new(),
            ever_on_target: vec![0; models.len()],
            power_losses: 0,
            reconnects: 0,
            controller_restarts: 0,
            actions_lost_in_crash: 0,
            partitioned: vec![false; partitions],
            on_release,
            forged: None,
            seed,
            devices: devs,
            scenario,
            models,
        };
        w.schedule_start();
        w
    }

    fn schedule_start(&mut self) {
        let s = &self.scenario;
        let (spread, window) = (s.fleet.connect_spread_secs * 1000, s.fleet.telemetry_window_secs * 1000);
        for i in 0..self.devices.len() as u32 {
            let d = &self.devices[i as usize];
            let first = if d.offline_until_ms > 0 { d.offline_until_ms } else { self.rng.range(0, spread) };
            let phase = self.rng.range(1, window);
            self.q.at(first, Ev::Connect { dev: i });
            self.q.at(phase, Ev::Window { dev: i });
        }
        for (m, cfg) in self.models.iter().enumerate() {
            self.q.at(cfg.rollout.start_secs * 1000, Ev::StartRollout(m as u8));
        }
        self.q.at(s.controller.evaluate_every_secs * 1000, Ev::Evaluate);
        for (i, p) in s.faults.partitions.iter().enumerate() {
            self.q.at(p.from_secs * 1000, Ev::PartitionStart(i));
            self.q.at(p.until_secs * 1000, Ev::PartitionEnd(i));
        }
        if s.faults.activate_outside_wave {
            self.q.at(s.rollout.start_secs * 1000 + 1_000, Ev::Forge);
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.q.now()
    }

    /// The controller's clock: Unix seconds.
    pub fn now_s(&self) -> UnixTime {
        T0 + self.q.now() / 1000
    }

    /// Runs to convergence, a violation, or the scenario's time limit.
    pub fn run(mut self) -> Outcome {
        let limit = (self.scenario.max_hours * 3_600_000.0) as u64;
        while let Some((at, ev)) = self.q.pop() {
            if at > limit {
                break;
            }
            self.steps += 1;
            let touched = self.handle(ev);
            if let Some(dev) = touched {
                self.check_device(dev);
            }
            if self.violation.is_some() || self.converged_ms.is_some() {
                break;
            }
        }
        if self.violation.is_none() {
            self.check_end();
        }
        self.outcome()
    }

    /// Performs one event; returns the device whose state it may have changed, for the invariant checks.
    fn handle(&mut self, ev: Ev) -> Option<u32> {
        match ev {
            Ev::ToDevice { dev, conn, msg } => {
                self.device_receives(dev, conn, msg);
                Some(dev)
            }
            Ev::ToController { dev, msg } => {
                self.controller_receives(dev, *msg);
                None
            }
            Ev::Tick { dev, boot } => {
                self.device_tick(dev, boot);
                Some(dev)
            }
            Ev::Window { dev } => {
                self.device_window(dev);
                None
            }
            Ev::Work { dev, boot, work } => {
                self.device_work_done(dev, boot, work);
                Some(dev)
            }
            Ev::Connect { dev } => {
                self.device_connect(dev);
                Some(dev)
            }
            Ev::LinkLost { dev, conn } => {
                self.device_link_lost(dev, conn);
                None
            }
            Ev::LinkFail { dev, conn } => {
                let l = &self.devices[dev as usize].link;
                if l.up && l.conn == conn {
                    self.break_link(dev);
                }
                None
            }
            Ev::LastWill { dev, conn, boot_id } => {
                self.broker_last_will(dev, conn, boot_id);
                None
            }
            Ev::PowerLoss { dev } => {
                self.device_power_loss(dev);
                Some(dev)
            }
            Ev::PowerOn { dev } => {
                self.device_power_on(dev);
                Some(dev)
            }
            Ev::StartRollout(m) => {
                self.start_rollout(m);
                None
            }
            Ev::Evaluate => {
                self.evaluate();
                None
            }
            Ev::ControllerStart => {
                self.controller_start();
                None
            }
            Ev::PartitionStart(i) => {
                self.partition(i, true);
                None
            }
            Ev::PartitionEnd(i) => {
                self.partition(i, false);
                None
            }
            Ev::Forge => {
                self.forge();
                None
            }
        }
    }

    fn partition(&mut self, i: usize, start: bool) {
        self.partitioned[i] = start;
        let p = self.scenario.faults.partitions[i].clone();
        for dev in 0..self.devices.len() as u32 {
            let d = &self.devices[dev as usize];
            if d.label(&p.label) != Some(p.value.as_str()) {
                continue;
            }
            if start {
                // The connections die; each side notices at its keepalive.
                self.break_link(dev);
            }
            // At the end, devices find their way back on their own reconnect timers.
        }
    }

    /// Is the device cut off by an active partition?
    pub fn is_partitioned(&self, dev: u32) -> bool {
        let d = &self.devices[dev as usize];
        self.scenario
            .faults
            .partitions
            .iter()
            .zip(&self.partitioned)
            .any(|(p, &on)| on && d.label(&p.label) == Some(p.value.as_str()))
    }

    /// Test knob: a desired state for the release that the controller never issued reaches the first
    /// device the rollout has not enrolled (a compromised broker or a buggy planner would do this).
    fn forge(&mut self) {
        let Some(rollout) = self.ctl.rollouts[0].as_ref() else { return };
        let members = &rollout.state.members;
        let Some(dev) = (0..self.devices.len() as u32).find(|&i| {
            let d = &self.devices[i as usize];
            d.link.up && !members.contains_key(&d.id)
        }) else {
            return;
        };
        let r = &rollout.spec.release;
        let desired = outpost_protocol::messages::DesiredState {
            model: r.model.clone(),
            version: r.version,
            sequence: r.sequence,
            bundle: r.bundle.clone(),
            rollout: Some("forged".into()),
            mode: outpost_protocol::messages::Mode::Activate,
            issued_at: self.now_s(),
            watch: rollout.spec.watch,
        };
        self.forged = Some(dev);
        let conn = self.devices[dev as usize].link.conn;
        let published =
            super::fabric::Published::new(&self.devices[dev as usize].id, desired, &super::device::DIRECTOR);
        self.q.after(1, Ev::ToDevice { dev, conn, msg: Down::Desired(std::sync::Arc::new(published)) });
    }

    pub(super) fn sample(&mut self) {
        let updating = self.devices.iter().filter(|d| d.updating()).count() as u32;
        let offline = self.devices.iter().filter(|d| !d.link.up).count() as u32;
        let on = (0..self.models.len() as u8)
            .map(|m| (self.on_release[base(m) as usize], self.on_release[target(m) as usize]))
            .collect();
        let s = Sample { at_ms: self.now_ms(), on, updating, offline };
        // Consecutive identical samples add nothing to a step chart.
        if self.samples.last().is_none_or(|l| (&l.on, l.updating, l.offline) != (&s.on, s.updating, s.offline)) {
            self.samples.push(s);
        }
    }

    fn outcome(&self) -> Outcome {
        let models = (0..self.models.len() as u8).map(|m| self.model_outcome(m)).collect();
        Outcome {
            scenario: self.scenario.name.clone(),
            description: self.scenario.description.clone(),
            seed: self.seed,
            devices: self.devices.len() as u32,
            models,
            violation: self.violation.clone(),
            steps: self.steps,
            end_ms: self.now_ms(),
            rollout_started_ms: self.rollout_started_ms.iter().flatten().min().copied(),
            converged_ms: self.converged_ms,
            power_losses: self.power_losses,
            reconnects: self.reconnects,
            controller_restarts: self.controller_restarts,
            actions_lost_in_crash: self.actions_lost_in_crash,
            traffic: self.traffic.clone(),
            samples: self.samples.clone(),
        }
    }

    fn model_outcome(&self, m: u8) -> ModelOutcome {
        let cfg = &self.models[m as usize];
        let rollout = self.ctl.rollout(m);
        let phase = rollout.map(|r| r.state.phase.clone()).unwrap_or(Phase::Pending);
        let phase_reason = match &phase {
            Phase::Paused { reason } | Phase::RolledBack { reason } => Some(reason.clone()),
            _ => None,
        };
        let reached = matches!(
            (cfg.expect, &phase),
            (Expect::Completed, Phase::Completed)
                | (Expect::RolledBack, Phase::RolledBack { .. })
                | (Expect::Paused, Phase::Paused { .. })
        );
        let (final_on_base, final_on_target) = (self.on_release[base(m) as usize], self.on_release[target(m) as usize]);
        let target_bundle = self.catalog.get(target(m)).bundle.digest;
        let failed_installs = self.devices.iter().filter(|d| d.install_failed(&target_bundle)).count() as u32;
        let n = self.devices.len() as u32;
        let count = |f: &dyn Fn(&super::device::DeviceModel) -> bool| {
            self.devices.iter().filter(|d| f(&d.models[m as usize])).count() as u32
        };
        let started_without = count(&|dm| dm.initial.is_none());
        let added = count(&|dm| dm.initial.is_none() && dm.ever_on_target);
        let final_without = count(&|dm| dm.slots.active.is_none());
        let (expectation_met, expectation_note) = if !reached {
            (false, format!("expected {}, the rollout is {}", cfg.expect.name(), phase.name()))
        } else if self.converged_ms.is_none() {
            (
                false,
                format!(
                    "{} as expected, but the fleet did not converge in {} h",
                    phase.name(),
                    self.scenario.max_hours
                ),
            )
        } else {
            // The devices the rollout selected (all of them without a selector).
            let selected = rollout.map_or(n, |r| r.state.members.len() as u32);
            match cfg.expect {
                Expect::Completed if final_on_target + failed_installs != selected => (
                    false,
                    format!(
                        "completed, but {final_on_target} of the {selected} selected devices run the release \
                         ({failed_installs} failed)"
                    ),
                ),
                // Back where each device was: on the baseline where it had the model, without it elsewhere.
                Expect::RolledBack if final_on_base != n - started_without || final_without != started_without => (
                    false,
                    format!(
                        "rolled back, but {final_on_base} of the {} devices that had the model run the previous \
                         one and {final_without} of {n} are without it ({started_without} were at the start)",
                        n - started_without
                    ),
                ),
                _ => (true, format!("{} as expected", phase.name())),
            }
        };
        let r = &cfg.release;
        ModelOutcome {
            model: cfg.name.clone(),
            expect: cfg.expect,
            phase: phase.name().to_owned(),
            phase_reason,
            expectation_met,
            expectation_note,
            rollout_started_ms: self.rollout_started_ms[m as usize],
            ever_on_target: self.ever_on_target[m as usize],
            release_is_bad: r.failing_devices > 0.0
                || r.selftest_failures > 0.0
                || !r.signed
                || r.shadow_agreement < 0.95,
            final_on_base,
            final_on_target,
            failed_installs,
            started_without,
            added,
            final_without,
            history: rollout.map(|r| r.state.history.clone()).unwrap_or_default(),
            target_label: self.catalog.label(Some(target(m))),
            base_label: self.catalog.label(Some(base(m))),
        }
    }
}

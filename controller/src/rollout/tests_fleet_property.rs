//! Property (issue 16): random sequences of operator verbs (start, pause, resume, promote, promote
//! --full, abort, abort --revert, undo, a new rollout) over successive rollouts of one model, applied to
//! any rollout old or new, with devices going offline, coming back and failing installs, through the same
//! rules the daemon applies ([`may_start`], [`may_command`], the newest rollout evaluating). The devices
//! keep slots like the agent: an install moves the active model to `previous`, a revert swaps the two,
//! whatever is active. After every step:
//! - a device installs a release only while its rollout may still install it (progressing, paused or
//!   completed: never once aborted or rolled back);
//! - a revert returns a device to exactly the release it ran before the one it reverts (never to an
//!   aborted release that happened to sit in `previous`);
//! - every verb the rules accept is recorded with the operator's name, and a refused verb changes nothing;
//! - the broker holds exactly what the newest rollout last told each of its devices: no instruction was
//!   lost or overwritten by another rollout;
//! - once no rollout of the model is live, a new one can always start.

use super::testkit::{self, model, spec};
use super::*;
use outpost_protocol::messages::{DesiredState, Mode, RunningModel};
use outpost_protocol::telemetry::UpdateStage;
use outpost_protocol::{DeviceId, Digest, RejectReason, UnixTime, Version};
use proptest::prelude::*;
use std::collections::HashMap;

const T0: UnixTime = 1_760_000_000;

/// Release `n` of digits: its model digest, bundle digest and running form.
fn release(n: u8) -> RunningModel {
    RunningModel {
        name: model(),
        version: Version::new(1, u32::from(n), 0),
        digest: Digest([n; 32]),
        sequence: u64::from(n) + 1,
    }
}

fn bundle_of(model_digest: Digest) -> Digest {
    Digest([model_digest.0[0].wrapping_add(100); 32])
}

#[derive(Debug, Clone)]
struct Agent {
    active: RunningModel,
    previous: Option<RunningModel>,
    /// What ran before each release this device installed: where a revert of it must land.
    before: HashMap<Digest, Digest>,
    /// The highest sequence it committed: anything at or below is refused (anti-rollback).
    floor: u64,
    failing: bool,
    /// The last desired state acted on: a retained message delivered again is not acted on twice.
    handled: Option<DesiredState>,
}

struct Fleet {
    now: UnixTime,
    views: Vec<DeviceView>,
    agents: Vec<Agent>,
    retained: HashMap<DeviceId, DesiredState>,
    rollouts: Vec<Rollout>,
    /// Releases that answer 20 % of requests with errors.
    bad: Vec<Digest>,
}

impl Fleet {
    fn new(n: usize) -> Fleet {
        let views = (0..n)
            .map(|i| {
                let mut d = DeviceView::new(DeviceId::new(format!("dev-{i:03}")).unwrap());
                (d.online, d.last_seen, d.running) = (true, T0, vec![release(0)]);
                d
            })
            .collect();
        let agent = Agent {
            active: release(0),
            previous: None,
            before: HashMap::new(),
            floor: 1,
            failing: false,
            handled: None,
        };
        Fleet { now: T0, views, agents: vec![agent; n], retained: HashMap::new(), rollouts: vec![], bad: vec![] }
    }

    fn phase_of(&self, digest: Digest) -> Option<&Phase> {
        self.rollouts.iter().find(|r| r.spec.release.model_digest == digest).map(|r| &r.state.phase)
    }

    /// The broker keeps desired states; online devices act on theirs at once.
    fn apply(&mut self, actions: &[Action]) -> Result<(), TestCaseError> {
        testkit::retain(&mut self.retained, actions);
        for i in 0..self.views.len() {
            self.act(i)?;
        }
        Ok(())
    }

    fn event(&mut self, i: usize, bundle: Digest, stage: UpdateStage, reason: Option<RejectReason>) {
        let d = &mut self.views[i];
        d.updates.retain(|u| u.bundle != bundle);
        d.updates.insert(0, UpdateView { bundle, stage, reason, at: self.now, seq: 0 });
    }

    /// Device `i` acts on its retained desired state like the agent's update machine and slots.
    fn act(&mut self, i: usize) -> Result<(), TestCaseError> {
        let id = self.views[i].id.clone();
        let Some(desired) = self.retained.get(&id).cloned().filter(|_| self.views[i].online) else { return Ok(()) };
        if self.agents[i].handled.as_ref() == Some(&desired) {
            return Ok(());
        }
        self.agents[i].handled = Some(desired.clone());
        let b = desired.bundle.digest;
        match desired.mode {
            Mode::Revert => {
                // The agent swaps its slots on a revert, whatever is active: the controller must only ask
                // devices that run the release, and only the rollout that put it there.
                let a = &mut self.agents[i];
                if let Some(prev) = a.previous.take() {
                    let from = std::mem::replace(&mut a.active, prev);
                    let back_to = a.before.get(&from.digest).copied();
                    prop_assert_eq!(
                        bundle_of(from.digest),
                        b,
                        "{} was told to revert {:?} while it ran {:?}",
                        id,
                        b,
                        from.version
                    );
                    prop_assert_eq!(
                        Some(a.active.digest),
                        back_to,
                        "{} reverted {:?} to {:?}, not to what ran before it",
                        id,
                        from.version,
                        a.active.version
                    );
                    a.previous = Some(from);
                }
                self.event(i, b, UpdateStage::RolledBack, None);
            }
            Mode::Activate | Mode::Shadow { .. } => {
                let target = self
                    .rollouts
                    .iter()
                    .find(|r| r.spec.release.bundle.digest == b)
                    .map(|r| (r.spec.release.model_digest, r.spec.release.version, r.spec.release.sequence))
                    .expect("a rollout's bundle");
                let a = &self.agents[i];
                if a.active.digest == target.0 {
                    return Ok(());
                }
                if a.failing || target.2 <= a.floor {
                    let reason = if a.failing { RejectReason::SelfTestFailed } else { RejectReason::Rollback };
                    self.event(i, b, UpdateStage::Rejected, Some(reason));
                    return Ok(());
                }
                let phase = self.phase_of(target.0).cloned();
                prop_assert!(
                    matches!(phase, Some(Phase::Progressing | Phase::Paused { .. } | Phase::Completed)),
                    "{} installed {:?} of a rollout that is {:?}",
                    id,
                    target.1,
                    phase
                );
                let a = &mut self.agents[i];
                let new = RunningModel { name: model(), version: target.1, digest: target.0, sequence: target.2 };
                a.before.insert(target.0, a.active.digest);
                a.previous = Some(std::mem::replace(&mut a.active, new));
                a.floor = target.2;
                self.event(i, b, UpdateStage::Committed, None);
            }
            Mode::Remove => {}
        }
        self.views[i].running = vec![self.agents[i].active.clone()];
        Ok(())
    }

    /// Online devices report a window for what they run.
    fn report(&mut self) {
        for d in self.views.iter_mut().filter(|d| d.online) {
            let r = d.running[0].clone();
            let errors = if self.bad.contains(&r.digest) { 200 } else { 1 };
            d.windows = vec![WindowView {
                model: r.name,
                version: r.version,
                digest: r.digest,
                received_at: self.now,
                requests: 1_000,
                errors,
                p95_us: 2_000,
                psi: None,
                psi_unscored: false,
                implausible: false,
                counted: Counted::default(),
            }];
            d.last_seen = self.now;
        }
    }

    fn owner(&mut self) -> Option<&mut Rollout> {
        let newest = newest_per_model(self.rollouts.iter().cloned()).pop()?;
        self.rollouts.iter_mut().find(|r| r.spec.id == newest.spec.id)
    }

    /// The daemon's tick: only the newest rollout of the model evaluates.
    fn tick(&mut self, secs: u64) -> Result<(), TestCaseError> {
        self.now += secs;
        self.report();
        let (views, now) = (self.views.clone(), self.now);
        let actions = self.owner().map(|r| r.evaluate(&views, now)).unwrap_or_default();
        self.apply(&actions)
    }

    fn spec_for(&self, n: u8, waves: &[&str]) -> RolloutSpec {
        let r = release(n);
        let mut s = spec(waves, 300);
        s.id = format!("r{n}");
        s.release.version = r.version;
        s.release.sequence = r.sequence;
        s.release.model_digest = r.digest;
        s.release.bundle.digest = bundle_of(r.digest);
        s.gates = Gates::default().with_defaults(Kind::Install, false, false);
        s
    }

    /// `rollout start`, as the daemon runs it: the rules, then a first evaluation.
    fn start(&mut self, s: RolloutSpec) -> Result<Result<(), String>, TestCaseError> {
        if let Err(e) = may_start(&self.rollouts, &s, &self.views) {
            return Ok(Err(e));
        }
        let mut r = Rollout::new(s).unwrap();
        r.state.order = next_order(&self.rollouts);
        let actions = r.evaluate(&self.views, self.now);
        self.rollouts.push(r);
        self.apply(&actions)?;
        Ok(Ok(()))
    }
}

#[test]
fn a_rollout_started_in_the_second_the_previous_one_ended_is_the_newer_whatever_its_name() {
    let mut f = Fleet::new(3);
    let mut a = f.spec_for(1, WAVES[1]);
    a.id = "zz-first".into();
    f.start(a).unwrap().unwrap();
    let (views, now) = (f.views.clone(), f.now);
    let actions = f.rollouts[0].command(Verb::Abort { revert: false }, "ada", &views, now).unwrap();
    f.apply(&actions).unwrap();
    let mut b = f.spec_for(2, WAVES[1]);
    b.id = "aa-second".into();
    f.start(b).unwrap().unwrap();
    assert_eq!(newest_per_model(f.rollouts.iter().cloned())[0].spec.id, "aa-second");
    let err = may_command(&f.rollouts, &f.rollouts[0], Verb::Abort { revert: false }).unwrap_err();
    assert!(err.contains("followed by rollout aa-second"), "{err}");
}

#[derive(Debug, Clone)]
enum Op {
    Tick(u64),
    Offline(usize),
    Online(usize),
    Failing(usize),
    /// A new rollout of the next release; `bad` releases answer with errors.
    Start {
        bad: bool,
        waves: usize,
    },
    /// A verb on the rollout picked by index among all of them (older ones too).
    Verb(usize, Verb),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u64..700).prop_map(Op::Tick),
        1 => (0usize..64).prop_map(Op::Offline),
        2 => (0usize..64).prop_map(Op::Online),
        1 => (0usize..64).prop_map(Op::Failing),
        2 => (any::<bool>(), 0usize..3).prop_map(|(bad, waves)| Op::Start { bad, waves }),
        4 => (0usize..16, testkit::any_verb()).prop_map(|(i, v)| Op::Verb(i, v)),
    ]
}

/// The verb an operator's audit entry records.
fn recorded(d: Decision) -> Verb {
    match d {
        Decision::Paused => Verb::Pause,
        Decision::Resumed => Verb::Resume,
        Decision::Promoted { full } => Verb::Promote { full },
        Decision::Aborted { revert } => Verb::Abort { revert },
        Decision::Undone => Verb::Undo,
        other => panic!("{other:?} is no operator's decision"),
    }
}

const WAVES: [&[&str]; 3] = [&["1", "50%", "100%"], &["100%"], &["2", "100%"]];

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn no_verb_sequence_puts_an_aborted_release_back_loses_a_verb_or_blocks_the_next_rollout(
        n in 2usize..10,
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        let mut f = Fleet::new(n);
        let mut next = 1u8;
        let first = f.spec_for(next, WAVES[0]);
        prop_assert!(f.start(first)?.is_ok());
        next += 1;
        for op in ops {
            match op {
                Op::Tick(secs) => f.tick(secs)?,
                Op::Offline(i) => f.views[i % n].online = false,
                Op::Online(i) => {
                    f.views[i % n].online = true;
                    // A device that returns gets its retained desired state at once.
                    f.act(i % n)?;
                }
                Op::Failing(i) => f.agents[i % n].failing = !f.agents[i % n].failing,
                Op::Start { bad, waves } => {
                    let s = f.spec_for(next, WAVES[waves]);
                    if bad {
                        f.bad.push(s.release.model_digest);
                    }
                    if f.start(s)?.is_ok() {
                        next += 1;
                    }
                }
                Op::Verb(i, verb) => {
                    let k = i % f.rollouts.len();
                    let before = f.rollouts[k].clone();
                    let allowed = may_command(&f.rollouts, &before, verb);
                    let (views, now) = (f.views.clone(), f.now);
                    let result = allowed.and_then(|()| f.rollouts[k].command(verb, "ada", &views, now).map_err(|e| e.to_string()));
                    match result {
                        Ok(actions) => {
                            let last = f.rollouts[k].state.history.last().unwrap();
                            prop_assert_eq!(&last.by, &Actor::Operator("ada".into()), "{} lost", verb.name());
                            prop_assert_eq!(recorded(last.decision), verb, "{} recorded as {:?}", verb.name(), last.decision);
                            f.apply(&actions)?;
                        }
                        Err(_) => prop_assert_eq!(&f.rollouts[k], &before, "a refused {} changed the rollout", verb.name()),
                    }
                }
            }
            if let Some(owner) = newest_per_model(f.rollouts.iter().cloned()).pop() {
                for (id, m) in &owner.state.members {
                    let want = (m.intent != Intent::Withdraw).then(|| owner.desired(m));
                    prop_assert_eq!(f.retained.get(id), want.as_ref(), "{} of {}: {:?}", id, owner.spec.id, m);
                }
            }
            // Once nothing of the model is live, the next rollout may start (the online devices acted).
            if f.rollouts.iter().all(|r| terminal(&r.state.phase) || r.state.phase == Phase::Completed) {
                let s = f.spec_for(next, WAVES[1]);
                let ok = may_start(&f.rollouts, &s, &f.views);
                prop_assert!(ok.is_ok(), "a new rollout cannot start: {:?}", ok);
            }
        }
    }
}

//! Restart safety: a rollout reloaded from its stored bytes before every step behaves exactly like one
//! that never stopped, in every phase.

use super::testkit::*;
use super::*;
use outpost_protocol::telemetry::UpdateStage;
use std::collections::BTreeSet;

#[derive(Clone, Copy)]
enum Step {
    Tick(u64),
    Do(Verb),
    Env(fn(&mut World)),
}
use Step::*;

fn reload(r: &Rollout) -> Rollout {
    let bytes = postcard::to_allocvec(r).expect("a rollout encodes");
    postcard::from_bytes(&bytes).expect("a rollout decodes")
}

/// Runs `steps`, reloading the rollout before each when `restart`; returns every action and the phases.
fn run(mut r: Rollout, world: fn() -> World, steps: &[Step], restart: bool) -> (Vec<Action>, Rollout, Vec<Phase>) {
    let mut w = world();
    let (mut all, mut phases) = (Vec::new(), vec![r.state.phase.clone()]);
    for step in steps {
        if restart {
            r = reload(&r);
        }
        match *step {
            Tick(secs) => all.extend(w.tick(&mut r, secs)),
            Do(v) => all.extend(w.command(&mut r, v)),
            Env(change) => change(&mut w),
        }
        phases.push(r.state.phase.clone());
    }
    (all, r, phases)
}

fn bad_new(w: &mut World) {
    w.new = Health { errors_per_1000: 100, p95_us: 9_000 };
}

fn all_offline(w: &mut World) {
    w.devices.iter_mut().for_each(|d| d.online = false);
}

fn commit_all(w: &mut World) {
    w.devices.iter_mut().flat_map(|d| d.updates.iter_mut()).for_each(|u| {
        if u.stage == UpdateStage::Watching {
            u.stage = UpdateStage::Committed;
        }
    });
}

fn new_devices(w: &mut World) {
    for i in 1000..1010 {
        let mut d = DeviceView::new(id(i));
        (d.online, d.running) = (true, vec![running(OLD)]);
        w.devices.push(d);
    }
}

fn slow_world() -> World {
    let mut w = World::new(30);
    w.slow = vec![id(1), id(2), id(3), id(7), id(11)];
    w
}

#[test]
fn a_reloaded_rollout_continues_exactly_like_one_that_never_stopped() {
    let gated = |policy| {
        let mut s = spec(&["1", "20%", "100%"], 600);
        s.gates.install = Some(InstallGate { max_failure_rate: 0.1, min_finished: 1 });
        s.gates.error_rate = Some(ErrorRateGate { max_increase: 0.01, min_requests: 100 });
        s.gates.latency = Some(LatencyGate { max_p95_regression: 0.25 });
        s.on_failure = policy;
        s
    };
    let scenarios: &[(&str, FailurePolicy, &[Step])] = &[
        (
            "good rollout to completion, late devices",
            FailurePolicy::Pause,
            &[Tick(0), Tick(300), Tick(300), Tick(600), Tick(600), Tick(600), Env(new_devices), Tick(60)],
        ),
        (
            "holding then paused without data, resumed",
            FailurePolicy::Pause,
            &[Tick(0), Env(all_offline), Tick(600), Tick(600), Tick(600), Do(Verb::Resume), Tick(60)],
        ),
        (
            "paused by a failure, promoted past it",
            FailurePolicy::Pause,
            &[Tick(0), Tick(600), Env(bad_new), Tick(60), Tick(60), Do(Verb::Promote { full: false }), Tick(60)],
        ),
        (
            "rolled back by policy while devices watch",
            FailurePolicy::Rollback,
            &[Tick(0), Tick(600), Env(bad_new), Tick(60), Tick(60), Env(commit_all), Tick(60), Tick(60)],
        ),
        (
            "aborted, devices keep the release",
            FailurePolicy::Pause,
            &[Tick(0), Tick(600), Do(Verb::Pause), Do(Verb::Abort { revert: false }), Tick(60)],
        ),
        (
            "aborted with revert",
            FailurePolicy::Pause,
            &[Tick(0), Tick(600), Tick(60), Do(Verb::Abort { revert: true }), Tick(60), Env(commit_all), Tick(60)],
        ),
        (
            "undone after completion",
            FailurePolicy::Pause,
            &[Tick(0), Do(Verb::Promote { full: true }), Env(commit_all), Tick(60), Do(Verb::Undo), Tick(60)],
        ),
    ];
    let mut seen = BTreeSet::new();
    for &(name, policy, steps) in scenarios {
        let r = Rollout::new(gated(policy)).unwrap();
        let (straight, end, phases) = run(r.clone(), slow_world, steps, false);
        let (restarted, end_restarted, _) = run(r, slow_world, steps, true);
        assert_eq!(restarted, straight, "{name}: actions differ after restarts");
        assert_eq!(end_restarted, end, "{name}: state differs after restarts");
        assert!(!straight.is_empty(), "{name}");
        seen.extend(phases.iter().map(Phase::name));
    }
    let every = ["pending", "progressing", "paused", "completed", "rolled back", "aborted", "aborted and reverted"];
    assert_eq!(seen, every.into_iter().collect(), "every phase is restarted from");
}

#[test]
fn actions_lost_in_a_crash_after_persisting_come_back_from_desired_states() {
    let mut w = World::new(50);
    let mut r = Rollout::new(spec(&["10%", "100%"], 600)).unwrap();
    w.tick(&mut r, 0);
    w.now += 600;
    w.report();
    // The daemon persisted the rollout, then died before publishing.
    let lost = r.evaluate(&w.devices, w.now);
    let mut r = reload(&r);
    assert_eq!(installs(&lost).len(), 45);
    let again = r.desired_states();
    for a in lost.iter().filter(|a| matches!(a, Action::Desire { .. })) {
        assert!(again.contains(a), "{a:?} is not republished");
    }
    assert_eq!(r.evaluate(&w.devices, w.now), vec![], "and evaluating again does not repeat the decision");
}

#[test]
fn a_rollout_round_trips_through_json_too() {
    let mut w = World::new(20);
    let mut r = Rollout::new(spec(&["10%", "100%"], 600)).unwrap();
    w.tick(&mut r, 0);
    w.tick(&mut r, 600);
    let json = serde_json::to_string(&r).unwrap();
    let back: Rollout = serde_json::from_str(&json).unwrap();
    assert_eq!(serde_json::to_string(&back).unwrap(), json);
    assert_eq!((back.state.phase, back.state.members, back.spec), (r.state.phase, r.state.members, r.spec));
}

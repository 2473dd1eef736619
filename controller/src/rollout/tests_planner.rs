use super::testkit::*;
use super::waves::rank;
use super::*;
use outpost_protocol::messages::Mode;
use outpost_protocol::{Arch, DeviceId, Version};

fn gated(waves: &[&str], bake: u64) -> RolloutSpec {
    let mut s = spec(waves, bake);
    s.gates.install = Some(InstallGate { max_failure_rate: 0.2, min_finished: 1 });
    s.gates.error_rate = Some(ErrorRateGate { max_increase: 0.01, min_requests: 100 });
    s.gates.latency = Some(LatencyGate { max_p95_regression: 0.25 });
    s
}

fn lowest_ranked(w: &World) -> DeviceId {
    w.devices.iter().map(|d| d.id.clone()).min_by_key(|d| rank("r1", d)).unwrap()
}

#[test]
fn the_first_evaluation_starts_wave_one_and_desires_only_the_canary() {
    let mut w = World::new(100);
    let mut r = Rollout::new(spec(&["1", "10%", "100%"], 600)).unwrap();
    let actions = w.tick(&mut r, 0);
    assert_eq!(installs(&actions), vec![lowest_ranked(&w)]);
    assert_eq!(decisions(&actions), vec![Decision::Started]);
    let Some(Action::Desire { desired, .. }) = actions.first() else { panic!("{actions:?}") };
    assert_eq!((desired.version, desired.sequence, desired.bundle.digest), (Version::new(1, 1, 0), 11, NEW));
    assert_eq!((desired.rollout.as_deref(), &desired.mode, desired.issued_at), (Some("r1"), &Mode::Activate, T0));
    assert_eq!(r.state.phase, Phase::Progressing);
}

#[test]
fn evaluating_again_with_the_same_inputs_emits_nothing() {
    let mut w = World::new(50);
    let mut r = Rollout::new(gated(&["10%", "100%"], 600)).unwrap();
    w.tick(&mut r, 0);
    for secs in [300, 300, 60] {
        w.now += secs;
        w.report();
        let first = r.evaluate(&w.devices, w.now);
        let before = r.clone();
        assert_eq!(r.evaluate(&w.devices, w.now), vec![], "after {first:?}");
        assert_eq!(r, before);
        w.apply(&first);
    }
    assert_eq!(r.state.wave, 1);
}

#[test]
fn waves_advance_only_after_their_bake_when_every_gate_passes() {
    let mut w = World::new(100);
    let mut r = Rollout::new(gated(&["1", "10%", "100%"], 600)).unwrap();
    let steps: &[(u64, &[Decision], usize, usize)] = &[
        (0, &[Decision::Started], 1, 1),
        (300, &[], 0, 1),
        (299, &[], 0, 1),
        (1, &[Decision::Advanced { to: 1 }], 9, 10),
        (600, &[Decision::Advanced { to: 2 }], 90, 100),
        (599, &[], 0, 100),
        (1, &[Decision::Completed], 0, 100),
    ];
    for (i, &(secs, want, new_installs, on_new)) in steps.iter().enumerate() {
        let actions = w.tick(&mut r, secs);
        assert_eq!(decisions(&actions), want, "step {i}");
        assert_eq!((installs(&actions).len(), w.on_new()), (new_installs, on_new), "step {i}");
    }
    assert_eq!(r.state.phase, Phase::Completed);
    let passed = r.state.history.iter().filter(|e| e.evidence.as_ref().is_some_and(|ev| ev.verdict() == Verdict::Pass));
    assert_eq!(passed.count(), 3, "every advance carries passing evidence");
}

#[test]
fn an_offline_device_is_desired_with_its_wave_and_installs_when_it_returns() {
    let mut w = World::new(10);
    let canary = lowest_ranked(&w);
    w.device(&canary).online = false;
    let mut r = Rollout::new(spec(&["50%", "100%"], 600)).unwrap();
    let actions = w.tick(&mut r, 0);
    assert!(installs(&actions).contains(&canary));
    assert_eq!(w.on_new(), 4, "four of the five are online");
    w.device(&canary).online = true;
    w.apply(&[]);
    assert_eq!(w.on_new(), 5, "the retained desired state reached it");
}

#[test]
fn devices_selected_mid_rollout_join_their_wave_by_rank() {
    let mut w = World::new(40);
    for (i, d) in w.devices.iter_mut().enumerate() {
        d.labels = vec![("region".into(), if i < 20 { "eu" } else { "us" }.into())];
    }
    let mut s = spec(&["50%", "100%"], 600);
    s.selector = Selector::parse("region=eu").unwrap();
    let mut r = Rollout::new(s).unwrap();
    let first = installs(&w.tick(&mut r, 0));
    assert_eq!(first.len(), 10);
    for d in &mut w.devices[20..] {
        d.labels[0].1 = "eu".into();
    }
    let actions = w.tick(&mut r, 60);
    assert_eq!(decisions(&actions), vec![Decision::LateDevices]);
    let mut ranked: Vec<DeviceId> = w.devices.iter().map(|d| d.id.clone()).collect();
    ranked.sort_by_key(|d| rank("r1", d));
    for d in installs(&actions) {
        assert!(ranked[..20].contains(&d), "{d} is not among the lowest 20 of 40");
        assert_eq!((r.state.members[&d].wave, r.state.members[&d].told_in), (0, 0));
    }
    assert!(ranked[..20].iter().all(|d| r.state.members.contains_key(d)), "wave 1 is the lowest 20 ranks");
    let stayed = first.iter().filter(|d| !ranked[..20].contains(d)).count();
    assert_eq!(r.state.members.len(), 20 + stayed, "the first ten stay even if they no longer rank lowest");
}

#[test]
fn devices_the_release_cannot_serve_are_never_selected() {
    type Change = fn(&mut DeviceView);
    let cases: &[(&str, Change)] = &[
        ("another region", |d| d.labels = vec![("region".into(), "us".into())]),
        ("another architecture", |d| d.arch = Some(Arch::Armv7)),
        ("an agent too old", |d| d.agent_version = Some(Version::new(0, 9, 0))),
        ("a later release", |d| d.running[0].sequence = 12),
    ];
    for (what, change) in cases {
        let mut w = World::new(10);
        for d in &mut w.devices {
            d.labels = vec![("region".into(), "eu".into())];
            d.arch = Some(Arch::Aarch64);
            d.agent_version = Some(Version::new(1, 0, 0));
        }
        change(&mut w.devices[3]);
        let mut s = spec(&["100%"], 600);
        s.selector = Selector::parse("region=eu,arch=aarch64").unwrap();
        s.release.targets.archs = vec![Arch::Aarch64, Arch::X86_64];
        s.release.targets.min_agent = Version::new(1, 0, 0);
        let mut r = Rollout::new(s).unwrap();
        let desired = installs(&w.tick(&mut r, 0));
        assert_eq!(desired.len(), 9, "{what}");
        assert!(!desired.contains(&id(3)), "a device with {what} was desired");
    }
}

#[test]
fn inconclusive_evidence_holds_after_the_bake_and_pauses_after_the_hold() {
    let mut w = World::new(10);
    w.devices.iter_mut().for_each(|d| d.online = false);
    let mut r = Rollout::new(spec(&["100%"], 600)).unwrap();
    assert_eq!(installs(&w.tick(&mut r, 0)).len(), 10, "offline devices are desired all the same");
    let steps: &[(u64, &[Decision])] = &[
        (599, &[]),
        (1, &[Decision::Holding]),
        (300, &[]),
        (299, &[]),
        (1, &[Decision::PausedInconclusive]),
        (600, &[]),
    ];
    for (i, &(secs, want)) in steps.iter().enumerate() {
        assert_eq!(decisions(&w.tick(&mut r, secs)), want, "step {i}");
    }
    let Phase::Paused { reason } = &r.state.phase else { panic!("{:?}", r.state.phase) };
    assert!(reason.contains("quorum") && reason.contains("0 of 10"), "{reason}");
}

#[test]
fn a_failing_gate_pauses_or_rolls_back_at_once_by_policy() {
    for policy in [FailurePolicy::Pause, FailurePolicy::Rollback] {
        let mut w = World::new(100);
        w.new = Health { errors_per_1000: 100, p95_us: 2_000 };
        let mut s = gated(&["10%", "100%"], 3_600);
        s.on_failure = policy;
        let mut r = Rollout::new(s).unwrap();
        w.tick(&mut r, 0);
        let actions = w.tick(&mut r, 60);
        let rolled_back = policy == FailurePolicy::Rollback;
        assert_eq!(decisions(&actions), vec![Decision::GateFailed { rolled_back }], "{policy:?}");
        let entry = r.state.history.last().unwrap();
        assert!(entry.reason.contains("error-rate fail") && entry.reason.contains("10.000%"), "{}", entry.reason);
        assert_eq!(entry.evidence.as_ref().unwrap().verdict(), Verdict::Fail);
        assert_eq!(reverts(&actions).len(), if rolled_back { 10 } else { 0 }, "{policy:?}");
        assert_eq!(w.on_new(), if rolled_back { 0 } else { 10 }, "{policy:?}");
        assert!(matches!(r.state.phase, Phase::RolledBack { .. }) == rolled_back, "{:?}", r.state.phase);
        for _ in 0..5 {
            assert!(installs(&w.tick(&mut r, 3_600)).is_empty(), "{policy:?}: nothing new after a failure");
        }
    }
}

#[test]
fn a_device_still_watching_is_withdrawn_then_reverted_once_it_commits() {
    let mut w = World::new(10);
    w.new = Health { errors_per_1000: 100, p95_us: 2_000 };
    w.slow = vec![id(4)];
    let mut s = gated(&["100%"], 600);
    s.on_failure = FailurePolicy::Rollback;
    let mut r = Rollout::new(s).unwrap();
    w.tick(&mut r, 0);
    let actions = w.tick(&mut r, 60);
    assert_eq!((reverts(&actions).len(), withdrawals(&actions)), (9, vec![id(4)]));
    w.device(&id(4)).updates[0].stage = outpost_protocol::telemetry::UpdateStage::Committed;
    let actions = w.tick(&mut r, 60);
    assert_eq!((reverts(&actions), decisions(&actions)), (vec![id(4)], vec![Decision::LateDevices]));
    assert_eq!(w.on_new(), 0);
}

#[test]
fn the_last_wave_is_judged_against_the_baseline_seen_before_it() {
    let mut w = World::new(20);
    let mut r = Rollout::new(gated(&["50%", "100%"], 600)).unwrap();
    w.tick(&mut r, 0);
    w.tick(&mut r, 600);
    assert_eq!(r.state.wave, 1);
    let ev = r.state.history.last().unwrap().evidence.clone().unwrap();
    assert_eq!((ev.wave, ev.baseline_devices, ev.baseline_from), (0, 10, None));
    w.tick(&mut r, 60);
    let ev = r.state.last_evidence.clone().unwrap();
    assert_eq!((ev.baseline_devices, ev.baseline_from), (0, Some(T0 + 600)));
    let latency = ev.gates.iter().find(|g| g.gate == GateKind::LatencyP95).unwrap();
    assert_eq!((latency.verdict, latency.baseline), (Verdict::Pass, Some(2_000.0)));
    w.tick(&mut r, 540);
    assert_eq!(r.state.phase, Phase::Completed);
}

#[test]
fn the_shadow_period_and_watch_budget_go_into_the_desired_state() {
    let mut w = World::new(3);
    let mut s = spec(&["100%"], 600);
    s.shadow = Some(ShadowPeriod { secs: 900, sample_percent: 10 });
    s.watch.max_p95_us = 7_000;
    let mut r = Rollout::new(s).unwrap();
    for a in w.tick(&mut r, 0) {
        if let Action::Desire { desired, .. } = a {
            assert_eq!(desired.mode, Mode::Shadow { secs: 900, sample_percent: 10 });
            assert_eq!(desired.watch.max_p95_us, 7_000);
        }
    }
}

#[test]
fn desired_states_repeat_every_intent_with_its_original_issue_time() {
    let mut w = World::new(30);
    let mut r = Rollout::new(spec(&["10%", "100%"], 600)).unwrap();
    let mut published = w.tick(&mut r, 0);
    published.extend(w.tick(&mut r, 600));
    published.retain(|a| !matches!(a, Action::Audit(_)));
    let mut again = r.desired_states();
    let key = |a: &Action| format!("{a:?}");
    published.sort_by_key(key);
    again.sort_by_key(key);
    assert_eq!(again, published);
}

#[test]
fn a_wave_that_adds_no_device_advances_at_once_instead_of_pausing() {
    // 4 devices: the canary is 1, 25 % is still 1, so wave 2 adds nobody.
    let mut w = World::new(4);
    let mut r = Rollout::new(gated(&["1", "25%", "100%"], 600)).unwrap();
    w.tick(&mut r, 0);
    let actions = w.tick(&mut r, 600);
    assert_eq!(decisions(&actions), vec![Decision::Advanced { to: 1 }]);
    let actions = w.tick(&mut r, 1);
    assert_eq!(decisions(&actions), vec![Decision::Advanced { to: 2 }], "{:?}", r.state.phase);
    assert_eq!(installs(&actions).len(), 3);
    assert_eq!(r.state.phase, Phase::Progressing);
}

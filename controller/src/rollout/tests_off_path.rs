//! Off the happy path (issue 16): a gate failure that pauses activates nothing more, evidence from before a
//! device was told does not count, and progress counts every wave in every phase.

use super::testkit::*;
use super::*;
use outpost_protocol::RejectReason;
use outpost_protocol::telemetry::UpdateStage;

fn failing_error_gate(waves: &[&str]) -> Rollout {
    let mut s = spec(waves, 600);
    s.gates.error_rate = Some(ErrorRateGate { max_increase: 0.01, min_requests: 10 });
    Rollout::new(s).unwrap()
}

#[test]
fn a_gate_failure_that_pauses_withdraws_every_device_that_has_not_activated_and_resume_tells_them_again() {
    let mut w = World::new(10);
    w.new = Health { errors_per_1000: 100, p95_us: 2_000 };
    // Offline devices are told (retained) but act later; one more is still shadowing the candidate.
    for i in [0, 1, 2, 3] {
        w.device(&id(i)).online = false;
    }
    let mut r = failing_error_gate(&["100%"]);
    let told = installs(&w.tick(&mut r, 0));
    assert_eq!(told.len(), 10);
    let shadowing = id(0);
    let d = w.device(&shadowing);
    d.online = true;
    d.updates = vec![UpdateView { bundle: NEW, stage: UpdateStage::Shadow, reason: None, at: T0, seq: 0 }];
    let actions = w.tick(&mut r, 30);
    assert_eq!(decisions(&actions), vec![Decision::GateFailed { rolled_back: false }]);
    assert!(matches!(r.state.phase, Phase::Paused { .. }));
    let held = withdrawals(&actions);
    assert_eq!(held.len(), 4, "the shadowing device and the three offline ones: {held:?}");
    assert!(held.contains(&shadowing));
    assert!(held.iter().all(|d| !w.retained.contains_key(d)), "nothing retained would activate them later");
    assert_eq!(w.on_new(), 6, "devices already on the release keep it while paused");
    // Coming back online while paused: nothing to install.
    for i in [1, 2, 3] {
        w.device(&id(i)).online = true;
    }
    assert_eq!(w.tick(&mut r, 30), vec![]);
    assert_eq!(w.on_new(), 6);
    // The operator resumes: the held-back devices are told again.
    let again = installs(&w.command(&mut r, Verb::Resume));
    assert_eq!(again.len(), 4, "{again:?}");
    assert!(again.iter().all(|d| w.retained.contains_key(d)));
}

#[test]
fn evidence_from_before_a_device_was_told_does_not_count() {
    // The same bytes were rolled out before: devices keep a failed install event, a shadow score and an
    // error-laden window for the candidate from then, all inside the evidence age.
    let mut w = World::new(10);
    for d in &mut w.devices {
        d.updates = vec![UpdateView {
            bundle: NEW,
            stage: UpdateStage::Rejected,
            reason: Some(RejectReason::SelfTestFailed),
            at: T0 - 30,
            seq: 0,
        }];
        d.windows.push(window(NEW, T0 - 20, 1_000, 900, 2_000));
        d.shadows =
            vec![ShadowView { candidate: NEW, compared: 1_000, agreed: 10, received_at: T0 - 20, implausible: false }];
    }
    let mut s = spec(&["100%"], 600);
    s.gates.install = Some(InstallGate { max_failure_rate: 0.1, min_finished: 1 });
    s.gates.error_rate = Some(ErrorRateGate { max_increase: 0.01, min_requests: 10 });
    s.gates.shadow = Some(ShadowGate { min_agreement: 0.9, min_compared: 20 });
    let mut r = Rollout::new(s).unwrap();
    let actions = r.evaluate(&w.devices, T0);
    assert_eq!(decisions(&actions), vec![Decision::Started], "judged on stale evidence: {:?}", r.state.history);
    let ev = r.state.last_evidence.clone().unwrap();
    assert_eq!((ev.failed, ev.reporting, ev.installed), (0, 0, 0), "{ev:?}");
    assert!(ev.gates.iter().all(|g| g.verdict != Verdict::Fail), "{:?}", ev.gates);
    assert_eq!(r.state.progress.failed, 0);
}

/// The same bytes failed on these devices in an earlier rollout and they still run them: their sums of
/// requests and errors on the release hold that rollout's errors. What each had summed when it was told is
/// taken off, so this rollout is judged on what they served since.
#[test]
fn requests_a_device_summed_before_it_was_told_are_taken_off_its_count() {
    let mut w = World::new(10);
    for d in &mut w.devices {
        d.fold_window(window(NEW, T0 - 20, 1_000, 900, 2_000));
    }
    let mut s = spec(&["100%"], 600);
    s.gates.error_rate = Some(ErrorRateGate { max_increase: 0.01, min_requests: 10 });
    let mut r = Rollout::new(s).unwrap();
    w.tick(&mut r, 0);
    let before = Counted { since: T0 - 20, requests: 1_000, errors: 900 };
    assert!(r.state.members.values().all(|m| m.counted_before == Some(before)), "{:?}", r.state.members);
    // A minute on the release, healthy: 1 error in 1,000 requests each, added to the old sum.
    w.tick(&mut r, 60);
    assert_eq!(w.devices[0].window_for(&NEW).unwrap().counted().requests, 2_000);
    let ev = r.state.last_evidence.clone().unwrap();
    let g = ev.gates.iter().find(|g| g.gate == GateKind::ErrorRate).unwrap();
    assert_eq!((g.verdict, g.samples), (Verdict::Pass, 10_000), "{g:?}");
    assert!((g.value.unwrap() - 0.001).abs() < 1e-9, "{g:?}");
    // It survives a restart: members and windows are stored as JSON.
    let reloaded: Member = serde_json::from_str(&serde_json::to_string(&r.state.members[&id(0)]).unwrap()).unwrap();
    assert_eq!(reloaded.counted_before, Some(before));
}

#[test]
fn progress_counts_every_wave_and_keeps_counting_after_completion() {
    let mut w = World::new(3);
    let mut r = Rollout::new(spec(&["1", "100%"], 600)).unwrap();
    w.tick(&mut r, 0);
    w.tick(&mut r, 1);
    assert_eq!((r.state.progress.selected, r.state.progress.installed), (3, 1));
    w.command(&mut r, Verb::Promote { full: true });
    w.tick(&mut r, 1);
    assert_eq!(r.state.phase, Phase::Completed);
    let p = r.state.progress;
    assert_eq!((p.selected, p.told, p.installed, p.committed), (3, 3, 3, 3), "{p:?}");
    // A fourth device joins the completed rollout later: it counts once it installs.
    let mut late = w.devices[0].clone();
    late.id = id(3);
    late.running = vec![running(OLD)];
    late.updates.clear();
    w.devices.push(late);
    w.tick(&mut r, 1);
    w.tick(&mut r, 1);
    assert_eq!((r.state.progress.selected, r.state.progress.installed), (4, 4));
}

fn digits_window(requests: u64, classes: Vec<u64>, class_psi: f32) -> outpost_protocol::telemetry::InferenceWindow {
    use outpost_protocol::telemetry::{FeatureStats, InferenceWindow};
    let r = running(NEW);
    InferenceWindow {
        model: r.name,
        version: r.version,
        digest: NEW,
        window_start: T0,
        window_secs: 10,
        requests,
        errors: 0,
        timeouts: 0,
        rejected: 0,
        latency_hist: vec![],
        latency_p50_us: 50,
        latency_p95_us: 80,
        cache_hits: 0,
        cache_misses: requests,
        shadow: None,
        // 64 pixels a request: the input histogram has plenty of samples even in a small window.
        features: vec![FeatureStats {
            tensor: "input".into(),
            count: requests * 64,
            mean: 0.3,
            variance: 0.1,
            lo: 0.0,
            hi: 1.0,
            bins: vec![requests * 64 / 12; 12],
            psi: Some(0.015),
        }],
        output_classes: classes,
        class_psi: Some(class_psi),
    }
}

#[test]
fn output_class_psi_over_a_small_window_does_not_count_and_a_healthy_release_passes_drift() {
    // Issue 16 item 4: 24 requests over 10 classes scored class PSI 1.7-2.7 on a healthy release (classes
    // it happened not to see hit the empty-bin floor) while its inputs scored 0.015.
    let mut d = DeviceView::new(id(0));
    d.record_window(&digits_window(24, vec![3, 2, 0, 4, 2, 0, 3, 4, 3, 3], 2.1), T0);
    assert_eq!((d.windows[0].psi, d.windows[0].psi_unscored), (Some(0.015), false), "the input PSI still counts");
    // A window of only class statistics that small is not scored at all, and says so.
    let mut small = digits_window(24, vec![3, 2, 0, 4, 2, 0, 3, 4, 3, 3], 2.1);
    small.features.clear();
    d.record_window(&small, T0 + 10);
    assert_eq!((d.windows[0].psi, d.windows[0].psi_unscored), (None, true));
    // From 10 samples per class on, the class PSI counts: real drift is still caught.
    d.record_window(&digits_window(300, vec![30; 10], 0.9), T0 + 20);
    assert_eq!(d.windows[0].psi, Some(0.9));

    let mut w = World::new(4);
    let mut s = spec(&["1", "100%"], 60);
    s.gates.drift = Some(DriftGate { max_psi: 0.25 });
    let mut r = Rollout::new(s).unwrap();
    w.tick(&mut r, 0);
    w.now += 5;
    for dev in w.devices.iter_mut().filter(|d| d.running[0].digest == NEW) {
        dev.windows.clear();
        dev.record_window(&digits_window(24, vec![3, 2, 0, 4, 2, 0, 3, 4, 3, 3], 2.1), T0 + 5);
    }
    r.evaluate(&w.devices, w.now);
    let ev = r.state.last_evidence.clone().unwrap();
    let drift = ev.gates.iter().find(|g| g.gate == GateKind::Drift).unwrap();
    assert_eq!(drift.verdict, Verdict::Pass, "{drift:?}");
}

#[test]
fn default_gates_fail_on_evidence_but_never_hold_a_wave_for_lack_of_it() {
    let gates = Gates::default().with_defaults(Kind::Install, false, true);
    assert_eq!(gates.defaulted, vec![GateKind::InstallFailure, GateKind::ErrorRate, GateKind::LatencyP95]);
    assert!(gates.shadow.is_none(), "no shadow gate without a shadow period");
    let shadowed = Gates::default().with_defaults(Kind::Install, true, true);
    assert!(shadowed.shadow.is_some() && shadowed.defaulted.contains(&GateKind::ShadowAgreement));
    assert!(Gates::default().with_defaults(Kind::Install, true, false).shadow.is_none(), "not for a regressor");
    let removal = Gates::default().with_defaults(Kind::Remove, false, false);
    assert_eq!(removal.defaulted, vec![GateKind::InstallFailure]);
    let mut named =
        Gates { error_rate: Some(ErrorRateGate { max_increase: 0.05, min_requests: 5 }), ..Gates::default() };
    named = named.with_defaults(Kind::Install, false, false);
    assert_eq!(named.error_rate.unwrap().max_increase, 0.05, "a gate the operator named keeps its value");
    assert!(!named.defaulted.contains(&GateKind::ErrorRate));

    // A single 100 % wave has no baseline for latency: a default latency gate passes, not holds.
    let mut w = World::new(3);
    let mut s = spec(&["100%"], 60);
    s.gates = Gates::default().with_defaults(Kind::Install, false, false);
    let mut r = Rollout::new(s.clone()).unwrap();
    w.tick(&mut r, 0);
    w.tick(&mut r, 61);
    assert_eq!(r.state.phase, Phase::Completed, "{:?}", r.state.last_evidence);
    // The same release with 10 % errors fails the default error-rate gate.
    let mut w = World::new(3);
    w.new = Health { errors_per_1000: 100, p95_us: 2_000 };
    let mut r = Rollout::new(s).unwrap();
    w.tick(&mut r, 0);
    let actions = w.tick(&mut r, 5);
    assert_eq!(decisions(&actions), vec![Decision::GateFailed { rolled_back: false }]);
    let Phase::Paused { reason } = &r.state.phase else { panic!("{:?}", r.state.phase) };
    assert!(reason.contains("error-rate fail"), "{reason}");

    // The default latency gate: a canary 2.5x slower by 3 ms passes (contention on shared cores), one 15x
    // slower by 28 ms fails.
    for (p95_us, verdict) in [(5_000, Verdict::Pass), (30_000, Verdict::Fail)] {
        let mut w = World::new(10);
        w.new = Health { errors_per_1000: 1, p95_us };
        let mut s = spec(&["1", "100%"], 60);
        s.gates = Gates::default().with_defaults(Kind::Install, false, false);
        let mut r = Rollout::new(s).unwrap();
        w.tick(&mut r, 0);
        w.tick(&mut r, 5);
        let ev = r.state.last_evidence.clone().unwrap();
        let g = ev.gates.iter().find(|g| g.gate == GateKind::LatencyP95).unwrap();
        assert_eq!(g.verdict, verdict, "{p95_us} µs: {g:?}");
    }
}

#[test]
fn an_inconclusive_quorum_says_what_was_missing_and_what_to_do() {
    let mut w = World::new(1);
    let mut r = Rollout::new(spec(&["100%"], 60)).unwrap();
    w.tick(&mut r, 0);
    // The device installed but serves no traffic: no window since it was told.
    w.now += 200;
    r.evaluate(&w.devices, w.now);
    let ev = r.state.last_evidence.clone().unwrap();
    let q = ev.gates.iter().find(|g| g.gate == GateKind::Quorum).unwrap();
    assert_eq!(q.verdict, Verdict::Inconclusive);
    for want in [
        "0 of 1 device(s) sent an inference window since they were told",
        "only report windows while they serve requests",
        "lower --quorum",
    ] {
        assert!(q.note.contains(want), "{want:?} not in {:?}", q.note);
    }
    let Phase::Paused { reason } = &r.state.phase else { panic!("{:?}", r.state.phase) };
    assert!(reason.contains("quorum inconclusive: 0 of 1"), "{reason}");
}

#[test]
fn a_quorum_short_because_devices_are_still_installing_says_so_and_asks_for_a_longer_bake() {
    // The 1,000-device load run paused its first install this way: 450 devices still mid-update when the
    // hold ran out, and the note only asked for traffic.
    let mut w = World::new(2);
    let mut r = Rollout::new(spec(&["100%"], 60)).unwrap();
    w.tick(&mut r, 0);
    let installing = UpdateView { bundle: NEW, stage: UpdateStage::Fetching, reason: None, at: w.now, seq: 0 };
    let d = w.device(&id(1));
    d.running = vec![running(OLD)];
    d.updates = vec![installing];
    w.now += 200;
    w.report();
    r.evaluate(&w.devices, w.now);
    let ev = r.state.last_evidence.clone().unwrap();
    let q = ev.gates.iter().find(|g| g.gate == GateKind::Quorum).unwrap();
    assert_eq!(q.verdict, Verdict::Inconclusive);
    for want in ["1 of 2 device(s) sent an inference window", "1 device(s) of the wave are still installing", "--bake"]
    {
        assert!(q.note.contains(want), "{want:?} not in {:?}", q.note);
    }
    assert!(matches!(r.state.phase, Phase::Paused { .. }), "{:?}", r.state.phase);
}

#[test]
fn a_device_relabelled_out_of_the_selection_while_held_back_is_not_told_again_on_resume() {
    // Found by the planner's property test: resume re-told every withdrawn member, selected or not.
    let mut w = World::new(4);
    for d in &mut w.devices {
        d.labels = vec![("region".into(), "eu".into())];
    }
    w.new = Health { errors_per_1000: 100, p95_us: 2_000 };
    w.device(&id(0)).online = false;
    let mut s = spec(&["100%"], 600);
    s.selector = Selector::parse("region=eu").unwrap();
    s.gates.error_rate = Some(ErrorRateGate { max_increase: 0.01, min_requests: 10 });
    let mut r = Rollout::new(s).unwrap();
    w.tick(&mut r, 0);
    let held = withdrawals(&w.tick(&mut r, 30));
    assert_eq!(held, vec![id(0)], "the offline device is held back");
    w.device(&id(0)).labels = vec![("region".into(), "us".into())];
    let again = installs(&w.command(&mut r, Verb::Resume));
    assert!(!again.contains(&id(0)), "told again though no longer selected: {again:?}");
}

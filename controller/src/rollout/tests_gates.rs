use super::gates::{Tally, judge};
use super::testkit::*;
use super::*;
use outpost_protocol::telemetry::UpdateStage::{self, *};
use outpost_protocol::{RejectReason, UnixTime};

const NOW: UnixTime = T0 + 3_600;

/// A wave device: its install stage, and a window on the new release `age` seconds old, if any.
fn dev(i: usize, stage: UpdateStage, w: Option<(u64, u64, u64, u32)>) -> DeviceView {
    let mut d = DeviceView::new(id(i));
    let reason = matches!(stage, Rejected | RolledBack).then_some(RejectReason::SelfTestFailed);
    d.updates = vec![UpdateView { bundle: NEW, stage, reason, at: T0, seq: 0 }];
    // What it serves: the new release once activated, the old one before or after a failure.
    d.running = vec![running(if matches!(stage, Activating | Watching | Committed) { NEW } else { OLD })];
    if let Some((age, requests, errors, p95)) = w {
        d.windows = vec![window(NEW, NOW - age, requests, errors, p95)];
    }
    d
}

fn healthy(n: usize) -> Vec<DeviceView> {
    (0..n).map(|i| dev(i, Committed, Some((60, 1_000, 1, 2_000)))).collect()
}

fn with(mut v: Vec<DeviceView>, change: impl Fn(usize, &mut DeviceView)) -> Vec<DeviceView> {
    v.iter_mut().enumerate().for_each(|(i, d)| change(i, d));
    v
}

fn baseline(errors_per_1000: u64, p95: u32) -> Option<BaselineSnapshot> {
    let (requests, errors) = (10_000, errors_per_1000 * 10);
    Some(BaselineSnapshot {
        at: NOW,
        devices: 10,
        requests,
        errors,
        error_rate: None,
        p95_median_us: Some(p95),
        psi: Some(0.02),
    })
}

fn results(gates: &Gates, wave: &[DeviceView], base: Option<BaselineSnapshot>) -> Vec<GateResult> {
    let release = spec(&["100%"], 600).release;
    let mut t = Tally::default();
    let fresh_since = NOW - gates.quorum.max_evidence_age_secs;
    wave.iter().for_each(|d| t.add_wave_device(d, &release, fresh_since));
    judge(gates, &mut t, base.as_ref())
}

fn verdict(gates: &Gates, wave: &[DeviceView], base: Option<BaselineSnapshot>, kind: GateKind) -> Verdict {
    results(gates, wave, base).into_iter().find(|g| g.gate == kind).unwrap().verdict
}

#[test]
fn each_gate_passes_fails_or_is_inconclusive_by_its_numbers() {
    use GateKind::*;
    use Verdict::*;
    let g = |f: fn(&mut Gates)| {
        let mut g = Gates::default();
        f(&mut g);
        g
    };
    let install = g(|g| g.install = Some(InstallGate { max_failure_rate: 0.2, min_finished: 1 }));
    let install10 = g(|g| g.install = Some(InstallGate { max_failure_rate: 0.2, min_finished: 10 }));
    let errors = g(|g| g.error_rate = Some(ErrorRateGate { max_increase: 0.01, min_requests: 100 }));
    let latency = g(|g| g.latency = Some(LatencyGate { max_p95_regression: 0.25 }));
    let shadow = g(|g| g.shadow = Some(ShadowGate { min_agreement: 0.95, min_compared: 100 }));
    let drift = g(|g| g.drift = Some(DriftGate { max_psi: 0.2 }));
    let shadow90 = g(|g| g.shadow = Some(ShadowGate { min_agreement: 0.9, min_compared: 20 }));
    let errors20 = g(|g| g.error_rate = Some(ErrorRateGate { max_increase: 0.02, min_requests: 20 }));
    // One device (a canary) with `requests` and `errors` in its window.
    let requests = |requests, errors| {
        with(healthy(1), move |_, d| {
            d.windows[0].requests = requests;
            d.windows[0].errors = errors;
        })
    };
    let shadowed = |compared, agreed, age| {
        with(healthy(4), move |_, d| {
            d.shadows =
                vec![ShadowView { candidate: NEW, compared, agreed, received_at: NOW - age, implausible: false }]
        })
    };
    let psi = |p: Option<f32>| with(healthy(4), move |_, d| d.windows[0].psi = p);
    let p95 = |p| with(healthy(10), move |_, d| d.windows[0].p95_us = p);
    type Case<'a> = (&'a str, &'a Gates, Vec<DeviceView>, Option<BaselineSnapshot>, GateKind, Verdict);
    let cases: Vec<Case> = vec![
        ("all installs committed", &install, healthy(10), None, InstallFailure, Pass),
        (
            "3 of 10 installs failed",
            &install,
            with(healthy(10), |i, d| {
                if i < 3 {
                    d.updates[0] = dev(i, Rejected, None).updates[0]
                }
            }),
            None,
            InstallFailure,
            Fail,
        ),
        (
            "no install finished",
            &install,
            (0..5).map(|i| dev(i, Fetching, None)).collect(),
            None,
            InstallFailure,
            Inconclusive,
        ),
        (
            "1 failed, 1 done, 18 busy, 10 needed",
            &install10,
            (0..20).map(|i| dev(i, [Rejected, Committed, Verifying][i.min(2)], None)).collect(),
            None,
            InstallFailure,
            Inconclusive,
        ),
        (
            "5 of 20 failed is over 20 % already",
            &install10,
            (0..20).map(|i| dev(i, if i < 5 { RolledBack } else { Fetching }, None)).collect(),
            None,
            InstallFailure,
            Fail,
        ),
        (
            "1 % errors on a 1 % baseline",
            &errors,
            with(healthy(10), |_, d| d.windows[0].errors = 10),
            baseline(10, 2_000),
            ErrorRate,
            Pass,
        ),
        (
            "4 % errors on a 1 % baseline",
            &errors,
            with(healthy(10), |_, d| d.windows[0].errors = 40),
            baseline(10, 2_000),
            ErrorRate,
            Fail,
        ),
        (
            "too few requests",
            &errors,
            with(healthy(2), |_, d| d.windows[0].requests = 40),
            baseline(10, 2_000),
            ErrorRate,
            Inconclusive,
        ),
        (
            "0.5 % errors, no baseline",
            &errors,
            with(healthy(10), |_, d| d.windows[0].errors = 5),
            None,
            ErrorRate,
            Pass,
        ),
        ("2 % errors, no baseline", &errors, with(healthy(10), |_, d| d.windows[0].errors = 20), None, ErrorRate, Fail),
        ("p95 20 % slower", &latency, p95(2_400), baseline(1, 2_000), LatencyP95, Pass),
        ("p95 30 % slower", &latency, p95(2_600), baseline(1, 2_000), LatencyP95, Fail),
        (
            "one slow device of ten",
            &latency,
            with(healthy(10), |i, d| {
                if i == 0 {
                    d.windows[0].p95_us = 100_000
                }
            }),
            baseline(1, 2_000),
            LatencyP95,
            Pass,
        ),
        ("no baseline latency", &latency, healthy(10), None, LatencyP95, Inconclusive),
        (
            "no wave latency",
            &latency,
            with(healthy(3), |_, d| d.windows.clear()),
            baseline(1, 2_000),
            LatencyP95,
            Inconclusive,
        ),
        ("98 % shadow agreement", &shadow, shadowed(300, 294, 60), None, ShadowAgreement, Pass),
        ("90 % shadow agreement", &shadow, shadowed(300, 270, 60), None, ShadowAgreement, Fail),
        ("too few comparisons", &shadow, shadowed(20, 20, 60), None, ShadowAgreement, Inconclusive),
        ("a day-old shadow period still counts", &shadow, shadowed(300, 294, 86_400), None, ShadowAgreement, Pass),
        // Sample size (confidence.rs): an agreement under the floor fails only when its interval is too.
        ("18 of 21 per device against 90 %", &shadow90, shadowed(21, 18, 60), None, ShadowAgreement, Inconclusive),
        ("30 of 100 per device against 90 %", &shadow90, shadowed(100, 30, 60), None, ShadowAgreement, Fail),
        // So is the error rate, over each device's requests since it was told: sure over fails, sure under
        // passes, and in between it waits.
        ("1 error in 20 requests against 2 %", &errors20, requests(20, 1), None, ErrorRate, Inconclusive),
        ("1 error in 39 requests against 2 %", &errors20, requests(39, 1), None, ErrorRate, Inconclusive),
        ("2 errors in 1,000 requests against 2 %", &errors20, requests(1_000, 2), None, ErrorRate, Pass),
        ("30 errors in 100 requests against 2 %", &errors20, requests(100, 30), None, ErrorRate, Fail),
        ("PSI 0.05", &drift, psi(Some(0.05)), None, Drift, Pass),
        ("PSI 0.3", &drift, psi(Some(0.3)), None, Drift, Fail),
        ("no reference profile", &drift, psi(None), None, Drift, Inconclusive),
    ];
    for (what, gates, wave, base, kind, want) in cases {
        let got = results(gates, &wave, base);
        let r = got.iter().find(|g| g.gate == kind).unwrap();
        assert_eq!(r.verdict, want, "{what}: {r:?}");
        assert!(!r.note.is_empty(), "{what}");
        // Inconclusive for want of certainty, and its note says so (with the interval), or for want of samples.
        assert_eq!(r.undecided, r.note.contains("but not surely"), "{what}: {r:?}");
    }
}

/// The console test's canary: 18 of its 21 shadow comparisons agreed (85.7 %) with a 90 % gate, for a
/// release that agrees 97 % overall. Before, the gate failed it at once. Now it waits through the bake
/// (shadow comparisons end when the candidate goes live, so none come) and passes when the bake is over;
/// a bad canary, 30 of 100, still fails at once, and a default gate that is undecided does not pass early.
#[test]
fn a_good_canary_on_few_comparisons_waits_out_the_bake_and_passes_and_a_bad_one_fails_at_once() {
    let run = |compared: u64, agreed: u64, defaulted: bool| {
        let mut w = World::new(10);
        let mut s = spec(&["1", "100%"], 600);
        s.gates.shadow = Some(ShadowGate { min_agreement: 0.9, min_compared: 20 });
        if defaulted {
            s.gates.defaulted.push(GateKind::ShadowAgreement);
        }
        let mut r = Rollout::new(s).unwrap();
        let canary = installs(&w.tick(&mut r, 0))[0].clone();
        let at = w.now + 30;
        w.device(&canary).shadows =
            vec![ShadowView { candidate: NEW, compared, agreed, received_at: at, implausible: false }];
        let shadow_gate = |ev: &Evidence| {
            let g = ev.gates.iter().find(|g| g.gate == GateKind::ShadowAgreement).unwrap();
            (g.verdict, g.note.clone())
        };
        let mut decided = Vec::new();
        let mut verdicts = Vec::new();
        for _ in 0..10 {
            let now = decisions(&w.tick(&mut r, 60));
            // The canary's judgement: the one a decision was taken on (after it, the next wave is judged).
            let entry = r.state.history.last().filter(|_| !now.is_empty());
            let ev = entry.and_then(|e| e.evidence.as_ref()).or(r.state.last_evidence.as_ref()).unwrap();
            verdicts.push(shadow_gate(ev));
            decided.extend(now);
        }
        (decided, verdicts)
    };
    for defaulted in [false, true] {
        let (decided, verdicts) = run(21, 18, defaulted);
        assert_eq!(decided, [Decision::Advanced { to: 1 }], "defaulted {defaulted}: {verdicts:?}");
        // Minutes 1 to 9 of the 10-minute bake: waiting, with the interval; at 10: pass, saying why.
        for (v, note) in &verdicts[..9] {
            assert_eq!(*v, Verdict::Inconclusive, "{note}");
            assert!(note.contains("under 90.0% but not surely") && note.contains("65.4% to 95.0%"), "{note}");
        }
        let (v, note) = &verdicts[9];
        assert!(*v == Verdict::Pass && note.contains("the bake is over"), "{note}");

        let (decided, verdicts) = run(100, 30, defaulted);
        assert_eq!(decided, [Decision::GateFailed { rolled_back: false }], "defaulted {defaulted}: {verdicts:?}");
    }
}

#[test]
fn quorum_counts_fresh_evidence_and_leaves_failed_installs_out() {
    let gates = Gates::default(); // 80 % of the devices that can report, within 600 s
    let wave = |fresh: usize| -> Vec<DeviceView> {
        (0..10)
            .map(|i| match i {
                0 | 1 => dev(i, Rejected, Some((60, 1_000, 0, 2_000))),
                i if i < 2 + fresh => dev(i, Committed, Some((599, 1_000, 0, 2_000))),
                i => dev(i, Committed, Some((601, 1_000, 0, 2_000))),
            })
            .collect()
    };
    assert_eq!(verdict(&gates, &wave(6), None, GateKind::Quorum), Verdict::Inconclusive, "6 of 8 < 80 %");
    assert_eq!(verdict(&gates, &wave(7), None, GateKind::Quorum), Verdict::Pass, "7 of 8 ≥ 80 %");
    assert_eq!(verdict(&gates, &wave(0), None, GateKind::Quorum), Verdict::Inconclusive, "never a failure");
    assert_eq!(verdict(&gates, &[], None, GateKind::Quorum), Verdict::Inconclusive, "an empty wave proves nothing");
    let mut three = gates.clone();
    three.quorum.min_devices = 3;
    assert_eq!(verdict(&three, &healthy(1), None, GateKind::Quorum), Verdict::Pass, "a smaller wave needs all it has");
    assert_eq!(verdict(&three, &healthy(5)[..2], None, GateKind::Quorum), Verdict::Pass);
}

#[test]
fn measures_older_than_the_maximum_age_are_not_judged_but_requests_since_told_count_whatever_their_age() {
    let latency = Some(LatencyGate { max_p95_regression: 0.25 });
    let error_rate = Some(ErrorRateGate { max_increase: 0.01, min_requests: 100 });
    let mut gates = Gates { error_rate, latency, ..Gates::default() };
    let stale_and_bad = with(healthy(10), |_, d| {
        d.windows[0].errors = 500;
        d.windows[0].p95_us = 10_000;
        d.windows[0].received_at = NOW - 601;
    });
    let base = || baseline(1, 2_000);
    assert_eq!(verdict(&gates, &stale_and_bad, base(), GateKind::LatencyP95), Verdict::Inconclusive);
    // Requests and errors are bound to the release like shadow comparisons: a device that went quiet (or
    // rolled the release back) keeps the errors it reported.
    assert_eq!(verdict(&gates, &stale_and_bad, base(), GateKind::ErrorRate), Verdict::Fail);
    gates.quorum.max_evidence_age_secs = 3_600;
    assert_eq!(verdict(&gates, &stale_and_bad, base(), GateKind::LatencyP95), Verdict::Fail);
}

/// Issue 16's finding: a good release (0.2 % errors) rolled back on 1 error in its canary's first 39
/// requests (2.56 % against 2.2 %), because the gate judged each device's latest window. The canary's
/// requests now add up while it bakes: undecided after the first minute, sure under by the end.
#[test]
fn a_good_canary_with_an_early_error_waits_while_its_requests_add_up_and_passes() {
    let mut w = World::new(10);
    let mut s = spec(&["1", "100%"], 600);
    s.gates.error_rate = Some(ErrorRateGate { max_increase: 0.02, min_requests: 20 });
    let mut r = Rollout::new(s).unwrap();
    let canary = installs(&w.tick(&mut r, 0))[0].clone();
    // It reports by hand from now on: 39 requests a minute, one error in the first.
    w.device(&canary).online = false;
    let mut decided = Vec::new();
    let mut notes = Vec::new();
    for minute in 0..10u64 {
        let at = w.now + 60;
        w.device(&canary).fold_window(window(NEW, at, 39, u64::from(minute == 0), 2_000));
        decided.extend(decisions(&w.tick(&mut r, 60)));
        let ev = r.state.history.last().and_then(|e| e.evidence.clone()).filter(|_| !decided.is_empty());
        let ev = ev.or(r.state.last_evidence.clone()).unwrap();
        notes.push(ev.gates.into_iter().find(|g| g.gate == GateKind::ErrorRate).unwrap());
    }
    assert_eq!(decided, [Decision::Advanced { to: 1 }], "{notes:#?}");
    let first = &notes[0];
    assert_eq!((first.verdict, first.samples), (Verdict::Inconclusive, 39), "{first:?}");
    assert!(first.note.contains("over 2.1% but not surely"), "{}", first.note);
    let last = &notes[9];
    assert_eq!((last.verdict, last.samples), (Verdict::Pass, 390), "{last:?}");
}

/// A canary whose rate stays over the limit without certainty when the bake ends: the wave holds while its
/// requests add up; it fails once the interval is over the limit, or pauses for the operator when the hold
/// runs out. It never advances on a rate over its limit.
#[test]
fn an_error_rate_over_its_limit_but_not_surely_holds_after_the_bake_then_fails_or_pauses() {
    let run = |errors_per_minute: u64| {
        let mut w = World::new(10);
        let mut s = spec(&["1", "100%"], 600);
        s.gates.error_rate = Some(ErrorRateGate { max_increase: 0.02, min_requests: 20 });
        let mut r = Rollout::new(s).unwrap();
        let canary = installs(&w.tick(&mut r, 0))[0].clone();
        w.device(&canary).online = false;
        let mut decided = Vec::new();
        for _ in 0..20 {
            let at = w.now + 60;
            w.device(&canary).fold_window(window(NEW, at, 39, errors_per_minute, 2_000));
            decided.extend(decisions(&w.tick(&mut r, 60)));
            if decided.iter().any(|d| matches!(d, Decision::GateFailed { .. } | Decision::PausedInconclusive)) {
                break;
            }
        }
        (decided, r)
    };
    // 1 error in 39 a minute (2.6 % against 2.1 %): 20 in 780 is still 1.7 % to 3.9 % when the hold ends.
    let (decided, r) = run(1);
    assert_eq!(decided, [Decision::Holding, Decision::PausedInconclusive]);
    let reason = &r.state.history.last().unwrap().reason;
    assert!(reason.contains("error-rate") && reason.contains("over 2.1% but not surely"), "{reason}");
    // 3 in 39 a minute (7.7 %): sure over within the bake, mid-bake.
    let (decided, r) = run(3);
    assert_eq!(decided, [Decision::GateFailed { rolled_back: false }]);
    assert!(r.state.history.last().unwrap().at < T0 + 600, "during the bake");
}

/// The simulator's bad canary: one device of ten fails 30 % of its requests and its own watch rolls the
/// release back after 100 of them. Its errors stay counted, with the weight of a median device, so the
/// healthy devices' growing sums do not thin them out: the canary fails once that is sure, mid-bake.
#[test]
fn a_canary_device_that_rolled_the_release_back_keeps_its_share_and_the_wave_fails() {
    let mut w = World::new(100);
    let mut s = spec(&["10", "100%"], 600);
    s.gates.error_rate = Some(ErrorRateGate { max_increase: 0.02, min_requests: 20 });
    s.gates.install = Some(InstallGate { max_failure_rate: 0.1, min_finished: 5 });
    let mut r = Rollout::new(s).unwrap();
    let canary = installs(&w.tick(&mut r, 0));
    assert_eq!(canary.len(), 10);
    for d in &canary {
        w.device(d).online = false;
    }
    let faulty = canary[0].clone();
    let mut decided = Vec::new();
    let mut minutes = 0;
    while decided.is_empty() && minutes < 10 {
        minutes += 1;
        let at = w.now + 60;
        for d in &canary[1..] {
            w.device(d).fold_window(window(NEW, at, 60, 0, 2_000));
        }
        match minutes {
            1 => w.device(&faulty).fold_window(window(NEW, at, 60, 18, 2_000)),
            2 => {
                let d = w.device(&faulty);
                d.fold_window(window(NEW, at, 40, 12, 2_000));
                d.running = vec![running(OLD)];
                let stage = UpdateStage::RolledBack;
                d.updates =
                    vec![UpdateView { bundle: NEW, stage, reason: Some(RejectReason::UnhealthyErrors), at, seq: 1 }];
            }
            _ => {}
        }
        decided.extend(decisions(&w.tick(&mut r, 60)));
    }
    assert_eq!(decided, [Decision::GateFailed { rolled_back: false }], "after {minutes} minute(s)");
    let ev = r.state.history.last().unwrap().evidence.as_ref().unwrap();
    let g = |kind| ev.gates.iter().find(|g| g.gate == kind).unwrap();
    assert_eq!(g(GateKind::ErrorRate).verdict, Verdict::Fail, "{:?}", g(GateKind::ErrorRate));
    assert_eq!(g(GateKind::InstallFailure).verdict, Verdict::Pass, "1 of 10 is within 10 %: the error rate catches it");
    assert!(minutes < 10, "within the bake");
}

#[test]
fn install_status_reads_events_before_the_running_model() {
    let m = model();
    type Event = Option<(UpdateStage, Option<RejectReason>)>;
    let cases: &[(Event, Option<u64>, InstallStatus)] = &[
        (None, None, InstallStatus::NotInstalled),
        (None, Some(11), InstallStatus::Installed { committed: true }),
        (Some((Fetching, None)), Some(10), InstallStatus::InProgress(Fetching)),
        (Some((Watching, None)), Some(10), InstallStatus::Installed { committed: false }),
        (Some((Committed, None)), Some(10), InstallStatus::Installed { committed: true }),
        (
            Some((RolledBack, Some(RejectReason::UnhealthyErrors))),
            Some(11),
            InstallStatus::Failed(Some(RejectReason::UnhealthyErrors)),
        ),
        (Some((RolledBack, None)), Some(10), InstallStatus::Reverted),
        (Some((Rejected, Some(RejectReason::Superseded))), Some(10), InstallStatus::NotInstalled),
        (Some((Committed, None)), Some(12), InstallStatus::Ahead),
        // The model was removed after (a removal commits on the model's newest bundle).
        (Some((Committed, None)), None, InstallStatus::NotInstalled),
    ];
    for &(event, seq, want) in cases {
        let mut d = DeviceView::new(id(0));
        d.running = seq
            .map(|s| {
                let mut r = running(if s == 11 { NEW } else { OLD });
                r.sequence = s;
                r
            })
            .into_iter()
            .collect();
        d.updates = event
            .map(|(stage, reason)| UpdateView { bundle: NEW, stage, reason, at: T0, seq: 0 })
            .into_iter()
            .collect();
        assert_eq!(d.install_status(&m, &NEW, &NEW, 11), want, "{event:?} running {seq:?}");
    }
}

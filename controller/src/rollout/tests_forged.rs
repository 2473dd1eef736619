//! One device's forged reports against the gates (issue 14). Whatever a device claims, it reaches the
//! gates only through `record_window` (clamped) and then weighs as one device of the wave: it moves a
//! pooled figure by its share at most and a median by one rank, so it neither passes a wave whose honest
//! devices fail nor fails a good wave beyond its share. Real failures stay visible: a canary of one faulty
//! device fails, one faulty device of ten fails the error gate, one failed install of twenty fails the
//! install gate when its threshold says so.

use super::gates::{Tally, judge};
use super::testkit::*;
use super::view::{MAX_PER_SEC, MAX_WINDOW_SECS};
use super::*;
use outpost_protocol::telemetry::{InferenceWindow, ShadowStats, UpdateStage};
use outpost_protocol::{RejectReason, UnixTime, Version};

const NOW: UnixTime = T0 + 3_600;

/// What a device says about one minute of serving the new release.
#[derive(Debug, Clone, Copy)]
struct Claim {
    requests: u64,
    errors: u64,
    timeouts: u64,
    p95_us: u32,
    /// PSI of its output classes (over 1,000 answers in 10 classes: enough samples to score).
    psi: f32,
    /// (agreed, compared) while it shadowed the release.
    shadow: (u64, u64),
}

const GOOD: Claim = Claim { requests: 600, errors: 1, timeouts: 0, p95_us: 2_000, psi: 0.05, shadow: (594, 600) };
const BAD: Claim = Claim { requests: 600, errors: 60, timeouts: 0, p95_us: 5_000, psi: 0.6, shadow: (420, 600) };

/// Forgeries meant to pass a bad release.
const TO_PASS: [Claim; 3] = [
    Claim { requests: 1_000_000_000_000, errors: 0, timeouts: 0, p95_us: 1, psi: 0.0, shadow: (1 << 40, 1 << 40) },
    Claim { requests: u64::MAX, errors: 0, timeouts: 0, p95_us: 1, psi: -5.0, shadow: (u64::MAX, u64::MAX) },
    Claim { requests: 600, errors: 0, timeouts: 0, p95_us: 1, psi: f32::NAN, shadow: (u64::MAX, 1) },
];

/// Forgeries meant to block a good one.
const TO_BLOCK: [Claim; 3] = [
    Claim {
        requests: 1_000_000_000_000,
        errors: 1_000_000_000_000,
        timeouts: 0,
        p95_us: u32::MAX,
        psi: 1e9,
        shadow: (0, 1 << 40),
    },
    Claim { requests: 1, errors: u64::MAX, timeouts: u64::MAX, p95_us: u32::MAX, psi: f32::INFINITY, shadow: (0, 1) },
    Claim { requests: 600, errors: 600, timeouts: 600, p95_us: 60_000_000, psi: 40.0, shadow: (0, 600) },
];

fn inference_window(c: &Claim, digest: outpost_protocol::Digest, shadow: Option<(u64, u64)>) -> InferenceWindow {
    InferenceWindow {
        model: model(),
        version: Version::new(2, 0, 0),
        digest,
        window_start: NOW - 90,
        window_secs: 60,
        requests: c.requests,
        errors: c.errors,
        timeouts: c.timeouts,
        rejected: 0,
        latency_hist: Vec::new(),
        latency_p50_us: c.p95_us / 2,
        latency_p95_us: c.p95_us,
        cache_hits: 0,
        cache_misses: c.requests,
        shadow: shadow.map(|(agreed, compared)| ShadowStats {
            candidate_version: Version::new(2, 0, 0),
            candidate_digest: NEW,
            compared,
            agreed_top1: agreed,
            max_abs_diff: 0.0,
            candidate_p95_us: c.p95_us,
            candidate_mem_bytes: 0,
        }),
        features: Vec::new(),
        output_classes: vec![100; 10],
        class_psi: Some(c.psi),
    }
}

/// A wave device that shadowed the release (its window on the old model carried the comparisons), then
/// activated it and reported a window on it: every figure through the daemon's own `record_window`.
fn device(i: usize, c: &Claim) -> DeviceView {
    let mut d = DeviceView::new(id(i));
    d.updates = vec![UpdateView { bundle: NEW, stage: UpdateStage::Committed, reason: None, at: T0, seq: 0 }];
    d.running = vec![running(NEW)];
    d.record_window(&inference_window(c, OLD, Some(c.shadow)), NOW - 200);
    d.record_window(&inference_window(c, NEW, None), NOW - 30);
    d
}

fn gates() -> Gates {
    Gates {
        error_rate: Some(ErrorRateGate { max_increase: 0.02, min_requests: 100 }),
        latency: Some(LatencyGate { max_p95_regression: 0.5 }),
        shadow: Some(ShadowGate { min_agreement: 0.9, min_compared: 100 }),
        drift: Some(DriftGate { max_psi: 0.25 }),
        ..Gates::default()
    }
}

fn baseline() -> BaselineSnapshot {
    BaselineSnapshot {
        at: NOW,
        devices: 10,
        requests: 6_000,
        errors: 12,
        error_rate: Some(0.002),
        p95_median_us: Some(2_000),
        psi: Some(0.05),
    }
}

/// Every gate but the quorum for `wave`, judged by `gates`.
fn judged(gates: &Gates, wave: &[DeviceView]) -> Vec<GateResult> {
    let release = spec(&["100%"], 600).release;
    let mut t = Tally::default();
    wave.iter().for_each(|d| t.add_wave_device(d, &release, NOW - 600));
    let base = baseline();
    judge(gates, &mut t, Some(&base)).into_iter().filter(|g| g.gate != GateKind::Quorum).collect()
}

fn verdicts(wave: &[DeviceView]) -> Vec<(GateKind, Verdict, String)> {
    judged(&gates(), wave).into_iter().map(|g| (g.gate, g.verdict, g.note)).collect()
}

fn value(results: &[GateResult], gate: GateKind) -> f64 {
    results.iter().find(|g| g.gate == gate).and_then(|g| g.value).unwrap()
}

fn wave(honest: usize, claim: &Claim, forged: Option<&Claim>) -> Vec<DeviceView> {
    let mut v: Vec<DeviceView> = (0..honest).map(|i| device(i, claim)).collect();
    v.extend(forged.map(|f| device(honest, f)));
    v
}

#[test]
fn one_forged_device_does_not_pass_a_bad_wave() {
    for honest in [1, 2, 3, 4, 7, 19] {
        for forged in &TO_PASS {
            for (gate, verdict, note) in verdicts(&wave(honest, &BAD, Some(forged))) {
                // A forgery without a figure (a NaN PSI, a single comparison) can leave a small wave too
                // little to judge: it holds, then pauses.
                assert_ne!(verdict, Verdict::Pass, "{honest} bad device(s) + {forged:?}: {gate:?}: {note}");
                if honest >= 3 {
                    assert_eq!(verdict, Verdict::Fail, "{honest} bad device(s) + {forged:?}: {gate:?}: {note}");
                }
            }
        }
    }
}

#[test]
fn one_forged_device_moves_a_good_wave_by_its_share_at_most() {
    for honest in [3, 4, 7, 19] {
        let alone = judged(&gates(), &wave(honest, &GOOD, None));
        let share = 1.0 / (honest + 1) as f64;
        for forged in &TO_BLOCK {
            let with = judged(&gates(), &wave(honest, &GOOD, Some(forged)));
            for gate in [GateKind::ErrorRate, GateKind::ShadowAgreement] {
                let (a, b) = (value(&alone, gate), value(&with, gate));
                assert!((a - b).abs() <= share + 1e-9, "{honest} + {forged:?}: {gate:?} {a} -> {b}");
            }
            // The medians do not move past an honest device.
            for gate in [GateKind::LatencyP95, GateKind::Drift] {
                assert_eq!(value(&alone, gate), value(&with, gate), "{honest} + {forged:?}: {gate:?}");
            }
        }
    }
    // A wave of twenty whose gates leave more than a twentieth of margin: nothing one device claims fails
    // it. (Summed, each of these forgeries failed the error and shadow gates for everyone.)
    let mut wide = gates();
    wide.error_rate = Some(ErrorRateGate { max_increase: 0.06, min_requests: 100 });
    for forged in &TO_BLOCK {
        for g in judged(&wide, &wave(19, &GOOD, Some(forged))) {
            assert_eq!(g.verdict, Verdict::Pass, "{forged:?}: {g:?}");
        }
    }
}

#[test]
fn one_faulty_device_of_ten_still_fails_the_error_gate() {
    // The simulator's bad canary: one device of ten fails 30 % of its requests. A median would call the
    // wave healthy; its share raises the wave's rate by three points, over the 2.2 % limit.
    let faulty = Claim { errors: 180, ..GOOD };
    let mut ten = wave(9, &GOOD, None);
    ten.push(device(9, &faulty));
    let results = judged(&gates(), &ten);
    let g = results.iter().find(|g| g.gate == GateKind::ErrorRate).unwrap();
    assert_eq!(g.verdict, Verdict::Fail, "{g:?}");
    assert!((g.value.unwrap() - 0.0315).abs() < 1e-3, "{g:?}");
}

#[test]
fn a_forged_window_sent_a_thousand_times_still_weighs_one_device() {
    // The error rate sums each device's windows since it was told: a device repeating its claim adds to
    // its own sum only, and that weighs at most the median device's.
    let repeated = |honest: &Claim, forged: &Claim| {
        let mut v = wave(7, honest, None);
        let mut d = device(7, forged);
        for _ in 0..1_000 {
            d.record_window(&inference_window(forged, NEW, None), NOW - 30);
        }
        v.push(d);
        judged(&gates(), &v)
    };
    let alone = judged(&gates(), &wave(7, &GOOD, None));
    for forged in TO_PASS.iter().chain(&TO_BLOCK) {
        let with = repeated(&GOOD, forged);
        let (a, b) = (value(&alone, GateKind::ErrorRate), value(&with, GateKind::ErrorRate));
        assert!((a - b).abs() <= 1.0 / 8.0 + 1e-9, "{forged:?}: {a} -> {b}");
        let g = with.iter().find(|g| g.gate == GateKind::ErrorRate).unwrap();
        assert!(g.samples <= 8 * 600, "{forged:?}: {g:?}");
    }
    for forged in &TO_PASS {
        let g = repeated(&BAD, forged).into_iter().find(|g| g.gate == GateKind::ErrorRate).unwrap();
        assert_eq!(g.verdict, Verdict::Fail, "{forged:?}: {g:?}");
    }
}

#[test]
fn a_forged_device_alone_does_not_judge_a_wave_of_quiet_devices() {
    // Three devices that shadowed without a single comparison and sent no window; one claims everything.
    let mut quiet: Vec<DeviceView> = (0..3)
        .map(|i| {
            let mut d = device(i, &GOOD);
            d.windows.clear();
            d.shadows.clear();
            d
        })
        .collect();
    quiet.push(device(3, &TO_PASS[0]));
    for (gate, verdict, note) in verdicts(&quiet) {
        assert_eq!(verdict, Verdict::Inconclusive, "{gate:?}: {note}");
        assert!(note.contains("1 device(s) with a figure, 3 needed"), "{gate:?}: {note}");
    }
}

#[test]
fn a_faulty_canary_of_one_fails_every_gate_it_reports_on() {
    for (gate, verdict, note) in verdicts(&wave(1, &BAD, None)) {
        assert_eq!(verdict, Verdict::Fail, "{gate:?}: {note}");
    }
    for (gate, verdict, note) in verdicts(&wave(1, &GOOD, None)) {
        assert_eq!(verdict, Verdict::Pass, "{gate:?}: {note}");
    }
}

#[test]
fn one_failed_install_of_twenty_fails_the_install_gate_when_its_threshold_says_so() {
    let release = spec(&["100%"], 600).release;
    let judged = |max_failure_rate: f64| {
        let mut t = Tally::default();
        for i in 0..20 {
            let mut d = device(i, &GOOD);
            if i == 7 {
                // Its own watch rolled it back: the window that made it do so counts too.
                d.updates[0].stage = UpdateStage::RolledBack;
                d.updates[0].reason = Some(RejectReason::UnhealthyErrors);
                d.running = vec![running(OLD)];
                d.record_window(&inference_window(&BAD, NEW, None), NOW - 30);
            }
            t.add_wave_device(&d, &release, NOW - 600);
        }
        let g = Gates { install: Some(InstallGate { max_failure_rate, min_finished: 1 }), ..Gates::default() };
        judge(&g, &mut t, None).into_iter().find(|g| g.gate == GateKind::InstallFailure).unwrap()
    };
    assert_eq!(judged(0.01).verdict, Verdict::Fail, "{}", judged(0.01).note);
    assert_eq!(judged(0.10).verdict, Verdict::Pass, "{}", judged(0.10).note);
}

#[test]
fn impossible_figures_are_clamped_on_arrival_and_named_in_the_quorum_note() {
    let mut d = DeviceView::new(id(0));
    // The last forgery is a plausible claim of total failure: within what a window holds.
    let impossible = [true, true, true, true, true, false];
    for (c, impossible) in TO_PASS.iter().chain(&TO_BLOCK).zip(impossible) {
        // No overflow, whatever the numbers (errors + timeouts overflowed before).
        d.record_window(&inference_window(c, OLD, Some(c.shadow)), NOW);
        let w = d.window_for(&OLD).unwrap();
        assert!(w.requests <= 60 * MAX_PER_SEC && w.errors <= w.requests, "{c:?}: {w:?}");
        assert!(w.psi.is_none_or(|p| p.is_finite() && p >= 0.0), "{c:?}: {w:?}");
        assert_eq!(w.psi.is_none(), c.psi.is_nan(), "only NaN is no figure: {c:?}: {w:?}");
        assert_eq!(w.implausible, impossible, "{c:?}: {w:?}");
        let s = d.shadow_for(&NEW).unwrap();
        assert!(s.agreed <= s.compared && s.implausible, "{c:?}: {s:?}");
    }
    let honest = device(1, &GOOD);
    assert!(!honest.window_for(&NEW).unwrap().implausible && !honest.shadow_for(&NEW).unwrap().implausible);
    // A window claiming a year is held to a day.
    let mut long = inference_window(&TO_PASS[0], NEW, None);
    long.window_secs = u32::MAX;
    d.record_window(&long, NOW);
    assert_eq!(d.window_for(&NEW).unwrap().requests, MAX_WINDOW_SECS * MAX_PER_SEC);

    let release = spec(&["100%"], 600).release;
    let mut t = Tally::default();
    for d in wave(3, &GOOD, Some(&TO_BLOCK[0])) {
        t.add_wave_device(&d, &release, NOW - 600);
    }
    let quorum = judge(&gates(), &mut t, None).into_iter().find(|g| g.gate == GateKind::Quorum).unwrap();
    assert!(quorum.note.contains("1 device(s) reported impossible figures"), "{}", quorum.note);
}

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
    d.updates = vec![UpdateView { bundle: NEW, stage: UpdateStage::Shadow, reason: None, at: T0 }];
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
        }];
        d.windows.push(window(NEW, T0 - 20, 1_000, 900, 2_000));
        d.shadows = vec![ShadowView { candidate: NEW, compared: 1_000, agreed: 10, received_at: T0 - 20 }];
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

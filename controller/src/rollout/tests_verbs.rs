use super::testkit::*;
use super::*;

fn started(n: usize, waves: &[&str]) -> (World, Rollout) {
    let mut w = World::new(n);
    let mut r = Rollout::new(spec(waves, 600)).unwrap();
    w.tick(&mut r, 0);
    (w, r)
}

#[test]
fn pause_stops_the_rollout_and_resume_restarts_the_bake() {
    let (mut w, mut r) = started(100, &["10%", "100%"]);
    w.now += 100;
    let actions = w.command(&mut r, Verb::Pause);
    assert_eq!(decisions(&actions), vec![Decision::Paused]);
    assert_eq!(r.state.phase, Phase::Paused { reason: "paused by alice".into() });
    for _ in 0..3 {
        assert_eq!(w.tick(&mut r, 600), vec![], "a paused rollout neither advances nor tells anyone");
    }
    let actions = w.command(&mut r, Verb::Resume);
    assert_eq!(decisions(&actions), vec![Decision::Resumed]);
    assert_eq!(decisions(&w.tick(&mut r, 599)), vec![]);
    assert_eq!(decisions(&w.tick(&mut r, 1)), vec![Decision::Advanced { to: 1 }]);
}

#[test]
fn promote_skips_one_wave_and_promote_full_skips_them_all() {
    let (mut w, mut r) = started(100, &["1", "10%", "50%", "100%"]);
    let actions = w.command(&mut r, Verb::Promote { full: false });
    assert_eq!((decisions(&actions), installs(&actions).len()), (vec![Decision::Promoted { full: false }], 9));
    assert_eq!((r.state.wave, &r.state.phase), (1, &Phase::Progressing));
    let actions = w.command(&mut r, Verb::Promote { full: true });
    assert_eq!((decisions(&actions), installs(&actions).len()), (vec![Decision::Promoted { full: true }], 90));
    assert_eq!((r.state.wave, &r.state.phase, w.on_new()), (3, &Phase::Completed, 100));
}

#[test]
fn promote_moves_a_rollout_paused_by_a_failure_to_the_next_wave() {
    let mut w = World::new(100);
    w.new = Health { errors_per_1000: 100, p95_us: 2_000 };
    let mut s = spec(&["10%", "100%"], 600);
    s.gates.error_rate = Some(ErrorRateGate { max_increase: 0.01, min_requests: 10 });
    let mut r = Rollout::new(s).unwrap();
    w.tick(&mut r, 0);
    assert_eq!(decisions(&w.tick(&mut r, 60)), vec![Decision::GateFailed { rolled_back: false }]);
    let actions = w.command(&mut r, Verb::Promote { full: false });
    assert_eq!(installs(&actions).len(), 90, "the operator overrode the gate");
    assert_eq!(r.state.phase, Phase::Progressing);
}

#[test]
fn abort_keeps_devices_on_the_release_and_withdraws_the_rest() {
    let mut w = World::new(20);
    let offline = [id(0), id(1), id(2), id(3), id(4), id(5)];
    offline.iter().for_each(|d| w.device(d).online = false);
    let mut r = Rollout::new(spec(&["50%", "100%"], 600)).unwrap();
    let told = installs(&w.tick(&mut r, 0));
    let on_new = w.on_new();
    let actions = w.command(&mut r, Verb::Abort { revert: false });
    let waiting: Vec<_> = told.iter().filter(|d| offline.contains(d)).cloned().collect();
    assert!(!waiting.is_empty(), "some offline device is in wave 1");
    let mut withdrawn = withdrawals(&actions);
    withdrawn.sort();
    assert_eq!((withdrawn, reverts(&actions).len()), (waiting, 0));
    assert_eq!(r.state.phase, Phase::Aborted { reverted: false });
    offline.iter().for_each(|d| w.device(d).online = true);
    w.tick(&mut r, 600);
    assert_eq!(w.on_new(), on_new, "a device back after the abort installs nothing");
}

#[test]
fn abort_with_revert_and_undo_switch_every_device_on_the_release_back() {
    for (verb, phase) in [
        (Verb::Abort { revert: true }, Phase::Aborted { reverted: true }),
        (Verb::Undo, Phase::RolledBack { reason: "undone by alice".into() }),
    ] {
        let (mut w, mut r) = started(100, &["10%", "50%", "100%"]);
        w.command(&mut r, Verb::Promote { full: false });
        let actions = w.command(&mut r, verb);
        assert_eq!((reverts(&actions).len(), w.on_new()), (50, 0), "{verb:?}");
        assert_eq!(r.state.phase, phase);
        assert_eq!(w.tick(&mut r, 600), vec![], "{verb:?}: reverting is done once");
    }
}

#[test]
fn undo_after_completion_reverts_every_device() {
    let (mut w, mut r) = started(40, &["10%", "100%"]);
    w.command(&mut r, Verb::Promote { full: true });
    assert_eq!(w.on_new(), 40);
    let actions = w.command(&mut r, Verb::Undo);
    assert_eq!((reverts(&actions).len(), decisions(&actions)), (40, vec![Decision::Undone]));
    assert_eq!(w.on_new(), 0);
}

#[test]
fn verbs_in_the_wrong_phase_are_refused_and_change_nothing() {
    type Setup = fn(&mut World, &mut Rollout);
    let progressing: Setup = |_, _| {};
    let paused: Setup = |w, r| drop(w.command(r, Verb::Pause));
    let completed: Setup = |w, r| drop(w.command(r, Verb::Promote { full: true }));
    let reverted: Setup = |w, r| drop(w.command(r, Verb::Abort { revert: true }));
    let undone: Setup = |w, r| drop(w.command(r, Verb::Undo));
    let cases: &[(&str, Setup, Verb)] = &[
        ("progressing", progressing, Verb::Resume),
        ("paused", paused, Verb::Pause),
        ("completed", completed, Verb::Pause),
        ("completed", completed, Verb::Resume),
        ("completed", completed, Verb::Promote { full: false }),
        ("aborted and reverted", reverted, Verb::Undo),
        ("aborted and reverted", reverted, Verb::Abort { revert: false }),
        ("rolled back", undone, Verb::Undo),
        ("rolled back", undone, Verb::Promote { full: true }),
    ];
    for &(phase, setup, verb) in cases {
        let (mut w, mut r) = started(10, &["50%", "100%"]);
        setup(&mut w, &mut r);
        let before = r.clone();
        let err = r.command(verb, "bob", &w.devices, w.now).unwrap_err();
        assert_eq!(err, VerbError::NotAllowed { rollout: "r1".into(), verb: verb.name(), phase }, "{verb:?}");
        assert_eq!(r, before, "{verb:?} in {phase}");
        assert!(err.to_string().contains(verb.name()), "{err}");
    }
}

#[test]
fn every_verb_is_recorded_with_the_operator_and_the_last_evidence() {
    let (mut w, mut r) = started(10, &["50%", "100%"]);
    w.tick(&mut r, 60);
    for verb in [Verb::Pause, Verb::Resume, Verb::Promote { full: false }, Verb::Abort { revert: true }] {
        w.command(&mut r, verb);
        let entry = r.state.history.last().unwrap();
        assert_eq!(entry.by, Actor::Operator("alice".into()), "{verb:?}");
        assert!(entry.evidence.is_some() && entry.reason.contains("alice"), "{verb:?}: {entry:?}");
    }
}

#[test]
fn a_verb_on_a_rollout_never_evaluated_tells_no_one_before_it_applies() {
    let mut w = World::new(20);
    let mut r = Rollout::new(spec(&["10%", "50%", "100%"], 600)).unwrap();
    let actions = w.command(&mut r, Verb::Abort { revert: false });
    assert_eq!((installs(&actions).len(), withdrawals(&actions).len()), (0, 0));
    assert_eq!(decisions(&actions), vec![Decision::Started, Decision::Aborted { revert: false }]);
    let mut r = Rollout::new(spec(&["10%", "50%", "100%"], 600)).unwrap();
    let actions = w.command(&mut r, Verb::Promote { full: false });
    assert_eq!((installs(&actions).len(), r.state.wave), (10, 1), "waves 1 and 2 at once");
}

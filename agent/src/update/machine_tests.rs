use super::*;
use UpdateStage::*;
use outpost_protocol::messages::{BundleRef, Watch};
use outpost_protocol::{ModelName, Version};

fn desired(chunks: usize, mode: Mode) -> DesiredState {
    DesiredState {
        model: ModelName::new("digits").unwrap(),
        version: Version::new(2, 0, 0),
        sequence: 2,
        bundle: BundleRef {
            digest: Digest([chunks as u8; 32]),
            size: chunks as u64 * 100,
            chunk_size: 100,
            chunks: vec![Digest([0; 32]); chunks],
        },
        rollout: Some("r1".into()),
        mode,
        issued_at: 0,
        watch: Watch { secs: 60, max_error_ppm: 10_000, max_p95_us: 5_000, min_requests: 10, max_restarts: 3 },
    }
}

fn stages(fx: &[Effect]) -> Vec<UpdateStage> {
    fx.iter().filter_map(|e| if let Effect::Event { to, .. } = e { Some(*to) } else { None }).collect()
}

fn start(m: &mut Machine, d: DesiredState) -> Vec<Effect> {
    m.step(Input::Desired { desired: d, already_active: false, authority: Authority::Director }, 0)
}

fn told(m: &mut Machine, d: DesiredState, authority: Authority) -> Vec<Effect> {
    m.step(Input::Desired { desired: d, already_active: false, authority }, 0)
}

fn refused(fx: &[Effect]) -> Option<RejectReason> {
    match fx {
        [Effect::Refused { reason, .. }] => Some(*reason),
        _ => None,
    }
}

fn fetch_all(m: &mut Machine, n: u32) -> Vec<Effect> {
    let bundle = m.state.job.as_ref().unwrap().bundle();
    let mut fx = Vec::new();
    for i in 0..n {
        fx.extend(m.step(Input::Chunk { bundle, index: i, valid: true }, 10));
    }
    fx
}

const MODEL: Digest = Digest([9; 32]);

/// What verification proves `desired(..)`'s bundle to be.
fn release() -> Release {
    Release {
        name: ModelName::new("digits").unwrap(),
        version: Version::new(2, 0, 0),
        sequence: 2,
        model: MODEL,
        mem_bytes: 5,
    }
}

fn activate_fx() -> Effect {
    Effect::Activate { model: MODEL, mem_bytes: 5 }
}

fn healthy() -> Health {
    Health { requests: 100, errors: 0, p95_us: 1_000, selftest_ok: true }
}

#[test]
fn a_full_update_walks_every_stage_to_committed() {
    let mut m = Machine::default();
    let fx = start(&mut m, desired(20, Mode::Activate));
    assert!(matches!(fx[0], Effect::PrepareStaging { size: 2000, .. }));
    let bundle = m.state.job.as_ref().unwrap().bundle();
    assert!(fx.contains(&Effect::RequestChunks { bundle, first: 0, count: FETCH_WINDOW }));
    let fx = fetch_all(&mut m, 20);
    // Windows of 8: after chunk 7 the next window, after chunk 15 the last four.
    assert!(fx.contains(&Effect::RequestChunks { bundle, first: 8, count: 8 }));
    assert!(fx.contains(&Effect::RequestChunks { bundle, first: 16, count: 4 }));
    assert!(matches!(fx.last(), Some(Effect::Verify { .. })));
    let fx = m.step(Input::Verified(Ok(release())), 20);
    assert_eq!(stages(&fx), vec![Staged, SelfTest]);
    let fx = m.step(Input::SelfTested(Ok(())), 30);
    assert_eq!((stages(&fx), fx.last()), (vec![Activating], Some(&activate_fx())));
    let fx = m.step(Input::Activated(Ok(())), 40);
    assert_eq!(stages(&fx), vec![Watching]);
    assert!(m.step(Input::Health(healthy()), 50).is_empty());
    assert!(m.step(Input::Tick, 59_000).is_empty(), "still inside the watch window");
    let fx = m.step(Input::Tick, 60_040);
    assert_eq!(fx[0], Effect::Commit { sequence: 2 }, "the floor rises to the verified sequence");
    assert_eq!(m.stage(), Committed);
}

#[test]
fn a_shadow_update_shadows_for_the_requested_period_before_activating() {
    let mut m = Machine::default();
    start(&mut m, desired(1, Mode::Shadow { secs: 30, sample_percent: 25 }));
    fetch_all(&mut m, 1);
    m.step(Input::Verified(Ok(release())), 0);
    let fx = m.step(Input::SelfTested(Ok(())), 1_000);
    assert_eq!(fx.last(), Some(&Effect::StartShadow { sample_percent: 25 }));
    assert!(m.step(Input::Tick, 30_999).is_empty());
    let fx = m.step(Input::Tick, 31_000);
    assert_eq!(fx[0], Effect::StopShadow);
    assert_eq!(fx.last(), Some(&activate_fx()));
}

#[test]
fn a_corrupt_chunk_is_requested_again_at_once() {
    let mut m = Machine::default();
    start(&mut m, desired(4, Mode::Activate));
    let bundle = m.state.job.as_ref().unwrap().bundle();
    m.step(Input::Chunk { bundle, index: 0, valid: true }, 1);
    let fx = m.step(Input::Chunk { bundle, index: 1, valid: false }, 2);
    assert_eq!(fx, vec![Effect::RequestChunks { bundle, first: 1, count: 3 }]);
    for i in 1..4 {
        m.step(Input::Chunk { bundle, index: i, valid: true }, 3);
    }
    assert_eq!(m.stage(), Verifying);
}

#[test]
fn unanswered_requests_are_retried_and_finally_fail_the_fetch() {
    let mut m = Machine::default();
    start(&mut m, desired(2, Mode::Activate));
    let bundle = m.state.job.as_ref().unwrap().bundle();
    let fx = m.step(Input::Tick, FETCH_RETRY_MS);
    assert_eq!(fx, vec![Effect::RequestChunks { bundle, first: 0, count: 2 }]);
    let mut now = FETCH_RETRY_MS;
    for _ in 0..FETCH_MAX_RETRIES {
        now += FETCH_RETRY_MS;
        m.step(Input::Tick, now);
    }
    assert_eq!(m.stage(), Rejected);
    assert_eq!(m.state.job.unwrap().outcome.unwrap().0, RejectReason::FetchFailed);
}

#[test]
fn the_retained_desired_state_delivered_again_changes_nothing() {
    let mut m = Machine::default();
    start(&mut m, desired(2, Mode::Activate));
    fetch_all(&mut m, 1);
    let before = m.clone();
    assert!(start(&mut m, desired(2, Mode::Activate)).is_empty());
    assert_eq!(m, before);
    let mut idle = Machine::default();
    assert!(
        idle.step(
            Input::Desired {
                desired: desired(2, Mode::Activate),
                already_active: true,
                authority: Authority::Director
            },
            0
        )
        .is_empty()
    );
}

#[test]
fn a_refused_bundle_is_rejected_with_its_reason_and_nothing_activates() {
    let mut m = Machine::default();
    start(&mut m, desired(1, Mode::Activate));
    fetch_all(&mut m, 1);
    let fx = m.step(Input::Verified(Err((RejectReason::BadSignature, "tampered".into()))), 5);
    assert!(fx.iter().any(|e| matches!(e, Effect::DiscardStaging { .. })));
    assert!(!fx.iter().any(|e| matches!(e, Effect::Activate { .. })));
    assert_eq!(m.stage(), Rejected);
    assert_eq!(m.state.job.unwrap().outcome, Some((RejectReason::BadSignature, "tampered".into())));
}

fn watching() -> Machine {
    let mut m = Machine::default();
    start(&mut m, desired(1, Mode::Activate));
    fetch_all(&mut m, 1);
    m.step(Input::Verified(Ok(release())), 0);
    m.step(Input::SelfTested(Ok(())), 0);
    m.step(Input::Activated(Ok(())), 0);
    assert_eq!(m.stage(), Watching);
    m
}

#[test]
fn the_watch_rolls_back_on_errors_latency_or_a_failed_self_test_with_the_evidence() {
    let cases = [
        (Health { errors: 5, ..healthy() }, RejectReason::UnhealthyErrors, "5 error(s) in 100 request(s)"),
        (Health { p95_us: 9_000, ..healthy() }, RejectReason::UnhealthyLatency, "p95 latency 9000 µs"),
        (Health { selftest_ok: false, ..healthy() }, RejectReason::SelfTestFailed, "self-test failed"),
    ];
    for (health, reason, evidence) in cases {
        let mut m = watching();
        let fx = m.step(Input::Health(health), 10);
        assert_eq!(fx[0], Effect::RollBack);
        let (r, detail) = m.state.job.unwrap().outcome.unwrap();
        assert_eq!(r, reason);
        assert!(detail.contains(evidence), "{detail}");
    }
    // Too few requests to judge: no verdict yet.
    let mut m = watching();
    assert!(m.step(Input::Health(Health { requests: 3, errors: 3, ..healthy() }), 10).is_empty());
}

#[test]
fn restarts_resume_each_stage_and_a_crash_loop_during_the_watch_rolls_back() {
    let mut m = Machine::default();
    start(&mut m, desired(10, Mode::Activate));
    let bundle = m.state.job.as_ref().unwrap().bundle();
    let fx = m.step(Input::Restarted { valid_chunks: [vec![true; 6], vec![false; 4]].concat() }, 100);
    assert_eq!(fx, vec![Effect::RequestChunks { bundle, first: 6, count: 4 }], "resume from the first missing chunk");

    let mut m = watching();
    assert!(m.step(Input::Restarted { valid_chunks: vec![] }, 1).is_empty());
    assert!(m.step(Input::Restarted { valid_chunks: vec![] }, 2).is_empty());
    let fx = m.step(Input::Restarted { valid_chunks: vec![] }, 3);
    assert_eq!(fx[0], Effect::RollBack);
    assert_eq!(m.state.job.unwrap().outcome.unwrap().0, RejectReason::CrashLoop);

    // A candidate that kills the agent before it is active (a panic aborts device builds) is refused after
    // `max_restarts`, and one that kills it while activating is rolled back: never an endless crash loop.
    for (stage, last, outcome) in [
        (SelfTest, Effect::DiscardStaging { bundle: watching().state.job.unwrap().bundle() }, RejectReason::CrashLoop),
        (Activating, Effect::RollBack, RejectReason::CrashLoop),
    ] {
        let mut m = watching();
        m.state.job.as_mut().unwrap().stage = stage;
        assert_eq!(m.step(Input::Restarted { valid_chunks: vec![] }, 1).len(), 1, "{stage:?}: resumed");
        assert_eq!(m.step(Input::Restarted { valid_chunks: vec![] }, 2).len(), 1, "{stage:?}: resumed");
        let fx = m.step(Input::Restarted { valid_chunks: vec![] }, 3);
        assert_eq!(fx[0], last, "{stage:?}");
        assert_eq!(m.state.job.unwrap().outcome.unwrap().0, outcome, "{stage:?}");
    }

    let bundle = watching().state.job.unwrap().bundle();
    for (stage, effect) in [
        (SelfTest, Effect::SelfTest { model: MODEL }),
        (Activating, activate_fx()),
        (Verifying, Effect::Verify { bundle }),
    ] {
        let mut m = watching();
        m.state.job.as_mut().unwrap().stage = stage;
        assert_eq!(m.step(Input::Restarted { valid_chunks: vec![] }, 5), vec![effect], "{stage:?}");
    }
}

#[test]
fn a_new_desired_state_supersedes_an_unfinished_update_and_revert_switches_back() {
    let mut m = Machine::default();
    start(&mut m, desired(2, Mode::Activate));
    fetch_all(&mut m, 1);
    let mut newer = desired(3, Mode::Activate);
    newer.version = Version::new(3, 0, 0);
    let fx = start(&mut m, newer);
    assert!(matches!(fx[0], Effect::DiscardStaging { .. }), "{fx:?}");
    assert_eq!(stages(&fx), vec![Rejected, Fetching]);
    assert_eq!(m.state.job.as_ref().unwrap().desired.version, Version::new(3, 0, 0));

    // A revert while that newer update is still fetching cancels it; the kept model already serves.
    let fx = start(&mut m, desired(4, Mode::Revert));
    assert!(!fx.contains(&Effect::Revert), "{fx:?}");
    assert_eq!(m.stage(), RolledBack);
    // Once idle, a revert switches to the previous slot.
    let mut idle = Machine::default();
    assert!(start(&mut idle, desired(5, Mode::Revert)).contains(&Effect::Revert));
}

#[test]
fn a_revert_during_an_unfinished_update_undoes_only_that_update() {
    // Before activation: cancelled, the active model untouched (no slot switch).
    let mut m = Machine::default();
    start(&mut m, desired(2, Mode::Shadow { secs: 60, sample_percent: 10 }));
    fetch_all(&mut m, 2);
    m.step(Input::Verified(Ok(release())), 0);
    m.step(Input::SelfTested(Ok(())), 0);
    let fx = start(&mut m, desired(9, Mode::Revert));
    assert!(fx.contains(&Effect::StopShadow));
    assert!(!fx.contains(&Effect::Revert) && !fx.contains(&Effect::RollBack), "{fx:?}");
    // While watching: the update's own rollback, and no second step back.
    let mut m = watching();
    let fx = start(&mut m, desired(9, Mode::Revert));
    assert_eq!(fx.iter().filter(|e| **e == Effect::RollBack).count(), 1);
    assert!(!fx.contains(&Effect::Revert), "{fx:?}");
}

#[test]
fn a_withdrawal_cancels_a_shadowing_candidate_before_it_ever_serves_and_the_same_state_can_come_again() {
    let shadow = Mode::Shadow { secs: 30, sample_percent: 100 };
    let mut m = Machine::default();
    start(&mut m, desired(2, shadow.clone()));
    fetch_all(&mut m, 2);
    m.step(Input::Verified(Ok(release())), 20);
    m.step(Input::SelfTested(Ok(())), 30);
    assert_eq!(m.stage(), Shadow);
    let fx = m.step(Input::Withdrawn, 40);
    assert_eq!(fx[0], Effect::StopShadow);
    assert!(matches!(fx[1], Effect::DiscardStaging { .. }));
    assert!(!fx.iter().any(|e| matches!(e, Effect::Activate { .. })));
    assert!(!fx.contains(&Effect::Revert) && !fx.contains(&Effect::RollBack));
    assert!(matches!(&fx[2], Effect::Event { to: Rejected, reason: Some(RejectReason::Superseded), .. }));
    assert_eq!(m.stage(), Idle);
    // The shadow deadline passing later activates nothing.
    assert!(m.step(Input::Tick, 60_000).is_empty());
    // The same desired state issued again (a resumed rollout) starts a fresh update.
    let fx = start(&mut m, desired(2, shadow));
    assert_eq!(stages(&fx), vec![Fetching]);
}

#[test]
fn a_withdrawal_mid_fetch_cancels_and_one_after_activation_lets_the_watch_finish() {
    let mut m = Machine::default();
    start(&mut m, desired(20, Mode::Activate));
    let fx = m.step(Input::Withdrawn, 5);
    assert_eq!(stages(&fx), vec![Rejected]);
    assert!(m.step(Input::Chunk { bundle: Digest([20; 32]), index: 0, valid: true }, 6).is_empty());

    let mut m = watching();
    assert!(m.step(Input::Withdrawn, 50).is_empty(), "an activated model is reverted by the controller, not here");
    assert_eq!(m.stage(), Watching);
    assert!(Machine::default().step(Input::Withdrawn, 0).is_empty());
}

#[test]
fn a_verified_release_other_than_the_one_asked_for_is_refused_and_no_floor_moves() {
    // A genuine bundle of sequence 2 under a forged desired state naming u64::MAX (the floor attack).
    let mut m = Machine::default();
    let forged = DesiredState { sequence: u64::MAX, ..desired(1, Mode::Activate) };
    start(&mut m, forged);
    fetch_all(&mut m, 1);
    let fx = m.step(Input::Verified(Ok(release())), 5);
    assert_eq!(stages(&fx), vec![Rejected]);
    assert!(!fx.iter().any(|e| matches!(e, Effect::Stage { .. } | Effect::Commit { .. } | Effect::Activate { .. })));
    let (reason, detail) = m.state.job.unwrap().outcome.unwrap();
    assert_eq!(reason, RejectReason::DesiredMismatch);
    assert!(detail.contains("sequence 2") && detail.contains(&u64::MAX.to_string()), "{detail}");
    // Another model's or version's bundle is refused the same way.
    for wrong in [
        Release { name: ModelName::new("other").unwrap(), ..release() },
        Release { version: Version::new(9, 0, 0), ..release() },
    ] {
        let mut m = Machine::default();
        start(&mut m, desired(1, Mode::Activate));
        fetch_all(&mut m, 1);
        m.step(Input::Verified(Ok(wrong)), 5);
        assert_eq!(m.state.job.unwrap().outcome.unwrap().0, RejectReason::DesiredMismatch);
    }
}

#[test]
fn bundle_references_over_the_limits_are_refused_before_anything_is_allocated() {
    let limits = outpost_protocol::Limits::default();
    let huge = BundleRef { size: 3 << 30, chunk_size: 256 << 10, ..desired(1, Mode::Activate).bundle };
    let wide = BundleRef { size: 1 << 20, chunk_size: u32::MAX, ..desired(1, Mode::Activate).bundle };
    let many = BundleRef { size: limits.max_bundle(), chunk_size: 1, ..desired(1, Mode::Activate).bundle };
    for bundle in [huge, wide, many] {
        let mut m = Machine::default();
        let fx = start(&mut m, DesiredState { bundle: bundle.clone(), ..desired(1, Mode::Activate) });
        assert_eq!(stages(&fx), vec![Rejected], "{bundle:?}");
        assert!(!fx.iter().any(|e| matches!(e, Effect::PrepareStaging { .. } | Effect::RequestChunks { .. })));
        assert_eq!(m.state.job.unwrap().outcome.unwrap().0, RejectReason::OverLimits);
        // A job persisted by an agent that did not check (it would abort every restart) is refused on restart.
        let mut m = Machine::default();
        start(&mut m, desired(1, Mode::Activate));
        m.state.job.as_mut().unwrap().desired.bundle = bundle;
        let fx = m.step(Input::Restarted { valid_chunks: vec![] }, 1);
        assert_eq!(stages(&fx), vec![Rejected]);
    }
}

#[test]
fn restarts_during_verification_count_towards_the_crash_loop_limit() {
    let mut m = Machine::default();
    start(&mut m, desired(1, Mode::Activate));
    fetch_all(&mut m, 1);
    assert_eq!(m.stage(), Verifying);
    for at in 1..3 {
        let fx = m.step(Input::Restarted { valid_chunks: vec![true] }, at);
        assert!(matches!(fx[..], [Effect::Verify { .. }]), "{fx:?}");
    }
    let fx = m.step(Input::Restarted { valid_chunks: vec![true] }, 3);
    assert_eq!(stages(&fx), vec![Rejected]);
    assert_eq!(m.state.job.unwrap().outcome.unwrap().0, RejectReason::CrashLoop);
}

#[test]
fn remove_takes_the_model_off_and_accept_pins_the_names_this_device_runs() {
    let mut m = Machine::default();
    let fx = start(&mut m, desired(1, Mode::Remove));
    assert!(fx.contains(&Effect::Remove));
    assert!(!m.state.retained, "a removal leaves nothing for `remove` to refuse");
    start(&mut m, desired(2, Mode::Activate));
    assert!(m.state.retained);
    m.step(Input::Withdrawn, 3);
    assert!(!m.state.retained);

    let mut pinned = Machine::default().with_accept(Some(vec![ModelName::new("detector").unwrap()]));
    let fx = start(&mut pinned, desired(1, Mode::Activate));
    assert_eq!(stages(&fx), vec![Rejected]);
    let (reason, detail) = pinned.state.job.unwrap().outcome.unwrap();
    assert_eq!(reason, RejectReason::DesiredMismatch);
    assert!(detail.contains("accepts only the models detector"), "{detail}");
}

#[test]
fn an_activation_whose_model_never_loads_is_rolled_back_at_its_deadline() {
    let mut m = Machine::default();
    start(&mut m, desired(1, Mode::Activate));
    fetch_all(&mut m, 1);
    m.step(Input::Verified(Ok(release())), 0);
    m.step(Input::SelfTested(Ok(())), 1_000);
    assert_eq!(m.stage(), Activating);
    assert!(m.step(Input::Tick, 1_000 + ACTIVATE_TIMEOUT_MS - 1).is_empty(), "still loading");
    let fx = m.step(Input::Tick, 1_000 + ACTIVATE_TIMEOUT_MS);
    assert!(fx.contains(&Effect::RollBack), "{fx:?}");
    assert_eq!(m.stage(), RolledBack);
    assert_eq!(m.state.job.as_ref().unwrap().outcome.as_ref().unwrap().0, RejectReason::ModelUnloadable);
    // A late answer changes nothing.
    assert!(m.step(Input::Activated(Ok(())), 70_000).is_empty());
}

/// The desired state is unsigned: arriving while an activated model is watched (a first install has no
/// previous to roll back to), it may not undo the activation. It waits; the watch ends on its own verdict;
/// then it starts.
#[test]
fn a_desired_state_arriving_during_a_watch_waits_for_the_watch_to_end() {
    let mut m = watching();
    let watched = m.state.job.as_ref().unwrap().bundle();
    let mut forged = desired(3, Mode::Activate);
    forged.version = Version::new(3, 0, 0);
    forged.sequence = 3;
    let fx = start(&mut m, forged.clone());
    assert!(
        !fx.contains(&Effect::RollBack) && !fx.iter().any(|e| matches!(e, Effect::DiscardStaging { .. })),
        "{fx:?}"
    );
    assert!(
        matches!(&fx[..], [Effect::Event { bundle, from: Idle, to: Idle, reason: None, detail }]
            if *bundle == forged.bundle.digest && detail.contains("waits for digits 2.0.0")),
        "{fx:?}"
    );
    assert_eq!(m.stage(), Watching);
    assert_eq!(m.ready_queued(), None, "not before the watch ends");
    // Delivered again (a reconnect): nothing new.
    assert!(start(&mut m, forged.clone()).is_empty());
    // A newer one replaces the waiting one, which is reported superseded; the watch still goes on.
    let mut newest = forged.clone();
    newest.bundle.digest = Digest([4; 32]);
    newest.version = Version::new(4, 0, 0);
    let fx = start(&mut m, newest.clone());
    assert!(
        matches!(&fx[0], Effect::Event { bundle, to: Rejected, reason: Some(RejectReason::Superseded), .. }
        if *bundle == forged.bundle.digest),
        "{fx:?}"
    );
    assert_eq!(stages(&fx), vec![Rejected, Idle]);
    assert_eq!(m.stage(), Watching);
    // The watch commits on its own verdict, then the waiting desired state starts.
    let fx = m.step(Input::Tick, 60_000);
    assert_eq!(fx[0], Effect::Commit { sequence: 2 });
    assert_eq!(m.ready_queued(), Some(&newest));
    let fx = start(&mut m, newest.clone());
    assert_eq!(stages(&fx), vec![Fetching], "{fx:?}");
    assert_eq!(m.state.queued, None);
    assert_ne!(m.state.job.as_ref().unwrap().bundle(), watched);

    // A withdrawal while waiting drops the waiting desired state; the watch goes on.
    let mut m = watching();
    start(&mut m, forged.clone());
    let fx = m.step(Input::Withdrawn, 5);
    assert_eq!(stages(&fx), vec![Rejected]);
    assert_eq!((m.stage(), m.state.queued.as_ref()), (Watching, None));
    // An explicit revert still undoes the watched activation (the operator's `abort --revert`).
    let mut m = watching();
    start(&mut m, forged);
    let fx = start(&mut m, desired(9, Mode::Revert));
    assert!(fx.contains(&Effect::RollBack), "{fx:?}");
    assert_eq!(m.state.queued, None);
    // A failed watch rolls back by itself, and what waited starts after it too.
    let mut m = watching();
    start(&mut m, newest.clone());
    let fx = m.step(Input::Health(Health { errors: 50, ..healthy() }), 10);
    assert_eq!(fx[0], Effect::RollBack);
    assert_eq!(m.ready_queued(), Some(&newest));
}

#[test]
fn an_unsigned_or_forged_revert_or_removal_is_refused_and_changes_nothing() {
    for mode in [Mode::Revert, Mode::Remove] {
        for authority in [
            Authority::Unsigned,
            Authority::Refused(RejectReason::UnknownKey, "signed by an attacker's key".into()),
            Authority::Refused(RejectReason::WrongDevice, "another device's statement".into()),
        ] {
            let mut m = watching();
            let before = m.state.clone();
            let expected = match &authority {
                Authority::Refused(r, _) => *r,
                _ => RejectReason::UnsignedRequest,
            };
            let fx = told(&mut m, desired(1, mode.clone()), authority);
            assert_eq!(refused(&fx), Some(expected), "{mode:?}: {fx:?}");
            assert_eq!(m.state, before, "{mode:?}: the watched activation goes on untouched");
        }
    }
}

#[test]
fn an_install_may_be_unsigned_or_badly_signed_its_bundle_decides() {
    for authority in [Authority::Unsigned, Authority::Refused(RejectReason::BadSignature, "altered".into())] {
        let mut m = Machine::default();
        let fx = told(&mut m, desired(2, Mode::Activate), authority);
        assert_eq!(stages(&fx), vec![Fetching]);
        assert_eq!(m.state.director_floor, 0, "only a verified statement raises the floor");
    }
}

#[test]
fn a_director_statement_issued_before_one_already_taken_is_a_stale_replay() {
    let mut m = watching();
    // The director's revert, issued at 100: taken, the floor is 100.
    let revert = DesiredState { issued_at: 100, ..desired(1, Mode::Revert) };
    let fx = told(&mut m, revert.clone(), Authority::Director);
    assert!(stages(&fx).contains(&RolledBack), "{fx:?}");
    assert_eq!(m.state.director_floor, 100);
    // Later the director installs again (issued at 200) ...
    let again = DesiredState { issued_at: 200, ..desired(3, Mode::Activate) };
    assert_eq!(stages(&told(&mut m, again, Authority::Director)), vec![Fetching]);
    // ... and the captured revert of 100, replayed, is refused: the fetch goes on.
    let before = m.state.clone();
    assert_eq!(refused(&told(&mut m, revert, Authority::Director)), Some(RejectReason::StaleRequest));
    assert_eq!(m.state, before);
    // A removal issued in the same second as the newest statement is not stale.
    let remove = DesiredState { issued_at: 200, ..desired(3, Mode::Remove) };
    assert!(told(&mut m, remove, Authority::Director).contains(&Effect::Remove));
}

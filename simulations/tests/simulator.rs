//! The fleet simulator through its library API: every shipped scenario with a few seeds, reproducibility,
//! and proof that the invariant checks can fail (test-only fault knobs that break a rule on purpose).

use outpost_controller::rollout::Decision;
use outpost_simulations::sim::{self, RunOptions, Scenario, invariants, summary};
use std::path::PathBuf;

const SEEDS: [u64; 3] = [1, 2, 3];
const DEVICES: u32 = 500;

fn scenario(name: &str) -> Scenario {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios").join(format!("{name}.toml"));
    Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

fn run(s: &Scenario, seed: u64) -> sim::Outcome {
    run_with(s, seed, DEVICES)
}

fn run_with(s: &Scenario, seed: u64, devices: u32) -> sim::Outcome {
    sim::run(s, RunOptions { devices: Some(devices), seed: Some(seed) }).unwrap()
}

/// Runs a shipped scenario with every seed; each must hold every invariant and end as it says.
fn check(name: &str) -> Vec<sim::Outcome> {
    check_with(name, DEVICES)
}

fn check_with(name: &str, devices: u32) -> Vec<sim::Outcome> {
    let s = scenario(name);
    SEEDS
        .iter()
        .map(|&seed| {
            let o = run_with(&s, seed, devices);
            assert!(o.violation.is_none(), "{name} seed {seed}: {}", o.violation.as_ref().unwrap());
            assert!(o.ok(), "{name} seed {seed}: {}", o.expectation_note());
            assert!(o.converged_ms.is_some(), "{name} seed {seed}: did not converge");
            o
        })
        .collect()
}

#[test]
fn every_shipped_scenario_parses() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| {
            Scenario::load(&p).unwrap_or_else(|e| panic!("{e}"));
            p.file_stem().unwrap().to_string_lossy().into_owned()
        })
        .collect();
    names.sort();
    for required in [
        "bad_model_canary",
        "controller_restart",
        "good_rollout",
        "message_loss",
        "offline_late",
        "partition_region",
        "two_models",
        "add_model",
    ] {
        assert!(names.iter().any(|n| n == required), "missing scenario {required}");
    }
}

#[test]
fn good_rollout_completes_with_everyone_on_the_release() {
    for o in check("good_rollout") {
        let m = &o.models[0];
        assert_eq!(m.final_on_target + m.failed_installs, DEVICES);
        assert_eq!(m.ever_on_target, m.final_on_target + m.failed_installs.min(m.ever_on_target));
        assert!(m.history.len() >= 5, "started, three advances, completed");
    }
}

#[test]
fn bad_model_is_caught_at_the_canary_and_rolled_back() {
    // 1,000 devices: a canary of 1 % is 10 devices, enough that one of them meets the fault (at 500, a
    // 5-device canary misses a fault of 40 % of devices one time in thirteen, and wave 2 catches it).
    for o in check_with("bad_model_canary", 1_000) {
        let m = &o.models[0];
        assert_eq!(m.final_on_base, 1_000, "seed {}: everyone back on the previous model", o.seed);
        // Only the canary's devices may ever have run the bad model.
        assert!(m.ever_on_target <= 10, "seed {}: {} devices exposed", o.seed, m.ever_on_target);
        assert!(m.ever_on_target > 0, "seed {}: the canary ran it", o.seed);
    }
}

#[test]
fn subtle_model_is_stopped_by_the_shadow_gate_before_it_serves() {
    for o in check("subtle_model") {
        let m = &o.models[0];
        assert_eq!(m.ever_on_target, 0, "seed {}: the candidate never went live", o.seed);
        assert!(m.phase_reason.as_deref().is_some_and(|r| r.contains("shadow-agreement")), "{:?}", m.phase_reason);
    }
}

#[test]
fn a_fifth_of_messages_lost_still_completes() {
    for o in check("message_loss") {
        let t = o.traffic.total();
        let share = t.dropped as f64 / t.sent as f64;
        assert!((0.17..0.23).contains(&share), "seed {}: {share} of messages dropped", o.seed);
        assert!(o.traffic.corrupted_chunks > 0 || o.seed != 1, "chunks were corrupted in transit");
    }
}

#[test]
fn devices_offline_at_the_start_install_when_they_return() {
    for o in check("offline_late") {
        assert_eq!(o.models[0].final_on_target + o.models[0].failed_installs, DEVICES);
        // They returned between 30 min and 3 h: convergence waits for the last of them.
        assert!(o.converged_ms.unwrap() >= 1_800_000, "seed {}", o.seed);
    }
}

#[test]
fn a_controller_crash_mid_rollout_loses_nothing_that_matters() {
    for o in check("controller_restart") {
        assert_eq!(o.controller_restarts, 1);
        assert!(o.actions_lost_in_crash > 0, "seed {}: the crash hit a step with actions", o.seed);
        assert!(o.power_losses > 0, "seed {}: devices lost power mid-update", o.seed);
    }
}

#[test]
fn a_partitioned_region_catches_up() {
    for o in check("partition_region") {
        assert_eq!(o.models[0].final_on_target + o.models[0].failed_installs, DEVICES);
        assert!(o.converged_ms.unwrap() >= 4_500_000, "seed {}: not before the partition heals", o.seed);
    }
}

#[test]
fn the_same_seed_gives_the_same_report_byte_for_byte() {
    let s = scenario("message_loss");
    let a = summary::render(&run(&s, 7));
    let b = summary::render(&run(&s, 7));
    assert_eq!(a, b);
    assert!(a.files.iter().any(|(n, _)| n == "versions.svg"));
    let c = summary::render(&run(&s, 8));
    assert_ne!(a.files[0].1, c.files[0].1, "another seed, another run");
}

fn with(base: &str, extra: &str) -> Scenario {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios").join(format!("{base}.toml"));
    let text = std::fs::read_to_string(path).unwrap() + extra;
    Scenario::parse(&text, "test").unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn a_device_activating_outside_its_wave_is_caught_with_seed_and_step() {
    let s = with("good_rollout", "\n[faults]\nactivate_outside_wave = true\n");
    let o = run(&s, 5);
    let v = o.violation.clone().expect("the wave invariant fires");
    assert_eq!(v.invariant, invariants::OUTSIDE_WAVE);
    assert_eq!(v.seed, 5);
    assert!(v.step > 0 && v.device.is_some());
    let shown = v.to_string();
    assert!(shown.contains("seed 5") && shown.contains(&format!("step {}", v.step)), "{shown}");
    assert!(!o.ok());
    // The seed replays it exactly.
    assert_eq!(run(&s, 5).violation, Some(v));
}

#[test]
fn an_unsigned_release_is_refused_and_a_device_skipping_the_check_is_caught() {
    let refused = with("good_rollout", "\n[release]\nsigned = false\n");
    let refused = Scenario { expect: sim::Expect::RolledBack, ..refused };
    let o = run(&refused, 1);
    assert!(o.violation.is_none(), "{:?}", o.violation);
    assert!(o.ok(), "{}", o.expectation_note());
    assert_eq!(o.models[0].ever_on_target, 0, "no device ran a model no trusted key signed");

    let skipping = with("good_rollout", "\n[release]\nsigned = false\n[faults]\nskip_signature_check = true\n");
    let v = run(&skipping, 1).violation.expect("the verification invariant fires");
    assert_eq!(v.invariant, invariants::UNVERIFIED);
}

#[test]
fn a_misspelt_key_is_refused_naming_it() {
    let e = Scenario::parse("name = \"x\"\nexpect = \"completed\"\n[faults]\npower_lost = 0.1\n", "bad.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("bad.toml") && e.contains("power_lost"), "{e}");
}

/// The two-model scenario with the vibration release healthy: both rollouts complete.
fn two_good_models() -> Scenario {
    let mut s = scenario("two_models");
    s.extra[0].release.failing_devices = 0.0;
    s.extra[0].expect = sim::Expect::Completed;
    s
}

#[test]
fn two_models_roll_out_at_once_and_reverting_one_leaves_the_other_alone() {
    for o in check("two_models") {
        let (digits, vibration) = (&o.models[0], &o.models[1]);
        assert_eq!((digits.model.as_str(), vibration.model.as_str()), ("digits", "vibration"));
        assert_eq!(digits.final_on_target + digits.failed_installs, DEVICES, "seed {}: digits everywhere", o.seed);
        assert_eq!(vibration.final_on_base, DEVICES, "seed {}: vibration back on 1.0.0 everywhere", o.seed);
        assert!(vibration.ever_on_target > 0, "seed {}: vibration's canary ran it", o.seed);
        // Only region eu was selected: a third of the fleet at most ever ran it.
        assert!(vibration.ever_on_target <= DEVICES.div_ceil(3), "seed {}: {}", o.seed, vibration.ever_on_target);
        // At once: vibration was rolled back while digits was still in its waves, and digits went on.
        let rolled_back = vibration.history.iter().find(|e| matches!(e.decision, Decision::GateFailed { .. }));
        let rolled_back = rolled_back.expect("vibration's gate failed").at;
        let completed = digits.history.iter().find(|e| e.decision == Decision::Completed).expect("digits completed").at;
        assert!(rolled_back < completed, "seed {}: the rollouts overlapped", o.seed);
        assert!(
            digits.history.iter().any(|e| matches!(e.decision, Decision::Advanced { .. }) && e.at > rolled_back),
            "seed {}: digits advanced a wave after vibration's rollback",
            o.seed
        );
        assert!(!digits.history.iter().any(|e| matches!(e.decision, Decision::GateFailed { .. })));
    }
}

#[test]
fn two_good_models_both_complete_on_overlapping_devices() {
    let s = two_good_models();
    for seed in SEEDS {
        let o = run(&s, seed);
        assert!(o.ok(), "seed {seed}: {:?} {} {:?}", o.violation, o.expectation_note(), o.models[0].phase_reason);
        let (digits, vibration) = (&o.models[0], &o.models[1]);
        assert_eq!(digits.final_on_target + digits.failed_installs, DEVICES);
        // Region eu runs vibration 1.1.0, the rest kept 1.0.0.
        let eu = DEVICES.div_ceil(3);
        assert_eq!(vibration.final_on_target + vibration.failed_installs, eu, "seed {seed}");
        assert_eq!(vibration.final_on_base, DEVICES - eu + vibration.failed_installs, "seed {seed}");
    }
}

#[test]
fn a_rollout_adds_a_model_to_the_devices_that_do_not_have_it() {
    // Region eu (every third device) runs vibration 1.0.0; the rollout of 1.1.0 selects everyone.
    let eu = DEVICES.div_ceil(3);
    for o in check("add_model") {
        let (digits, vibration) = (&o.models[0], &o.models[1]);
        assert_eq!(digits.final_on_target + digits.failed_installs, DEVICES, "seed {}: digits everywhere", o.seed);
        assert_eq!(digits.started_without, 0);
        assert_eq!(vibration.started_without, DEVICES - eu, "seed {}", o.seed);
        assert_eq!(vibration.final_on_target + vibration.failed_installs, DEVICES, "seed {}", o.seed);
        assert_eq!(vibration.final_on_base, 0, "seed {}: eu moved on from 1.0.0", o.seed);
        // Every device that lacked it now runs it, but those whose own install failed (nothing to go back to).
        assert!(vibration.added + vibration.failed_installs >= DEVICES - eu, "seed {}: {}", o.seed, vibration.added);
        assert!(vibration.final_without <= vibration.failed_installs, "seed {}", o.seed);
    }
}

#[test]
fn a_failed_rollout_of_a_model_takes_it_off_the_devices_it_added_it_to() {
    let mut s = scenario("add_model");
    s.extra[0].release.failing_devices = 0.4;
    s.extra[0].expect = sim::Expect::RolledBack;
    let eu = DEVICES.div_ceil(3);
    for seed in SEEDS {
        let o = run(&s, seed);
        assert!(o.ok(), "seed {seed}: {:?} {}", o.violation, o.expectation_note());
        let vibration = &o.models[1];
        assert!(vibration.added > 0, "seed {seed}: the canary added vibration to devices without it");
        // Back where each device was: eu on 1.0.0, every other device without vibration.
        assert_eq!(vibration.final_on_base, eu, "seed {seed}");
        assert_eq!(vibration.final_without, DEVICES - eu, "seed {seed}");
        assert_eq!(vibration.final_on_target, 0, "seed {seed}");
        let digits = &o.models[0];
        assert_eq!(digits.final_on_target + digits.failed_installs, DEVICES, "seed {seed}: digits unaffected");
    }
    let e = Scenario::parse(
        "name = \"x\"\nexpect = \"completed\"\n[[models]]\nname = \"v\"\nexpect = \"completed\"\ninstalled_on = \"region\"\n",
        "add.toml",
    )
    .unwrap_err();
    assert!(e.to_string().contains("models.v.installed_on"), "{e}");
}

#[test]
fn a_withdrawal_that_reaches_another_model_is_caught() {
    let mut s = scenario("two_models");
    s.faults.withdraw_all_models = true;
    // digits in one wave: every device has been told to install it when vibration's rollback withdraws
    // its canary's failed devices.
    s.rollout.waves = vec!["100%".into()];
    let v = run(&s, 1).violation.expect("the isolation invariant fires");
    assert_eq!(v.invariant, invariants::ISOLATION, "{v}");
    assert!(v.detail.contains("an event about vibration changed digits"), "{v}");
}

#[test]
fn a_device_left_on_a_reverted_release_is_caught() {
    let mut s = scenario("two_models");
    s.faults.ignore_revert = true;
    let v = run(&s, 1).violation.expect("the aborted-release invariant fires");
    assert_eq!(v.invariant, invariants::ABORTED, "{v}");
    assert!(v.detail.contains("vibration v1.1.0"), "{v}");
}

#[test]
fn a_floor_that_goes_down_is_caught() {
    let mut s = scenario("two_models");
    s.faults.floor_lost_on_power_loss = true;
    let v = run(&s, 1).violation.expect("the floor invariant fires");
    assert_eq!(v.invariant, invariants::FLOOR, "{v}");
}

#[test]
fn a_second_model_with_a_misspelt_key_or_a_taken_name_is_refused() {
    let base = "name = \"x\"\nexpect = \"completed\"\n[[models]]\nname = \"vibration\"\nexpect = \"completed\"\n";
    let e = Scenario::parse(&format!("{base}[models.release]\nfailing = 0.1\n"), "two.toml").unwrap_err();
    assert!(e.to_string().contains("failing"), "{e}");
    let e = Scenario::parse(&format!("{base}[models.release]\nfailing_devices = 2.0\n"), "two.toml").unwrap_err();
    assert!(e.to_string().contains("models.vibration.release.failing_devices"), "{e}");
    let e = Scenario::parse(
        "name = \"x\"\nexpect = \"completed\"\n[[models]]\nname = \"digits\"\nexpect = \"completed\"\n",
        "two.toml",
    )
    .unwrap_err();
    assert!(e.to_string().contains("models.digits.name"), "{e}");
    let e = Scenario::parse(
        "name = \"x\"\nexpect = \"completed\"\n[[models]]\nname = \"../x\"\nexpect = \"completed\"\n",
        "two.toml",
    )
    .unwrap_err();
    assert!(e.to_string().contains("name"), "{e}");
}

#[test]
fn outpost_sim_run_prints_each_models_outcome_and_the_report_has_a_section_per_model() {
    let out = std::env::temp_dir().join(format!("outpost-sim-two-models-{}", std::process::id()));
    let scenario = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios/two_models.toml");
    // 300 devices: digits' 2 % canary is six devices, enough for its five finished installs.
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_outpost-sim"))
        .args(["run", scenario.to_str().unwrap(), "--devices", "300", "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with(
            "PASS: digits: completed as expected (completed); vibration: rolled back as expected (rolled back); \
             converged "
        ) && lines[0].contains("0 invariant violation(s)"),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with("  digits: completed; 300 device(s) on digits v1.1.0, 0 on digits v1.0.0"),
        "{stdout}"
    );
    assert!(lines[2].starts_with("  vibration: rolled back (wave "), "{stdout}");
    assert!(lines[2].contains("; 0 device(s) on vibration v1.1.0, 300 on vibration v1.0.0"), "{stdout}");
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    for needle in [
        "| rollout ended (vibration) | rolled back: wave",
        "| devices on digits v1.1.0 at the end | 300 |",
        "## Decisions: digits",
        "## Decisions: vibration",
        "vibration-gate-",
    ] {
        assert!(report.contains(needle), "{needle} missing from\n{report}");
    }
    let chart = std::fs::read_to_string(out.join("versions.svg")).unwrap();
    assert!(chart.contains("digits v1.1.0") && chart.contains("vibration v1.0.0"), "every model's lines");
    let _ = std::fs::remove_dir_all(&out);
}

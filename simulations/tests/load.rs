//! `outpost-sim load` with a small fleet: real mosquitto, the real controller daemon, 20 real agents.
//! Every device must register, take digits 1.0.0 and vibration 1.0.0 beside it, then digits 2.0.0 and
//! vibration 1.1.0 each through four gated waves, and serve both from its own API; the report must carry
//! the figures the full run is for. With `--together` the two upgrades run at the same time.

use outpost_simulations::load::{self, Args, ControllerMode};

/// 20 devices, four waves with 4 s bakes, the controller in this process; its own output folder.
fn small_fleet(name: &str, together: bool) -> Args {
    let out = std::env::temp_dir().join(format!("outpost-load-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    Args {
        devices: 20,
        out,
        waves: "1%,10%,50%,100%".into(),
        bake: 4,
        rps: 1.0,
        window: 2,
        rollout_timeout: 120,
        controller: ControllerMode::InProcess,
        threads: 4,
        keep_data: false,
        together,
    }
}

#[test]
fn a_small_fleet_converges_through_both_rollouts_and_the_report_has_its_figures() {
    let args = small_fleet("test", false);
    let out = args.out.clone();
    let outcome = load::run(&args).expect("the load run runs");
    let i = &outcome.inputs;
    let summary = std::fs::read_to_string(&outcome.report).unwrap();
    assert!(outcome.converged, "{summary}");
    assert!(i.register_secs.is_some(), "{summary}");
    assert_eq!(i.rollouts.len(), 4, "digits 1.0.0, vibration 1.0.0, digits 2.0.0, vibration 1.1.0");
    for r in &i.rollouts {
        assert!(r.converged && r.phase == "completed" && r.on_target == 20, "{r:?}");
        assert_eq!(r.failed_installs, 0);
    }
    assert_eq!((i.rollouts[2].advanced, i.rollouts[3].advanced), (3, 3), "four waves, three advances each");
    assert_eq!(i.serving, 20, "every device's own API serves digits 2.0.0 and vibration 1.1.0");
    assert_eq!(i.failed_during_v2, 0, "no inference request fails while v2 rolls out");
    // Every device fetched the ~145 KB bundle twice through the broker, and mosquitto counted it.
    let whole = i.rollouts[2].span();
    let sent = whole.sys.get("bytes/sent").copied().expect("mosquitto's $SYS byte counters were read");
    assert!(sent > 20 * 140_000, "{sent} bytes out of the broker during the v2 rollout");
    assert!(i.timeline.iter().any(|m| m.broker.rss > 0 && m.broker.cpu_secs >= 0.0));
    assert!(i.quiet.1.telemetry > 0, "the controller stored telemetry");
    assert!(load::memory_per_device(i).0 > 0);
    for needle in [
        "all devices registered",
        "rollout digits 2.0.0",
        "rollout vibration 1.1.0",
        "broker peak RSS",
        "memory per device",
        "telemetry ingest",
    ] {
        assert!(summary.contains(needle), "{needle} missing from\n{summary}");
    }
    for chart in ["versions.svg", "memory.svg", "cpu.svg"] {
        assert!(std::fs::read_to_string(out.join(chart)).unwrap().starts_with("<svg"), "{chart}");
    }
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn both_upgrades_at_once_converge_each_in_its_own_waves() {
    let args = small_fleet("together", true);
    let outcome = load::run(&args).expect("the load run runs");
    let i = &outcome.inputs;
    let summary = std::fs::read_to_string(&outcome.report).unwrap();
    assert!(outcome.converged, "{summary}");
    assert_eq!(i.rollouts.len(), 4, "digits 1.0.0, vibration 1.0.0, then digits 2.0.0 and vibration 1.1.0");
    let (digits, vibration) = (&i.rollouts[2], &i.rollouts[3]);
    assert_eq!((digits.version.as_str(), vibration.version.as_str()), ("digits 2.0.0", "vibration 1.1.0"));
    for r in [digits, vibration] {
        assert!(r.converged && r.phase == "completed" && r.on_target == 20, "{r:?}");
        assert_eq!((r.advanced, r.failed_installs), (3, 0), "{r:?}");
    }
    // Started together, and each still ran its own four waves: neither waited for the other to finish.
    assert_eq!(digits.start.at, vibration.start.at);
    let spans = format!(
        "digits waves {:?} to {}, vibration waves {:?} to {}",
        digits.wave_starts, digits.end.at, vibration.wave_starts, vibration.end.at
    );
    assert!(vibration.wave_starts[1] < digits.end.at && digits.wave_starts[1] < vibration.end.at, "{spans}");
    assert_eq!(i.serving, 20, "every device's own API serves digits 2.0.0 and vibration 1.1.0");
    assert_eq!(i.failed_during_v2, 0, "no inference request fails while both roll out");
    assert!(summary.contains("rolled out at the same time"), "{summary}");
    let _ = std::fs::remove_dir_all(&args.out);
}

//! Property: whatever happens (time, devices coming and going, relabelling, bad releases, any verb), no
//! device outside the current and earlier waves is ever told to install, nothing is told to install in a
//! paused or finished rollout, no device is told to install twice, and only devices on the release are
//! told to revert.

use super::testkit::*;
use super::waves::{WavePlan, rank};
use super::*;
use outpost_protocol::messages::Mode;
use proptest::prelude::*;
use std::collections::HashSet;

#[derive(Debug, Clone)]
enum Op {
    Tick(u64),
    Offline(usize),
    Online(usize),
    Relabel(usize),
    AddDevice,
    BadRelease,
    Verb(Verb),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u64..1_500).prop_map(Op::Tick),
        1 => (0usize..200).prop_map(Op::Offline),
        1 => (0usize..200).prop_map(Op::Online),
        1 => (0usize..200).prop_map(Op::Relabel),
        1 => Just(Op::AddDevice),
        1 => Just(Op::BadRelease),
        1 => any_verb().prop_map(Op::Verb),
    ]
}

fn waves() -> impl Strategy<Value = Vec<&'static str>> {
    prop_oneof![
        Just(vec!["1", "10%", "50%", "100%"]),
        Just(vec!["1%", "100%"]),
        Just(vec!["2", "5", "30%"]),
        Just(vec!["25%", "50%", "75%"]),
        Just(vec!["100%"]),
    ]
}

fn region(i: usize) -> &'static str {
    if i.is_multiple_of(3) { "us" } else { "eu" }
}

/// The oracle: the wave of `device` on this fleet, computed apart from the planner.
fn wave_of(s: &RolloutSpec, devices: &[DeviceView], device: &DeviceView) -> Option<usize> {
    let selected = |d: &DeviceView| s.selector.matches(d);
    if !selected(device) {
        return None;
    }
    let mut ranks: Vec<u64> = devices.iter().filter(|d| selected(d)).map(|d| rank(&s.id, &d.id)).collect();
    WavePlan::new(&s.waves, &mut ranks).wave_of(rank(&s.id, &device.id))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn no_device_outside_the_current_and_earlier_waves_is_ever_desired(
        n in 1usize..80,
        waves in waves(),
        rollback in any::<bool>(),
        ops in proptest::collection::vec(op(), 1..40),
    ) {
        let mut w = World::new(n);
        for (i, d) in w.devices.iter_mut().enumerate() {
            d.labels = vec![("region".into(), region(i).into())];
        }
        let mut s = spec(&waves, 600);
        s.selector = Selector::parse("region=eu").unwrap();
        s.gates.error_rate = Some(ErrorRateGate { max_increase: 0.01, min_requests: 10 });
        s.on_failure = if rollback { FailurePolicy::Rollback } else { FailurePolicy::Pause };
        let mut r = Rollout::new(s.clone()).unwrap();
        let mut told = HashSet::new();
        for op in ops {
            let actions = match op {
                Op::Tick(secs) => {
                    w.now += secs;
                    w.report();
                    r.evaluate(&w.devices, w.now)
                }
                Op::Verb(v) => r.command(v, "prop", &w.devices, w.now).unwrap_or_default(),
                Op::Offline(i) => { if let Some(d) = w.devices.get_mut(i % n) { d.online = false; } vec![] }
                Op::Online(i) => { if let Some(d) = w.devices.get_mut(i % n) { d.online = true; } vec![] }
                Op::Relabel(i) => {
                    let len = w.devices.len();
                    let d = &mut w.devices[i % len];
                    d.labels[0].1 = if d.labels[0].1 == "eu" { "us".into() } else { "eu".into() };
                    vec![]
                }
                Op::AddDevice => {
                    let i = w.devices.len();
                    let mut d = DeviceView::new(id(10_000 + i));
                    (d.online, d.running) = (true, vec![running(OLD)]);
                    d.labels = vec![("region".into(), region(i).into())];
                    w.devices.push(d);
                    vec![]
                }
                Op::BadRelease => { w.new = Health { errors_per_1000: 200, p95_us: 2_000 }; vec![] }
            };
            for a in &actions {
                // A device withdrawn (a failed gate paused the rollout before it activated) may be told
                // again once the rollout goes on; never twice without a withdrawal in between.
                if let Action::Withdraw { device, .. } = a {
                    told.remove(device);
                }
                let Action::Desire { device, desired } = a else { continue };
                let view = w.devices.iter().find(|d| &d.id == device).unwrap();
                if desired.mode == Mode::Revert {
                    prop_assert!(r.state.phase.reverting(), "revert outside a reverting phase");
                    let status = view.install_status(&s.release.model, &NEW, &NEW, s.release.sequence);
                    prop_assert_eq!(status, InstallStatus::Installed { committed: true }, "{} told to revert", device);
                    continue;
                }
                let phase = &r.state.phase;
                prop_assert!(matches!(phase, Phase::Progressing | Phase::Completed), "install in {phase:?}");
                let wave = wave_of(&s, &w.devices, view);
                let now = r.state.wave;
                prop_assert!(wave.is_some_and(|k| k <= now), "{device} in wave {wave:?} told during wave {now}");
                prop_assert!(told.insert(device.clone()), "{device} told to install twice");
            }
            // Devices act only after the planner's step was checked against the world it saw.
            w.apply(&actions);
        }
    }
}

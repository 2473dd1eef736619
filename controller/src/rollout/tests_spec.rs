use super::testkit::*;
use super::*;

#[test]
fn a_sensible_spec_is_valid_even_if_its_selector_matches_nothing_yet() {
    let mut s = spec(&["1", "1%", "10%", "100%"], 600);
    s.selector = Selector::parse("region=nowhere").unwrap();
    s.shadow = Some(ShadowPeriod { secs: 600, sample_percent: 10 });
    s.gates.install = Some(InstallGate { max_failure_rate: 0.02, min_finished: 5 });
    s.gates.drift = Some(DriftGate { max_psi: 0.25 });
    assert_eq!(s.validate(), Ok(()));
    assert!(Rollout::new(s).is_ok());
}

#[test]
fn invalid_specs_are_refused_with_the_field_named() {
    type Change = fn(&mut RolloutSpec);
    let cases: &[(Change, &str)] = &[
        (|s| s.id.clear(), "rollout id \"\" is empty"),
        (|s| s.id = "a/b".into(), "rollout id \"a/b\""),
        (|s| s.waves.clear(), "waves: at least one"),
        (|s| s.waves[0].size = "0%".parse().unwrap(), "waves[0]: a wave of 0% selects no device"),
        (|s| s.waves[0].size = WaveSize::Count(0), "waves[0]: a wave of 0 device(s)"),
        (|s| s.waves[1].size = "101%".parse().unwrap(), "waves[1]: 101% is over 100%"),
        (|s| s.waves[1].size = "10%".parse().unwrap(), "waves[1]: 10% does not grow on the previous wave's 10%"),
        (|s| s.waves[0].size = "50%".parse().unwrap(), "waves[1]: 20% does not grow on the previous wave's 50%"),
        (|s| s.waves.push(Wave { size: WaveSize::Count(5), bake_secs: 60 }), "waves[3]: 5 device(s) does not grow"),
        (|s| s.gates.quorum.min_fraction = 1.5, "gates.quorum.min_fraction = 1.5 is out of range (expected 0..=1)"),
        (|s| s.gates.quorum.min_fraction = f64::NAN, "gates.quorum.min_fraction = NaN"),
        (
            |s| s.gates.install = Some(InstallGate { max_failure_rate: -0.1, min_finished: 1 }),
            "gates.install.max_failure_rate",
        ),
        (|s| s.gates.error_rate = Some(ErrorRateGate { max_increase: 2.0, min_requests: 1 }), "gates.error_rate"),
        (|s| s.gates.latency = Some(LatencyGate { max_p95_regression: -1.0 }), "gates.latency.max_p95_regression"),
        (|s| s.gates.shadow = Some(ShadowGate { min_agreement: 95.0, min_compared: 1 }), "gates.shadow.min_agreement"),
        (|s| s.gates.drift = Some(DriftGate { max_psi: f64::INFINITY }), "gates.drift.max_psi = inf"),
        (|s| s.shadow = Some(ShadowPeriod { secs: 60, sample_percent: 0 }), "shadow.sample_percent = 0"),
        (
            |s| s.selector = Selector(vec![("a".into(), "1".into()), ("a".into(), "2".into())]),
            "key \"a\" appears twice",
        ),
    ];
    for (change, want) in cases {
        let mut s = spec(&["10%", "20%", "100%"], 600);
        change(&mut s);
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains(want), "got {err:?}, wanted {want:?}");
        assert!(Rollout::new(s).is_err());
    }
}

#[test]
fn mixed_wave_kinds_are_judged_when_planned() {
    let mut s = spec(&["50", "10%", "100%"], 600);
    assert_eq!(s.validate(), Ok(()), "a count then a percentage cannot be compared without the fleet");
    s.waves =
        vec![Wave { size: "100%".parse().unwrap(), bake_secs: 1 }, Wave { size: WaveSize::Count(5), bake_secs: 1 }];
    assert!(matches!(s.validate(), Err(SpecError::WavesNotIncreasing { wave: 1, .. })), "nothing grows after 100%");
}

#[test]
fn wave_sizes_parse_and_print() {
    let cases: &[(&str, Option<WaveSize>, &str)] = &[
        ("1%", Some(WaveSize::Percent(Percent(100))), "1%"),
        ("0.5%", Some(WaveSize::Percent(Percent(50))), "0.50%"),
        ("12.25%", Some(WaveSize::Percent(Percent(1_225))), "12.25%"),
        ("100%", Some(WaveSize::Percent(Percent::ALL)), "100%"),
        ("5", Some(WaveSize::Count(5)), "5 device(s)"),
        ("1.234%", None, ""),
        ("%", None, ""),
        (".5%", None, ""),
        ("-1", None, ""),
        ("ten", None, ""),
        ("1 0%", None, ""),
    ];
    for &(input, want, shown) in cases {
        let got = input.parse::<WaveSize>().ok();
        assert_eq!(got, want, "{input}");
        if let Some(w) = got {
            assert_eq!(w.to_string(), shown);
        }
    }
    assert_eq!(
        "10y".parse::<WaveSize>().unwrap_err().to_string(),
        "wave \"10y\" is not a percentage (10%, 0.5%) or a device count (5)"
    );
}

#[test]
fn selectors_and_policies_parse() {
    let s = Selector::parse("arch=aarch64, region=eu").unwrap();
    assert_eq!(s.0, vec![("arch".into(), "aarch64".into()), ("region".into(), "eu".into())]);
    assert_eq!(s.to_string(), "arch=aarch64,region=eu");
    assert_eq!(Selector::parse("").unwrap(), Selector::default());
    for bad in ["region", "=eu", "a=1,a=2"] {
        assert!(Selector::parse(bad).is_err(), "{bad}");
    }
    assert_eq!("rollback".parse::<FailurePolicy>(), Ok(FailurePolicy::Rollback));
    assert!("revert".parse::<FailurePolicy>().unwrap_err().to_string().contains("\"revert\""));
}

#[test]
fn selector_operators_other_than_equality_are_refused_by_name_not_misread() {
    // Before: `region!=eu` parsed as the label `region!` equal to `eu`, selecting nothing.
    for bad in ["region!=eu", "region==eu", "region=~eu", "tier in (a,b)", "region=e u", "region=eu*"] {
        let e = Selector::parse(bad).unwrap_err().to_string();
        assert!(e.contains("key=value"), "{bad}: {e}");
    }
    assert!(Selector::parse("site/zone=eu-west_1.a,k8s.io:x=y").is_ok());
}

#[test]
fn the_arch_selector_key_matches_the_reported_architecture() {
    let mut d = DeviceView::new(id(1));
    d.arch = Some(outpost_protocol::Arch::Aarch64);
    assert!(Selector::parse("arch=aarch64").unwrap().matches(&d));
    d.labels = vec![("arch".into(), "custom".into())];
    assert!(Selector::parse("arch=custom").unwrap().matches(&d), "an explicit label wins");
    assert!(!Selector::parse("region=eu").unwrap().matches(&d));
}

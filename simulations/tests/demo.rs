//! The quick-start demo's whole story, on a small fleet: real controller, embedded broker, real agents,
//! load, three rollouts. Every expected outcome must happen, and the report must say so.

use outpost_simulations::demo::{self, Args};

#[test]
fn the_demo_story_happens_end_to_end_and_the_report_records_it() {
    let out = std::env::temp_dir().join(format!("outpost-demo-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let outcome = demo::run(&Args { devices: 5, keep_running: false, out: out.clone(), rps: 15 }).unwrap();
    let failed: Vec<String> =
        outcome.checks.iter().filter(|c| !c.ok).map(|c| format!("{}: {}", c.what, c.observed)).collect();
    assert!(outcome.passed && failed.is_empty(), "expected outcomes that did not happen: {failed:#?}");
    assert!(outcome.checks.len() >= 9, "every step was checked: {:#?}", outcome.checks);

    let summary = std::fs::read_to_string(outcome.report.join("summary.md")).unwrap();
    assert!(summary.contains("Every expected outcome happened"), "{summary}");
    assert!(summary.contains("### digits 2.1.0: rolled back"), "{summary}");
    assert!(summary.contains("### vibration 1.1.0: completed"), "the second model's own rollout: {summary}");
    assert!(summary.contains("| vibration 1.1.0 |"), "what the applications got from it: {summary}");
    assert!(summary.contains("shadow agreement") && summary.contains("FAIL"), "the failing gate is shown: {summary}");
    assert!(summary.contains("| 1 | FAILED: rolled back |"), "caught in the first wave: {summary}");
    for chart in ["devices-per-version.svg", "answers-per-version.svg", "gate-shadow-agreement.svg"] {
        let svg = std::fs::read_to_string(outcome.report.join(chart)).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{chart}");
    }
    // The demo refuses to wipe a folder it did not make.
    let foreign = std::env::temp_dir().join(format!("outpost-demo-foreign-{}", std::process::id()));
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("precious.txt"), "keep me").unwrap();
    let err = demo::run(&Args { devices: 5, keep_running: false, out: foreign.clone(), rps: 15 }).unwrap_err();
    assert!(err.to_string().contains("refusing to overwrite"), "{err}");
    assert!(foreign.join("precious.txt").exists());
    let _ = std::fs::remove_dir_all(&foreign);
    let _ = std::fs::remove_dir_all(&out);
}

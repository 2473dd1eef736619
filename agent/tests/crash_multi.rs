//! A real crash while a second model installs: model A (`detector`, installed locally) serves; the fleet
//! installs model B (`digits`) and the agent process is killed with SIGKILL inside each stage of B's
//! update (a failpoint holds it right after it persisted its entry into the stage). After each restart A
//! answers at once, exactly as before, and B's update either completes or rolls back cleanly: B then
//! serves the release its last event names, or what it served before (nothing, the first time).

mod support;

use outpost_protocol::DeviceId;
use outpost_protocol::messages::{Mode, Watch};
use outpost_protocol::telemetry::UpdateStage;
use std::process::Command;
use std::time::{Duration, Instant};
use support::broker::Mosquitto;
use support::controller::FakeController;
use support::*;

fn serving(agent: &AgentProcess, model: &str) -> Option<String> {
    let r = agent.get(&format!("/v2/models/{model}"));
    (r.status == 200).then(|| r.json()["versions"][0].as_str().unwrap().to_owned())
}

#[test]
fn kill_9_during_b_install_leaves_a_serving_and_b_complete_or_cleanly_rolled_back() {
    let dir = tempdir("crash-multi");
    let broker = Mosquitto::start(&dir);
    let ctl = FakeController::start(broker.port);
    let device = DeviceId::new("dev-crash-multi").unwrap();
    let extra = format!("[link]\nbroker = \"{}\"\ndevice_id = \"{device}\"\n", broker.url());
    // A, installed by hand before the agent first runs.
    trust_files(&dir);
    let install = install_local(&dir, &signed_bundle_named("detector", "v2", "1.0.0", 1), &[]);
    assert!(install.status.success(), "{}", String::from_utf8_lossy(&install.stderr));
    let mut agent = AgentProcess::spawn(&dir, &extra);
    let image = test_set().0[3].clone();
    let a = answer(agent.addr, "detector", &image).expect("A serves");
    assert_eq!(a.0, "1.0.0");

    let watch = Watch { secs: 2, ..Watch::default() };
    let stages = [
        UpdateStage::Fetching,
        UpdateStage::Verifying,
        UpdateStage::SelfTest,
        UpdateStage::Activating,
        UpdateStage::Watching,
    ];
    let mut b_before: Option<String> = None;
    for (i, stage) in stages.into_iter().enumerate() {
        let seq = i as u64 + 1;
        let version = format!("{seq}.0.0");
        let file = if seq.is_multiple_of(2) { "v2" } else { "v1" };
        agent.kill9();
        agent.restart_with(&[("OUTPOST_FAILPOINT_STALL", &format!("{stage:?}"))]);
        let bundle = ctl.offer(signed_bundle(file, &version, seq));
        ctl.desire(&device, &version, seq, bundle, Mode::Activate, watch);
        ctl.wait_event(&version, stage);
        // Held inside B's stage: A answers as before.
        assert_eq!(answer(agent.addr, "detector", &image).as_ref(), Some(&a), "{stage:?}: A while B is held");
        agent.kill9();
        agent.restart();
        // Right after the restart, before B's update resumes: A answers exactly as before, and B serves a
        // release it had (or nothing yet), never a broken one.
        assert_eq!(answer(agent.addr, "detector", &image).as_ref(), Some(&a), "{stage:?}: A after the crash");
        let b_now = serving(&agent, "digits");
        assert!(b_now == b_before || b_now.as_deref() == Some(version.as_str()), "{stage:?}: B serves {b_now:?}");

        // B's update ends: committed (B serves it), or rolled back / rejected (B serves what it did before).
        let deadline = Instant::now() + Duration::from_secs(90);
        let end = loop {
            let seen = ctl.seen.lock().unwrap();
            let last = seen.events.iter().rev().find(|e| e.version.to_string() == version).cloned();
            drop(seen);
            if let Some(e) = last
                .filter(|e| matches!(e.to, UpdateStage::Committed | UpdateStage::RolledBack | UpdateStage::Rejected))
            {
                break e;
            }
            assert!(Instant::now() < deadline, "{stage:?}: B's update did not end; log:\n{}", agent.log());
            std::thread::sleep(Duration::from_millis(100));
        };
        let want = if end.to == UpdateStage::Committed { Some(version.clone()) } else { b_before.clone() };
        let deadline = Instant::now() + Duration::from_secs(30);
        while serving(&agent, "digits") != want {
            assert!(
                Instant::now() < deadline,
                "{stage:?}: B ended {:?} but serves {:?}",
                end.to,
                serving(&agent, "digits")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(answer(agent.addr, "detector", &image).as_ref(), Some(&a), "{stage:?}: A after B's update");
        println!("kill -9 in B's {stage:?}: A served throughout; B {:?} ({})", end.to, end.detail);
        b_before = want;
    }
    assert!(b_before.is_some(), "B completed at least once");
    // The slot table on disk names both models, each a complete, digest-checked model.
    let selftest = Command::new(env!("CARGO_BIN_EXE_outpost-agent"))
        .args(["selftest", "--data-dir", &dir.join("data").display().to_string()])
        .output()
        .unwrap();
    assert!(selftest.status.success(), "{}", String::from_utf8_lossy(&selftest.stderr));
}

//! Real crashes during updates: `kill -9` the agent process inside every update state, restart it, and
//! check the update resumes (or rolls back), the agent serves a verified model, and no acked telemetry
//! is missing. A failpoint stalls the agent right after it persisted its entry into the state.

mod support;

use outpost_protocol::DeviceId;
use outpost_protocol::messages::{Mode, Watch};
use outpost_protocol::telemetry::UpdateStage;
use std::time::Duration;
use support::broker::Mosquitto;
use support::controller::FakeController;
use support::*;

fn serving(agent: &AgentProcess) -> Option<String> {
    let r = agent.get("/v2/models/digits");
    (r.status == 200).then(|| r.json()["versions"][0].as_str().unwrap().to_owned())
}

fn wait_serving(agent: &AgentProcess, version: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while serving(agent).as_deref() != Some(version) {
        assert!(std::time::Instant::now() < deadline, "not serving {version}; log:\n{}", agent.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn kill_9_inside_every_update_state_resumes_and_the_agent_always_serves_a_verified_model() {
    let dir = tempdir("crash-update");
    let broker = Mosquitto::start(&dir);
    let ctl = FakeController::start(broker.port);
    let device = DeviceId::new("dev-crash").unwrap();
    let extra =
        format!("[link]\nbroker = \"{}\"\ndevice_id = \"{device}\"\n[telemetry]\nwindow = \"1s\"\n", broker.url());
    let mut agent = AgentProcess::spawn(&dir, &extra);
    let watch = Watch { secs: 2, ..Watch::default() };
    let v1 = ctl.offer(signed_bundle("v1", "1.0.0", 1));
    ctl.desire(&device, "1.0.0", 1, v1, Mode::Activate, watch);
    ctl.wait_event("1.0.0", UpdateStage::Committed);
    wait_serving(&agent, "1.0.0");

    let stages = [
        UpdateStage::Fetching,
        UpdateStage::Verifying,
        UpdateStage::SelfTest,
        UpdateStage::Shadow,
        UpdateStage::Activating,
        UpdateStage::Watching,
    ];
    let mut last_version = "1.0.0".to_string();
    for (i, stage) in stages.into_iter().enumerate() {
        let seq = i as u64 + 2;
        let version = format!("{seq}.0.0");
        let model = if seq.is_multiple_of(2) { "v2" } else { "v1" };
        agent.kill9();
        agent.restart_with(&[("OUTPOST_FAILPOINT_STALL", &format!("{stage:?}"))]);
        let bundle = ctl.offer(signed_bundle(model, &version, seq));
        ctl.desire(&device, &version, seq, bundle, Mode::Shadow { secs: 1, sample_percent: 50 }, watch);
        ctl.wait_event(&version, stage);
        // Inside the stage (the failpoint holds it there): crash. The broker publishes the last will.
        std::thread::sleep(Duration::from_millis(200));
        let offline_before = ctl.seen.lock().unwrap().presence.iter().filter(|(_, on)| !on).count();
        agent.kill9();
        ctl.wait_until("the last will marking the device offline", |s| {
            s.presence.iter().filter(|(_, on)| !on).count() > offline_before
        });
        agent.restart();
        // Whatever the state, a verified model answers right after the restart.
        let now = serving(&agent).expect("a model serves after the restart");
        assert!(now == last_version || now == version, "{stage:?}: serving {now}");
        ctl.wait_event(&version, UpdateStage::Committed);
        wait_serving(&agent, &version);
        println!("kill -9 in {stage:?}: resumed and committed {version}");
        last_version = version;
    }
    let selftest = std::process::Command::new(env!("CARGO_BIN_EXE_outpost-agent"))
        .args(["selftest", "--data-dir", &dir.join("data").display().to_string()])
        .output()
        .unwrap();
    assert!(selftest.status.success(), "{}", String::from_utf8_lossy(&selftest.stderr));

    // Acked telemetry is never lost: the controller holds an unbroken sequence from 1.
    std::thread::sleep(Duration::from_secs(3));
    let seen = ctl.seen.lock().unwrap();
    let seqs: Vec<u64> = seen.records.keys().copied().collect();
    assert_eq!(seqs, (1..=*seqs.last().unwrap()).collect::<Vec<_>>(), "no gap in the telemetry sequence");
    println!("{} telemetry records, {} duplicates de-duplicated", seqs.len(), seen.duplicates);
}

#[test]
fn a_fetch_killed_halfway_through_a_10_mb_bundle_resumes_from_the_first_missing_chunk() {
    let dir = tempdir("crash-fetch");
    let broker = Mosquitto::start(&dir);
    let ctl = FakeController::start(broker.port);
    let device = DeviceId::new("dev-resume").unwrap();
    let extra = format!("[link]\nbroker = \"{}\"\ndevice_id = \"{device}\"\n", broker.url());
    let mut agent = AgentProcess::spawn(&dir, &extra);
    // 10 MB of signed payload: a real bundle whose model happens to be noise (it fails to load later,
    // which does not matter here: what is measured is the fetch).
    let mut noise = vec![0u8; 10 << 20];
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for b in noise.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let v1 = model_bytes("v1");
    let m = manifest(&v1, "9.0.0", 9);
    let bundle = bundle_with(&m, &noise, &release());
    let size = bundle.len() as u64;
    let r = ctl.offer(bundle);
    *ctl.chunk_delay.lock().unwrap() = Duration::from_millis(3);
    ctl.desire(&device, "9.0.0", 9, r, Mode::Activate, Watch::default());
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while ctl.seen.lock().unwrap().chunk_bytes_sent < size / 2 {
        assert!(std::time::Instant::now() < deadline, "fetch too slow");
        std::thread::sleep(Duration::from_millis(5));
    }
    agent.kill9();
    let sent_at_kill = ctl.seen.lock().unwrap().chunk_bytes_sent;
    agent.restart();
    ctl.wait_event("9.0.0", UpdateStage::Verifying);
    let total = ctl.seen.lock().unwrap().chunk_bytes_sent;
    let refetched = total.saturating_sub(size);
    println!(
        "10 MB fetch killed at {:.0} %: {} bytes sent in all for a {size}-byte bundle, {refetched} bytes ({:.2} %) fetched twice",
        100.0 * sent_at_kill as f64 / size as f64,
        total,
        100.0 * refetched as f64 / size as f64
    );
    assert!(refetched < size / 20, "resuming re-fetched {refetched} of {size} bytes");
    let rejected = ctl.wait_event("9.0.0", UpdateStage::Rejected);
    assert_eq!(rejected.reason, Some(outpost_protocol::RejectReason::ModelUnloadable), "{}", rejected.detail);
}

#[test]
fn telemetry_survives_many_kill_9_rounds_of_the_agent_process() {
    let dir = tempdir("crash-telemetry");
    let broker = Mosquitto::start(&dir);
    let ctl = FakeController::start(broker.port);
    let device = DeviceId::new("dev-rounds").unwrap();
    let extra =
        format!("[link]\nbroker = \"{}\"\ndevice_id = \"{device}\"\n[telemetry]\nwindow = \"50ms\"\n", broker.url());
    let mut agent = AgentProcess::spawn(&dir, &extra);
    let mut seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    println!("seed {seed}");
    let rounds = 20;
    for _ in 0..rounds {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(200 + seed % 400));
        agent.kill9();
        agent.restart();
    }
    std::thread::sleep(Duration::from_millis(500));
    agent.kill9();
    // What the controller acked plus what the agent still holds is every record ever written: none lost.
    let queue = outpost_agent::telemetry::queue::TelemetryQueue::open(
        &dir.join("data/telemetry.redb"),
        outpost_agent::telemetry::queue::QueueConfig::default(),
    )
    .unwrap();
    let stats = queue.stats().unwrap();
    let mut held = std::collections::BTreeSet::new();
    let mut after = stats.acked_up_to;
    while let Some(batch) = queue.batch_after(after, 1 << 20).unwrap() {
        held.extend(batch.records.iter().map(|r| r.seq));
        after = batch.last_seq;
    }
    let seen = ctl.seen.lock().unwrap();
    let delivered: std::collections::BTreeSet<u64> = seen.records.keys().copied().collect();
    let missing: Vec<u64> = (1..=stats.last_seq).filter(|s| !delivered.contains(s) && !held.contains(s)).collect();
    println!(
        "{rounds} kill -9 rounds: {} records written, {} delivered, {} still queued, {} lost, {} duplicates de-duplicated",
        stats.last_seq,
        delivered.len(),
        held.len(),
        missing.len(),
        seen.duplicates
    );
    assert!(stats.last_seq > 100, "the agent wrote telemetry throughout");
    assert!(missing.is_empty(), "lost records: {missing:?}");
    assert!((1..=stats.acked_up_to).all(|s| delivered.contains(&s)), "everything acked was delivered");
}

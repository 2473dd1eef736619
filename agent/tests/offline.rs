//! Offline: the broker dies under inference load and comes back. Inference never stops, telemetry is
//! buffered on disk meanwhile, and afterwards every record arrives, each sequence number exactly once
//! after the controller's de-duplication.

mod support;

use outpost_protocol::DeviceId;
use outpost_protocol::messages::{Mode, Watch};
use outpost_protocol::telemetry::{RecordBody, UpdateStage};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use support::broker::Mosquitto;
use support::controller::FakeController;
use support::*;

#[test]
fn a_broker_outage_under_load_loses_no_telemetry_and_never_stops_inference() {
    let dir = tempdir("offline");
    let mut broker = Mosquitto::start(&dir);
    let ctl = FakeController::start(broker.port);
    let device = DeviceId::new("dev-offline").unwrap();
    let extra = format!(
        "[link]\nbroker = \"{}\"\ndevice_id = \"{device}\"\n[telemetry]\nwindow = \"1s\"\n[cache]\nmax_entries = 0\n",
        broker.url()
    );
    let agent = Agent::start(config(&dir, &extra));
    let v1 = ctl.offer(signed_bundle("v1", "1.0.0", 1));
    let watch = Watch { secs: 1, ..Watch::default() };
    ctl.desire(&device, "1.0.0", 1, v1, Mode::Activate, watch);
    ctl.wait_event("1.0.0", UpdateStage::Committed);

    // Load: a client thread sending requests the whole time, counting failures.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let addr = agent.addr;
    let load = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        let (images, _) = test_set();
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let r = http(addr, "POST", "/v2/models/digits/infer", &infer_body(&images[i % 360..i % 360 + 1]));
                if r.status == 200 {
                    ok.fetch_add(1, Ordering::Relaxed)
                } else {
                    failed.fetch_add(1, Ordering::Relaxed)
                };
                i += 1;
            }
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    broker.stop();
    let served_before_outage = ok.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(5));
    let served_during_outage = ok.load(Ordering::Relaxed) - served_before_outage;
    broker.resume();
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();

    // Everything the agent buffered arrives: wait until the queue is drained (status shows no backlog).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let agent_last = loop {
        let seen = ctl.seen.lock().unwrap();
        let last = seen.records.keys().next_back().copied().unwrap_or(0);
        let windows_after = seen.records.values().filter(|r| matches!(r.body, RecordBody::Health(_))).count();
        drop(seen);
        if windows_after >= 9 {
            break last;
        }
        assert!(std::time::Instant::now() < deadline, "telemetry did not catch up after the outage");
        std::thread::sleep(Duration::from_millis(200));
    };
    let seen = ctl.seen.lock().unwrap();
    // Health records measure the device: free disk space of the data directory's filesystem.
    for r in seen.records.values() {
        if let RecordBody::Health(h) = &r.body {
            assert!(h.disk_free_bytes > 0 && h.rss_bytes > 0, "{h:?}");
        }
    }
    let seqs: Vec<u64> = seen.records.keys().copied().collect();
    assert_eq!(seqs, (1..=agent_last).collect::<Vec<_>>(), "every record from 1 to {agent_last}, none missing");
    let inference: u64 = seen
        .records
        .values()
        .filter_map(|r| if let RecordBody::Inference(w) = &r.body { Some(w.requests) } else { None })
        .sum();
    println!(
        "outage: {served_during_outage} requests served while the broker was down, {} failed; {} records, {} duplicates dropped by (device, seq); {inference} requests in telemetry",
        failed.load(Ordering::Relaxed),
        seqs.len(),
        seen.duplicates
    );
    assert!(served_during_outage > 50, "inference kept serving during the outage");
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no request failed because the broker was down");
    assert!(inference >= served_before_outage + served_during_outage, "the outage's windows were reported");
}

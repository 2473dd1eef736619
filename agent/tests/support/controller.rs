//! A small stand-in for the controller, over the real broker: it publishes retained desired states,
//! serves chunk requests from bundles it holds (optionally corrupting one chunk once), stores and acks
//! telemetry (de-duplicated by sequence), and records update events. The real controller replaces it
//! in the controller's own tests.

use outpost_protocol::codec;
use outpost_protocol::director::SignedDesired;
use outpost_protocol::messages::*;
use outpost_protocol::telemetry::{Record, UpdateEvent, UpdateStage};
use outpost_protocol::topics::{self, Down, Up};
use outpost_protocol::{DeviceId, Digest, Limits, ModelName, Version};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const CHUNK: u32 = 16 << 10;

#[derive(Default)]
pub struct Seen {
    pub events: Vec<UpdateEvent>,
    pub records: BTreeMap<u64, Record>,
    pub duplicates: u64,
    pub hellos: u64,
    pub chunk_requests: u64,
    pub chunks_sent: u64,
    pub chunk_bytes_sent: u64,
    /// (device, online) in arrival order: hellos mark online, the last will marks offline.
    pub presence: Vec<(String, bool)>,
}

pub struct FakeController {
    client: AsyncClient,
    bundles: Arc<Mutex<HashMap<Digest, Vec<u8>>>>,
    /// Chunk indexes to corrupt once, per bundle.
    corrupt: Arc<Mutex<HashMap<Digest, Vec<u32>>>>,
    pub seen: Arc<Mutex<Seen>>,
    /// Pause between chunks, to make a fetch last long enough to interrupt it.
    pub chunk_delay: Arc<Mutex<Duration>>,
    rt: tokio::runtime::Runtime,
}

impl FakeController {
    pub fn start(port: u16) -> FakeController {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let mut o = MqttOptions::new("fake-controller", "127.0.0.1", port);
        o.set_max_packet_size(2 << 20, 2 << 20);
        o.set_keep_alive(Duration::from_secs(5));
        let (client, mut eventloop) = AsyncClient::new(o, 256);
        let bundles: Arc<Mutex<HashMap<Digest, Vec<u8>>>> = Arc::default();
        let corrupt: Arc<Mutex<HashMap<Digest, Vec<u32>>>> = Arc::default();
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let chunk_delay: Arc<Mutex<Duration>> = Arc::default();
        let (c, b, k, s, dl) = (client.clone(), bundles.clone(), corrupt.clone(), seen.clone(), chunk_delay.clone());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        rt.spawn(async move {
            let mut ready = Some(ready_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        c.subscribe(format!("{}/+/up/+", topics::PREFIX), QoS::AtLeastOnce).await.unwrap();
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        // Chunk requests are served on their own task so a slow fetch never blocks acks.
                        let (c, b, k, s, dl) = (c.clone(), b.clone(), k.clone(), s.clone(), dl.clone());
                        tokio::spawn(async move { handle(&c, &b, &k, &s, &dl, &p.topic, &p.payload).await });
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        ready_rx.recv_timeout(Duration::from_secs(10)).expect("fake controller subscribed");
        FakeController { client, bundles, corrupt, seen, chunk_delay, rt }
    }

    /// Holds `bundle` for chunk requests and returns its reference.
    pub fn offer(&self, bundle: Vec<u8>) -> BundleRef {
        let chunks = bundle.chunks(CHUNK as usize).map(Digest::of).collect();
        let r = BundleRef { digest: Digest::of(&bundle), size: bundle.len() as u64, chunk_size: CHUNK, chunks };
        self.bundles.lock().unwrap().insert(r.digest, bundle);
        r
    }

    pub fn corrupt_once(&self, bundle: Digest, index: u32) {
        self.corrupt.lock().unwrap().entry(bundle).or_default().push(index);
    }

    pub fn desire(&self, device: &DeviceId, version: &str, sequence: u64, bundle: BundleRef, mode: Mode, watch: Watch) {
        let d = DesiredState {
            model: ModelName::new("digits").unwrap(),
            version: version.parse::<Version>().unwrap(),
            sequence,
            bundle,
            rollout: Some(format!("r-{sequence}")),
            mode,
            issued_at: super::now(),
            watch,
        };
        self.direct(device, &d);
    }

    /// Publishes `d` as the real controller does: the director's statement, signed for `device` with the
    /// director key the test trust policy names.
    pub fn direct(&self, device: &DeviceId, d: &DesiredState) {
        let signed = SignedDesired::sign(device, d, &super::director());
        let bytes = codec::encode(&Message::SignedDesired(signed));
        let (c, topic) = (self.client.clone(), topics::down(device, &Down::Desired(d.model.clone())));
        self.rt.block_on(async move { c.publish(topic, QoS::AtLeastOnce, true, bytes).await.unwrap() });
    }

    /// Publishes `d` as the retained desired state of its model, exactly as given (attack tests forge them).
    pub fn publish_desired(&self, device: &DeviceId, d: &DesiredState) {
        let bytes = codec::encode(&Message::Desired(d.clone()));
        let (c, topic) = (self.client.clone(), topics::down(device, &Down::Desired(d.model.clone())));
        self.rt.block_on(async move { c.publish(topic, QoS::AtLeastOnce, true, bytes).await.unwrap() });
    }

    /// Publishes raw bytes (for malformed-input tests).
    pub fn publish_raw(&self, topic: String, bytes: Vec<u8>, retain: bool) {
        let c = self.client.clone();
        self.rt.block_on(async move { c.publish(topic, QoS::AtLeastOnce, retain, bytes).await.unwrap() });
    }

    /// Waits until `ok` holds for what was seen.
    pub fn wait_until(&self, what: &str, ok: impl Fn(&Seen) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ok(&self.seen.lock().unwrap()) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for an update event reaching `to` for `version`; returns it.
    pub fn wait_event(&self, version: &str, to: UpdateStage) -> UpdateEvent {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            {
                let s = self.seen.lock().unwrap();
                if let Some(e) = s.events.iter().find(|e| e.version.to_string() == version && e.to == to) {
                    return e.clone();
                }
                assert!(
                    Instant::now() < deadline,
                    "no {to:?} event for {version}; events so far: {:#?}",
                    s.events.iter().map(|e| (e.version.to_string(), e.to, e.reason, &e.detail)).collect::<Vec<_>>()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

async fn handle(
    c: &AsyncClient,
    bundles: &Mutex<HashMap<Digest, Vec<u8>>>,
    corrupt: &Mutex<HashMap<Digest, Vec<u32>>>,
    seen: &Mutex<Seen>,
    chunk_delay: &Mutex<Duration>,
    topic: &str,
    payload: &[u8],
) {
    let Some(topics::Parsed::Up(device, kind)) = topics::parse(topic) else { return };
    let Ok(msg) = codec::decode(payload, &Limits::default()) else { return };
    match (kind, msg) {
        (Up::Hello, Message::Hello(_)) => seen.lock().unwrap().hellos += 1,
        (Up::Presence, Message::Presence(p)) => seen.lock().unwrap().presence.push((p.device.to_string(), p.online)),
        (Up::Events, Message::Event(e)) => seen.lock().unwrap().events.push(e),
        (Up::Telemetry, Message::Telemetry(batch)) => {
            let up_to = {
                let mut s = seen.lock().unwrap();
                for r in batch.records {
                    if let Some(old) = s.records.insert(r.seq, r) {
                        let _ = old;
                        s.duplicates += 1;
                    }
                }
                batch.last_seq
            };
            let ack = codec::encode(&Message::TelemetryAck(TelemetryAck { up_to_seq: up_to, hello_wanted: false }));
            let _ = c.publish(topics::down(&device, &Down::Ack), QoS::AtLeastOnce, false, ack).await;
        }
        (Up::Fetch, Message::ChunkRequest(req)) => {
            seen.lock().unwrap().chunk_requests += 1;
            let Some(bundle) = bundles.lock().unwrap().get(&req.bundle).cloned() else { return };
            let total = bundle.len().div_ceil(CHUNK as usize) as u32;
            for index in req.first..(req.first + req.count).min(total) {
                let start = index as usize * CHUNK as usize;
                let mut data = bundle[start..(start + CHUNK as usize).min(bundle.len())].to_vec();
                let bad = {
                    let mut k = corrupt.lock().unwrap();
                    let list = k.entry(req.bundle).or_default();
                    list.iter().position(|i| *i == index).map(|p| list.remove(p)).is_some()
                };
                if bad {
                    data[0] ^= 0xff;
                }
                let chunk = codec::encode(&Message::Chunk(Chunk { bundle: req.bundle, index, total, data }));
                let _ = c.publish(topics::down(&device, &Down::Chunk), QoS::AtLeastOnce, false, chunk).await;
                {
                    let mut s = seen.lock().unwrap();
                    s.chunks_sent += 1;
                    s.chunk_bytes_sent +=
                        u64::from(CHUNK).min(bundle.len() as u64 - u64::from(index) * u64::from(CHUNK));
                }
                let delay = *chunk_delay.lock().unwrap();
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
            }
        }
        _ => {}
    }
}

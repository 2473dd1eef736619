//! The controller's side of MQTT: one client that reads every device's up topics through a shared
//! subscription (replicas split the ingest), keeps the registry, acks telemetry after the device record
//! is durably stored, serves chunk requests from the bundle store, and publishes retained desired states.

use super::registry::{DeviceRecord, EventPath};
use super::store::{Store, Table};
use outpost_protocol::codec;
use outpost_protocol::director::SignedDesired;
use outpost_protocol::enroll;
use outpost_protocol::keys::PrivateKey;
use outpost_protocol::messages::{DesiredState, Message, TelemetryAck};
use outpost_protocol::topics::{self, Down, Up};
use outpost_protocol::{DeviceId, Limits, ModelName};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct Fleet {
    pub(super) client: AsyncClient,
    /// The enrollment broker's connection when `[enroll] broker` names one (mosquitto-enroll.conf: anonymous
    /// enrolling clients in a process of their own); `None`: enrollment rides `client`.
    enroll_client: Option<AsyncClient>,
    pub(super) store: Arc<Store>,
    pub(super) devices: Mutex<BTreeMap<DeviceId, DeviceRecord>>,
    /// Chunk serving: its cache and rate limits (`chunks.rs`).
    pub(super) chunks: super::chunks::Chunks,
    /// Device identities: the CA, the revocation hook and the audit rate limit (`enrollment.rs`).
    pub(super) identity: super::enrollment::Identity,
    /// Devices whose hello this process received. A device connected before the controller subscribed
    /// (or across a controller restart) is asked for its hello in its next telemetry ack.
    greeted: Mutex<HashSet<DeviceId>>,
    /// The fleet's trust frame last published (`fleet_trust.rs`), published again on every connect.
    pub(super) trust_frame: Mutex<Option<Vec<u8>>>,
    /// Counters and chart histories for /metrics and the console (`observe.rs`).
    pub observed: super::observe::Observations,
    /// Signs every desired state for its device (`director.rs`).
    director: PrivateKey,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet").finish_non_exhaustive()
    }
}

pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Fleet {
    /// Connects to the broker and starts the ingest task. `client_id` must be unique per replica.
    pub fn start(
        options: MqttOptions,
        store: Arc<Store>,
        identity: super::enrollment::Identity,
        director: PrivateKey,
    ) -> anyhow::Result<Arc<Fleet>> {
        Fleet::start_with_enrollment(options, None, store, identity, director)
    }

    /// [`Fleet::start`], with enrollment requests read and answered on a broker of their own when
    /// `enroll` is given.
    pub fn start_with_enrollment(
        options: MqttOptions,
        enroll: Option<MqttOptions>,
        store: Arc<Store>,
        identity: super::enrollment::Identity,
        director: PrivateKey,
    ) -> anyhow::Result<Arc<Fleet>> {
        let (client, mut eventloop) = AsyncClient::new(options, 1024);
        let enroll = enroll.map(|o| AsyncClient::new(o, 256));
        let mut devices = BTreeMap::new();
        for d in store.all::<DeviceRecord>(Table::Devices)? {
            devices.insert(d.id.clone(), d);
        }
        let fleet = Arc::new(Fleet {
            client,
            enroll_client: enroll.as_ref().map(|(c, _)| c.clone()),
            store,
            devices: Mutex::new(devices),
            chunks: Default::default(),
            identity,
            greeted: Mutex::default(),
            trust_frame: Mutex::default(),
            observed: Default::default(),
            director,
        });
        // Only `eventloop.poll()` drains the client's request channel (1024 publishes), and handling a
        // message publishes (acks, chunks). Handled inside the poll loop, a full channel blocks the handler
        // and with it the only thing that empties the channel: at 1,000 devices the controller froze for
        // good once a rollout's desired states and the acks filled it. So messages go in order to one
        // handler task through a bounded inbox (`inbox.rs`: the poll loop waits while it is full), the
        // handler never waits on the request channel (`send`), and the republish at connect runs apart.
        let (to_handler, mut incoming) = super::inbox::bounded(super::inbox::MAX_MESSAGES, super::inbox::MAX_BYTES);
        let to_handler = Arc::new(to_handler);
        if let Some((_, enroll_loop)) = enroll {
            tokio::spawn(fleet.clone().enrollment_loop(enroll_loop, to_handler.clone()));
        }
        let h = fleet.clone();
        tokio::spawn(async move {
            while let Some(r) = incoming.recv().await {
                h.handle(&r.publish.topic, &r.publish.payload).await;
            }
        });
        let f = fleet.clone();
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        tracing::info!("controller connected to the broker");
                        let f = f.clone();
                        tokio::spawn(async move {
                            let _ = f.client.subscribe(topics::controller_subscription(), QoS::AtLeastOnce).await;
                            if f.enroll_client.is_none() {
                                let _ = f.client.subscribe(enroll::controller_subscription(), QoS::AtLeastOnce).await;
                            }
                            f.republish_desired().await;
                            f.republish_trust().await;
                        });
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        f.observed.message_in(&p.topic, p.payload.len());
                        to_handler.send(p).await;
                    }
                    Ok(Event::Outgoing(rumqttc::Outgoing::Publish(_))) => f.observed.message_out(),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "controller lost the broker; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        });
        Ok(fleet)
    }

    /// Reads the enrollment broker: only enrollment requests go on to the handler, whatever else arrives.
    async fn enrollment_loop(
        self: Arc<Fleet>,
        mut eventloop: rumqttc::EventLoop,
        to_handler: Arc<super::inbox::Sender>,
    ) {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    tracing::info!("controller connected to the enrollment broker");
                    let f = self.clone();
                    tokio::spawn(async move {
                        if let Some(c) = &f.enroll_client {
                            let _ = c.subscribe(enroll::controller_subscription(), QoS::AtLeastOnce).await;
                        }
                    });
                }
                Ok(Event::Incoming(Packet::Publish(p))) if enroll::parse_request_topic(&p.topic).is_some() => {
                    self.observed.message_in(&p.topic, p.payload.len());
                    to_handler.send(p).await;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "controller lost the enrollment broker; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    /// The fleet: every device but the decommissioned ones (their tombstones only keep their ids revoked).
    pub fn devices(&self) -> Vec<DeviceRecord> {
        self.devices.lock().expect("devices").values().filter(|d| d.decommissioned.is_none()).cloned().collect()
    }

    /// One page of the device list, in id order: only the records it lists are copied (a clone of the
    /// whole fleet per request would be 1.3 GB at 100,000 devices).
    pub fn devices_page(&self, q: &super::device_list::ListQuery) -> Vec<DeviceRecord> {
        use std::ops::Bound;
        let devices = self.devices.lock().expect("devices");
        let from = q.after.as_ref().map_or(Bound::Unbounded, Bound::Excluded);
        devices
            .range((from, Bound::Unbounded))
            .map(|(_, d)| d)
            .filter(|d| d.decommissioned.is_none() && q.selects(d))
            .take(q.limit.unwrap_or(usize::MAX))
            .map(|d| q.shape(d.clone()))
            .collect()
    }

    /// Every record, tombstones of decommissioned devices included (the CRL lists their certificates).
    pub(super) fn all_records(&self) -> Vec<DeviceRecord> {
        self.devices.lock().expect("devices").values().cloned().collect()
    }

    /// The device's record, a decommissioned device's tombstone included.
    pub fn device(&self, id: &DeviceId) -> Option<DeviceRecord> {
        self.devices.lock().expect("devices").get(id).cloned()
    }

    pub(super) fn save(&self, d: &DeviceRecord) {
        if let Err(e) = self.store.put(Table::Devices, d.id.as_str(), d) {
            tracing::error!(device = %d.id, error = %e, "cannot store the device record");
        }
    }

    /// Applies `change` to the device's record (creating it on first contact) and stores it.
    pub(super) fn update<R>(&self, id: &DeviceId, change: impl FnOnce(&mut DeviceRecord) -> R) -> R {
        let mut devices = self.devices.lock().expect("devices");
        let d = devices.entry(id.clone()).or_insert_with(|| DeviceRecord::new(id.clone(), now()));
        let r = change(d);
        self.save(d);
        r
    }

    async fn handle(&self, topic: &str, payload: &[u8]) {
        if let Some(device) = enroll::parse_request_topic(topic) {
            return self.enroll(device, payload);
        }
        let Some(topics::Parsed::Up(device, kind)) = topics::parse(topic) else { return };
        // A revoked device may still hold a connection (or the broker may not have reloaded its CRL yet):
        // nothing it says reaches the registry.
        if self.is_revoked(&device) {
            return self.ignore_revoked(&device, kind.as_str());
        }
        let msg = match codec::decode(payload, &Limits::default()) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(%device, topic, error = %e, "dropping a malformed message");
                return;
            }
        };
        let t = now();
        match (kind, msg) {
            (Up::Hello, Message::Hello(h)) if h.device == device => {
                self.greeted.lock().expect("greeted").insert(device.clone());
                self.update(&device, |d| d.hello(h, t))
            }
            (Up::Presence, Message::Presence(p)) if p.device == device => self.update(&device, |d| d.presence(p, t)),
            (Up::Events, Message::Event(e)) => self.update(&device, |d| d.event(e, EventPath::Live, t)),
            (Up::Telemetry, Message::Telemetry(batch)) => {
                // Stored before acked: what the device deletes is never lost here.
                let up_to = self.update(&device, |d| {
                    self.observed.telemetry(&device, &batch, d.telemetry.up_to, t);
                    d.telemetry(batch, t)
                });
                let hello_wanted = !self.greeted.lock().expect("greeted").contains(&device);
                let ack = codec::encode(&Message::TelemetryAck(TelemetryAck { up_to_seq: up_to, hello_wanted }));
                self.send(topics::down(&device, &Down::Ack), ack);
            }
            (Up::Report, Message::Report(r)) => self.report(&device, r),
            (Up::Fetch, Message::ChunkRequest(req)) => self.serve_chunks(&device, req.bundle, req.first, req.count),
            (kind, _) => tracing::warn!(%device, kind = kind.as_str(), "dropping an unexpected message"),
        }
    }

    /// Publishes a reply from the message handler without waiting: the handler must never wait on the
    /// request channel (`inbox.rs`). A reply that does not fit is dropped; the device asks again.
    pub(super) fn send(&self, topic: String, payload: Vec<u8>) {
        if let Err(e) = self.client.try_publish(topic, QoS::AtLeastOnce, false, payload) {
            tracing::debug!(error = %e, "reply dropped: the broker connection is behind");
        }
    }

    /// [`Fleet::send`] for enrollment answers: on the enrollment broker when there is one.
    pub(super) fn send_enrollment(&self, topic: String, payload: Vec<u8>) {
        let client = self.enroll_client.as_ref().unwrap_or(&self.client);
        if let Err(e) = client.try_publish(topic, QoS::AtLeastOnce, false, payload) {
            tracing::debug!(error = %e, "enrollment answer dropped: the broker connection is behind");
        }
    }

    /// Publishes (retained) and records a device's desired state.
    pub async fn desire(&self, device: &DeviceId, desired: DesiredState) -> anyhow::Result<()> {
        // A decommissioned device is told nothing again: a rollout that still counts it as a member must
        // not leave a retained desired state for an id that is gone.
        if self.device(device).is_some_and(|d| d.decommissioned.is_some()) {
            return Ok(());
        }
        // Persisted with its stamp before it is published: a restart republishes the same statement.
        let desired = self.update(device, |d| d.desire(desired));
        let bytes = self.signed_desired(device, &desired);
        let topic = topics::down(device, &Down::Desired(desired.model.clone()));
        self.client.publish(topic, QoS::AtLeastOnce, true, bytes).await?;
        Ok(())
    }

    /// Clears a device's retained desired state of one model (an empty retained publish) and forgets it.
    pub async fn withdraw(&self, device: &DeviceId, model: &ModelName) -> anyhow::Result<()> {
        self.update(device, |d| {
            d.desired.remove(model);
        });
        let topic = topics::down(device, &Down::Desired(model.clone()));
        self.client.publish(topic, QoS::AtLeastOnce, true, Vec::<u8>::new()).await?;
        Ok(())
    }

    async fn republish_desired(&self) {
        let all: Vec<(DeviceId, DesiredState)> = self
            .devices
            .lock()
            .expect("devices")
            .values()
            .flat_map(|d| d.desired.values().map(|x| (d.id.clone(), x.clone())))
            .collect();
        for (id, desired) in all {
            let topic = topics::down(&id, &Down::Desired(desired.model.clone()));
            let bytes = self.signed_desired(&id, &desired);
            let _ = self.client.publish(topic, QoS::AtLeastOnce, true, bytes).await;
        }
    }

    /// The frame published on `id`'s `down/desired/{model}`: the desired state as the director's
    /// statement for that device (ed25519 signatures are deterministic: a republish sends the same bytes).
    fn signed_desired(&self, id: &DeviceId, desired: &DesiredState) -> Vec<u8> {
        codec::encode(&Message::SignedDesired(SignedDesired::sign(id, desired, &self.director)))
    }
}

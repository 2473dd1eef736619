//! The fleet link: one MQTT connection (rumqttc; TLS through rustls with the `ring` provider), QoS 1,
//! a persistent session, a last will that marks the device offline, a hello on every connect, and a
//! subscription to the device's own `down/#` topics (each model's retained `down/desired/{model}`, acks,
//! chunks). Incoming payloads are decoded with the protocol's limits; malformed or foreign ones are logged
//! and dropped, never fatal.

pub mod backoff;

use backoff::Backoff;
use outpost_protocol::ModelName;
use outpost_protocol::codec;
use outpost_protocol::director::SignedDesired;
use outpost_protocol::messages::{Chunk, DesiredState, Hello, Message, Presence, TrustUpdate};
use outpost_protocol::topics::{self, Down, Up};
use outpost_protocol::{DeviceId, Limits};
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;

/// MQTT packets larger than this are refused both ways: a 256 KiB chunk plus the envelope fits.
pub const MAX_PACKET: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq)]
pub struct LinkConfig {
    pub broker: BrokerUrl,
    pub device: DeviceId,
    pub ca: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub keepalive: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// First-boot enrollment, used only while the device has no certificate (`identity/enroll.rs`).
    pub enroll: Option<crate::identity::enroll::EnrollConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl std::str::FromStr for BrokerUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (tls, rest) = if let Some(r) = s.strip_prefix("mqtts://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("mqtt://") {
            (false, r)
        } else {
            return Err(format!("broker {s:?} must start with mqtt:// or mqtts://"));
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (h, p.parse::<u16>().map_err(|_| format!("broker {s:?}: bad port {p:?}"))?),
            None => (rest, if tls { 8883 } else { 1883 }),
        };
        if host.is_empty() {
            return Err(format!("broker {s:?} has no host"));
        }
        Ok(BrokerUrl { tls, host: host.trim_matches(['[', ']']).to_owned(), port })
    }
}

/// What the link hands to the agent.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Connected,
    Disconnected,
    Desired(DesiredState),
    /// A desired state as the controller's director statement (`outpost_protocol::director`); the driver
    /// checks its signature.
    Directed(SignedDesired),
    /// A model's retained desired state was cleared (an empty retained publish).
    Withdrawn(ModelName),
    Chunk(Chunk),
    /// The fleet's trust (`outpost/v1/fleet/trust`): a root chain and policy to verify, not yet trusted.
    Trust(TrustUpdate),
    TelemetryAck {
        up_to: u64,
        hello_wanted: bool,
    },
}

/// The sending half, cloneable; publishes are refused while disconnected or when oversized.
#[derive(Debug, Clone)]
pub struct Link {
    client: AsyncClient,
    device: DeviceId,
    connected: Arc<AtomicBool>,
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("not connected")]
    Offline,
    #[error("message of {0} bytes exceeds the {MAX_PACKET} byte packet limit")]
    TooLarge(usize),
    #[error("{0}")]
    Client(String),
    #[error("{0}")]
    Setup(String),
}

impl Link {
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    pub async fn publish(&self, kind: Up, msg: &Message, compress: bool) -> Result<(), LinkError> {
        if !self.is_connected() {
            return Err(LinkError::Offline);
        }
        let plain = codec::encode(msg);
        // zstd has a frame overhead that a single small window does not earn back: send whichever is smaller.
        let bytes = match compress.then(|| codec::encode_compressed(msg)) {
            Some(packed) if packed.len() < plain.len() => packed,
            _ => plain,
        };
        // An oversized QoS 1 publish on a persistent session loops forever in rumqttc (DESIGN.md): check first.
        if bytes.len() + 256 > MAX_PACKET {
            return Err(LinkError::TooLarge(bytes.len()));
        }
        self.client
            .publish(topics::up(&self.device, kind), QoS::AtLeastOnce, kind.retained(), bytes)
            .await
            .map_err(|e| LinkError::Client(e.to_string()))
    }
}

fn options(cfg: &LinkConfig, boot_id: u64) -> Result<MqttOptions, LinkError> {
    let mut o = MqttOptions::new(cfg.device.as_str(), cfg.broker.host.clone(), cfg.broker.port);
    o.set_keep_alive(cfg.keepalive);
    // The device id as username too: the embedded broker admits a client only under its own name (and
    // only the controller with its password); mosquitto's identity listener takes the certificate's CN.
    o.set_credentials(cfg.device.as_str(), "");
    // Persistent session: the broker keeps our subscriptions and queued QoS 1 messages while we are away.
    o.set_clean_session(false);
    o.set_max_packet_size(MAX_PACKET, MAX_PACKET);
    o.set_request_channel_capacity(64);
    let will = codec::encode(&Message::Presence(Presence { device: cfg.device.clone(), online: false, boot_id }));
    o.set_last_will(LastWill::new(topics::up(&cfg.device, Up::Presence), will, QoS::AtLeastOnce, true));
    if cfg.broker.tls {
        let read = |p: &PathBuf| std::fs::read(p).map_err(|e| LinkError::Setup(format!("{}: {e}", p.display())));
        let ca = match &cfg.ca {
            Some(p) => read(p)?,
            None => return Err(LinkError::Setup("mqtts:// needs a CA file (link.ca)".into())),
        };
        let client_auth = match (&cfg.client_cert, &cfg.client_key) {
            (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
            (None, None) => None,
            _ => return Err(LinkError::Setup("mutual TLS needs both link.client_cert and link.client_key".into())),
        };
        // rumqttc builds its rustls config from the process-wide provider: install `ring` once.
        let _ = rustls::crypto::ring::default_provider().install_default();
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Simple { ca, alpn: None, client_auth }));
    }
    Ok(o)
}

/// Starts the connection task. `hello` is called on every connect (the running model may change).
pub fn start(
    cfg: LinkConfig,
    boot_id: u64,
    hello: impl Fn() -> Hello + Send + 'static,
) -> Result<(Link, mpsc::Receiver<Incoming>), LinkError> {
    let (client, mut eventloop) = AsyncClient::new(options(&cfg, boot_id)?, 64);
    let (tx, rx) = mpsc::channel(256);
    let connected = Arc::new(AtomicBool::new(false));
    let link = Link { client: client.clone(), device: cfg.device.clone(), connected: connected.clone() };
    let device = cfg.device.clone();
    let limits = Limits::default();
    let mut backoff = Backoff::new(cfg.backoff_min, cfg.backoff_max, boot_id);
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    backoff.reset();
                    connected.store(true, Ordering::Relaxed);
                    tracing::info!(device = %device, "connected to the broker");
                    // Subscribe on every connect: cheap, and correct even if the broker lost the session. The
                    // fleet's trust first, so its retained update is heard before retained desired states
                    // whose bundles it may be needed to verify (a device back from a long absence).
                    let _ = client.subscribe(topics::TRUST, QoS::AtLeastOnce).await;
                    let _ = client.subscribe(topics::device_subscription(&device), QoS::AtLeastOnce).await;
                    let online = Message::Presence(Presence { device: device.clone(), online: true, boot_id });
                    let _ = client
                        .publish(topics::up(&device, Up::Presence), QoS::AtLeastOnce, true, codec::encode(&online))
                        .await;
                    let hello_msg = codec::encode(&Message::Hello(hello()));
                    let _ = client.publish(topics::up(&device, Up::Hello), QoS::AtLeastOnce, false, hello_msg).await;
                    if tx.send(Incoming::Connected).await.is_err() {
                        return;
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let msg = route(&device, &p.topic, &p.payload, &limits);
                    if let Some(Incoming::TelemetryAck { hello_wanted: true, .. }) = msg {
                        // The controller missed our hello (it started after we connected): say it again.
                        let hello_msg = codec::encode(&Message::Hello(hello()));
                        let _ =
                            client.publish(topics::up(&device, Up::Hello), QoS::AtLeastOnce, false, hello_msg).await;
                    }
                    if let Some(msg) = msg
                        && tx.send(msg).await.is_err()
                    {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    if connected.swap(false, Ordering::Relaxed) {
                        tracing::warn!(error = %e, "disconnected from the broker");
                        if tx.send(Incoming::Disconnected).await.is_err() {
                            return;
                        }
                    }
                    tokio::time::sleep(backoff.next_delay()).await;
                    // Read the certificate again: a renewed one (`identity/renew.rs`) is used from the next
                    // connection on, and the old one may have expired meanwhile.
                    match options(&cfg, boot_id) {
                        Ok(o) => {
                            eventloop.mqtt_options.set_transport(o.transport());
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot read the link's TLS identity; trying the last one")
                        }
                    }
                }
            }
        }
    });
    Ok((link, rx))
}

/// Decodes one incoming publish; anything malformed or not meant for this device is logged and dropped.
fn route(device: &DeviceId, topic: &str, payload: &[u8], limits: &Limits) -> Option<Incoming> {
    if topic == topics::TRUST {
        return match codec::decode(payload, limits) {
            Ok(Message::Trust(u)) => Some(Incoming::Trust(u)),
            Ok(_) | Err(_) => {
                tracing::warn!(topic, "dropping a malformed trust update");
                None
            }
        };
    }
    let Some(topics::Parsed::Down(to, kind)) = topics::parse(topic) else {
        tracing::warn!(topic, "dropping a message on a foreign topic");
        return None;
    };
    if &to != device {
        tracing::warn!(topic, "dropping a message for another device");
        return None;
    }
    if let Down::Desired(model) = &kind
        && payload.is_empty()
    {
        return Some(Incoming::Withdrawn(model.clone()));
    }
    let msg = match codec::decode(payload, limits) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(topic, error = %e, "dropping a malformed message");
            return None;
        }
    };
    match (kind, msg) {
        // The topic names the model: a desired state for another model on it is misrouted or forged.
        (Down::Desired(model), Message::Desired(d)) if d.model == model => Some(Incoming::Desired(d)),
        (Down::Desired(model), Message::SignedDesired(s)) => match s.request() {
            Ok(r) if r.desired.model == model => Some(Incoming::Directed(s)),
            Ok(_) | Err(_) => {
                tracing::warn!(topic, "dropping a director statement for another model or malformed");
                None
            }
        },
        (Down::Chunk, Message::Chunk(c)) => Some(Incoming::Chunk(c)),
        (Down::Ack, Message::TelemetryAck(a)) => {
            Some(Incoming::TelemetryAck { up_to: a.up_to_seq, hello_wanted: a.hello_wanted })
        }
        (kind, other) => {
            tracing::warn!(topic, kind = kind.path(), message = ?std::mem::discriminant(&other), "dropping an unexpected message");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_parse_with_default_ports_and_refuse_other_schemes() {
        assert_eq!(
            "mqtt://127.0.0.1:1884".parse::<BrokerUrl>().unwrap(),
            BrokerUrl { tls: false, host: "127.0.0.1".into(), port: 1884 }
        );
        assert_eq!("mqtts://broker.example".parse::<BrokerUrl>().unwrap().port, 8883);
        assert!("http://x".parse::<BrokerUrl>().is_err());
        assert!("mqtt://:1883".parse::<BrokerUrl>().is_err());
    }

    #[test]
    fn malformed_foreign_and_misrouted_payloads_are_dropped() {
        let me = DeviceId::new("dev-1").unwrap();
        let other = DeviceId::new("dev-2").unwrap();
        let limits = Limits::default();
        let ack = codec::encode(&Message::TelemetryAck(outpost_protocol::messages::TelemetryAck {
            up_to_seq: 9,
            hello_wanted: false,
        }));
        let digits = ModelName::new("digits").unwrap();
        let desired_digits = Down::Desired(digits.clone());
        assert_eq!(
            route(&me, &topics::down(&me, &Down::Ack), &ack, &limits),
            Some(Incoming::TelemetryAck { up_to: 9, hello_wanted: false })
        );
        assert_eq!(route(&me, &topics::down(&other, &Down::Ack), &ack, &limits), None);
        assert_eq!(route(&me, &topics::down(&me, &Down::Ack), b"garbage", &limits), None);
        assert_eq!(route(&me, &topics::down(&me, &desired_digits), &ack, &limits), None, "an ack on a desired topic");
        assert_eq!(route(&me, "some/other/topic", &ack, &limits), None);
        // A cleared retained desired state withdraws that model; an empty payload elsewhere is malformed.
        assert_eq!(route(&me, &topics::down(&me, &desired_digits), b"", &limits), Some(Incoming::Withdrawn(digits)));
        assert_eq!(route(&me, &topics::down(&me, &Down::Chunk), b"", &limits), None);
        assert_eq!(route(&me, &topics::down(&other, &desired_digits), b"", &limits), None);
    }

    #[test]
    fn the_fleet_trust_topic_carries_a_trust_update_and_nothing_else() {
        let me = DeviceId::new("dev-1").unwrap();
        let limits = Limits::default();
        let update = TrustUpdate { first_root: 2, roots: vec![b"r".to_vec()], policy: b"p".to_vec() };
        let bytes = codec::encode(&Message::Trust(update.clone()));
        assert_eq!(route(&me, topics::TRUST, &bytes, &limits), Some(Incoming::Trust(update)));
        assert_eq!(route(&me, topics::TRUST, b"garbage", &limits), None);
        let ack = codec::encode(&Message::TelemetryAck(outpost_protocol::messages::TelemetryAck {
            up_to_seq: 1,
            hello_wanted: false,
        }));
        assert_eq!(route(&me, topics::TRUST, &ack, &limits), None, "an ack on the trust topic");
        // A trust update on a device topic is not taken either.
        assert_eq!(route(&me, &topics::down(&me, &Down::Ack), &bytes, &limits), None);
    }
}

//! First-boot enrollment: with no certificate yet and `[link] enroll_token` set, the agent connects to
//! the enrollment endpoint (mosquitto's server-auth TLS listener, or the quick start's plain broker),
//! publishes its request (device id, the token read from its file, a CSR for its own key, arch, labels)
//! and waits for the controller's answer. Refusals are logged with their reason and retried with backoff;
//! a pending approval is asked again every `PENDING_POLL`. Local inference serves the whole time.

use super::{Paths, certificate_names_key, csr};
use crate::link::backoff::Backoff;
use crate::link::{BrokerUrl, LinkConfig};
use outpost_protocol::enroll::{self, EnrollOutcome, EnrollRefusal, EnrollRequest, EnrollResponse};
use outpost_protocol::messages::Message;
use outpost_protocol::{Arch, DeviceId, Limits, Version, codec};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use std::path::PathBuf;
use std::time::Duration;

/// How often a device waiting for approval asks again.
pub const PENDING_POLL: Duration = Duration::from_secs(5);
/// How long to wait for an answer before trying again.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);
/// Refusals retry no faster than this: a wrong token stays wrong until someone fixes the file.
const REFUSED_MIN: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollConfig {
    /// Where the enrollment endpoint is: `link.enroll_broker`, or the link's broker.
    pub broker: BrokerUrl,
    /// The file holding the token (`link.enroll_token`); read at each attempt, never after enrollment.
    pub token_file: PathBuf,
}

/// What the device tells the controller about itself.
#[derive(Debug, Clone)]
pub struct Facts {
    pub arch: Arch,
    pub agent_version: Version,
    pub labels: Vec<(String, String)>,
}

/// What one answer means for this device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not an answer to this attempt (another nonce or device): wait on.
    Ignore,
    Issued {
        certificate: String,
        ca: String,
    },
    Pending,
    Refused(EnrollRefusal, String),
    /// An answer that cannot be used (a certificate for another key).
    Unusable(String),
}

/// Judges an answer, pure.
pub fn judge(resp: &EnrollResponse, device: &DeviceId, nonce: u64, public_key: &[u8]) -> Verdict {
    if &resp.device != device || resp.nonce != nonce {
        return Verdict::Ignore;
    }
    match &resp.outcome {
        EnrollOutcome::Issued { certificate, ca } if certificate_names_key(certificate, public_key) => {
            Verdict::Issued { certificate: certificate.clone(), ca: ca.clone() }
        }
        EnrollOutcome::Issued { .. } => {
            Verdict::Unusable("the issued certificate does not name this device's key".into())
        }
        EnrollOutcome::Pending => Verdict::Pending,
        EnrollOutcome::Refused { reason, detail } => Verdict::Refused(*reason, detail.clone()),
    }
}

/// How one attempt ended.
enum Attempt {
    Issued { certificate: String, ca: String },
    Refused(EnrollRefusal, String),
    Failed(String),
}

/// Enrolls (or, with a certificate already there, renews it: the same exchange with the same key, the
/// token file read if it is still there); returns once a certificate is stored. Never gives up: a device
/// in the field has nothing better to do than to keep asking (slowly), and it serves local inference
/// meanwhile.
pub async fn enroll(link: &LinkConfig, cfg: &EnrollConfig, paths: &Paths, facts: &Facts, seed: u64) {
    let mut failures = Backoff::new(link.backoff_min, link.backoff_max, seed);
    let mut refusals = Backoff::new(REFUSED_MIN.max(link.backoff_min), link.backoff_max.max(REFUSED_MIN), seed);
    let mut nonce = seed;
    loop {
        nonce = nonce.wrapping_add(1);
        let delay = match attempt(link, cfg, paths, facts, nonce).await {
            Attempt::Issued { certificate, ca } => match paths.store(&certificate, &ca) {
                Ok(()) => {
                    tracing::info!(device = %link.device, cert = %paths.cert().display(), "enrolled: identity stored");
                    return;
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot store the issued certificate");
                    failures.next_delay()
                }
            },
            Attempt::Refused(reason, detail) => {
                let wait = refusals.next_delay();
                tracing::error!(
                    device = %link.device,
                    reason = reason.code(),
                    token_file = %cfg.token_file.display(),
                    "enrollment refused: {reason}: {detail}; retrying in {wait:?}"
                );
                wait
            }
            Attempt::Failed(why) => {
                let wait = failures.next_delay();
                tracing::warn!(device = %link.device, "enrollment attempt failed: {why}; retrying in {wait:?}");
                wait
            }
        };
        tokio::time::sleep(delay).await;
    }
}

/// A fresh random session name: the client id and topic level of one attempt (see
/// `outpost_protocol::enroll`: with the device id there, anyone could keep knocking this connection off).
fn session() -> Result<DeviceId, String> {
    use ring::rand::SecureRandom;
    let mut random = [0u8; 16];
    ring::rand::SystemRandom::new().fill(&mut random).map_err(|_| "no OS randomness for an enrollment session")?;
    Ok(enroll::session_name(random))
}

fn options(link: &LinkConfig, cfg: &EnrollConfig, session: &DeviceId) -> Result<MqttOptions, String> {
    let mut o = MqttOptions::new(session.as_str(), cfg.broker.host.clone(), cfg.broker.port);
    o.set_keep_alive(link.keepalive);
    // The enrollment ACL keys on the client id (this session); the embedded broker (rumqttd, which
    // refuses a CONNECT without a login once it authenticates) takes it as username too.
    o.set_credentials(session.as_str(), "");
    o.set_clean_session(true);
    o.set_max_packet_size(64 << 10, 64 << 10);
    if cfg.broker.tls {
        let ca_path = link.ca.as_ref().ok_or("an mqtts:// enrollment endpoint needs a CA file (link.ca)")?;
        let ca = std::fs::read(ca_path).map_err(|e| format!("{}: {e}", ca_path.display()))?;
        let _ = rustls::crypto::ring::default_provider().install_default();
        // Server authentication only: the device has no certificate yet, the token authenticates it.
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Simple { ca, alpn: None, client_auth: None }));
    }
    Ok(o)
}

async fn attempt(link: &LinkConfig, cfg: &EnrollConfig, paths: &Paths, facts: &Facts, nonce: u64) -> Attempt {
    let key = match paths.ensure_key() {
        Ok(k) => k,
        Err(e) => return Attempt::Failed(e.to_string()),
    };
    let token = match std::fs::read_to_string(&cfg.token_file) {
        Ok(t) => t.trim().to_owned(),
        // A renewal needs no token: the controller knows the key its certificate names.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && paths.enrolled() => String::new(),
        Err(e) => return Attempt::Failed(format!("enrollment token {}: {e}", cfg.token_file.display())),
    };
    let csr = match csr::csr_der(&key, link.device.as_str()) {
        Ok(c) => c,
        Err(e) => return Attempt::Failed(e.to_string()),
    };
    let request = codec::encode(&Message::EnrollRequest(EnrollRequest {
        device: link.device.clone(),
        token,
        csr,
        arch: facts.arch,
        agent_version: facts.agent_version,
        labels: facts.labels.clone(),
        nonce,
    }));
    let session = match session() {
        Ok(s) => s,
        Err(e) => return Attempt::Failed(e),
    };
    let options = match options(link, cfg, &session) {
        Ok(o) => o,
        Err(e) => return Attempt::Failed(e),
    };
    let (client, mut eventloop) = AsyncClient::new(options, 8);
    let (request_topic, response_topic) = (enroll::request_topic(&session), enroll::response_topic(&session));
    let public_key = csr::public_key(&key).to_vec();
    let limits = Limits::default();
    let mut deadline = tokio::time::Instant::now() + ANSWER_TIMEOUT;
    let mut resend: Option<tokio::time::Instant> = None;
    let mut told_pending = false;
    let outcome = loop {
        let wake = resend.map_or(deadline, |r| r.min(deadline));
        let event = tokio::select! {
            e = eventloop.poll() => e,
            _ = tokio::time::sleep_until(wake) => {
                if resend.is_some_and(|r| r <= tokio::time::Instant::now()) {
                    resend = None;
                    deadline = tokio::time::Instant::now() + ANSWER_TIMEOUT;
                    let _ = client.publish(request_topic.clone(), QoS::AtLeastOnce, false, request.clone()).await;
                    continue;
                }
                break Attempt::Failed(format!("no answer from the controller within {ANSWER_TIMEOUT:?}"));
            }
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                let _ = client.subscribe(response_topic.clone(), QoS::AtLeastOnce).await;
            }
            // Subscribed before asking, so the answer cannot pass by unheard.
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                let _ = client.publish(request_topic.clone(), QoS::AtLeastOnce, false, request.clone()).await;
            }
            Ok(Event::Incoming(Packet::Publish(p))) if p.topic == response_topic => {
                let Ok(Message::EnrollResponse(resp)) = codec::decode(&p.payload, &limits) else {
                    tracing::warn!("dropping a malformed enrollment answer");
                    continue;
                };
                match judge(&resp, &link.device, nonce, &public_key) {
                    Verdict::Ignore => {}
                    Verdict::Issued { certificate, ca } => break Attempt::Issued { certificate, ca },
                    Verdict::Refused(reason, detail) => break Attempt::Refused(reason, detail),
                    Verdict::Unusable(why) => break Attempt::Failed(why),
                    Verdict::Pending => {
                        if !told_pending {
                            tracing::info!(device = %link.device, "enrollment pending: waiting for `outpost devices approve {}`", link.device);
                            told_pending = true;
                        }
                        // Keep the connection; ask again shortly (the approval may come at any time).
                        resend = Some(tokio::time::Instant::now() + PENDING_POLL);
                        deadline = tokio::time::Instant::now() + PENDING_POLL + ANSWER_TIMEOUT;
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                break Attempt::Failed(format!("enrollment endpoint {}:{}: {e}", cfg.broker.host, cfg.broker.port));
            }
        }
    };
    let _ = client.disconnect().await;
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(device: &str, nonce: u64, outcome: EnrollOutcome) -> EnrollResponse {
        EnrollResponse { device: DeviceId::new(device).unwrap(), nonce, outcome }
    }

    fn cert_with(bytes: &[u8]) -> String {
        pem_rfc7468::encode_string(
            "CERTIFICATE",
            pem_rfc7468::LineEnding::LF,
            &[&[0x30, 0x82][..], bytes, b"rest"].concat(),
        )
        .unwrap()
    }

    #[test]
    fn answers_to_other_attempts_or_devices_are_ignored() {
        let me = DeviceId::new("dev-1").unwrap();
        assert_eq!(judge(&resp("dev-1", 6, EnrollOutcome::Pending), &me, 7, b"k"), Verdict::Ignore);
        assert_eq!(judge(&resp("dev-2", 7, EnrollOutcome::Pending), &me, 7, b"k"), Verdict::Ignore);
        assert_eq!(judge(&resp("dev-1", 7, EnrollOutcome::Pending), &me, 7, b"k"), Verdict::Pending);
    }

    #[test]
    fn a_certificate_is_taken_only_if_it_names_this_devices_key() {
        let me = DeviceId::new("dev-1").unwrap();
        let key = [4u8; 65];
        let good = EnrollOutcome::Issued { certificate: cert_with(&key), ca: "ca".into() };
        assert!(matches!(judge(&resp("dev-1", 1, good), &me, 1, &key), Verdict::Issued { .. }));
        let other = EnrollOutcome::Issued { certificate: cert_with(&[5u8; 65]), ca: "ca".into() };
        assert!(matches!(judge(&resp("dev-1", 1, other), &me, 1, &key), Verdict::Unusable(_)));
        let garbage = EnrollOutcome::Issued { certificate: "not pem".into(), ca: "ca".into() };
        assert!(matches!(judge(&resp("dev-1", 1, garbage), &me, 1, &key), Verdict::Unusable(_)));
    }

    #[test]
    fn a_refusal_carries_its_reason() {
        let me = DeviceId::new("dev-1").unwrap();
        let r = EnrollOutcome::Refused { reason: EnrollRefusal::InvalidToken, detail: "no such token".into() };
        assert_eq!(
            judge(&resp("dev-1", 1, r), &me, 1, b"k"),
            Verdict::Refused(EnrollRefusal::InvalidToken, "no such token".into())
        );
    }
}

//! First-boot enrollment: a device with an enrollment token asks the controller for its identity (a
//! client certificate for mutual TLS), once. The device makes its own key and sends only a certificate
//! signing request, so the key never leaves it.
//!
//! ```text
//! outpost/v1/enroll/{session}/request    device → controller   EnrollRequest (device id, token, CSR, facts)
//! outpost/v1/enroll/{session}/response   controller → device   EnrollResponse (certificate, pending, refused)
//! ```
//! With mosquitto, these topics live on a listener of their own (server-auth TLS, anonymous clients) whose
//! ACL lets client id X write only `enroll/X/request` and read only `enroll/X/response`: no other client can
//! read a token, and a response carries only public material (a certificate is useless without its key).
//!
//! `{session}` is the MQTT client id of the enrolling connection: a fresh random name per attempt
//! ([`session_name`]), not the device id. Anonymous clients on that listener prove nothing about their
//! client id, and a broker disconnects a client when another connects with its id: with the device id as
//! client id, anyone could keep an enrolling device from ever finishing by connecting under its id. A
//! random name cannot be guessed. (Agents from before this change use their device id; the controller
//! answers on whatever session the request came from.) The same exchange renews a certificate: a device
//! asks with the key its certificate names, in the second half of the certificate's lifetime.

use crate::names::{Arch, DeviceId};
use crate::version::Version;
use serde::{Deserialize, Serialize};

pub const PREFIX: &str = "outpost/v1/enroll";

/// The longest enrollment token accepted, in bytes (`outpost enroll-token create` makes 68).
pub const MAX_TOKEN: usize = 256;
/// The largest CSR accepted, in DER bytes (a P-256 CSR is about 250).
pub const MAX_CSR: usize = 4096;

/// `enroll/{id}/request`: a device asks for its identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollRequest {
    pub device: DeviceId,
    /// The enrollment token, as the operator created it (`outpost enroll-token create`).
    pub token: String,
    /// PKCS#10 certificate signing request, DER: ECDSA P-256, subject CN = `device`, signed by the device
    /// key (so it proves possession of the key the certificate will name).
    pub csr: Vec<u8>,
    pub arch: Arch,
    pub agent_version: Version,
    pub labels: Vec<(String, String)>,
    /// Chosen by the device per attempt and echoed in the response, so a late answer to an earlier
    /// attempt is recognisable.
    pub nonce: u64,
}

/// `enroll/{id}/response`: the controller's answer to one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollResponse {
    pub device: DeviceId,
    pub nonce: u64,
    pub outcome: EnrollOutcome,
}

/// Only append variants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EnrollOutcome {
    /// The device's client certificate (PEM) and the CA that issued it (PEM).
    Issued { certificate: String, ca: String },
    /// Registered, waiting for `outpost devices approve ID`; ask again later.
    Pending,
    /// Refused; asking again with the same token and key will not change the answer.
    Refused { reason: EnrollRefusal, detail: String },
}

/// Why an enrollment was refused: stable codes for logs and the audit trail. Only append variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EnrollRefusal {
    /// The token is unknown (mistyped, or guessed).
    InvalidToken,
    /// The token was valid once and has expired.
    ExpiredToken,
    /// The CSR does not parse, its signature does not verify, or it is not ECDSA P-256.
    BadCsr,
    /// The CSR names another device than the one asking (a device may only ask for its own identity).
    WrongSubject,
    /// The device was revoked; a revoked id never enrolls again.
    Revoked,
    /// The id is already enrolled (or pending) with another key: a token does not allow taking over a
    /// device that exists.
    KeyMismatch,
    /// The controller cannot issue certificates right now (its CA is unreadable); try again later.
    Unavailable,
    /// The token was used by as many devices as it allows (`enroll-token create --max-uses`).
    TokenUsedUp,
    /// The token is limited to other device ids (`enroll-token create --devices`).
    DeviceNotAllowed,
    /// Too many requests (from this device id, or from everyone); try again later.
    RateLimited,
    /// The device's certificate is not in its renewal window yet (the second half of its lifetime), and
    /// the controller has no copy of it to send again.
    NotDue,
}

impl EnrollRefusal {
    pub fn code(self) -> &'static str {
        match self {
            EnrollRefusal::InvalidToken => "invalid_token",
            EnrollRefusal::ExpiredToken => "expired_token",
            EnrollRefusal::BadCsr => "bad_csr",
            EnrollRefusal::WrongSubject => "wrong_subject",
            EnrollRefusal::Revoked => "revoked",
            EnrollRefusal::KeyMismatch => "key_mismatch",
            EnrollRefusal::Unavailable => "unavailable",
            EnrollRefusal::TokenUsedUp => "token_used_up",
            EnrollRefusal::DeviceNotAllowed => "device_not_allowed",
            EnrollRefusal::RateLimited => "rate_limited",
            EnrollRefusal::NotDue => "not_due",
        }
    }

    /// Whether asking again later may succeed without the operator changing anything on the device.
    pub fn retryable(self) -> bool {
        matches!(self, EnrollRefusal::Unavailable | EnrollRefusal::RateLimited | EnrollRefusal::NotDue)
    }
}

impl std::fmt::Display for EnrollRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// The shared-subscription group of enrollment requests. A group of its own: rumqttd keeps one cursor
/// per group name, and when the device topics' group shared it, enrollment requests were dropped after
/// sustained device traffic.
pub const SHARE_GROUP: &str = "outpost-enroll";

/// A session name (the enrolling connection's client id and topic level) from 16 random bytes.
pub fn session_name(random: [u8; 16]) -> DeviceId {
    let mut s = String::from("enroll-");
    for b in random {
        s.push_str(&format!("{b:02x}"));
    }
    DeviceId::new(s).expect("hex is a valid name")
}

/// Where a device sends its request (`session`: see the module documentation).
pub fn request_topic(session: &DeviceId) -> String {
    format!("{PREFIX}/{session}/request")
}

/// Where the controller answers.
pub fn response_topic(session: &DeviceId) -> String {
    format!("{PREFIX}/{session}/response")
}

/// What the controller subscribes to: every session's requests, shared between replicas.
pub fn controller_subscription() -> String {
    format!("$share/{SHARE_GROUP}/{PREFIX}/+/request")
}

/// The session of a request topic; `None` for anything else.
pub fn parse_request_topic(topic: &str) -> Option<DeviceId> {
    let id = topic.strip_prefix(PREFIX)?.strip_prefix('/')?.strip_suffix("/request")?;
    DeviceId::new(id).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_topics_parse_back_to_the_device_and_nothing_else_does() {
        let id = DeviceId::new("dev-7").unwrap();
        assert_eq!(request_topic(&id), "outpost/v1/enroll/dev-7/request");
        assert_eq!(parse_request_topic(&request_topic(&id)), Some(id.clone()));
        for t in [
            response_topic(&id).as_str(),
            "outpost/v1/enroll/a/b/request",
            "outpost/v1/enroll/../request",
            "outpost/v1/enroll//request",
            "outpost/v1/devices/dev-7/up/hello",
        ] {
            assert_eq!(parse_request_topic(t), None, "{t}");
        }
        assert_eq!(controller_subscription(), "$share/outpost-enroll/outpost/v1/enroll/+/request");
        assert_ne!(SHARE_GROUP, crate::topics::SHARE_GROUP, "one cursor per group in rumqttd: never share it");
        let s = session_name([0xab; 16]);
        assert_eq!(s.as_str().len(), 39);
        assert_eq!(parse_request_topic(&request_topic(&s)), Some(s));
    }
}

//! Signed version reports (Uptane's idea): a device signs what it runs with its identity key, the ECDSA
//! P-256 key its certificate names and its enrollment bound, so neither a compromised broker nor a
//! controller replica nor another client can put versions in the fleet's compliance view that the device
//! does not run. The device signs; this module checks (ring's ECDSA, the same code rustls runs for TLS).
//!
//! The signature covers `outpost/v1/version-report\0` followed by the exact postcard bytes of the report,
//! so it can never pass for a signature over anything else the device key signs (a CSR, a TLS handshake).

use crate::UnixTime;
use crate::digest::Digest;
use crate::keys::{self, Domain, SigBytes};
use crate::messages::RunningModel;
use crate::names::{DeviceId, ModelName};
use crate::verify::Verified;
use crate::version::Version;
use serde::{Deserialize, Serialize};

/// Length of an uncompressed SEC1 P-256 point: `0x04 ‖ x ‖ y`.
pub const DEVICE_KEY_LEN: usize = 65;

/// What a device runs, signed by its device key (`up/report`). `report` is a postcard [`VersionReport`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignedVersionReport {
    pub report: Vec<u8>,
    /// The device's identity public key: ECDSA P-256, the uncompressed SEC1 point (65 bytes). Its SHA-256
    /// is the fingerprint enrollment binds the device id to.
    pub device_key: Vec<u8>,
    /// ECDSA P-256 with SHA-256 over the domain-tagged report, `r ‖ s` (64 bytes).
    pub signature: SigBytes,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionReport {
    pub device: DeviceId,
    /// Grows with every report: a replayed old report is recognisable.
    pub counter: u64,
    pub at: UnixTime,
    /// Every model the device serves, in name order.
    pub running: Vec<RunningModel>,
    /// The model kept in each model's `previous` slot.
    pub previous: Vec<RunningModel>,
    /// The anti-rollback floor of every model the device has committed.
    pub floors: Vec<(ModelName, u64)>,
    pub agent_version: Version,
    /// The trust policy the device verifies bundles with.
    pub policy_version: u64,
    /// The root the device pins (1: the image's).
    pub root_version: u64,
}

/// Why a report was not taken. Stable codes for the audit log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportFault {
    #[error("malformed: {0}")]
    Malformed(String),
    /// Signed by another key than the one bound to the device id: a forgery, or a device that was
    /// re-imaged without enrolling again.
    #[error("wrong_key: signed by key {presented}; the device's bound key is {bound}")]
    WrongKey { bound: String, presented: String },
    /// The key is the device's, the signature does not verify: the report was altered on the way.
    #[error("bad_signature: the signature does not verify with the device's key")]
    BadSignature,
    /// A valid report of another device, republished on this one's topic.
    #[error("wrong_device: the report is {claimed}'s")]
    WrongDevice { claimed: DeviceId },
    /// A counter at or below the last verified one: an old report sent again.
    #[error("replay: counter {counter} is not above the last verified {last}")]
    Replay { counter: u64, last: u64 },
}

impl ReportFault {
    pub fn code(&self) -> &'static str {
        match self {
            ReportFault::Malformed(_) => "malformed",
            ReportFault::WrongKey { .. } => "wrong_key",
            ReportFault::BadSignature => "bad_signature",
            ReportFault::WrongDevice { .. } => "wrong_device",
            ReportFault::Replay { .. } => "replay",
        }
    }
}

/// What a report is checked against: the device whose topic it came on, the fingerprint of the key bound
/// to that device, and the counter of the last report verified for it.
#[derive(Debug, Clone, Copy)]
pub struct ReportCheck<'a> {
    pub device: &'a DeviceId,
    pub key: &'a Digest,
    pub last_counter: Option<u64>,
}

impl SignedVersionReport {
    /// A signed report. `sign` signs the bytes it is given (the tagged report) with the device key and
    /// returns `r ‖ s`; the device does this with its own key and randomness.
    pub fn new(report: &VersionReport, device_key: Vec<u8>, sign: impl FnOnce(&[u8]) -> [u8; 64]) -> Self {
        let bytes = postcard::to_allocvec(report).expect("report encodes");
        let signature = SigBytes(sign(&keys::tagged(Domain::VersionReport, &bytes)));
        SignedVersionReport { report: bytes, device_key, signature }
    }

    /// SHA-256 of the device key: what enrollment binds a device id to.
    pub fn key_fingerprint(&self) -> Digest {
        Digest::of(&self.device_key)
    }

    /// Checks, in order: the key is a P-256 point and the one bound to the device; the signature over the
    /// exact report bytes; only then decodes the report; it is this device's; its counter is new.
    pub fn verify(&self, check: &ReportCheck<'_>) -> Result<Verified<VersionReport>, ReportFault> {
        if self.device_key.len() != DEVICE_KEY_LEN || self.device_key[0] != 0x04 {
            return Err(ReportFault::Malformed(format!(
                "the device key is {} bytes; an uncompressed P-256 point has {DEVICE_KEY_LEN}",
                self.device_key.len()
            )));
        }
        let presented = self.key_fingerprint();
        if presented != *check.key {
            return Err(ReportFault::WrongKey { bound: check.key.to_hex(), presented: presented.to_hex() });
        }
        let key = ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, &self.device_key);
        key.verify(&keys::tagged(Domain::VersionReport, &self.report), &self.signature.0)
            .map_err(|_| ReportFault::BadSignature)?;
        let report: VersionReport =
            postcard::from_bytes(&self.report).map_err(|e| ReportFault::Malformed(format!("report body: {e}")))?;
        if report.device != *check.device {
            return Err(ReportFault::WrongDevice { claimed: report.device });
        }
        if let Some(last) = check.last_counter
            && report.counter <= last
        {
            return Err(ReportFault::Replay { counter: report.counter, last });
        }
        Ok(Verified::new(report))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};

    fn device_key() -> EcdsaKeyPair {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap()
    }

    fn signed(key: &EcdsaKeyPair, device: &str, counter: u64) -> SignedVersionReport {
        let report = VersionReport {
            device: DeviceId::new(device).unwrap(),
            counter,
            at: 1_800_000_000,
            running: vec![],
            previous: vec![],
            floors: vec![(ModelName::new("digits").unwrap(), 3)],
            agent_version: Version::new(0, 1, 0),
            policy_version: 2,
            root_version: 1,
        };
        SignedVersionReport::new(&report, key.public_key().as_ref().to_vec(), |m| {
            key.sign(&SystemRandom::new(), m).unwrap().as_ref().try_into().unwrap()
        })
    }

    #[test]
    fn a_report_by_the_bound_key_verifies_and_every_forgery_has_its_own_fault() {
        let key = device_key();
        let dev = DeviceId::new("dev-1").unwrap();
        let r = signed(&key, "dev-1", 7);
        let bound = r.key_fingerprint();
        let check = ReportCheck { device: &dev, key: &bound, last_counter: Some(6) };
        assert_eq!(r.verify(&check).unwrap().floors[0].1, 3);

        let stranger = signed(&device_key(), "dev-1", 8);
        assert_eq!(stranger.verify(&check).unwrap_err().code(), "wrong_key");
        let mut altered = r.clone();
        altered.report[3] ^= 1;
        assert_eq!(altered.verify(&check).unwrap_err(), ReportFault::BadSignature);
        let theirs = signed(&key, "dev-2", 8);
        assert_eq!(theirs.verify(&check).unwrap_err().code(), "wrong_device");
        let replay = ReportCheck { last_counter: Some(7), ..check };
        assert_eq!(r.verify(&replay).unwrap_err(), ReportFault::Replay { counter: 7, last: 7 });
        let mut short = r.clone();
        short.device_key.truncate(33);
        assert_eq!(short.verify(&check).unwrap_err().code(), "malformed");
    }

    #[test]
    fn the_signature_is_bound_to_the_report_domain() {
        let key = device_key();
        let dev = DeviceId::new("dev-1").unwrap();
        let mut r = signed(&key, "dev-1", 1);
        // The same key signing the same bytes without the domain tag (as in some other protocol).
        r.signature = SigBytes(key.sign(&SystemRandom::new(), &r.report).unwrap().as_ref().try_into().unwrap());
        let bound = r.key_fingerprint();
        let check = ReportCheck { device: &dev, key: &bound, last_counter: None };
        assert_eq!(r.verify(&check).unwrap_err(), ReportFault::BadSignature);
    }
}

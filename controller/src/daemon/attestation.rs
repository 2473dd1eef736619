//! Signed version reports on the controller (`up/report`). Each report is checked against the key bound to
//! the device: the key its enrollment bound, or, for a device that never enrolled (quick start, hand-made
//! certificates), the key of its first verified report (trust on first use, audited). The last verified
//! report is kept; a report that fails is counted and audited (at most once a minute per device, so a
//! flood cannot fill the append-only log). What a device claims in its unsigned hello is attested when the
//! last verified report says the same, and only claimed otherwise (`attested_model`, `attested_agent`).

use super::fleet::{Fleet, now};
use outpost_protocol::messages::{RunningModel, SignedVersionReport};
use outpost_protocol::report::{ReportCheck, ReportFault, VersionReport};
use outpost_protocol::telemetry::TrustEvent;
use outpost_protocol::{DeviceId, Digest, UnixTime, Version};
use serde::{Deserialize, Serialize};

/// Refused reports are audited at most this often per device and reason (all are counted): a flood
/// cannot fill the append-only log, and each kind of attack still shows.
const AUDIT_EVERY_SECS: u64 = 60;

/// A device's attestation state, kept in its registry record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Attestation {
    /// The key reports are checked against when enrollment bound none (SHA-256 of the key, hex).
    pub first_use_key: Option<String>,
    /// The last verified report.
    pub last: Option<Attested>,
    /// Reports refused so far.
    pub faults: u64,
    pub last_fault: Option<Fault>,
    /// When a refusal of each reason was last audited.
    #[serde(default)]
    pub audited: std::collections::BTreeMap<String, UnixTime>,
    /// What the device last did with the fleet's trust update (from its telemetry).
    #[serde(default)]
    pub trust: Option<TrustSeen>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustSeen {
    pub at: UnixTime,
    pub event: TrustEvent,
}

impl Attestation {
    pub fn trust_event(&mut self, event: TrustEvent, now: UnixTime) {
        self.trust = Some(TrustSeen { at: now, event });
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attested {
    pub received: UnixTime,
    /// How the key that signed it is bound to the device id: `enrollment` or `first_use`.
    pub binding: String,
    /// SHA-256 of the signed report bytes: the same report again (a QoS 1 redelivery) is no replay.
    pub report_sha256: String,
    pub report: VersionReport,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    pub at: UnixTime,
    pub code: String,
    pub detail: String,
}

/// What became of one report.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Attested {
        first_use: bool,
    },
    /// The last verified report again.
    Duplicate,
    Refused(ReportFault),
}

/// Checks `signed` for `device` and updates `att`. `enrolled_key` is the fingerprint enrollment bound.
pub fn judge(
    att: &mut Attestation,
    enrolled_key: Option<&str>,
    device: &DeviceId,
    signed: &SignedVersionReport,
    now: UnixTime,
) -> Verdict {
    let digest = Digest::of(&signed.report).to_hex();
    if att.last.as_ref().is_some_and(|l| l.report_sha256 == digest) {
        return Verdict::Duplicate;
    }
    let presented = signed.key_fingerprint().to_hex();
    let (bound, binding, first_use) = match (enrolled_key, &att.first_use_key) {
        (Some(k), _) => (k.to_owned(), "enrollment", false),
        (None, Some(k)) => (k.clone(), "first_use", false),
        (None, None) => (presented.clone(), "first_use", true),
    };
    let refuse = |att: &mut Attestation, f: ReportFault| {
        att.faults += 1;
        att.last_fault = Some(Fault { at: now, code: f.code().into(), detail: f.to_string() });
        Verdict::Refused(f)
    };
    let Ok(key) = bound.parse::<Digest>() else {
        return refuse(att, ReportFault::Malformed(format!("the bound key {bound:?} is not a SHA-256")));
    };
    let check = ReportCheck { device, key: &key, last_counter: att.last.as_ref().map(|l| l.report.counter) };
    match signed.verify(&check) {
        Ok(report) => {
            if first_use {
                att.first_use_key = Some(presented);
            }
            att.last = Some(Attested {
                received: now,
                binding: binding.into(),
                report_sha256: digest,
                report: report.into_inner(),
            });
            Verdict::Attested { first_use }
        }
        Err(f) => refuse(att, f),
    }
}

/// Whether the device's last verified report says it runs exactly this model (name, version, digest).
pub fn attested_model(att: &Attestation, claimed: &RunningModel) -> bool {
    att.last.as_ref().is_some_and(|l| {
        l.report
            .running
            .iter()
            .any(|r| r.name == claimed.name && r.version == claimed.version && r.digest == claimed.digest)
    })
}

/// Whether the device's last verified report names this agent version.
pub fn attested_agent(att: &Attestation, claimed: Option<&Version>) -> bool {
    att.last.as_ref().is_some_and(|l| Some(&l.report.agent_version) == claimed)
}

/// Fills in how many devices on each version of each model attest it (`outpost skew`).
pub fn count_attested(skew: &mut [crate::skew::ModelSkew], devices: &[super::registry::DeviceRecord]) {
    for m in skew {
        for v in &mut m.versions {
            let on_it = |d: &&super::registry::DeviceRecord| {
                d.running
                    .iter()
                    .any(|r| r.name == m.model && r.version == v.version && attested_model(&d.attestation, r))
            };
            v.attested = devices.iter().filter(on_it).count() as u32;
        }
    }
}

impl Fleet {
    /// `up/report`: verify, keep, audit.
    pub(super) fn report(&self, device: &DeviceId, signed: SignedVersionReport) {
        let t = now();
        let (verdict, audit_due) = self.update(device, |d| {
            let a = &mut d.attestation;
            let verdict = judge(a, d.enrollment.key.as_deref(), device, &signed, t);
            let due = match &verdict {
                Verdict::Refused(f) => {
                    let due = a.audited.get(f.code()).is_none_or(|at| t >= at + AUDIT_EVERY_SECS);
                    if due {
                        a.audited.insert(f.code().to_owned(), t);
                    }
                    due
                }
                _ => false,
            };
            (verdict, due)
        });
        match verdict {
            Verdict::Attested { first_use: true } => {
                let _ = self.store.audit(&serde_json::json!({
                    "at": t, "what": "report key bound on first use", "device": device,
                    "key": signed.key_fingerprint().to_hex(),
                }));
            }
            Verdict::Attested { .. } | Verdict::Duplicate => {}
            Verdict::Refused(f) => {
                tracing::warn!(%device, reason = f.code(), "version report refused: {f}");
                if audit_due {
                    let _ = self.store.audit(&serde_json::json!({
                        "at": t, "what": "version report refused", "device": device,
                        "reason": f.code(), "detail": f.to_string(),
                    }));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_protocol::ModelName;
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};

    fn key() -> EcdsaKeyPair {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap()
    }

    fn digits(v: u32) -> RunningModel {
        RunningModel {
            name: ModelName::new("digits").unwrap(),
            version: Version::new(v, 0, 0),
            digest: Digest([v as u8; 32]),
            sequence: u64::from(v),
        }
    }

    fn signed(k: &EcdsaKeyPair, counter: u64, running: RunningModel) -> SignedVersionReport {
        let report = VersionReport {
            device: DeviceId::new("dev-1").unwrap(),
            counter,
            at: 1000 + counter,
            running: vec![running],
            previous: vec![],
            floors: vec![],
            agent_version: Version::new(0, 1, 0),
            policy_version: 1,
            root_version: 1,
        };
        SignedVersionReport::new(&report, k.public_key().as_ref().to_vec(), |m| {
            k.sign(&SystemRandom::new(), m).unwrap().as_ref().try_into().unwrap()
        })
    }

    #[test]
    fn the_enrolled_key_decides_and_claims_are_attested_only_by_a_matching_report() {
        let dev = DeviceId::new("dev-1").unwrap();
        let (k, stranger) = (key(), key());
        let enrolled = signed(&k, 1, digits(1)).key_fingerprint().to_hex();
        let mut att = Attestation::default();
        assert_eq!(
            judge(&mut att, Some(&enrolled), &dev, &signed(&k, 1, digits(1)), 10),
            Verdict::Attested { first_use: false }
        );
        assert!(attested_model(&att, &digits(1)) && !attested_model(&att, &digits(2)));
        assert!(attested_agent(&att, Some(&Version::new(0, 1, 0))));
        // A forger claiming version 2 with another key is refused; the device stays attested at 1.
        let forged = judge(&mut att, Some(&enrolled), &dev, &signed(&stranger, 2, digits(2)), 11);
        assert!(matches!(forged, Verdict::Refused(ref f) if f.code() == "wrong_key"), "{forged:?}");
        assert!(!attested_model(&att, &digits(2)));
        assert_eq!((att.faults, att.last_fault.as_ref().unwrap().code.as_str()), (1, "wrong_key"));
    }

    #[test]
    fn replays_are_refused_and_redeliveries_ignored() {
        let dev = DeviceId::new("dev-1").unwrap();
        let k = key();
        let mut att = Attestation::default();
        let (r1, r2) = (signed(&k, 1, digits(1)), signed(&k, 2, digits(2)));
        assert_eq!(judge(&mut att, None, &dev, &r1, 10), Verdict::Attested { first_use: true });
        assert_eq!(judge(&mut att, None, &dev, &r2, 11), Verdict::Attested { first_use: false });
        assert_eq!(judge(&mut att, None, &dev, &r2, 12), Verdict::Duplicate, "QoS 1 delivered it twice");
        let replay = judge(&mut att, None, &dev, &r1, 13);
        assert!(matches!(replay, Verdict::Refused(ReportFault::Replay { counter: 1, last: 2 })), "{replay:?}");
        assert!(attested_model(&att, &digits(2)), "the replayed old version is not taken");
        // The first key is bound: another key is refused even though nothing was enrolled.
        let other = judge(&mut att, None, &dev, &signed(&key(), 3, digits(3)), 14);
        assert!(matches!(other, Verdict::Refused(ref f) if f.code() == "wrong_key"));
    }
}

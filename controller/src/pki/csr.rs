//! Checking a device's certificate signing request: pure, no I/O. A CSR is accepted only if it parses,
//! its signature verifies with the key it carries (the device proves it holds the key the certificate
//! will name), the key is ECDSA P-256, and its subject is exactly `CN=<the device asking>`. Nothing else
//! from the CSR reaches a certificate: the CA writes its own extensions.

use outpost_protocol::DeviceId;
use outpost_protocol::enroll::{EnrollRefusal, MAX_CSR};
use rcgen::{CertificateSigningRequestParams, DnType, DnValue, PKCS_ECDSA_P256_SHA256, PublicKeyData};

/// A CSR that passed every check; only this can become a device certificate.
#[derive(Debug, Clone)]
pub struct CheckedCsr {
    pub(crate) public_key: rcgen::PublicKey,
}

impl CheckedCsr {
    /// SHA-256 of the raw public key, hex: what the registry binds the device id to.
    pub fn key_fingerprint(&self) -> String {
        key_fingerprint(self.public_key.der_bytes())
    }
}

pub fn key_fingerprint(raw_public_key: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(raw_public_key))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrError {
    #[error("the CSR is {0} bytes; the limit is {MAX_CSR}")]
    TooLarge(usize),
    #[error("the CSR does not parse or its signature does not verify ({0})")]
    Invalid(String),
    #[error("the CSR's key is not ECDSA P-256")]
    WrongAlgorithm,
    #[error("the CSR's subject is {found:?}; it must be exactly CN={device}")]
    WrongSubject { device: DeviceId, found: String },
    #[error("{0:?} is the controller's identity at the broker; no device may have it")]
    ReservedId(DeviceId),
}

impl CsrError {
    pub fn refusal(&self) -> EnrollRefusal {
        match self {
            CsrError::WrongSubject { .. } | CsrError::ReservedId(_) => EnrollRefusal::WrongSubject,
            _ => EnrollRefusal::BadCsr,
        }
    }
}

fn dn_text(v: &DnValue) -> String {
    match v {
        DnValue::Utf8String(s) => s.clone(),
        DnValue::PrintableString(s) => s.as_str().to_owned(),
        DnValue::Ia5String(s) => s.as_str().to_owned(),
        other => format!("{other:?}"),
    }
}

/// Checks a DER CSR sent by `device`.
pub fn check(der: &[u8], device: &DeviceId) -> Result<CheckedCsr, CsrError> {
    // The broker ACL grants CN=outpost-controller every device's topics: a device by that name would be
    // the controller.
    if device.as_str() == super::CONTROLLER_CN {
        return Err(CsrError::ReservedId(device.clone()));
    }
    if der.len() > MAX_CSR {
        return Err(CsrError::TooLarge(der.len()));
    }
    // rcgen verifies the self-signature while parsing: a CSR for a key the sender does not hold fails here.
    let parsed =
        CertificateSigningRequestParams::from_der(&der.into()).map_err(|e| CsrError::Invalid(e.to_string()))?;
    if parsed.public_key.algorithm() != &PKCS_ECDSA_P256_SHA256 {
        return Err(CsrError::WrongAlgorithm);
    }
    // The subject must name the device asking and nothing more: a device that could get a certificate
    // for another id could publish as that device (the broker ACL keys on the certificate's CN).
    let names: Vec<(DnType, String)> =
        parsed.params.distinguished_name.iter().map(|(t, v)| (t.clone(), dn_text(v))).collect();
    match names.as_slice() {
        [(DnType::CommonName, cn)] if cn == device.as_str() => Ok(CheckedCsr { public_key: parsed.public_key }),
        _ => Err(CsrError::WrongSubject {
            device: device.clone(),
            found: names.iter().map(|(t, v)| format!("{t:?}={v}")).collect::<Vec<_>>().join(","),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair};

    fn csr(key: &KeyPair, names: &[(DnType, &str)]) -> Vec<u8> {
        let mut p = CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        for (t, v) in names {
            p.distinguished_name.push(t.clone(), *v);
        }
        p.serialize_request(key).unwrap().der().to_vec()
    }

    fn id(s: &str) -> DeviceId {
        DeviceId::new(s).unwrap()
    }

    #[test]
    fn a_p256_csr_naming_the_device_asking_is_accepted() {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let checked = check(&csr(&key, &[(DnType::CommonName, "dev-1")]), &id("dev-1")).unwrap();
        assert_eq!(checked.key_fingerprint(), key_fingerprint(key.public_key_raw()));
    }

    #[test]
    fn a_csr_for_another_device_or_with_extra_names_is_refused_as_wrong_subject() {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let for_b = csr(&key, &[(DnType::CommonName, "dev-b")]);
        let err = check(&for_b, &id("dev-a")).unwrap_err();
        assert_eq!(err.refusal(), EnrollRefusal::WrongSubject);
        assert!(err.to_string().contains("dev-b") && err.to_string().contains("CN=dev-a"), "{err}");
        let extra = csr(&key, &[(DnType::OrganizationName, "x"), (DnType::CommonName, "dev-a")]);
        assert_eq!(check(&extra, &id("dev-a")).unwrap_err().refusal(), EnrollRefusal::WrongSubject);
        assert_eq!(check(&csr(&key, &[]), &id("dev-a")).unwrap_err().refusal(), EnrollRefusal::WrongSubject);
        let controller = csr(&key, &[(DnType::CommonName, super::super::CONTROLLER_CN)]);
        let err = check(&controller, &id(super::super::CONTROLLER_CN)).unwrap_err();
        assert!(matches!(err, CsrError::ReservedId(_)), "{err}");
    }

    #[test]
    fn a_tampered_truncated_or_foreign_key_csr_is_refused_as_bad() {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let good = csr(&key, &[(DnType::CommonName, "dev-1")]);
        // Flip a byte inside the subject: the signature no longer covers what is there.
        let at = good.windows(5).position(|w| w == b"dev-1").unwrap();
        let mut tampered = good.clone();
        tampered[at + 4] = b'2';
        assert!(matches!(check(&tampered, &id("dev-2")), Err(CsrError::Invalid(_))));
        assert!(matches!(check(&good[..good.len() - 3], &id("dev-1")), Err(CsrError::Invalid(_))));
        assert!(matches!(check(b"not a csr", &id("dev-1")), Err(CsrError::Invalid(_))));
        assert!(matches!(check(&vec![0x30; MAX_CSR + 1], &id("dev-1")), Err(CsrError::TooLarge(_))));
        let ed = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let err = check(&csr(&ed, &[(DnType::CommonName, "dev-1")]), &id("dev-1")).unwrap_err();
        assert_eq!(err, CsrError::WrongAlgorithm);
    }
}

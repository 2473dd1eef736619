//! The device key and its certificate signing request, with the `ring` that rustls already links (no
//! X.509 crate on the device: a CSR for one P-256 key and one CN is a fixed DER shape, written here and
//! checked against a real parser in the tests). The key is made on the device and never leaves it.

use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot make a device key: {0}")]
    Generate(String),
    #[error("{path}: not an ECDSA P-256 PKCS#8 key ({message})")]
    Parse { path: String, message: String },
    #[error("cannot sign the certificate request: {0}")]
    Sign(String),
}

/// A new ECDSA P-256 key as PKCS#8 DER.
pub fn generate_pkcs8() -> Result<Vec<u8>, KeyError> {
    EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &SystemRandom::new())
        .map(|d| d.as_ref().to_vec())
        .map_err(|e| KeyError::Generate(e.to_string()))
}

pub fn key_pair(pkcs8: &[u8], path: &str) -> Result<EcdsaKeyPair, KeyError> {
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8, &SystemRandom::new())
        .map_err(|e| KeyError::Parse { path: path.to_owned(), message: e.to_string() })
}

/// The uncompressed public point (65 bytes) as it appears in the key's certificate.
pub fn public_key(key: &EcdsaKeyPair) -> &[u8] {
    key.public_key().as_ref()
}

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes: Vec<u8> = n.to_be_bytes().into_iter().skip_while(|b| *b == 0).collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend_from_slice(&bytes);
    }
    out.extend_from_slice(content);
    out
}

fn seq(parts: &[&[u8]]) -> Vec<u8> {
    tlv(0x30, &parts.concat())
}

fn bit_string(bytes: &[u8]) -> Vec<u8> {
    tlv(0x03, &[&[0u8][..], bytes].concat()) // no unused bits
}

const OID_EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_PRIME256V1: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_ECDSA_SHA256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
const OID_COMMON_NAME: &[u8] = &[0x06, 0x03, 0x55, 0x04, 0x03];

/// A PKCS#10 request (DER) for `key` with subject `CN=<common_name>` and no attributes.
pub fn csr_der(key: &EcdsaKeyPair, common_name: &str) -> Result<Vec<u8>, KeyError> {
    let name = seq(&[&tlv(0x31, &seq(&[OID_COMMON_NAME, &tlv(0x0c, common_name.as_bytes())]))]);
    let spki = seq(&[&seq(&[OID_EC_PUBLIC_KEY, OID_PRIME256V1]), &bit_string(public_key(key))]);
    // version 0, subject, key, empty attributes ([0] IMPLICIT SET OF).
    let info = seq(&[&[0x02, 0x01, 0x00], &name, &spki, &[0xa0, 0x00]]);
    let sig = key.sign(&SystemRandom::new(), &info).map_err(|e| KeyError::Sign(e.to_string()))?;
    Ok(seq(&[&info, &seq(&[OID_ECDSA_SHA256]), &bit_string(sig.as_ref())]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_parses_verifies_and_names_the_device_with_its_key() {
        let pkcs8 = generate_pkcs8().unwrap();
        let key = key_pair(&pkcs8, "test").unwrap();
        let der = csr_der(&key, "dev-0042").unwrap();
        // rcgen (dev-dependency only) parses with x509-parser and verifies the signature.
        let parsed = rcgen::CertificateSigningRequestParams::from_der(&der.as_slice().into()).unwrap();
        let cn = parsed.params.distinguished_name.get(&rcgen::DnType::CommonName).unwrap();
        assert_eq!(cn, &rcgen::DnValue::Utf8String("dev-0042".into()));
        assert_eq!(rcgen::PublicKeyData::der_bytes(&parsed.public_key), public_key(&key));
        assert_eq!(parsed.public_key.algorithm(), &rcgen::PKCS_ECDSA_P256_SHA256);
    }

    #[test]
    fn long_names_use_the_long_length_form_and_still_parse() {
        let key = key_pair(&generate_pkcs8().unwrap(), "test").unwrap();
        let der = csr_der(&key, &"d".repeat(64)).unwrap();
        assert!(der.len() > 255, "long form with two length bytes");
        assert!(rcgen::CertificateSigningRequestParams::from_der(&der.as_slice().into()).is_ok());
    }

    #[test]
    fn a_key_file_that_is_not_pkcs8_p256_is_refused_by_path() {
        let err = key_pair(b"garbage", "/data/identity/device.key").unwrap_err().to_string();
        assert!(err.contains("/data/identity/device.key"), "{err}");
    }
}

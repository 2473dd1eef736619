//! ed25519 keys, key ids and signatures. Keys live in PKCS#8 / SPKI PEM files (the CLI does the file I/O;
//! this module only converts text). Every signature is domain-separated, so a signature over a trust
//! policy can never be replayed as a signature over a manifest, or the other way round.

use crate::digest::Digest;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

pub use ed25519_dalek::{SigningKey as PrivateKey, VerifyingKey as PublicKey};

/// What a signature covers. The tag is prepended to the signed bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    Manifest,
    TrustPolicy,
    VersionReport,
    /// A root document (`root.rs`): the fleet's root key set, signed by the old root and the new one.
    Root,
    /// A director statement (`director.rs`): a desired state the controller signed for one device.
    Director,
}

impl Domain {
    fn tag(self) -> &'static [u8] {
        match self {
            Domain::Manifest => b"outpost/v1/manifest\0",
            Domain::TrustPolicy => b"outpost/v1/trust-policy\0",
            Domain::VersionReport => b"outpost/v1/version-report\0",
            Domain::Root => b"outpost/v1/root\0",
            Domain::Director => b"outpost/v1/director\0",
        }
    }
}

/// The first 8 bytes of SHA-256 over the raw public key. It only selects which key to try; the
/// signature itself is always checked against the full key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct KeyId(pub [u8; 8]);

impl KeyId {
    pub fn of(key: &PublicKey) -> Self {
        KeyId::of_bytes(key.as_bytes())
    }

    /// The id of raw public key bytes (valid or not: for naming a key in an error).
    pub fn of_bytes(raw: &[u8; 32]) -> Self {
        let d = Digest::of(raw);
        let mut id = [0u8; 8];
        id.copy_from_slice(&d.0[..8]);
        KeyId(id)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// A 64-byte ed25519 signature with the id of the key that made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    pub key_id: KeyId,
    pub sig: SigBytes,
}

/// Raw signature bytes (serde has no derive for `[u8; 64]`).
#[derive(Clone, PartialEq, Eq)]
pub struct SigBytes(pub [u8; 64]);

impl fmt::Debug for SigBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigBytes({}…)", hex::encode(&self.0[..6]))
    }
}

impl Serialize for SigBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for SigBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = SigBytes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("64 signature bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<SigBytes, E> {
                let arr: [u8; 64] = v.try_into().map_err(|_| E::invalid_length(v.len(), &self))?;
                Ok(SigBytes(arr))
            }
        }
        d.deserialize_bytes(V)
    }
}

/// Signs `bytes` in `domain` with `key`.
pub fn sign(key: &PrivateKey, domain: Domain, bytes: &[u8]) -> Signature {
    let sig = key.sign(&tagged(domain, bytes));
    Signature { key_id: KeyId::of(&key.verifying_key()), sig: SigBytes(sig.to_bytes()) }
}

/// Checks one signature. Strict verification rejects malleable and small-order signatures.
pub fn verify_one(key: &PublicKey, domain: Domain, bytes: &[u8], sig: &Signature) -> bool {
    let s = ed25519_dalek::Signature::from_bytes(&sig.sig.0);
    key.verify_strict(&tagged(domain, bytes), &s).is_ok()
}

/// The exact bytes a signature in `domain` covers: the domain's tag, then `bytes`. For signatures made
/// outside this module (the device's ECDSA key signs version reports with `ring` on the device).
pub fn tagged(domain: Domain, bytes: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(domain.tag().len() + bytes.len());
    v.extend_from_slice(domain.tag());
    v.extend_from_slice(bytes);
    v
}

/// A private key from 32 bytes of secret randomness (the caller owns the randomness source).
pub fn private_key_from_seed(seed: [u8; 32]) -> PrivateKey {
    SigningKey::from_bytes(&seed)
}

#[derive(Debug, thiserror::Error)]
#[error("{what} is not a valid ed25519 {kind} PEM: {detail}")]
pub struct PemError {
    pub what: String,
    pub kind: &'static str,
    pub detail: String,
}

/// Parses a PKCS#8 `PRIVATE KEY` PEM. `what` names the source (a path) for the error.
pub fn private_key_from_pem(pem: &str, what: &str) -> Result<PrivateKey, PemError> {
    SigningKey::from_pkcs8_pem(pem).map_err(|e| PemError {
        what: what.to_owned(),
        kind: "private key (PKCS#8)",
        detail: e.to_string(),
    })
}

/// Parses an SPKI `PUBLIC KEY` PEM.
pub fn public_key_from_pem(pem: &str, what: &str) -> Result<PublicKey, PemError> {
    VerifyingKey::from_public_key_pem(pem).map_err(|e| PemError {
        what: what.to_owned(),
        kind: "public key (SPKI)",
        detail: e.to_string(),
    })
}

pub fn private_key_to_pem(key: &PrivateKey) -> String {
    key.to_pkcs8_pem(Default::default()).expect("ed25519 PKCS#8 encoding cannot fail").to_string()
}

pub fn public_key_to_pem(key: &PublicKey) -> String {
    key.to_public_key_pem(Default::default()).expect("ed25519 SPKI encoding cannot fail")
}

/// Raw 32-byte public key as it travels inside trust policies.
pub fn public_key_from_bytes(bytes: &[u8; 32]) -> Option<PublicKey> {
    VerifyingKey::from_bytes(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trips_and_signatures_are_bound_to_their_domain() {
        let key = private_key_from_seed([7; 32]);
        let back = private_key_from_pem(&private_key_to_pem(&key), "k").unwrap();
        assert_eq!(back.to_bytes(), key.to_bytes());
        let public = public_key_from_pem(&public_key_to_pem(&key.verifying_key()), "p").unwrap();
        let sig = sign(&key, Domain::Manifest, b"hello");
        assert!(verify_one(&public, Domain::Manifest, b"hello", &sig));
        assert!(!verify_one(&public, Domain::TrustPolicy, b"hello", &sig));
        assert!(!verify_one(&public, Domain::Manifest, b"hellO", &sig));
    }

    #[test]
    fn a_public_key_pem_is_not_accepted_as_a_private_key() {
        let key = private_key_from_seed([1; 32]);
        let err = private_key_from_pem(&public_key_to_pem(&key.verifying_key()), "x.pub").unwrap_err();
        assert!(err.to_string().contains("x.pub"));
    }
}

//! Director statements (Uptane's director role): the controller signs every desired state it publishes,
//! for one device, with a key the root-signed trust policy names (`TrustPolicy::director_keys`).
//!
//! A desired state arrives through the broker, which anyone holding broker credentials for the device's
//! topics can write. An install request is safe unsigned (the bundle's signed manifest decides what runs),
//! but a revert or a removal carries nothing the release keys signed: without this signature, whoever can
//! publish on `down/desired/{model}` could take a model off a device or switch it back. The agent takes a
//! revert or removal only as a verified statement (`verify`), and only if it was issued no earlier than the
//! last statement it took for that model (the agent's `director_floor`), so a captured statement cannot be
//! replayed on another device (it names the device) nor later (a newer statement raised the floor).
//!
//! The signature covers `outpost/v1/director\0` followed by the exact postcard bytes of the statement;
//! the statement is decoded for the request it makes before it is verified (an install asks, and is
//! checked against its bundle), and trusted as the director's word only after.

use crate::keys::{self, Domain, PrivateKey, PublicKey, Signature};
use crate::messages::DesiredState;
use crate::names::DeviceId;
use crate::rejection::{RejectReason, Rejection};
use crate::signed;
use crate::verify::Verified;
use serde::{Deserialize, Serialize};

/// What the director says one device should run of one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DirectorStatement {
    /// The device it is for: the same statement on another device's topic is refused.
    pub device: DeviceId,
    /// The desired state. Its `issued_at` orders the director's statements to this device for this model.
    pub desired: DesiredState,
}

/// A director statement and its signature (`down/desired/{model}`, retained).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignedDesired {
    /// A postcard [`DirectorStatement`], signed as these exact bytes.
    pub statement: Vec<u8>,
    pub signature: Signature,
}

impl SignedDesired {
    /// Signs `desired` for `device` with the director key.
    pub fn sign(device: &DeviceId, desired: &DesiredState, key: &PrivateKey) -> SignedDesired {
        let statement = DirectorStatement { device: device.clone(), desired: desired.clone() };
        let bytes = postcard::to_allocvec(&statement).expect("statement encodes");
        let signature = keys::sign(key, Domain::Director, &bytes);
        SignedDesired { statement: bytes, signature }
    }

    /// The statement as a request, before its signature is checked: what an unsigned desired state would
    /// say. Nothing in it is a fact until [`SignedDesired::verify`] passes.
    pub fn request(&self) -> Result<DirectorStatement, Rejection> {
        postcard::from_bytes(&self.statement)
            .map_err(|e| Rejection::new(RejectReason::Malformed, format!("director statement: {e}")))
    }

    /// Checks, in order: the signature is by one of `directors` (the keys the device's trust policy names)
    /// over the exact statement bytes; the statement is for `device`. Freshness against earlier
    /// statements is the update machine's (it holds the floor).
    pub fn verify(&self, device: &DeviceId, directors: &[PublicKey]) -> Result<Verified<DesiredState>, Rejection> {
        if directors.is_empty() {
            // Stops nothing by itself: without a director key, no statement is the director's.
            return Err(Rejection::new(
                RejectReason::UnknownKey,
                format!(
                    "signed by key {}, but the trust policy names no director key: this device takes no \
                     revert or removal from the fleet",
                    self.signature.key_id
                ),
            ));
        }
        // A forged statement (any key but a director's) or one altered on the way (the director's key,
        // bytes it did not sign).
        signed::check_threshold(
            directors,
            1,
            Domain::Director,
            &self.statement,
            std::slice::from_ref(&self.signature),
            "director statement",
            "the trust policy's director set",
        )?;
        let statement = self.request()?;
        // Replay across devices: a genuine statement for another device, republished on this one's topic.
        if statement.device != *device {
            return Err(Rejection::new(
                RejectReason::WrongDevice,
                format!("the director signed this statement for device {}, not {device}", statement.device),
            ));
        }
        Ok(Verified::new(statement.desired))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::private_key_from_seed;
    use crate::messages::{BundleRef, Mode, Watch};
    use crate::{Digest, ModelName, Version};

    fn desired(mode: Mode) -> DesiredState {
        DesiredState {
            model: ModelName::new("digits").unwrap(),
            version: Version::new(2, 0, 0),
            sequence: 2,
            bundle: BundleRef { digest: Digest([7; 32]), size: 10, chunk_size: 10, chunks: vec![Digest([8; 32])] },
            rollout: Some("r-1".into()),
            mode,
            issued_at: 1_800_000_000,
            watch: Watch::default(),
        }
    }

    fn dev(id: &str) -> DeviceId {
        DeviceId::new(id).unwrap()
    }

    #[test]
    fn a_statement_signed_by_a_director_key_for_this_device_verifies() {
        let director = private_key_from_seed([3; 32]);
        let s = SignedDesired::sign(&dev("dev-1"), &desired(Mode::Revert), &director);
        let keys = [private_key_from_seed([4; 32]).verifying_key(), director.verifying_key()];
        assert_eq!(*s.verify(&dev("dev-1"), &keys).unwrap(), desired(Mode::Revert));
        assert_eq!(s.request().unwrap().desired.mode, Mode::Revert);
    }

    #[test]
    fn forged_altered_misdirected_and_unconfigured_statements_each_have_their_code() {
        let director = private_key_from_seed([3; 32]);
        let keys = [director.verifying_key()];
        let code = |s: &SignedDesired, keys: &[PublicKey]| s.verify(&dev("dev-1"), keys).unwrap_err().reason;

        let forged = SignedDesired::sign(&dev("dev-1"), &desired(Mode::Remove), &private_key_from_seed([9; 32]));
        assert_eq!(code(&forged, &keys), RejectReason::UnknownKey, "signed by an attacker's key");

        let mut altered = SignedDesired::sign(&dev("dev-1"), &desired(Mode::Activate), &director);
        let remove = postcard::to_allocvec(&DirectorStatement { device: dev("dev-1"), desired: desired(Mode::Remove) });
        altered.statement = remove.unwrap();
        assert_eq!(code(&altered, &keys), RejectReason::BadSignature, "an install turned into a removal");

        let theirs = SignedDesired::sign(&dev("dev-2"), &desired(Mode::Remove), &director);
        assert_eq!(code(&theirs, &keys), RejectReason::WrongDevice, "another device's genuine removal");

        let genuine = SignedDesired::sign(&dev("dev-1"), &desired(Mode::Remove), &director);
        assert_eq!(code(&genuine, &[]), RejectReason::UnknownKey, "a policy without director keys");
    }

    #[test]
    fn the_signature_is_bound_to_the_director_domain() {
        let director = private_key_from_seed([3; 32]);
        let mut s = SignedDesired::sign(&dev("dev-1"), &desired(Mode::Revert), &director);
        // The same key signing the same bytes as a manifest.
        s.signature = keys::sign(&director, Domain::Manifest, &s.statement);
        assert_eq!(
            s.verify(&dev("dev-1"), &[director.verifying_key()]).unwrap_err().reason,
            RejectReason::BadSignature
        );
    }
}

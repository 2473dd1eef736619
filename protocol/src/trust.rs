//! Trust policies: the pinned root keys sign a policy that names the release keys and how many of them
//! (k of n) must sign a manifest. Rotating release keys = publishing a new policy signed by the roots.

use crate::UnixTime;
use crate::keys::{self, Domain, KeyId, PrivateKey, PublicKey, Signature};
use crate::limits::Limits;
use crate::rejection::{RejectReason, Rejection};
use crate::signed::{self, ThresholdMet};
use crate::verify::Verified;
use serde::{Deserialize, Serialize};

pub const POLICY_MAGIC: &[u8; 8] = b"OPTRUST1";
/// 2: the policy names director keys. Format 1 policies (no director keys) are still read.
pub const POLICY_FORMAT: u16 = 2;

/// The body of a `trust.policy` file (postcard), signed by the root keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustPolicy {
    pub format: u16,
    /// Grows with every rotation; a device keeps the highest version it accepted.
    pub version: u64,
    pub created: UnixTime,
    pub expires: UnixTime,
    /// How many distinct release keys must sign a manifest.
    pub threshold: u8,
    /// Raw ed25519 release public keys.
    pub release_keys: Vec<[u8; 32]>,
    /// Raw ed25519 public keys of the fleet's controller(s) (Uptane's director role): a desired state
    /// that reverts or removes a model takes effect on a device only when one of them signed it for that
    /// device (`director.rs`). Empty: devices take no revert or removal from the fleet.
    pub director_keys: Vec<[u8; 32]>,
}

/// The body of a format-1 policy, before director keys.
#[derive(Deserialize)]
struct TrustPolicyV1 {
    format: u16,
    version: u64,
    created: UnixTime,
    expires: UnixTime,
    threshold: u8,
    release_keys: Vec<[u8; 32]>,
}

impl TrustPolicy {
    pub fn release_key_ids(&self) -> Vec<KeyId> {
        self.release_keys.iter().filter_map(keys::public_key_from_bytes).map(|k| KeyId::of(&k)).collect()
    }
}

/// The root public keys pinned on the device at image build time, and how many must sign a policy.
#[derive(Debug, Clone)]
pub struct RootKeys {
    pub keys: Vec<PublicKey>,
    pub threshold: usize,
}

impl RootKeys {
    pub fn new(keys: Vec<PublicKey>) -> Self {
        RootKeys { keys, threshold: 1 }
    }
}

/// A policy whose root signatures and expiry have been checked, with its release keys decoded.
#[derive(Debug, Clone)]
pub struct CheckedPolicy {
    pub policy: TrustPolicy,
    pub release_keys: Vec<PublicKey>,
    /// The director keys, decoded: what signs a revert or removal.
    pub director_keys: Vec<PublicKey>,
    pub root_signers: ThresholdMet,
}

/// Encodes and signs a policy with every given root key.
pub fn create_policy(policy: &TrustPolicy, roots: &[PrivateKey]) -> Vec<u8> {
    let body = postcard::to_allocvec(policy).expect("policy encodes");
    let sigs: Vec<Signature> = roots.iter().map(|k| keys::sign(k, Domain::TrustPolicy, &body)).collect();
    signed::encode(POLICY_MAGIC, &body, &sigs, &[])
}

/// Decodes a policy file without checking signatures: for `inspect`-style display only.
pub fn read_policy_unverified(bytes: &[u8], limits: &Limits) -> Result<(TrustPolicy, Vec<Signature>), Rejection> {
    let file = signed::parse(bytes, POLICY_MAGIC, "trust policy", limits.max_policy, limits)?;
    let policy = decode_body(file.body)?;
    Ok((policy, file.signatures))
}

/// Checks a trust policy against the pinned roots at time `now` (plus `grace` seconds for devices whose
/// clock may lag), refusing versions below `version_floor` (the highest the device accepted).
pub fn verify_policy(
    bytes: &[u8],
    roots: &RootKeys,
    now: UnixTime,
    grace: u64,
    version_floor: u64,
    limits: &Limits,
) -> Result<Verified<CheckedPolicy>, Rejection> {
    let file = signed::parse(bytes, POLICY_MAGIC, "trust policy", limits.max_policy, limits)?;
    if !file.rest.is_empty() {
        return Err(Rejection::new(
            RejectReason::Malformed,
            format!("trust policy has {} unexpected trailing bytes", file.rest.len()),
        ));
    }
    // Any failure to meet the root threshold (bad, unknown or too few signatures) means the policy is
    // not the roots' word: an attacker-made policy could list the attacker's release keys.
    let root_signers = signed::check_threshold(
        &roots.keys,
        roots.threshold,
        Domain::TrustPolicy,
        file.body,
        &file.signatures,
        "trust policy",
        "the pinned root set",
    )
    .map_err(|e| Rejection::new(RejectReason::PolicyNotSignedByRoot, format!("{} ({})", e.detail, e.reason)))?;
    let policy = decode_body(file.body)?;
    // Rollback of the key set: an old policy may still list a release key revoked since.
    if policy.version < version_floor {
        return Err(Rejection::new(
            RejectReason::PolicyRollback,
            format!(
                "trust policy v{} is older than v{version_floor}, which this device already accepted",
                policy.version
            ),
        ));
    }
    // Freeze attack: an attacker who replays an old policy forever keeps revoked keys alive.
    if now > policy.expires.saturating_add(grace) {
        return Err(Rejection::new(
            RejectReason::PolicyExpired,
            format!("trust policy v{} expired at {} (now {now}, grace {grace} s)", policy.version, policy.expires),
        ));
    }
    let what = format!("trust policy v{}", policy.version);
    let release_keys = check_key_set(&policy.release_keys, policy.threshold, &what, "release", limits)?;
    let director_keys = if policy.director_keys.is_empty() {
        vec![]
    } else {
        check_key_set(&policy.director_keys, 1, &what, "director", limits)?
    };
    Ok(Verified::new(CheckedPolicy { policy, release_keys, director_keys, root_signers }))
}

/// Checks a key set and its threshold as trust policies and root documents list them, before any of the
/// keys is trusted with anything: each check names the attack it stops (see the reason codes).
pub(crate) fn check_key_set(
    raw: &[[u8; 32]],
    threshold: u8,
    what: &str,
    kind: &str,
    limits: &Limits,
) -> Result<Vec<PublicKey>, Rejection> {
    if threshold == 0 {
        return Err(Rejection::new(
            RejectReason::ThresholdZero,
            format!("{what} requires 0 {kind} signatures: it would trust anything"),
        ));
    }
    if raw.len() > limits.max_signatures {
        return Err(Rejection::new(
            RejectReason::TooManyKeys,
            format!(
                "{what} lists {} {kind} keys; a signed file carries at most {} signatures",
                raw.len(),
                limits.max_signatures
            ),
        ));
    }
    let mut keys: Vec<PublicKey> = Vec::with_capacity(raw.len());
    for (i, bytes) in raw.iter().enumerate() {
        if raw[..i].contains(bytes) {
            return Err(Rejection::new(
                RejectReason::DuplicateKeys,
                format!("{what} lists {kind} key {} twice", KeyId::of_bytes(bytes)),
            ));
        }
        let key = keys::public_key_from_bytes(bytes).ok_or_else(|| {
            Rejection::new(
                RejectReason::Malformed,
                format!("{what} lists an invalid {kind} key {}", hex::encode(bytes)),
            )
        })?;
        keys.push(key);
    }
    if usize::from(threshold) > keys.len() {
        return Err(Rejection::new(
            RejectReason::ThresholdUnreachable,
            format!("{what} requires {threshold} {kind} signatures but lists {} key(s)", keys.len()),
        ));
    }
    Ok(keys)
}

fn decode_body(body: &[u8]) -> Result<TrustPolicy, Rejection> {
    let malformed = |e: postcard::Error| Rejection::new(RejectReason::Malformed, format!("trust policy body: {e}"));
    // The format leads the body: a format-1 policy ends where format 2 lists its director keys.
    let v1: TrustPolicyV1 = postcard::from_bytes(body).map_err(malformed)?;
    if v1.format == 1 {
        let TrustPolicyV1 { format, version, created, expires, threshold, release_keys } = v1;
        return Ok(TrustPolicy { format, version, created, expires, threshold, release_keys, director_keys: vec![] });
    }
    let policy: TrustPolicy = postcard::from_bytes(body).map_err(malformed)?;
    if policy.format != POLICY_FORMAT {
        return Err(Rejection::new(
            RejectReason::Malformed,
            format!("trust policy format {} is not supported (expected {POLICY_FORMAT})", policy.format),
        ));
    }
    Ok(policy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::private_key_from_seed;

    /// A format-1 policy (before director keys), as devices and controllers hold them today.
    #[derive(Serialize)]
    struct V1 {
        format: u16,
        version: u64,
        created: UnixTime,
        expires: UnixTime,
        threshold: u8,
        release_keys: Vec<[u8; 32]>,
    }

    #[test]
    fn a_format_1_policy_still_verifies_and_names_no_director_key() {
        let root = private_key_from_seed([1; 32]);
        let release = private_key_from_seed([2; 32]).verifying_key().to_bytes();
        let v1 = V1 { format: 1, version: 4, created: 10, expires: 1_000, threshold: 1, release_keys: vec![release] };
        let body = postcard::to_allocvec(&v1).unwrap();
        let sig = keys::sign(&root, Domain::TrustPolicy, &body);
        let bytes = signed::encode(POLICY_MAGIC, &body, &[sig], &[]);
        let roots = RootKeys::new(vec![root.verifying_key()]);
        let checked = verify_policy(&bytes, &roots, 100, 0, 0, &Limits::default()).unwrap();
        assert_eq!((checked.policy.version, checked.policy.format), (4, 1));
        assert!(checked.director_keys.is_empty() && checked.policy.director_keys.is_empty());
    }

    #[test]
    fn a_format_2_policy_carries_its_director_keys_checked_like_release_keys() {
        let root = private_key_from_seed([1; 32]);
        let key = |s: u8| private_key_from_seed([s; 32]).verifying_key().to_bytes();
        let policy = |director_keys: Vec<[u8; 32]>| TrustPolicy {
            format: POLICY_FORMAT,
            version: 1,
            created: 10,
            expires: 1_000,
            threshold: 1,
            release_keys: vec![key(2)],
            director_keys,
        };
        let roots = RootKeys::new(vec![root.verifying_key()]);
        let check = |p: &TrustPolicy| {
            verify_policy(&create_policy(p, std::slice::from_ref(&root)), &roots, 100, 0, 0, &Limits::default())
        };
        let ok = check(&policy(vec![key(5), key(6)])).unwrap();
        assert_eq!(ok.director_keys.iter().map(|k| k.to_bytes()).collect::<Vec<_>>(), vec![key(5), key(6)]);
        assert_eq!(check(&policy(vec![key(5), key(5)])).unwrap_err().reason, RejectReason::DuplicateKeys);
    }
}

//! Root documents: the fleet's root key set, rotated TUF-style.
//!
//! A device's first root (version 1) is the set of root public keys pinned in its image (`[trust] root_pub`
//! and `root_threshold`). Every later root is a document in the framing of [`crate::signed`]:
//!
//! ```text
//! magic "OPROOT01" | body length | postcard RootDocument | signatures length | signatures
//! ```
//! Root `n + 1` is signed (domain `outpost/v1/root`) by a threshold of root `n`'s keys, which vouch for
//! it, and by a threshold of its own keys, which proves the new key set exists and is held (a typo or a
//! lost key cannot become the root). A device walks the chain one version at a time from the root it pins
//! and pins the last one; it never skips a step, because a step it has not seen is a signature it has not
//! checked. Only the newest root's expiry matters (checked where a policy is taken, `trust_update.rs`):
//! older roots in the chain expire as they are replaced, and a device that was offline for years must
//! still be able to walk them.

use crate::UnixTime;
use crate::keys::{self, Domain, PrivateKey, PublicKey, Signature};
use crate::limits::Limits;
use crate::rejection::{RejectReason, Rejection};
use crate::signed;
use crate::trust::{self, RootKeys};
use crate::verify::Verified;
use serde::{Deserialize, Serialize};

pub const ROOT_MAGIC: &[u8; 8] = b"OPROOT01";
pub const ROOT_FORMAT: u16 = 1;

/// The body of a root document (postcard), signed by the previous root and by its own keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootDocument {
    pub format: u16,
    /// 2 for the first rotation (1 is the image's pinned root), then one more per rotation.
    pub version: u64,
    pub created: UnixTime,
    /// After this, the root signs no new trust policy on devices (`root_expired`); a later root can still
    /// be walked from it.
    pub expires: UnixTime,
    /// How many distinct keys of this root must sign a trust policy or the next root.
    pub threshold: u8,
    /// Raw ed25519 root public keys.
    pub keys: Vec<[u8; 32]>,
}

/// A root a device trusts: the image's pinned root, or one reached by walking the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedRoot {
    pub version: u64,
    pub keys: Vec<PublicKey>,
    pub threshold: usize,
    /// `None` for the image's pinned root, which has no document and no expiry.
    pub expires: Option<UnixTime>,
}

impl TrustedRoot {
    /// The root pinned at image build time: version 1.
    pub fn pinned(keys: Vec<PublicKey>, threshold: usize) -> TrustedRoot {
        TrustedRoot { version: 1, keys, threshold: threshold.max(1), expires: None }
    }

    /// The keys and threshold that sign trust policies.
    pub fn root_keys(&self) -> RootKeys {
        RootKeys { keys: self.keys.clone(), threshold: self.threshold }
    }

    /// Whether this root has expired at `now` (plus `grace` seconds for a lagging clock).
    pub fn expired(&self, now: UnixTime, grace: u64) -> bool {
        self.expires.is_some_and(|e| now > e.saturating_add(grace))
    }
}

/// The result of a walk: the newest root, and the documents walked to reach it (in order, to append to
/// the chain the device keeps).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Walked {
    pub root: TrustedRoot,
    pub steps: Vec<Vec<u8>>,
}

/// Encodes a root document signed by every given key (a threshold of the previous root's and of its own).
pub fn create_root(doc: &RootDocument, signers: &[PrivateKey]) -> Vec<u8> {
    let body = postcard::to_allocvec(doc).expect("root document encodes");
    let sigs: Vec<Signature> = signers.iter().map(|k| keys::sign(k, Domain::Root, &body)).collect();
    signed::encode(ROOT_MAGIC, &body, &sigs, &[])
}

/// Adds one key's signature to a root document (key holders sign in turn; signing twice adds nothing).
pub fn add_root_signature(bytes: &[u8], key: &PrivateKey, limits: &Limits) -> Result<Vec<u8>, Rejection> {
    let file = parse(bytes, limits)?;
    let sig = keys::sign(key, Domain::Root, file.body);
    let mut sigs = file.signatures;
    if !sigs.iter().any(|s| s.key_id == sig.key_id) {
        sigs.push(sig);
    }
    Ok(signed::encode(ROOT_MAGIC, file.body, &sigs, &[]))
}

/// Decodes a root document without checking signatures: for `inspect`-style display only.
pub fn read_root_unverified(bytes: &[u8], limits: &Limits) -> Result<(RootDocument, Vec<Signature>), Rejection> {
    let file = parse(bytes, limits)?;
    Ok((decode_body(file.body)?, file.signatures))
}

fn parse<'a>(bytes: &'a [u8], limits: &Limits) -> Result<signed::SignedFile<'a>, Rejection> {
    let file = signed::parse(bytes, ROOT_MAGIC, "root document", limits.max_policy, limits)?;
    if !file.rest.is_empty() {
        return Err(Rejection::new(
            RejectReason::Malformed,
            format!("root document has {} unexpected trailing bytes", file.rest.len()),
        ));
    }
    Ok(file)
}

fn decode_body(body: &[u8]) -> Result<RootDocument, Rejection> {
    let doc: RootDocument = postcard::from_bytes(body)
        .map_err(|e| Rejection::new(RejectReason::Malformed, format!("root document body: {e}")))?;
    if doc.format != ROOT_FORMAT {
        return Err(Rejection::new(
            RejectReason::Malformed,
            format!("root document format {} is not supported (expected {ROOT_FORMAT})", doc.format),
        ));
    }
    Ok(doc)
}

/// Checks one rotation: `bytes` must be root `current.version + 1`, signed by a threshold of `current`'s
/// keys and of its own.
pub fn verify_next(current: &TrustedRoot, bytes: &[u8], limits: &Limits) -> Result<TrustedRoot, Rejection> {
    let expected = current
        .version
        .checked_add(1)
        .ok_or_else(|| Rejection::new(RejectReason::Malformed, "root version overflows"))?;
    let file = parse(bytes, limits)?;
    let below = |e: Rejection| Rejection::new(RejectReason::RootBelowThreshold, format!("{} ({})", e.detail, e.reason));
    // The old root vouches for the new one. Checked before the body is decoded: nothing unauthenticated
    // reaches the decoder, and one stolen old key (below the old threshold) cannot install a root.
    signed::check_threshold(
        &current.keys,
        current.threshold,
        Domain::Root,
        file.body,
        &file.signatures,
        &format!("root document in place of v{expected}"),
        &format!("root v{}", current.version),
    )
    .map_err(below)?;
    let doc = decode_body(file.body)?;
    // The signed version must be the next one: an older document re-signed by the current root would
    // otherwise reinstate keys rotated out; a newer one would skip a step the device never checked.
    if doc.version < expected {
        return Err(Rejection::new(
            RejectReason::RootRollback,
            format!("the root document in place of v{expected} is v{}: an older root", doc.version),
        ));
    }
    if doc.version > expected {
        return Err(Rejection::new(
            RejectReason::RootVersionGap,
            format!("the root document in place of v{expected} is v{}: versions in between are missing", doc.version),
        ));
    }
    let what = format!("root v{}", doc.version);
    let keys = trust::check_key_set(&doc.keys, doc.threshold, &what, "root", limits)?;
    let threshold = usize::from(doc.threshold);
    // The new keys accept the role: a root whose keys nobody holds would end every future rotation.
    signed::check_threshold(&keys, threshold, Domain::Root, file.body, &file.signatures, &what, &what)
        .map_err(below)?;
    Ok(TrustedRoot { version: doc.version, keys, threshold, expires: Some(doc.expires) })
}

/// Walks `chain` (root documents of versions `first`, `first + 1`, … in order) from `current`, skipping
/// the documents the device already has, and returns the newest root. The versions a chain claims by
/// position only select documents; each document's signed version must match its place.
pub fn walk(
    current: &TrustedRoot,
    first: u64,
    chain: &[Vec<u8>],
    limits: &Limits,
) -> Result<Verified<Walked>, Rejection> {
    if chain.len() > limits.max_root_chain {
        return Err(Rejection::new(
            RejectReason::OverLimits,
            format!("the root chain has {} documents; the limit is {}", chain.len(), limits.max_root_chain),
        ));
    }
    let unchanged = || Ok(Verified::new(Walked { root: current.clone(), steps: Vec::new() }));
    if chain.is_empty() {
        return unchanged();
    }
    if first < 2 {
        return Err(Rejection::new(
            RejectReason::Malformed,
            format!("the root chain starts at v{first}; documents start at v2 (v1 is the image's pinned root)"),
        ));
    }
    let last = first
        .checked_add(chain.len() as u64 - 1)
        .ok_or_else(|| Rejection::new(RejectReason::Malformed, "root chain versions overflow"))?;
    // An old chain (a stale retained message, or one replayed on purpose) cannot take a device back.
    if last < current.version {
        return Err(Rejection::new(
            RejectReason::RootRollback,
            format!("the root chain ends at v{last}; this device already pins root v{}", current.version),
        ));
    }
    if first > current.version + 1 {
        return Err(Rejection::new(
            RejectReason::RootVersionGap,
            format!(
                "the root chain starts at v{first}; this device pins v{} and cannot check v{} without it",
                current.version,
                current.version + 1
            ),
        ));
    }
    let skip = usize::try_from(current.version + 1 - first).expect("within the chain's length");
    let mut root = current.clone();
    let mut steps = Vec::new();
    for doc in &chain[skip..] {
        root = verify_next(&root, doc, limits)?;
        steps.push(doc.clone());
    }
    Ok(Verified::new(Walked { root, steps }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::private_key_from_seed;

    fn key(i: u8) -> PrivateKey {
        private_key_from_seed([i; 32])
    }

    fn doc(version: u64, keys: &[u8], threshold: u8) -> RootDocument {
        RootDocument {
            format: ROOT_FORMAT,
            version,
            created: 100,
            expires: 1_000,
            threshold,
            keys: keys.iter().map(|i| key(*i).verifying_key().to_bytes()).collect(),
        }
    }

    fn pinned() -> TrustedRoot {
        TrustedRoot::pinned(vec![key(1).verifying_key()], 1)
    }

    fn code(r: Result<Verified<Walked>, Rejection>) -> RejectReason {
        r.unwrap_err().reason
    }

    #[test]
    fn a_two_step_chain_is_walked_to_its_newest_root_and_steps_already_pinned_are_skipped() {
        let l = Limits::default();
        let v2 = create_root(&doc(2, &[2, 3], 2), &[key(1), key(2), key(3)]);
        let v3 = create_root(&doc(3, &[4], 1), &[key(2), key(3), key(4)]);
        let chain = vec![v2.clone(), v3.clone()];
        let walked = walk(&pinned(), 2, &chain, &l).unwrap();
        assert_eq!(walked.root.version, 3);
        assert_eq!(walked.root.keys, vec![key(4).verifying_key()]);
        assert_eq!(walked.steps, chain);
        let at_v2 = walk(&pinned(), 2, &chain[..1], &l).unwrap().into_inner().root;
        let rest = walk(&at_v2, 2, &chain, &l).unwrap();
        assert_eq!((rest.root.version, rest.steps.len()), (3, 1), "v2 is skipped, v3 walked");
        assert_eq!(walk(&walked.root, 2, &chain, &l).unwrap().steps.len(), 0, "nothing new");
    }

    #[test]
    fn a_root_needs_the_old_threshold_and_its_own() {
        let l = Limits::default();
        let two_of_two = walk(&pinned(), 2, &[create_root(&doc(2, &[2, 3], 2), &[key(1), key(2), key(3)])], &l)
            .unwrap()
            .into_inner()
            .root;
        // Only one of the two old keys signs v3: one stolen key is not enough.
        let one_old = create_root(&doc(3, &[9], 1), &[key(2), key(9)]);
        assert_eq!(code(walk(&two_of_two, 3, &[one_old], &l)), RejectReason::RootBelowThreshold);
        // The new keys never signed: nobody is known to hold them.
        let no_new = create_root(&doc(3, &[9], 1), &[key(2), key(3)]);
        let err = walk(&two_of_two, 3, &[no_new], &l).unwrap_err();
        assert_eq!(err.reason, RejectReason::RootBelowThreshold);
        assert!(err.detail.contains("root v3"), "{err}");
        // Signed by strangers only.
        let strangers = create_root(&doc(2, &[9], 1), &[key(8), key(9)]);
        assert_eq!(code(walk(&pinned(), 2, &[strangers], &l)), RejectReason::RootBelowThreshold);
    }

    #[test]
    fn gaps_rollbacks_and_bad_key_sets_are_refused_with_their_own_reason() {
        let l = Limits::default();
        let v2 = create_root(&doc(2, &[2], 1), &[key(1), key(2)]);
        let v3 = create_root(&doc(3, &[3], 1), &[key(2), key(3)]);
        let v4_by_2 = create_root(&doc(4, &[4], 1), &[key(2), key(4)]);
        assert_eq!(
            code(walk(&pinned(), 3, std::slice::from_ref(&v3), &l)),
            RejectReason::RootVersionGap,
            "starts past v2"
        );
        // v4 in v3's place: a document that skips a version.
        assert_eq!(code(walk(&pinned(), 2, &[v2.clone(), v4_by_2], &l)), RejectReason::RootVersionGap);
        let at_v3 = walk(&pinned(), 2, &[v2.clone(), v3], &l).unwrap().into_inner().root;
        assert_eq!(code(walk(&at_v3, 2, &[v2], &l)), RejectReason::RootRollback, "an old chain");
        // The current root re-signs an older version in the next place.
        let old_again = create_root(&doc(3, &[3], 1), &[key(3)]);
        assert_eq!(code(walk(&at_v3, 4, &[old_again], &l)), RejectReason::RootRollback);
        let zero = create_root(&doc(2, &[2], 0), &[key(1), key(2)]);
        assert_eq!(code(walk(&pinned(), 2, &[zero], &l)), RejectReason::ThresholdZero);
        let dup = create_root(&doc(2, &[2, 2], 2), &[key(1), key(2)]);
        assert_eq!(code(walk(&pinned(), 2, &[dup], &l)), RejectReason::DuplicateKeys);
        let unreachable = create_root(&doc(2, &[2], 2), &[key(1), key(2)]);
        assert_eq!(code(walk(&pinned(), 2, &[unreachable], &l)), RejectReason::ThresholdUnreachable);
        let many: Vec<u8> = (10..10 + l.max_signatures as u8 + 1).collect();
        let too_many = create_root(&doc(2, &many, 1), &[key(1), key(10)]);
        assert_eq!(code(walk(&pinned(), 2, &[too_many], &l)), RejectReason::TooManyKeys);
        let long = vec![Vec::new(); l.max_root_chain + 1];
        assert_eq!(code(walk(&pinned(), 2, &long, &l)), RejectReason::OverLimits);
        assert_eq!(code(walk(&pinned(), 1, &[vec![0u8; 4]], &l)), RejectReason::Malformed);
    }

    #[test]
    fn signatures_added_one_by_one_meet_the_thresholds() {
        let l = Limits::default();
        let unsigned = create_root(&doc(2, &[2, 3], 2), &[]);
        assert_eq!(code(walk(&pinned(), 2, std::slice::from_ref(&unsigned), &l)), RejectReason::RootBelowThreshold);
        let mut bytes = unsigned;
        for k in [key(1), key(2), key(2), key(3)] {
            bytes = add_root_signature(&bytes, &k, &l).unwrap();
        }
        assert_eq!(read_root_unverified(&bytes, &l).unwrap().1.len(), 3, "signing twice adds nothing");
        assert_eq!(walk(&pinned(), 2, &[bytes], &l).unwrap().root.version, 2);
    }

    #[test]
    fn only_the_pinned_root_never_expires() {
        assert!(!pinned().expired(u64::MAX, 0));
        let v2 = walk(&pinned(), 2, &[create_root(&doc(2, &[2], 1), &[key(1), key(2)])], &Limits::default())
            .unwrap()
            .into_inner()
            .root;
        assert!(!v2.expired(1_000, 0));
        assert!(v2.expired(1_001, 0));
        assert!(!v2.expired(1_001, 60), "grace for a lagging clock");
    }
}

//! Signed trust documents for tests (cargo feature `fixtures`, turned on by the dev-dependencies of the
//! agent and the controller): the agent's, the controller's and this crate's trust tests sign the same
//! shapes of policy and root rotation, and one copy keeps them signing the same thing.

use crate::keys::{PrivateKey, private_key_from_seed};
use crate::root::{ROOT_FORMAT, RootDocument, create_root};
use crate::trust::{POLICY_FORMAT, TrustPolicy, create_policy};

/// A deterministic key: the same `i` is the same key in every test.
pub fn key(i: u8) -> PrivateKey {
    private_key_from_seed([i; 32])
}

/// A trust policy naming `key(release)` as the one release key, signed by `root`.
pub fn policy(version: u64, created: u64, expires: u64, release: u8, root: &PrivateKey) -> Vec<u8> {
    let p = TrustPolicy {
        format: POLICY_FORMAT,
        version,
        created,
        expires,
        threshold: 1,
        release_keys: vec![key(release).verifying_key().to_bytes()],
        director_keys: vec![],
    };
    create_policy(&p, std::slice::from_ref(root))
}

/// A root document that hands the root from `old` to `new`, signed by both (as a rotation must be).
pub fn rotation(version: u64, created: u64, expires: u64, old: &PrivateKey, new: &PrivateKey) -> Vec<u8> {
    let doc = RootDocument {
        format: ROOT_FORMAT,
        version,
        created,
        expires,
        threshold: 1,
        keys: vec![new.verifying_key().to_bytes()],
    };
    create_root(&doc, &[old.clone(), new.clone()])
}

//! Taking a trust update over the air, pure: walk the root chain from the root the device pins, then take
//! the policy if it verifies against the newest root and is newer than the one the device holds.
//!
//! Freeze recovery: the policy a device holds may have expired while it was offline (every bundle is
//! then refused with `policy_expired`), but a newer policy is checked on its own dates and the device's
//! root, never against the expired one, so the device takes it when it comes back and updates resume.
//! The expiry stops stale releases, not the fleet.

use crate::UnixTime;
use crate::limits::Limits;
use crate::messages::TrustUpdate;
use crate::rejection::{RejectReason, Rejection};
use crate::root::{self, TrustedRoot, Walked};
use crate::trust::{self, CheckedPolicy};
use crate::verify::Verified;

/// What the device holds now.
#[derive(Debug, Clone, Copy)]
pub struct Held<'a> {
    pub root: &'a TrustedRoot,
    /// The policy file it verifies bundles with (empty if it has none).
    pub policy: &'a [u8],
    /// The highest policy version it ever accepted: only a higher one is taken.
    pub policy_floor: u64,
}

/// What became of the update's policy.
#[derive(Debug, Clone)]
pub enum PolicyOutcome {
    /// Newer than the one held, signed by the (new) root, unexpired: use it from now on.
    Accepted(Verified<CheckedPolicy>),
    /// The same policy the device holds, and no new root: nothing to do (the retained message again).
    Unchanged,
    Refused(Rejection),
}

/// The outcome of an update whose root chain verified. A new root is pinned even when the policy is
/// refused: the rotation is authentic, and the old root's keys must not sign anything any more.
#[derive(Debug, Clone)]
pub struct Applied {
    pub walked: Verified<Walked>,
    pub policy: PolicyOutcome,
}

/// Applies `update` to what the device holds. `Err` means the root chain was refused and nothing changes.
pub fn apply(
    held: &Held<'_>,
    update: &TrustUpdate,
    now: UnixTime,
    grace: u64,
    limits: &Limits,
) -> Result<Applied, Rejection> {
    let walked = root::walk(held.root, update.first_root, &update.roots, limits)?;
    let policy = policy_outcome(held, &walked.root, !walked.steps.is_empty(), &update.policy, now, grace, limits);
    Ok(Applied { walked, policy })
}

fn policy_outcome(
    held: &Held<'_>,
    root: &TrustedRoot,
    new_root: bool,
    policy: &[u8],
    now: UnixTime,
    grace: u64,
    limits: &Limits,
) -> PolicyOutcome {
    if !new_root && policy == held.policy {
        return PolicyOutcome::Unchanged;
    }
    // Freeze: a root that was never rotated away from stops signing once it expires, so a withheld
    // rotation does not keep its keys (perhaps the reason for the rotation) in power forever.
    if root.expired(now, grace) {
        return PolicyOutcome::Refused(Rejection::new(
            RejectReason::RootExpired,
            format!("root v{} expired at {} (now {now}, grace {grace} s)", root.version, root.expires.unwrap_or(0)),
        ));
    }
    let checked = match trust::verify_policy(policy, &root.root_keys(), now, grace, held.policy_floor, limits) {
        Ok(c) => c,
        Err(r) => return PolicyOutcome::Refused(r),
    };
    // Only a newer policy replaces the held one. The same version with other contents means the root
    // signed two policies under one number: taking either could undo a revocation in the other.
    if checked.policy.version <= held.policy_floor && policy != held.policy {
        return PolicyOutcome::Refused(Rejection::new(
            RejectReason::PolicyRollback,
            format!(
                "trust policy v{} is not above v{}, which this device already accepted",
                checked.policy.version, held.policy_floor
            ),
        ));
    }
    PolicyOutcome::Accepted(checked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{self, key};
    use crate::keys::PrivateKey;
    use crate::root::{ROOT_FORMAT, RootDocument, create_root};

    const NOW: u64 = 1_800_000_000;
    const DAY: u64 = 86_400;

    fn policy(version: u64, expires: u64, release: u8, root: &PrivateKey) -> Vec<u8> {
        fixtures::policy(version, NOW - DAY, expires, release, root)
    }

    fn root_doc(version: u64, k: u8, expires: u64, signers: &[PrivateKey]) -> Vec<u8> {
        let doc = RootDocument {
            format: ROOT_FORMAT,
            version,
            created: NOW - DAY,
            expires,
            threshold: 1,
            keys: vec![key(k).verifying_key().to_bytes()],
        };
        create_root(&doc, signers)
    }

    fn pinned() -> TrustedRoot {
        TrustedRoot::pinned(vec![key(1).verifying_key()], 1)
    }

    fn update(roots: Vec<Vec<u8>>, policy: Vec<u8>) -> TrustUpdate {
        TrustUpdate { first_root: 2, roots, policy }
    }

    fn outcome(held: &Held<'_>, u: &TrustUpdate, now: u64) -> Result<Option<u64>, RejectReason> {
        match apply(held, u, now, 0, &Limits::default()).map_err(|r| r.reason)?.policy {
            PolicyOutcome::Accepted(p) => Ok(Some(p.policy.version)),
            PolicyOutcome::Unchanged => Ok(None),
            PolicyOutcome::Refused(r) => Err(r.reason),
        }
    }

    #[test]
    fn a_newer_policy_is_taken_and_the_same_one_again_changes_nothing() {
        let v1 = policy(1, NOW + DAY, 10, &key(1));
        let v2 = policy(2, NOW + DAY, 11, &key(1));
        let held = Held { root: &pinned(), policy: &v1, policy_floor: 1 };
        assert_eq!(outcome(&held, &update(vec![], v2.clone()), NOW), Ok(Some(2)));
        assert_eq!(outcome(&held, &update(vec![], v1.clone()), NOW), Ok(None));
        let at_v2 = Held { policy: &v2, policy_floor: 2, ..held };
        assert_eq!(outcome(&at_v2, &update(vec![], v1.clone()), NOW), Err(RejectReason::PolicyRollback));
        let other_v1 = policy(1, NOW + 2 * DAY, 12, &key(1));
        assert_eq!(outcome(&held, &update(vec![], other_v1), NOW), Err(RejectReason::PolicyRollback));
        let forged = policy(3, NOW + DAY, 12, &key(9));
        assert_eq!(outcome(&held, &update(vec![], forged), NOW), Err(RejectReason::PolicyNotSignedByRoot));
    }

    #[test]
    fn a_device_whose_policy_expired_offline_takes_the_newer_one() {
        let expired = policy(1, NOW - DAY, 10, &key(1));
        let fresh = policy(2, NOW + 30 * DAY, 10, &key(1));
        let held = Held { root: &pinned(), policy: &expired, policy_floor: 1 };
        assert_eq!(outcome(&held, &update(vec![], fresh), NOW), Ok(Some(2)));
        let also_expired = policy(2, NOW - 1, 10, &key(1));
        assert_eq!(outcome(&held, &update(vec![], also_expired), NOW), Err(RejectReason::PolicyExpired));
    }

    #[test]
    fn after_a_root_rotation_only_a_policy_of_the_new_root_is_taken() {
        let v1 = policy(1, NOW + DAY, 10, &key(1));
        let r2 = root_doc(2, 2, NOW + 365 * DAY, &[key(1), key(2)]);
        let held = Held { root: &pinned(), policy: &v1, policy_floor: 1 };
        // The old root's policy is not the new root's word, even unchanged.
        let a = apply(&held, &update(vec![r2.clone()], v1.clone()), NOW, 0, &Limits::default()).unwrap();
        assert_eq!(a.walked.root.version, 2, "the rotation is pinned anyway");
        assert!(matches!(a.policy, PolicyOutcome::Refused(ref r) if r.reason == RejectReason::PolicyNotSignedByRoot));
        assert_eq!(outcome(&held, &update(vec![r2.clone()], policy(2, NOW + DAY, 10, &key(2))), NOW), Ok(Some(2)));
        // A root that expired signs no new policy; a later rotation, walked through it, does.
        let r2_old = root_doc(2, 2, NOW - DAY, &[key(1), key(2)]);
        let by_2 = policy(2, NOW + DAY, 10, &key(2));
        assert_eq!(outcome(&held, &update(vec![r2_old.clone()], by_2), NOW), Err(RejectReason::RootExpired));
        let r3 = root_doc(3, 3, NOW + DAY, &[key(2), key(3)]);
        assert_eq!(outcome(&held, &update(vec![r2_old, r3], policy(3, NOW + DAY, 10, &key(3))), NOW), Ok(Some(3)));
        // A chain that does not verify changes nothing at all.
        let gap =
            TrustUpdate { first_root: 3, roots: vec![root_doc(3, 3, NOW + DAY, &[key(2), key(3)])], policy: vec![] };
        assert_eq!(outcome(&held, &gap, NOW), Err(RejectReason::RootVersionGap));
    }
}

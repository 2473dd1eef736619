//! Trust updates over the air (`outpost/v1/fleet/trust`): one fixture per root-chain or policy attack,
//! each a framed `Message::Trust` exactly as the broker would deliver it, refused by
//! `trust_update::apply` with its own reason code; good ones are taken. `trust-index.tsv` lists them for
//! other tools (update, the policy the device holds, expected outcome).

use super::{DAY, NOW, fixture, release, root, stranger};
use outpost_protocol::codec;
use outpost_protocol::keys::{PrivateKey, private_key_from_seed};
use outpost_protocol::messages::{Message, TrustUpdate};
use outpost_protocol::root::{ROOT_FORMAT, RootDocument, TrustedRoot, create_root};
use outpost_protocol::trust::{POLICY_FORMAT, TrustPolicy, create_policy};
use outpost_protocol::trust_update::{Held, PolicyOutcome, apply};
use outpost_protocol::{Limits, RejectReason};

/// Root keys of later roots: `new_root(2)` … are fixed seeds, like every other fixture key.
fn new_root(i: u8) -> PrivateKey {
    private_key_from_seed([40 + i; 32])
}

fn root_doc(version: u64, keys: &[&PrivateKey], threshold: u8, expires: u64) -> RootDocument {
    RootDocument {
        format: ROOT_FORMAT,
        version,
        created: NOW - DAY,
        expires,
        threshold,
        keys: keys.iter().map(|k| k.verifying_key().to_bytes()).collect(),
    }
}

fn signed_root(version: u64, keys: &[&PrivateKey], signers: &[&PrivateKey]) -> Vec<u8> {
    let signers: Vec<PrivateKey> = signers.iter().map(|k| (*k).clone()).collect();
    create_root(&root_doc(version, keys, 1, NOW + 365 * DAY), &signers)
}

fn policy_by(version: u64, threshold: u8, release_keys: &[[u8; 32]], signers: &[&PrivateKey]) -> Vec<u8> {
    let p = TrustPolicy {
        format: POLICY_FORMAT,
        version,
        created: NOW - DAY,
        expires: NOW + 90 * DAY,
        threshold,
        release_keys: release_keys.to_vec(),
        director_keys: vec![],
    };
    let signers: Vec<PrivateKey> = signers.iter().map(|k| (*k).clone()).collect();
    create_policy(&p, &signers)
}

fn release_keys() -> Vec<[u8; 32]> {
    vec![release(1).verifying_key().to_bytes()]
}

fn policy(version: u64, signer: &PrivateKey) -> Vec<u8> {
    policy_by(version, 1, &release_keys(), &[signer])
}

struct Case {
    name: &'static str,
    update: TrustUpdate,
    /// Fixture name of the policy the device holds (floor: its version).
    held: &'static str,
    /// `Ok((root version, policy version))` the device ends with, or the refusal.
    expect: Result<(u64, u64), RejectReason>,
}

fn update(roots: Vec<Vec<u8>>, policy: Vec<u8>) -> TrustUpdate {
    TrustUpdate { first_root: 2, roots, policy }
}

fn cases() -> Vec<Case> {
    use RejectReason::*;
    let (r, a, b, c) = (root(), new_root(2), new_root(3), new_root(4));
    let v2 = signed_root(2, &[&a], &[&r, &a]);
    let v3 = signed_root(3, &[&b], &[&a, &b]);
    let case = |name, update, expect| Case { name, update, held: "trust", expect };
    let many: Vec<PrivateKey> = (0..33).map(|i| private_key_from_seed([100 + i; 32])).collect();
    let many: Vec<&PrivateKey> = many.iter().collect();
    let rk = release_keys();
    vec![
        case("trust-update-new-policy", update(vec![], policy(2, &r)), Ok((1, 2))),
        case("trust-update-root-rotation", update(vec![v2.clone()], policy(2, &a)), Ok((2, 2))),
        case("trust-update-two-rotations", update(vec![v2.clone(), v3.clone()], policy(3, &b)), Ok((3, 3))),
        Case {
            // Freeze recovery: the held policy expired while the device was offline.
            held: "trust-expired",
            ..case("trust-update-after-expiry", update(vec![], policy(2, &r)), Ok((1, 2)))
        },
        case("trust-update-forged-policy", update(vec![], policy(2, &stranger())), Err(PolicyNotSignedByRoot)),
        // After a rotation, a policy of the old root is not the fleet's word any more.
        case("trust-update-policy-of-old-root", update(vec![v2.clone()], policy(2, &r)), Err(PolicyNotSignedByRoot)),
        case(
            "root-gapped-chain",
            update(vec![v2.clone(), signed_root(4, &[&c], &[&a, &c])], policy(4, &c)),
            Err(RootVersionGap),
        ),
        case(
            "root-chain-starts-late",
            TrustUpdate { first_root: 3, roots: vec![v3.clone()], policy: policy(3, &b) },
            Err(RootVersionGap),
        ),
        case(
            // v2's own keys sign a v2 document again and it is offered in v3's place.
            "root-rolled-back",
            update(vec![v2.clone(), signed_root(2, &[&c], &[&a, &c])], policy(3, &c)),
            Err(RootRollback),
        ),
        case(
            "root-not-signed-by-old",
            update(vec![signed_root(2, &[&a], &[&a])], policy(2, &a)),
            Err(RootBelowThreshold),
        ),
        case(
            "root-not-signed-by-new",
            update(vec![signed_root(2, &[&a], &[&r])], policy(2, &a)),
            Err(RootBelowThreshold),
        ),
        case(
            "root-threshold-zero",
            update(vec![create_root(&root_doc(2, &[&a], 0, NOW + DAY), &[r.clone(), a.clone()])], policy(2, &a)),
            Err(ThresholdZero),
        ),
        case(
            "root-too-many-keys",
            update(vec![create_root(&root_doc(2, &many, 1, NOW + DAY), &[r.clone(), many[0].clone()])], policy(2, &a)),
            Err(TooManyKeys),
        ),
        case(
            "root-duplicate-keys",
            update(vec![create_root(&root_doc(2, &[&a, &a], 2, NOW + DAY), &[r.clone(), a.clone()])], policy(2, &a)),
            Err(DuplicateKeys),
        ),
        case(
            "root-threshold-unreachable",
            update(vec![create_root(&root_doc(2, &[&a], 2, NOW + DAY), &[r.clone(), a.clone()])], policy(2, &a)),
            Err(ThresholdUnreachable),
        ),
        case(
            "root-expired",
            update(vec![create_root(&root_doc(2, &[&a], 1, NOW - DAY), &[r.clone(), a.clone()])], policy(2, &a)),
            Err(RootExpired),
        ),
        case("policy-threshold-zero", update(vec![], policy_by(2, 0, &rk, &[&r])), Err(ThresholdZero)),
        case("policy-duplicate-keys", update(vec![], policy_by(2, 2, &[rk[0], rk[0]], &[&r])), Err(DuplicateKeys)),
        case(
            "policy-too-many-keys",
            update(
                vec![],
                policy_by(2, 1, &many.iter().map(|k| k.verifying_key().to_bytes()).collect::<Vec<_>>(), &[&r]),
            ),
            Err(TooManyKeys),
        ),
    ]
}

#[test]
fn every_trust_update_attack_is_refused_with_its_own_reason_and_good_ones_are_taken() {
    let pinned = TrustedRoot::pinned(vec![root().verifying_key()], 1);
    let limits = Limits::default();
    let mut index =
        String::from("# update\theld policy\texpected (now 1800000000, pinned root.pub v1, floor = held version)\n");
    for c in cases() {
        let expect = match c.expect {
            Ok((root, policy)) => format!("ok root v{root} policy v{policy}"),
            Err(r) => r.code().to_owned(),
        };
        index.push_str(&format!("{}.trust\t{}.policy\t{expect}\n", c.name, c.held));
    }
    fixture("trust-index.tsv", index.as_bytes());
    for c in cases() {
        let bytes = fixture(&format!("{}.trust", c.name), &codec::encode(&Message::Trust(c.update.clone())));
        let Ok(Message::Trust(update)) = codec::decode(&bytes, &limits) else { panic!("{}: decodes", c.name) };
        // The held policies are the bundle fixtures' (`trust.policy` v1, `trust-expired.policy` v1).
        let held_policy = std::fs::read(super::data_dir().join(format!("{}.policy", c.held))).unwrap();
        let held = Held { root: &pinned, policy: &held_policy, policy_floor: 1 };
        let got = apply(&held, &update, NOW, 0, &limits).and_then(|a| match a.policy {
            PolicyOutcome::Accepted(p) => Ok((a.walked.root.version, p.policy.version)),
            PolicyOutcome::Unchanged => Ok((a.walked.root.version, 1)),
            PolicyOutcome::Refused(r) => Err(r),
        });
        match (got, c.expect) {
            (Ok(got), Ok(want)) => assert_eq!(got, want, "{}", c.name),
            (Err(r), Err(want)) => {
                assert_eq!(r.reason, want, "{}: {r}", c.name);
                assert!(r.detail.len() > 10, "{}: the message says what was wrong: {r}", c.name);
            }
            (got, want) => panic!("{}: expected {want:?}, got {got:?}", c.name),
        }
    }
}

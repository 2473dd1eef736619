use super::*;
use crate::config::{Config, Overrides};
use outpost_protocol::RejectReason;
use outpost_protocol::fixtures::{self, key};
use outpost_protocol::keys::PrivateKey;

const NOW: u64 = 1_800_000_000;
const DAY: u64 = 86_400;

fn policy(version: u64, expires: u64, release: u8, root: &PrivateKey) -> Vec<u8> {
    fixtures::policy(version, NOW - DAY, expires, release, root)
}

fn rotation(version: u64, old: &PrivateKey, new: &PrivateKey) -> Vec<u8> {
    fixtures::rotation(version, NOW - DAY, NOW + 365 * DAY, old, new)
}

/// A device data directory with the image's root (key 1) and, if given, the image's policy.
fn device(name: &str, image_policy: Option<Vec<u8>>) -> Config {
    let dir = std::env::temp_dir().join(format!("outpost-agent-trust-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("root.pub"), keys::public_key_to_pem(&key(1).verifying_key())).unwrap();
    let trust = image_policy.map(|p| {
        std::fs::write(dir.join("image.policy"), p).unwrap();
        dir.join("image.policy")
    });
    let o = Overrides {
        data_dir: Some(dir.join("data")),
        trust,
        root_pubs: vec![dir.join("root.pub")],
        ..Overrides::default()
    };
    Config::validate(crate::config::parse("", "test").unwrap(), &o, "test").unwrap()
}

fn update(roots: Vec<Vec<u8>>, policy: Vec<u8>) -> TrustUpdate {
    TrustUpdate { first_root: 2, roots, policy }
}

#[test]
fn a_newer_policy_is_taken_stored_and_still_held_after_a_restart() {
    let cfg = device("newer", Some(policy(1, NOW + DAY, 10, &key(1))));
    std::fs::create_dir_all(&cfg.data_dir).unwrap();
    let t = TrustStore::open(&cfg).unwrap();
    assert_eq!(t.versions(), (1, 1));
    let v2 = policy(2, NOW + DAY, 11, &key(1));
    let out = t.apply(&update(vec![], v2.clone()), NOW, 1).unwrap();
    assert!(out.changed);
    assert_eq!(out.event.as_ref().map(|e| (e.policy_version, e.reason)), Some((2, None)));
    assert_eq!(t.snapshot().unwrap().policy, v2);
    // The retained message again: nothing changes and nothing more is recorded.
    assert_eq!(t.apply(&update(vec![], v2.clone()), NOW, 1).unwrap(), Outcome { changed: false, event: None });
    let again = TrustStore::open(&cfg).unwrap();
    assert_eq!((again.versions(), again.snapshot().unwrap().policy), ((1, 2), v2));
}

#[test]
fn two_root_rotations_are_walked_stored_and_walked_again_at_start() {
    let cfg = device("rotate", Some(policy(1, NOW + DAY, 10, &key(1))));
    std::fs::create_dir_all(&cfg.data_dir).unwrap();
    let t = TrustStore::open(&cfg).unwrap();
    let chain = vec![rotation(2, &key(1), &key(2)), rotation(3, &key(2), &key(3))];
    let out = t.apply(&update(chain, policy(3, NOW + DAY, 10, &key(3))), NOW, 1).unwrap();
    assert!(out.changed && out.event.unwrap().reason.is_none());
    assert_eq!(t.versions(), (3, 3));
    let again = TrustStore::open(&cfg).unwrap();
    assert_eq!(again.versions(), (3, 3), "the stored chain is walked again from the image's root");
    assert_eq!(again.snapshot().unwrap().roots.keys, vec![key(3).verifying_key()]);
}

#[test]
fn refusals_are_recorded_once_with_their_reason_and_change_nothing() {
    let cfg = device("refuse", Some(policy(1, NOW + DAY, 10, &key(1))));
    std::fs::create_dir_all(&cfg.data_dir).unwrap();
    let t = TrustStore::open(&cfg).unwrap();
    let gap = TrustUpdate {
        first_root: 3,
        roots: vec![rotation(3, &key(2), &key(3))],
        policy: policy(3, NOW + DAY, 10, &key(3)),
    };
    let out = t.apply(&gap, NOW, 1).unwrap();
    assert!(!out.changed);
    assert_eq!(
        out.event.map(|e| (e.reason, e.root_version, e.policy_version)),
        Some((Some(RejectReason::RootVersionGap), 1, 1))
    );
    assert_eq!(t.apply(&gap, NOW, 1).unwrap().event, None, "heard again on reconnect: not recorded again");
    let forged = update(vec![], policy(5, NOW + DAY, 12, &key(9)));
    assert_eq!(
        t.apply(&forged, NOW, 1).unwrap().event.and_then(|e| e.reason),
        Some(RejectReason::PolicyNotSignedByRoot)
    );
    // The slot table's floor holds even if the state file were lost: an older policy is refused.
    let old = update(vec![], policy(2, NOW + DAY, 10, &key(1)));
    assert_eq!(t.apply(&old, NOW, 4).unwrap().event.and_then(|e| e.reason), Some(RejectReason::PolicyRollback));
    assert_eq!(t.versions(), (1, 1));
    assert!(!t.path().exists(), "nothing was stored");
}

#[test]
fn a_device_whose_policy_expired_offline_takes_the_newer_one() {
    let cfg = device("expired", Some(policy(1, NOW - 2 * DAY, 10, &key(1))));
    std::fs::create_dir_all(&cfg.data_dir).unwrap();
    let t = TrustStore::open(&cfg).unwrap();
    assert_eq!(t.versions(), (1, 1), "an expired policy is still held (bundles are refused with policy_expired)");
    assert!(t.apply(&update(vec![], policy(2, NOW + 30 * DAY, 10, &key(1))), NOW, 1).unwrap().changed);
    assert_eq!(t.versions(), (1, 2));
}

#[test]
fn after_a_rotation_whose_policy_is_refused_no_policy_of_the_old_root_is_used() {
    let cfg = device("orphan", Some(policy(1, NOW + DAY, 10, &key(1))));
    std::fs::create_dir_all(&cfg.data_dir).unwrap();
    let t = TrustStore::open(&cfg).unwrap();
    // The chain is right, the policy expired: the rotation is pinned, the old root's policy dropped.
    let out =
        t.apply(&update(vec![rotation(2, &key(1), &key(2))], policy(2, NOW - 2 * DAY, 10, &key(2))), NOW, 1).unwrap();
    assert!(out.changed);
    assert_eq!(out.event.and_then(|e| e.reason), Some(RejectReason::PolicyExpired));
    assert_eq!(t.versions(), (2, 0));
    assert!(t.snapshot().is_none(), "bundles wait for a policy of the new root");
    assert_eq!(TrustStore::open(&cfg).unwrap().versions(), (2, 0), "the image's policy is the old root's too");
}

#[test]
fn a_tampered_state_file_is_checked_again_and_cannot_add_trust() {
    let cfg = device("tamper", Some(policy(1, NOW + DAY, 10, &key(1))));
    std::fs::create_dir_all(&cfg.data_dir).unwrap();
    let forged_root = rotation(2, &key(9), &key(9));
    let file = state::TrustFile {
        roots: vec![hex::encode(forged_root)],
        policy: hex::encode(policy(7, NOW + DAY, 12, &key(9))),
        report_counter: 3,
    };
    file.save(&cfg.data_dir.join("trust.json")).unwrap();
    let t = TrustStore::open(&cfg).unwrap();
    assert_eq!(t.versions(), (1, 1), "the forged root and its policy are not held");
    assert_eq!(t.next_report_counter(0).unwrap(), 4, "the counter carries on");
}

#[test]
fn a_device_without_a_policy_file_takes_its_first_over_the_air() {
    let cfg = device("none", None);
    std::fs::create_dir_all(&cfg.data_dir).unwrap();
    let t = TrustStore::open(&cfg).unwrap();
    assert!(t.snapshot().is_none());
    assert!(t.apply(&update(vec![], policy(1, NOW + DAY, 10, &key(1))), NOW, 0).unwrap().changed);
    assert_eq!(t.versions(), (1, 1));
}

#[test]
fn report_counters_only_grow_and_survive_a_restart() {
    let cfg = device("counter", None);
    std::fs::create_dir_all(&cfg.data_dir).unwrap();
    let t = TrustStore::open(&cfg).unwrap();
    assert_eq!(t.next_report_counter(0).unwrap(), 1);
    assert_eq!(t.next_report_counter(0).unwrap(), 2);
    assert_eq!(t.next_report_counter(1000).unwrap(), 1000, "never below the floor (milliseconds)");
    assert_eq!(TrustStore::open(&cfg).unwrap().next_report_counter(5).unwrap(), 1001);
}

#[test]
fn an_unreadable_state_file_is_set_aside_and_the_device_starts_from_its_image() {
    let cfg = device("corrupt", Some(policy(1, NOW + DAY, 10, &key(1))));
    std::fs::create_dir_all(&cfg.data_dir).unwrap();
    let path = cfg.data_dir.join("trust.json");
    std::fs::write(&path, b"{ \"roots\": [tru").unwrap();
    let t = TrustStore::open(&cfg).unwrap();
    assert_eq!(t.versions(), (1, 1), "the image's root and policy");
    assert!(cfg.data_dir.join("trust.json.corrupt").exists() && !path.exists(), "kept aside for a look");
    assert!(t.next_report_counter(5_000).unwrap() >= 5_000, "counters go on from the time");
    assert!(
        t.apply(&update(vec![rotation(2, &key(1), &key(2))], policy(2, NOW + DAY, 10, &key(2))), NOW, 1)
            .unwrap()
            .changed
    );
    assert_eq!(TrustStore::open(&cfg).unwrap().versions(), (2, 2), "a new state file is written and read");
}

#[test]
fn a_chain_that_forks_from_the_pinned_one_is_refused_and_changes_nothing() {
    let cfg = device("fork", Some(policy(1, NOW + DAY, 10, &key(1))));
    std::fs::create_dir_all(&cfg.data_dir).unwrap();
    let t = TrustStore::open(&cfg).unwrap();
    let ours = rotation(2, &key(1), &key(2));
    assert!(t.apply(&update(vec![ours], policy(2, NOW + DAY, 10, &key(2))), NOW, 1).unwrap().changed);
    // Someone holding the old root key signs another v2 (key 8) and a v3 on top of it: the device's own v2
    // did not sign that v3, so the fork is refused where it leaves the device's chain.
    let fork = vec![rotation(2, &key(1), &key(8)), rotation(3, &key(8), &key(9))];
    let out = t.apply(&update(fork, policy(3, NOW + DAY, 10, &key(9))), NOW, 1).unwrap();
    assert_eq!(out.event.and_then(|e| e.reason), Some(RejectReason::RootBelowThreshold));
    assert!(!out.changed);
    assert_eq!(TrustStore::open(&cfg).unwrap().versions(), (2, 2));
}

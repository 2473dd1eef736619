//! The fleet's trust over the air (`outpost trust push`): the root chain and the current trust policy,
//! checked against the root devices pin before anything is stored, kept in `<data>/trust/fleet.trust` (the
//! very frame devices receive), and published retained on `outpost/v1/fleet/trust`. It is published again
//! on every broker connect, because the embedded broker keeps retained messages in memory only. Pushed
//! bundles are checked with the newest policy under the newest root, as devices will check them.

use super::bundles::Trust;
use super::fleet::{Fleet, now};
use super::registry::DeviceRecord;
use outpost_protocol::messages::{Message, TrustUpdate};
use outpost_protocol::root::{self, TrustedRoot};
use outpost_protocol::trust::{self, TrustPolicy};
use outpost_protocol::{Limits, RejectReason, Rejection, UnixTime, codec};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// A pushed update with what it verified to.
#[derive(Debug, Clone)]
struct Pushed {
    update: TrustUpdate,
    root: TrustedRoot,
    policy: TrustPolicy,
}

/// The controller's trust material: the root devices pin (from `[trust] root_pub`), the configured policy,
/// and the last pushed update.
#[derive(Debug)]
pub struct FleetTrust {
    pinned: Option<TrustedRoot>,
    configured_policy: Option<Vec<u8>>,
    path: PathBuf,
    pushed: Mutex<Option<Pushed>>,
}

/// Checks a pushed update, pure. `now: None` skips the date checks (an update loaded at start stays
/// published after it expires: devices judge dates, and the operator sees them in `trust status`).
pub fn check_push(
    pinned: &TrustedRoot,
    before: Option<&TrustUpdate>,
    update: &TrustUpdate,
    now: Option<UnixTime>,
    limits: &Limits,
) -> Result<(TrustedRoot, TrustPolicy), Rejection> {
    // The controller keeps the whole chain, so a device at any version finds the steps it lacks.
    if !update.roots.is_empty() && update.first_root != 2 {
        return Err(Rejection::new(
            RejectReason::RootVersionGap,
            format!("the chain starts at root v{}; push it from v2 on (root-2.root)", update.first_root),
        ));
    }
    let root = root::walk(pinned, 2, &update.roots, limits)?.into_inner().root;
    let floor = match before {
        Some(b) => {
            // Devices already pinned the roots pushed before: a push may only extend the chain.
            if let Some(i) = (0..b.roots.len()).find(|&i| update.roots.get(i) != Some(&b.roots[i])) {
                return Err(Rejection::new(
                    RejectReason::RootRollback,
                    format!("root v{} differs from (or drops) the one pushed before; a chain can only grow", i + 2),
                ));
            }
            trust::read_policy_unverified(&b.policy, limits).map(|(p, _)| p.version).unwrap_or(0)
        }
        None => 0,
    };
    if let Some(now) = now
        && root.expired(now, 0)
    {
        return Err(Rejection::new(
            RejectReason::RootExpired,
            format!("root v{} expired at {}: rotate the root first", root.version, root.expires.unwrap_or(0)),
        ));
    }
    let checked = trust::verify_policy(&update.policy, &root.root_keys(), now.unwrap_or(0), 0, floor, limits)?;
    let policy = checked.into_inner().policy;
    if before.is_some_and(|b| policy.version == floor && update.policy != b.policy) {
        return Err(Rejection::new(
            RejectReason::PolicyRollback,
            format!("trust policy v{floor} was pushed before with other contents; raise --policy-version"),
        ));
    }
    let size = codec::encode(&Message::Trust(update.clone())).len();
    // The agents' MQTT packet limit is `max_message` plus a little: the update must reach them whole.
    if size + 512 > limits.max_message {
        return Err(Rejection::new(
            RejectReason::OverLimits,
            format!("the trust update is {size} bytes; devices take at most {}", limits.max_message - 512),
        ));
    }
    Ok((root, policy))
}

impl FleetTrust {
    /// Loads the last pushed update from `<data_dir>/trust/fleet.trust`, re-checked against the pinned
    /// root (a file that no longer verifies is set aside with an error in the log, never published).
    pub fn load(data_dir: &Path, pinned: Option<TrustedRoot>, configured_policy: Option<Vec<u8>>) -> FleetTrust {
        let path = data_dir.join("trust").join("fleet.trust");
        let limits = Limits::default();
        let pushed = match (std::fs::read(&path), &pinned) {
            (Ok(bytes), Some(pinned)) => match codec::decode(&bytes, &limits) {
                Ok(Message::Trust(update)) => match check_push(pinned, None, &update, None, &limits) {
                    Ok((root, policy)) => Some(Pushed { update, root, policy }),
                    Err(r) => {
                        tracing::error!(path = %path.display(), reason = %r, "the pushed trust no longer verifies");
                        None
                    }
                },
                _ => {
                    tracing::error!(path = %path.display(), "not a trust update; ignored");
                    None
                }
            },
            (Ok(_), None) => {
                tracing::error!("a trust update was pushed but no root is configured (trust.root_pub)");
                None
            }
            (Err(_), _) => None,
        };
        FleetTrust { pinned, configured_policy, path, pushed: Mutex::new(pushed) }
    }

    /// What pushed bundles are verified with.
    pub fn bundle_trust(&self) -> Option<Trust> {
        let pinned = self.pinned.as_ref()?;
        match self.pushed.lock().expect("trust").as_ref() {
            Some(p) => Some(Trust { policy: p.update.policy.clone(), roots: p.root.root_keys() }),
            None => Some(Trust { policy: self.configured_policy.clone()?, roots: pinned.root_keys() }),
        }
    }

    /// The fleet's current policy (pushed, or configured) names `key` as a director key: devices will take
    /// the reverts and removals this controller signs with it.
    pub fn names_director(&self, key: &outpost_protocol::keys::PublicKey) -> bool {
        let Some(t) = self.bundle_trust() else { return false };
        trust::read_policy_unverified(&t.policy, &Limits::default())
            .is_ok_and(|(p, _)| p.director_keys.contains(&key.to_bytes()))
    }

    /// The frame to publish on `outpost/v1/fleet/trust`, if anything was pushed.
    pub fn frame(&self) -> Option<Vec<u8>> {
        self.pushed.lock().expect("trust").as_ref().map(|p| codec::encode(&Message::Trust(p.update.clone())))
    }

    /// Checks and stores a pushed update; the caller publishes it.
    pub fn push(&self, update: TrustUpdate, now: UnixTime) -> Result<(), String> {
        let Some(pinned) = &self.pinned else {
            return Err("the controller does not know the root devices pin: set [trust] root_pub".into());
        };
        let mut pushed = self.pushed.lock().expect("trust");
        let before = pushed.as_ref().map(|p| &p.update);
        let (root, policy) =
            check_push(pinned, before, &update, Some(now), &Limits::default()).map_err(|r| format!("rejected: {r}"))?;
        let dir = self.path.parent().expect("trust dir");
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        crate::files::write_atomic(&self.path, &codec::encode(&Message::Trust(update.clone())), None)
            .map_err(|e| e.to_string())?;
        *pushed = Some(Pushed { update, root, policy });
        Ok(())
    }

    /// `GET /api/v1/trust`: the current root and policy, and the versions devices attest to.
    pub fn status(&self, devices: &[DeviceRecord]) -> serde_json::Value {
        let pushed = self.pushed.lock().expect("trust").clone();
        let (source, root, policy) = match (&pushed, &self.pinned) {
            (Some(p), _) => ("pushed", Some(p.root.clone()), Some(p.policy.clone())),
            (None, Some(pinned)) => {
                let policy = self
                    .configured_policy
                    .as_ref()
                    .and_then(|b| trust::read_policy_unverified(b, &Limits::default()).ok().map(|(p, _)| p));
                ("config", Some(pinned.clone()), policy)
            }
            (None, None) => ("none", None, None),
        };
        let mut versions: BTreeMap<(u64, u64), usize> = BTreeMap::new();
        let mut unattested = 0;
        let mut refused = Vec::new();
        for d in devices {
            if let Some(t) = d.attestation.trust.as_ref().filter(|t| t.event.reason.is_some()) {
                refused.push(serde_json::json!({
                    "device": d.id, "at": t.at, "reason": t.event.reason.map(|r| r.code()), "detail": t.event.detail,
                }));
            }
            match &d.attestation.last {
                Some(a) => *versions.entry((a.report.root_version, a.report.policy_version)).or_default() += 1,
                None => unattested += 1,
            }
        }
        let key_ids = |keys: &[[u8; 32]]| {
            keys.iter().map(|k| outpost_protocol::keys::KeyId::of_bytes(k).to_string()).collect::<Vec<_>>()
        };
        serde_json::json!({
            "source": source,
            "root": root.map(|r| serde_json::json!({
                "version": r.version, "threshold": r.threshold, "expires": r.expires,
                "keys": key_ids(&r.keys.iter().map(|k| k.to_bytes()).collect::<Vec<_>>()),
            })),
            "policy": policy.map(|p| serde_json::json!({
                "version": p.version, "threshold": p.threshold, "expires": p.expires, "created": p.created,
                "release_keys": key_ids(&p.release_keys),
            })),
            "devices": versions.into_iter().map(|((root_version, policy_version), n)| serde_json::json!({
                "root_version": root_version, "policy_version": policy_version, "devices": n,
            })).collect::<Vec<_>>(),
            "unattested": unattested,
            // Devices whose last word on the fleet's trust was a refusal, with its reason code.
            "refused": refused,
        })
    }
}

impl Fleet {
    /// Publishes the fleet's trust, retained, for every device.
    pub async fn publish_trust(&self, frame: Vec<u8>) {
        *self.trust_frame.lock().expect("trust frame") = Some(frame.clone());
        if let Err(e) =
            self.client.publish(outpost_protocol::topics::TRUST, rumqttc::QoS::AtLeastOnce, true, frame).await
        {
            tracing::warn!(error = %e, "cannot publish the fleet's trust");
        }
    }

    /// Publishes the trust last published again (on a broker connect: the embedded broker forgets).
    pub(super) async fn republish_trust(&self) {
        let frame = self.trust_frame.lock().expect("trust frame").clone();
        if let Some(frame) = frame {
            let _ = self.client.publish(outpost_protocol::topics::TRUST, rumqttc::QoS::AtLeastOnce, true, frame).await;
        }
    }
}

/// The push, audited: `POST /api/v1/trust` with a `Message::Trust` frame.
pub async fn push(
    fleet: &Fleet,
    trust: &FleetTrust,
    body: &[u8],
    by: &str,
) -> Result<serde_json::Value, (u16, String)> {
    let update = match codec::decode(body, &Limits::default()) {
        Ok(Message::Trust(u)) => u,
        Ok(_) => return Err((400, "the body is not a trust update".into())),
        Err(e) => return Err((400, format!("the body is not a trust update: {e}"))),
    };
    let t = now();
    trust.push(update, t).map_err(|e| (if e.starts_with("rejected:") { 422 } else { 409 }, e))?;
    if let Some(frame) = trust.frame() {
        fleet.publish_trust(frame).await;
    }
    let status = trust.status(&fleet.devices());
    let _ = fleet.store.audit(&serde_json::json!({
        "at": t, "what": "trust pushed", "operator": by,
        "root_version": status["root"]["version"], "policy_version": status["policy"]["version"],
        "release_keys": status["policy"]["release_keys"],
    }));
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_protocol::fixtures::{self, key};
    use outpost_protocol::keys::PrivateKey;

    const NOW: u64 = 1_800_000_000;

    fn policy(version: u64, root: &PrivateKey, release: u8) -> Vec<u8> {
        fixtures::policy(version, NOW - 10, NOW + 1000, release, root)
    }

    fn rotation(version: u64, old: &PrivateKey, new: &PrivateKey) -> Vec<u8> {
        fixtures::rotation(version, NOW - 10, NOW + 1000, old, new)
    }

    fn code(r: Result<(TrustedRoot, TrustPolicy), Rejection>) -> RejectReason {
        r.unwrap_err().reason
    }

    #[test]
    fn a_push_must_verify_from_the_pinned_root_and_only_move_forward() {
        let l = Limits::default();
        let pinned = TrustedRoot::pinned(vec![key(1).verifying_key()], 1);
        let u = |roots: Vec<Vec<u8>>, policy| TrustUpdate { first_root: 2, roots, policy };
        let v1 = u(vec![], policy(1, &key(1), 10));
        assert_eq!(check_push(&pinned, None, &v1, Some(NOW), &l).unwrap().1.version, 1);
        let r2 = rotation(2, &key(1), &key(2));
        let v2 = u(vec![r2.clone()], policy(2, &key(2), 11));
        let (root, p) = check_push(&pinned, Some(&v1), &v2, Some(NOW), &l).unwrap();
        assert_eq!((root.version, p.version), (2, 2));
        // Back to the old policy, a forked or dropped root, or a policy of the old root after the rotation.
        assert_eq!(code(check_push(&pinned, Some(&v2), &v1, Some(NOW), &l)), RejectReason::RootRollback);
        let fork = u(vec![rotation(2, &key(1), &key(3))], policy(3, &key(3), 11));
        assert_eq!(code(check_push(&pinned, Some(&v2), &fork, Some(NOW), &l)), RejectReason::RootRollback);
        let older = u(vec![r2.clone()], policy(1, &key(2), 11));
        assert_eq!(code(check_push(&pinned, Some(&v2), &older, Some(NOW), &l)), RejectReason::PolicyRollback);
        let same_number = u(vec![r2.clone()], policy(2, &key(2), 12));
        assert_eq!(code(check_push(&pinned, Some(&v2), &same_number, Some(NOW), &l)), RejectReason::PolicyRollback);
        assert!(check_push(&pinned, Some(&v2), &v2, Some(NOW), &l).is_ok(), "the same push again is fine");
        let old_root = u(vec![r2], policy(3, &key(1), 11));
        assert_eq!(code(check_push(&pinned, Some(&v2), &old_root, Some(NOW), &l)), RejectReason::PolicyNotSignedByRoot);
        let late =
            TrustUpdate { first_root: 3, roots: vec![rotation(3, &key(2), &key(3))], policy: policy(3, &key(3), 1) };
        assert_eq!(code(check_push(&pinned, Some(&v2), &late, Some(NOW), &l)), RejectReason::RootVersionGap);
        // Dates are not judged for an update loaded at start.
        assert_eq!(code(check_push(&pinned, None, &v1, Some(NOW + 5000), &l)), RejectReason::PolicyExpired);
        assert!(check_push(&pinned, None, &v1, None, &l).is_ok());
    }
}

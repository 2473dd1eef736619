//! The device's trust over its lifetime: the root it pins (the image's, then each rotation it walked), the
//! trust policy it verifies bundles with (the image's, then each newer one it took over the air), and the
//! signed version reports it sends (`report.rs`).
//!
//! A trust update (`outpost/v1/fleet/trust`, retained) is applied by `outpost_protocol::trust_update::apply`:
//! the root chain is walked from the pinned root, and the policy is taken only if it verifies against the
//! newest root and is newer than the highest version the device accepted. What changed is stored
//! atomically (`state.rs`) before it is used, and every outcome that differs from the last is recorded for
//! the controller as a `TrustEvent` with its reason code. A policy that expired while the device was
//! offline does not block a newer one: the device takes it when it hears it and updates resume.

pub mod report;
pub mod state;

use crate::config::Config;
use crate::install::Trust;
use outpost_protocol::messages::TrustUpdate;
use outpost_protocol::root::{self, TrustedRoot};
use outpost_protocol::telemetry::TrustEvent;
use outpost_protocol::trust::{self as policy, RootKeys};
use outpost_protocol::trust_update::{self, Held, PolicyOutcome};
use outpost_protocol::{Digest, Limits, UnixTime, keys};
use state::TrustFile;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("{0}")]
    Setup(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// What the device holds now.
#[derive(Debug, Clone)]
struct Current {
    file: TrustFile,
    root: TrustedRoot,
    /// The policy bundles are verified with, and its version (0: none).
    policy: Vec<u8>,
    policy_version: u64,
    /// The last update heard and what became of it, so the retained message heard again on every
    /// reconnect is not recorded again.
    last_heard: Option<(Digest, Option<outpost_protocol::RejectReason>)>,
}

/// The device's trust, shared by the link (updates), the driver (verification) and the reporter.
#[derive(Debug, Clone)]
pub struct TrustStore {
    path: PathBuf,
    grace_secs: u64,
    current: Arc<Mutex<Current>>,
}

/// What applying an update did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Something was taken (a root, a policy or both) and stored.
    pub changed: bool,
    /// The event to record for the controller, when the outcome differs from the last one heard.
    pub event: Option<TrustEvent>,
}

fn pinned_root(cfg: &Config) -> Result<TrustedRoot, TrustError> {
    let t = &cfg.trust;
    if t.root_pubs.is_empty() {
        return Err(TrustError::Setup("no root public key configured: set [trust] root_pub or pass --root-pub".into()));
    }
    let mut keys_ = Vec::new();
    for p in &t.root_pubs {
        let pem = std::fs::read_to_string(p).map_err(|e| TrustError::Setup(format!("{}: {e}", p.display())))?;
        keys_.push(
            keys::public_key_from_pem(&pem, &p.display().to_string()).map_err(|e| TrustError::Setup(e.to_string()))?,
        );
    }
    Ok(TrustedRoot::pinned(keys_, t.root_threshold))
}

/// The version of `bytes` if its signatures (not its dates) verify against `roots`.
fn signed_version(bytes: &[u8], roots: &RootKeys) -> Option<u64> {
    policy::verify_policy(bytes, roots, 0, 0, 0, &Limits::default()).ok().map(|p| p.policy.version)
}

impl TrustStore {
    /// Loads the state from `DATA_DIR/trust.json`, re-verified from the image's root: the chain is walked
    /// again, and of the stored policy and the image's (`[trust] policy`) the newest one the reached root
    /// signed is held. A device may start without any policy: it takes one over the air.
    pub fn open(cfg: &Config) -> Result<TrustStore, TrustError> {
        Self::load(cfg, true)
    }

    /// `(root version, policy version)` the device holds, for `outpost-agent status`: as `open` finds them,
    /// but an unreadable state file is an error here and stays where it is.
    pub fn peek(cfg: &Config) -> Result<(u64, u64), TrustError> {
        Self::load(cfg, false).map(|t| t.versions())
    }

    fn load(cfg: &Config, set_aside: bool) -> Result<TrustStore, TrustError> {
        let pinned = pinned_root(cfg)?;
        let path = cfg.data_dir.join("trust.json");
        let file = match TrustFile::load(&path) {
            Ok(f) => f.unwrap_or_default(),
            Err(e @ crate::store::StoreError::Corrupt { .. }) if !set_aside => return Err(e.into()),
            // Nothing in the file is trusted as it stands, so a broken one costs no trust: it is set aside
            // for whoever looks, the device starts from its image's root and policy (the slot table's
            // policy floor still holds), the retained trust update brings the rotations back, and report
            // counters go on from the time. Refusing to start would leave the device without updates.
            Err(crate::store::StoreError::Corrupt { path, message }) => {
                let aside = path.with_extension("json.corrupt");
                tracing::error!(path = %path.display(), %message, aside = %aside.display(),
                    "the trust state is unreadable; set aside, starting from the image's trust");
                std::fs::rename(&path, &aside).map_err(|e| TrustError::Setup(format!("{}: {e}", path.display())))?;
                TrustFile::default()
            }
            Err(e) => return Err(e.into()),
        };
        let (root, roots) = match root::walk(&pinned, 2, &file.chain(), &Limits::default()) {
            Ok(w) => (w.into_inner().root, file.roots.clone()),
            Err(r) => {
                tracing::error!(path = %path.display(), reason = %r, "the stored root chain does not verify; starting from the image's root");
                (pinned, Vec::new())
            }
        };
        let image = match &cfg.trust.policy {
            Some(p) => Some(std::fs::read(p).map_err(|e| TrustError::Setup(format!("{}: {e}", p.display())))?),
            None => None,
        };
        let keys_ = root.root_keys();
        let (policy, policy_version) = [file.policy_bytes(), image]
            .into_iter()
            .flatten()
            .filter_map(|b| signed_version(&b, &keys_).map(|v| (b, v)))
            .max_by_key(|(_, v)| *v)
            .unwrap_or_default();
        let file = TrustFile { roots, ..file };
        let current = Current { file, root, policy, policy_version, last_heard: None };
        Ok(TrustStore { path, grace_secs: cfg.trust.expiry_grace.as_secs(), current: Arc::new(Mutex::new(current)) })
    }

    /// What bundles are verified with now; `None` until the device holds a policy.
    pub fn snapshot(&self) -> Option<Trust> {
        let c = self.current.lock().expect("trust");
        (!c.policy.is_empty()).then(|| Trust {
            policy: c.policy.clone(),
            roots: c.root.root_keys(),
            grace_secs: self.grace_secs,
        })
    }

    /// `(root version, policy version)` held now.
    pub fn versions(&self) -> (u64, u64) {
        let c = self.current.lock().expect("trust");
        (c.root.version, c.policy_version)
    }

    /// Applies a trust update. `policy_floor` is the highest policy version the slot table records (a
    /// lost or rolled-back state file cannot take the device below it).
    pub fn apply(&self, update: &TrustUpdate, now: UnixTime, policy_floor: u64) -> Result<Outcome, TrustError> {
        let mut c = self.current.lock().expect("trust");
        let heard =
            Digest::of(&outpost_protocol::codec::encode(&outpost_protocol::messages::Message::Trust(update.clone())));
        let held = Held { root: &c.root, policy: &c.policy, policy_floor: policy_floor.max(c.policy_version) };
        let (changed, reason, detail) =
            match trust_update::apply(&held, update, now, self.grace_secs, &Limits::default()) {
                Err(r) => (false, Some(r.reason), r.detail),
                Ok(applied) => {
                    let walked = applied.walked.into_inner();
                    let mut next = c.clone();
                    let new_root = !walked.steps.is_empty();
                    if new_root {
                        next.root = walked.root;
                        next.file.roots.extend(walked.steps.iter().map(hex::encode));
                    }
                    let (reason, detail) = match applied.policy {
                        PolicyOutcome::Accepted(p) => {
                            next.policy = update.policy.clone();
                            next.policy_version = p.policy.version;
                            next.file.policy = hex::encode(&update.policy);
                            (None, format!("took root v{} and policy v{}", next.root.version, next.policy_version))
                        }
                        PolicyOutcome::Unchanged => (None, "nothing new".to_owned()),
                        PolicyOutcome::Refused(r) => (Some(r.reason), r.detail),
                    };
                    let changed = new_root || next.policy_version != c.policy_version;
                    if new_root && reason.is_some() {
                        // The new root no longer vouches for the old root's policy: hold none until one of the
                        // new root's arrives (bundles are refused meanwhile, with the reason).
                        if signed_version(&next.policy, &next.root.root_keys()).is_none() {
                            next.policy = Vec::new();
                            next.policy_version = 0;
                            next.file.policy = String::new();
                        }
                    }
                    if changed {
                        // Stored before it is used: a crash leaves the old trust or the new one.
                        next.file.save(&self.path)?;
                        *c = next;
                    }
                    (changed, reason, detail)
                }
            };
        let event = (c.last_heard != Some((heard, reason)) && (changed || reason.is_some())).then(|| TrustEvent {
            root_version: c.root.version,
            policy_version: c.policy_version,
            reason,
            detail,
        });
        c.last_heard = Some((heard, reason));
        if let Some(e) = &event {
            match e.reason {
                None => tracing::info!(root = e.root_version, policy = e.policy_version, "took the fleet's trust"),
                Some(r) => tracing::warn!(reason = r.code(), detail = %e.detail, "refused the fleet's trust"),
            }
        }
        Ok(Outcome { changed, event })
    }

    /// The next version report counter, stored before it is used, and never below `floor` (the time in
    /// milliseconds: a device whose state file was lost still counts up from where it was).
    pub fn next_report_counter(&self, floor: u64) -> Result<u64, TrustError> {
        let mut c = self.current.lock().expect("trust");
        let n = c.file.report_counter.saturating_add(1).max(floor);
        let mut file = c.file.clone();
        file.report_counter = n;
        file.save(&self.path)?;
        c.file = file;
        Ok(n)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The link heard the fleet's trust: apply it (the slot table's policy floor holds) and record what
/// became of it for the controller, in the durable telemetry queue.
pub fn hear(
    trust: &TrustStore,
    store: &crate::store::Store,
    queue: &crate::telemetry::queue::TelemetryQueue,
    update: &TrustUpdate,
) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let floor = store.slots().map(|s| s.policy_floor).unwrap_or(0);
    match trust.apply(update, now, floor) {
        Ok(Outcome { event: Some(e), .. }) => {
            if let Err(err) = queue.append(&[(now, outpost_protocol::telemetry::RecordBody::Trust(e))]) {
                tracing::error!(error = %err, "cannot buffer a trust event");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::error!(error = %e, "cannot store the trust state; the update is heard again on reconnect"),
    }
}

#[cfg(test)]
mod tests;

//! The shell of enrollment and revocation: answers devices' enrollment requests (checks by `enroll.rs`
//! and `pki::csr`, certificates by the CA), and the operator's tokens, approvals and revocations. Every
//! refusal, approval, issue and revocation goes to the audit log.

use super::enroll::{self, Decision, EnrollToken, Known, Status, TokenLimits};
use super::fleet::{Fleet, now};
use super::ratelimit::Buckets;
use super::store::Table;
use crate::pki::{self, Ca};
use outpost_protocol::enroll::{EnrollOutcome, EnrollRefusal, EnrollRequest, EnrollResponse, MAX_TOKEN};
use outpost_protocol::messages::Message;
use outpost_protocol::{DeviceId, Limits, codec};
use std::collections::HashMap;
use std::sync::Mutex;

/// Refusals and ignored messages are audited at most this often per device, and at most
/// `AUDIT_BUDGET_PER_MINUTE` times a minute in all, so a device (or someone spraying requests under many
/// ids) cannot flood the append-only audit log. The log lines (tracing) still show every one.
const AUDIT_EVERY_SECS: u64 = 60;
const AUDIT_BUDGET_PER_MINUTE: u32 = 100;

/// Enrollment requests per device id: a burst of 6, then one every 4 s (an agent waiting for approval
/// asks every 5 s). In all: a burst of 200, then 50 a second. Beyond them the answer is `rate_limited`:
/// checking a CSR and signing a certificate are the work an attacker would make the controller do.
const PER_DEVICE_BURST: u32 = 6;
const PER_DEVICE_PER_SEC: f64 = 0.25;
const ALL_BURST: u32 = 200;
const ALL_PER_SEC: f64 = 50.0;
/// Labels taken from a request: at most this many, keys and values at most this long (the rest dropped).
const MAX_LABELS: usize = 32;
const MAX_LABEL_LEN: usize = 128;

/// What the fleet needs for identities.
pub struct Identity {
    /// `None` when the CA could not be opened or made: enrollment answers `unavailable`.
    pub ca: Option<Ca>,
    /// Run after the CRL is rewritten, e.g. `["systemctl", "reload", "mosquitto"]`.
    pub on_revoke: Vec<String>,
    last_audit: Mutex<HashMap<(DeviceId, &'static str), u64>>,
    /// (minute, audits in it) across all devices.
    budget: Mutex<(u64, u32)>,
    per_device: Mutex<Buckets<DeviceId>>,
    all: Mutex<Buckets<()>>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").field("ca", &self.ca).field("on_revoke", &self.on_revoke).finish_non_exhaustive()
    }
}

impl Identity {
    pub fn new(ca: Option<Ca>, on_revoke: Vec<String>) -> Identity {
        Identity {
            ca,
            on_revoke,
            last_audit: Mutex::default(),
            budget: Mutex::default(),
            per_device: Mutex::new(Buckets::new(PER_DEVICE_PER_SEC, PER_DEVICE_BURST, 100_000)),
            all: Mutex::new(Buckets::new(ALL_PER_SEC, ALL_BURST, 1)),
        }
    }

    /// Whether a request from `device` is within the rate limits.
    fn admit(&self, device: &DeviceId, now_ms: u64) -> bool {
        // The device's own bucket first: a greedy device spends its own tokens, not everyone's.
        self.per_device.lock().expect("rate").take(device, 1, now_ms) == 1
            && self.all.lock().expect("rate").take(&(), 1, now_ms) == 1
    }

    /// Whether an audit entry of this kind for this device is due (rate limit).
    pub(super) fn audit_due(&self, device: &DeviceId, kind: &'static str, now: u64) -> bool {
        let mut last = self.last_audit.lock().expect("audit limiter");
        if last.get(&(device.clone(), kind)).is_some_and(|t| now < t + AUDIT_EVERY_SECS) {
            return false;
        }
        let mut budget = self.budget.lock().expect("audit budget");
        if budget.0 != now / 60 {
            *budget = (now / 60, 0);
        }
        if budget.1 >= AUDIT_BUDGET_PER_MINUTE {
            return false;
        }
        budget.1 += 1;
        // Forget old entries so a spray of ids does not grow the map without end.
        if last.len() > 10_000 {
            last.retain(|_, t| now < *t + AUDIT_EVERY_SECS);
        }
        last.insert((device.clone(), kind), now);
        true
    }
}

impl Fleet {
    pub(super) fn audit(&self, entry: serde_json::Value) {
        if let Err(e) = self.store.audit(&entry) {
            tracing::error!(error = %e, "cannot append to the audit log");
        }
    }

    pub(super) fn is_revoked(&self, id: &DeviceId) -> bool {
        self.devices
            .lock()
            .expect("devices")
            .get(id)
            .is_some_and(|d| matches!(d.enrollment.status, Status::Revoked { .. }))
    }

    pub(super) fn ignore_revoked(&self, device: &DeviceId, kind: &str) {
        tracing::warn!(%device, kind, "ignoring a message from a revoked device");
        let t = now();
        if self.identity.audit_due(device, "ignored", t) {
            self.audit(serde_json::json!({
                "at": t, "what": "message from a revoked device ignored", "device": device, "topic": kind,
            }));
        }
    }

    /// Answers one enrollment request published on `enroll/{session}/request`, on that session's
    /// response topic. The device id is the request's (agents older than random sessions use their id as
    /// the session).
    pub(super) fn enroll(&self, session: DeviceId, payload: &[u8]) {
        let req = match codec::decode(payload, &Limits::default()) {
            Ok(Message::EnrollRequest(r)) => r,
            Ok(_) => return tracing::warn!(%session, "dropping a foreign message on an enrollment topic"),
            Err(e) => return tracing::warn!(%session, error = %e, "dropping a malformed enrollment request"),
        };
        let (device, nonce) = (req.device.clone(), req.nonce);
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let outcome = if self.identity.admit(&device, now_ms) {
            self.decide_enrollment(&device, req)
        } else {
            let detail = "too many enrollment requests; try again later".to_string();
            self.refuse(&device, None, EnrollRefusal::RateLimited, detail)
        };
        let (result, reason) = match &outcome {
            EnrollOutcome::Issued { .. } => ("issued", ""),
            EnrollOutcome::Pending => ("pending", ""),
            EnrollOutcome::Refused { reason, .. } => ("refused", reason.code()),
        };
        self.observed.enrollment(result, reason);
        if let EnrollOutcome::Refused { reason, detail } = &outcome {
            tracing::warn!(%device, reason = reason.code(), detail, "enrollment refused");
        }
        let msg = codec::encode(&Message::EnrollResponse(EnrollResponse { device: device.clone(), nonce, outcome }));
        self.send_enrollment(outpost_protocol::enroll::response_topic(&session), msg);
    }

    fn refuse(&self, device: &DeviceId, token: Option<&str>, reason: EnrollRefusal, detail: String) -> EnrollOutcome {
        let t = now();
        if self.identity.audit_due(device, "refused", t) {
            self.audit(serde_json::json!({
                "at": t, "what": "enrollment refused", "device": device, "reason": reason.code(),
                "detail": &detail, "token": token,
            }));
        }
        EnrollOutcome::Refused { reason, detail }
    }

    /// The newest unexpired certificate `outpost certs issue` made for `device`: (key, not_before,
    /// not_after). Certificates the daemon issued are in the registry already.
    fn hand_issued(&self, device: &DeviceId, t: u64) -> Option<(String, u64, u64)> {
        let issued = self.identity.ca.as_ref()?.issued().ok()?;
        issued
            .into_iter()
            .filter(|c| c.kind == "device" && c.subject == device.as_str())
            .filter_map(|c| Some((c.key?, c.not_before?, c.not_after?)))
            .filter(|(_, _, to)| *to > t)
            .max_by_key(|(_, from, _)| *from)
    }

    fn decide_enrollment(&self, device: &DeviceId, req: EnrollRequest) -> EnrollOutcome {
        let t = now();
        if req.token.len() > MAX_TOKEN {
            return self.refuse(device, None, EnrollRefusal::InvalidToken, "the token is too long".into());
        }
        let csr = match pki::csr::check(&req.csr, device) {
            Ok(c) => c,
            Err(e) => return self.refuse(device, None, e.refusal(), e.to_string()),
        };
        let key = csr.key_fingerprint();
        let record = self.device(device);
        let current = record.as_ref().map(|d| d.enrollment.clone()).unwrap_or_default();
        let hand = match current.status {
            Status::Unenrolled => self.hand_issued(device, t),
            _ => None,
        };
        let known = Known {
            // A record that is not bound to a key: the id said hello (or was registered some other way).
            seen: record.is_some() && current.status == Status::Unenrolled,
            hand_issued: hand.as_ref().map(|(k, from, to)| (k.as_str(), *from, *to)),
            current: current.clone(),
        };
        let mut stored: Option<EnrollToken> = None;
        let mut token_id: Option<String> = None;
        let decision = enroll::decide(&known, &key, t, |first_use| {
            let hash = enroll::hash(&req.token);
            stored = match self.store.get(Table::EnrollTokens, &hash) {
                Ok(s) => s,
                Err(e) => return Err((EnrollRefusal::Unavailable, e.to_string())),
            };
            let tok = enroll::check_token(stored.as_ref(), device.as_str(), first_use, t)?;
            token_id = Some(tok.id.clone());
            Ok((tok.id.clone(), tok.auto_approve))
        });
        let labels = bounded_labels(req.labels);
        match decision {
            Decision::Refuse(reason, detail) => self.refuse(device, token_id.as_deref(), reason, detail),
            Decision::Pending { claim } => {
                let first = current.status != Status::Pending;
                self.update(device, |d| {
                    d.enrollment.status = Status::Pending;
                    d.enrollment.key = Some(key.clone());
                    d.enrollment.token.clone_from(&token_id);
                    d.enrollment.requested = t;
                    d.enrollment.claim = claim;
                    if !claim {
                        // A claimed id keeps what its own hellos said until an operator approves.
                        d.arch = Some(req.arch);
                        d.agent_version = Some(req.agent_version);
                        d.labels = labels;
                    }
                });
                if first {
                    self.count_token_use(stored);
                    let what = if claim {
                        "enrollment pending approval: claims a device id the registry knew"
                    } else {
                        "enrollment pending approval"
                    };
                    self.audit(serde_json::json!({
                        "at": t, "what": what, "device": device, "token": token_id, "key": key,
                    }));
                }
                EnrollOutcome::Pending
            }
            Decision::Resend => {
                let certificate = current.certificate.clone().unwrap_or_default();
                let Some(ca) = &self.identity.ca else {
                    let detail = "the controller has no device CA".to_string();
                    return self.refuse(device, None, EnrollRefusal::Unavailable, detail);
                };
                tracing::info!(%device, "certificate sent again (not yet due for renewal)");
                EnrollOutcome::Issued { certificate, ca: ca.cert_pem().to_owned() }
            }
            Decision::Issue { renewal } => {
                let Some(ca) = &self.identity.ca else {
                    let detail = "the controller has no device CA".to_string();
                    return self.refuse(device, token_id.as_deref(), EnrollRefusal::Unavailable, detail);
                };
                let issued = match ca.issue_for_csr(device, &csr, t) {
                    Ok(i) => i,
                    Err(e) => {
                        return self.refuse(device, token_id.as_deref(), EnrollRefusal::Unavailable, e.to_string());
                    }
                };
                let fresh = current.status == Status::Unenrolled && !renewal;
                self.update(device, |d| {
                    let e = &mut d.enrollment;
                    e.status = Status::Enrolled;
                    e.key = Some(key.clone());
                    if e.token.is_none() {
                        e.token.clone_from(&token_id);
                    }
                    e.requested = t;
                    e.claim = false;
                    e.serials.push(issued.serial.clone());
                    let excess = e.serials.len().saturating_sub(enroll::SERIALS_KEPT);
                    e.serials.drain(..excess);
                    e.certificate = Some(issued.cert_pem.clone());
                    e.not_before = Some(issued.not_before);
                    e.not_after = Some(issued.not_after);
                    d.arch = Some(req.arch);
                    d.agent_version = Some(req.agent_version);
                    if !renewal {
                        d.labels = labels;
                    }
                });
                if fresh {
                    self.count_token_use(stored);
                }
                let what = if renewal { "certificate renewed" } else { "device enrolled" };
                self.audit(serde_json::json!({
                    "at": t, "what": what, "device": device, "token": token_id, "key": key,
                    "serial": &issued.serial, "not_after": issued.not_after,
                }));
                tracing::info!(%device, serial = %issued.serial, renewal, "certificate issued");
                EnrollOutcome::Issued { certificate: issued.cert_pem, ca: ca.cert_pem().to_owned() }
            }
        }
    }

    fn count_token_use(&self, token: Option<EnrollToken>) {
        if let Some(mut tok) = token {
            tok.uses += 1;
            if let Err(e) = self.store.put(Table::EnrollTokens, &tok.hash.clone(), &tok) {
                tracing::warn!(token = %tok.id, error = %e, "cannot count a token use");
            }
        }
    }

    /// `outpost enroll-token create`: returns the secret (shown once) and the stored token.
    pub fn create_token(&self, limits: &TokenLimits, by: &str) -> anyhow::Result<(String, EnrollToken)> {
        let mut random = [0u8; 32];
        getrandom::fill(&mut random).map_err(|e| anyhow::anyhow!("no OS randomness for a token: {e}"))?;
        let t = now();
        let (secret, token) = enroll::new_token(random, t, limits);
        self.store.put(Table::EnrollTokens, &token.hash, &token)?;
        self.audit(serde_json::json!({
            "at": t, "what": "enrollment token created", "operator": by, "token": &token.id, "expires": token.expires,
            "auto_approve": token.auto_approve, "max_uses": token.max_uses, "devices": &token.devices,
        }));
        Ok((secret, token))
    }

    pub fn tokens(&self) -> anyhow::Result<Vec<EnrollToken>> {
        Ok(self.store.all(Table::EnrollTokens)?)
    }

    /// `outpost devices approve ID`: a pending device gets its certificate on its next request.
    pub fn approve(&self, id: &DeviceId, by: &str) -> Result<(), String> {
        let status = self.device(id).map(|d| d.enrollment.status);
        match status {
            Some(Status::Pending) | Some(Status::Approved) => {}
            Some(other) => return Err(format!("device {id} is {}, not pending approval", other.label())),
            None => return Err(format!("no device {id}")),
        }
        self.update(id, |d| d.enrollment.status = Status::Approved);
        self.audit(serde_json::json!({"at": now(), "what": "device approved", "device": id, "operator": by}));
        Ok(())
    }

    /// `outpost devices revoke ID`: the registry refuses the device from now on, its certificates go on the
    /// CRL, and the revocation hook lets the broker reload it. An unknown id is revoked too (pre-emptively).
    pub async fn revoke(&self, id: &DeviceId, by: &str) -> Result<(), String> {
        let t = now();
        self.update(id, |d| {
            if !matches!(d.enrollment.status, Status::Revoked { .. }) {
                d.enrollment.status = Status::Revoked { at: t };
            }
            d.online = false;
        });
        let crl = self.write_crl(t);
        self.audit(serde_json::json!({
            "at": t, "what": "device revoked", "device": id, "operator": by, "crl": crl.as_ref().map(|p| p.display().to_string()),
        }));
        let crl =
            crl.map_err(|e| format!("device {id} is revoked in the registry, but the CRL was not written: {e}"))?;
        if let Some(ca) = &self.identity.ca {
            tracing::info!(device = %id, crl = %crl.display(), dir = %ca.dir().display(), "device revoked");
        }
        self.run_revoke_hook().await
    }

    /// Rewrites the CRL from the registry (also at every start, so it never reaches its next-update time).
    pub fn write_crl(&self, t: u64) -> Result<std::path::PathBuf, String> {
        let Some(ca) = &self.identity.ca else { return Err("the controller has no device CA".into()) };
        // Expired certificates need no revocation: dropping them keeps the issued log and the CRL bounded.
        if let Err(e) = ca.compact(t) {
            tracing::warn!(error = %e, "cannot compact the CA's issued log");
        }
        let revoked: Vec<(String, u64)> = self
            .all_records()
            .into_iter()
            .filter_map(|d| match d.enrollment.status {
                Status::Revoked { at } => Some((d.id.to_string(), at)),
                _ => None,
            })
            .collect();
        ca.write_crl(&revoked, t).map_err(|e| e.to_string())
    }

    pub(super) async fn run_revoke_hook(&self) -> Result<(), String> {
        let Some((cmd, args)) = self.identity.on_revoke.split_first() else { return Ok(()) };
        let (c, a) = (cmd.clone(), args.to_vec());
        let out = tokio::task::spawn_blocking(move || std::process::Command::new(c).args(a).output())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("enroll.on_revoke {cmd:?}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "enroll.on_revoke {:?} failed ({}): {}",
                self.identity.on_revoke,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(())
    }
}

/// At most `MAX_LABELS` labels, each key and value at most `MAX_LABEL_LEN` bytes: the record stays small
/// whatever a request carries.
fn bounded_labels(labels: Vec<(String, String)>) -> std::collections::BTreeMap<String, String> {
    labels.into_iter().filter(|(k, v)| k.len() <= MAX_LABEL_LEN && v.len() <= MAX_LABEL_LEN).take(MAX_LABELS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audits_are_limited_per_device_and_in_all() {
        let identity = Identity::new(None, vec![]);
        let dev = |i: u32| DeviceId::new(format!("dev-{i}")).unwrap();
        assert!(identity.audit_due(&dev(0), "refused", 120));
        assert!(!identity.audit_due(&dev(0), "refused", 150), "once a minute per device");
        assert!(identity.audit_due(&dev(0), "ignored", 150), "kinds count apart");
        assert!(identity.audit_due(&dev(0), "refused", 180));
        let admitted = (1..=500).filter(|i| identity.audit_due(&dev(*i), "refused", 190)).count();
        // dev-0's audit at 180 was the first of minute 3.
        assert_eq!(admitted as u32, AUDIT_BUDGET_PER_MINUTE - 1, "a spray of ids stops at the budget");
        assert!(identity.audit_due(&dev(900), "refused", 240), "the budget renews each minute");
    }
}

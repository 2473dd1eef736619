//! Signed version reports (`up/report`, Uptane's idea): what the device runs (every model's active and
//! previous release, every floor), its agent version and the root and policy versions it holds, signed
//! with the device's identity key (the ECDSA P-256 key its certificate names and enrollment bound; ring,
//! as rustls links it, so the device binary carries no new crypto). Sent when it connects, within
//! `CHECK_EVERY` of any change, when the controller says it missed the device (a telemetry ack that wants
//! a hello: it subscribed late or restarted), and every `REPORT_EVERY` otherwise; each report has a counter
//! above the last one (stored first), so the controller recognises a replayed one.

use super::TrustStore;
use crate::link::Link;
use crate::store::Store;
use outpost_protocol::messages::{Message, RunningModel, SignedVersionReport, VersionReport};
use outpost_protocol::topics::Up;
use outpost_protocol::{DeviceId, ModelName, Version};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// How often the device looks for a change to report.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);
/// A report goes out at least this often, changed or not.
pub const REPORT_EVERY: Duration = Duration::from_secs(3600);

/// Everything a report says but its counter and time: a change of any of it is reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contents {
    pub running: Vec<RunningModel>,
    pub previous: Vec<RunningModel>,
    pub floors: Vec<(ModelName, u64)>,
    pub agent_version: Version,
    pub root_version: u64,
    pub policy_version: u64,
}

/// Signs reports with the device key.
pub struct Reporter {
    device: DeviceId,
    key: EcdsaKeyPair,
    store: Store,
    trust: TrustStore,
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporter").field("device", &self.device).finish_non_exhaustive()
    }
}

/// Reads a PKCS#8 P-256 key (PEM) for signing reports.
pub fn signing_key(path: &Path) -> Result<EcdsaKeyPair, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (label, der) = pem_rfc7468::decode_vec(&pem).map_err(|e| format!("{}: not PEM: {e}", path.display()))?;
    if label != "PRIVATE KEY" {
        return Err(format!("{}: a {label:?} PEM; expected a PKCS#8 \"PRIVATE KEY\"", path.display()));
    }
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &SystemRandom::new())
        .map_err(|e| format!("{}: not an ECDSA P-256 key ({e})", path.display()))
}

impl Reporter {
    /// The reporter of this device, signing with `key` (the link's client key) or, without one, the
    /// identity key in `DATA_DIR/identity/device.key` (made on first need; enrollment later names it).
    pub fn open(
        cfg: &crate::config::Config,
        key: Option<&Path>,
        device: &DeviceId,
        store: Store,
        trust: TrustStore,
    ) -> Result<Reporter, String> {
        let key = match key {
            Some(path) => signing_key(path)?,
            None => {
                let paths = crate::identity::Paths::new(&cfg.data_dir);
                paths.ensure_key().map_err(|e| e.to_string())?;
                signing_key(&paths.key())?
            }
        };
        Ok(Reporter::new(device.clone(), key, store, trust))
    }

    pub fn new(device: DeviceId, key: EcdsaKeyPair, store: Store, trust: TrustStore) -> Reporter {
        Reporter { device, key, store, trust }
    }

    /// What the device runs now.
    pub fn contents(&self) -> Contents {
        let slots = self.store.slots().unwrap_or_default();
        let release = |name: &str, digest| {
            let m = self.store.read_manifest(&digest, name).ok()?;
            Some(RunningModel { name: m.name, version: m.version, digest, sequence: m.sequence })
        };
        let running = slots.installed().filter_map(|(n, m)| release(n, m.active_digest()?)).collect();
        let previous = slots.installed().filter_map(|(n, m)| release(n, m.previous_digest()?)).collect();
        let floors = slots
            .models
            .iter()
            .filter(|(_, m)| m.floor > 0)
            .filter_map(|(n, m)| Some((ModelName::new(n.clone()).ok()?, m.floor)))
            .collect();
        let (root_version, policy_version) = self.trust.versions();
        Contents { running, previous, floors, agent_version: crate::version(), root_version, policy_version }
    }

    /// Signs `contents` with the next counter.
    pub fn sign(&self, c: &Contents, now_ms: u64) -> Result<SignedVersionReport, String> {
        let counter = self.trust.next_report_counter(now_ms).map_err(|e| e.to_string())?;
        let report = VersionReport {
            device: self.device.clone(),
            counter,
            at: now_ms / 1000,
            running: c.running.clone(),
            previous: c.previous.clone(),
            floors: c.floors.clone(),
            agent_version: c.agent_version,
            policy_version: c.policy_version,
            root_version: c.root_version,
        };
        let rng = SystemRandom::new();
        let mut failed = None;
        let signed = SignedVersionReport::new(&report, self.key.public_key().as_ref().to_vec(), |m| {
            match self.key.sign(&rng, m) {
                Ok(s) => s.as_ref().try_into().unwrap_or([0; 64]),
                Err(e) => {
                    failed = Some(e.to_string());
                    [0; 64]
                }
            }
        });
        match failed {
            Some(e) => Err(format!("cannot sign the version report: {e}")),
            None => Ok(signed),
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Reports while connected: on (re)connect, on change, when `wanted` is notified, and every `REPORT_EVERY`.
pub async fn run(reporter: Reporter, link: Link, mut online: watch::Receiver<bool>, wanted: Arc<Notify>) {
    let mut last: Option<(Contents, tokio::time::Instant)> = None;
    let mut tick = tokio::time::interval(CHECK_EVERY);
    loop {
        tokio::select! {
            changed = online.changed() => {
                if changed.is_err() {
                    return;
                }
                if *online.borrow() {
                    last = None; // A new connection: report at once (the controller may have restarted).
                }
                continue;
            }
            _ = wanted.notified() => {
                last = None;
                continue;
            }
            _ = tick.tick() => {}
        }
        if !*online.borrow() {
            continue;
        }
        let c = reporter.contents();
        let due = last.as_ref().is_none_or(|(sent, at)| *sent != c || at.elapsed() >= REPORT_EVERY);
        if !due {
            continue;
        }
        match reporter.sign(&c, now_ms()) {
            Ok(signed) => match link.publish(Up::Report, &Message::Report(signed), false).await {
                Ok(()) => last = Some((c, tokio::time::Instant::now())),
                Err(e) => tracing::debug!(error = %e, "version report not sent"),
            },
            Err(e) => tracing::warn!(error = %e, "no version report"),
        }
    }
}

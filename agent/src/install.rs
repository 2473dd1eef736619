//! Installing a signed bundle: verify (signatures, threshold, expiry, floors, digests, limits), load it
//! in tract and check its interface, run its self-test vectors, store it, and flip the slots. Any failure
//! is a `Rejection` with a reason code and leaves the slots, and so the serving model, untouched.

use crate::config::{Config, ModelsConfig};
use crate::runtime::model::LoadedModel;
use crate::runtime::selftest;
use crate::store::{Slots, Store, StoreError};
use outpost_protocol::bundle;
use outpost_protocol::keys;
use outpost_protocol::manifest::{Manifest, SelfTestVector};
use outpost_protocol::trust::{self, RootKeys};
use outpost_protocol::verify::{self, DeviceFacts, VerifyRequest};
use outpost_protocol::{Arch, Limits, RejectReason, Rejection};
use std::path::Path;

/// Where the new model goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Becomes active; the active model becomes previous; the release floor rises.
    Activate,
    /// Becomes the shadow candidate on this share of requests; nothing else changes until it is promoted.
    Candidate { shadow_percent: u8 },
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The bundle was refused; nothing changed.
    #[error("rejected: {0}")]
    Rejected(#[from] Rejection),
    #[error("{0}")]
    Setup(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone)]
pub struct Installed {
    pub manifest: Manifest,
    pub selftests: usize,
    pub slots: Slots,
}

/// The pinned trust material named by the config.
#[derive(Debug, Clone)]
pub struct Trust {
    pub policy: Vec<u8>,
    pub roots: RootKeys,
    pub grace_secs: u64,
}

impl Trust {
    /// The director keys of the policy held (checked against the roots and its expiry at `now`): what
    /// signs the reverts and removals this device takes. Empty when the policy names none or fails.
    pub fn director_keys(&self, now: u64) -> Vec<outpost_protocol::keys::PublicKey> {
        trust::verify_policy(&self.policy, &self.roots, now, self.grace_secs, 0, &Limits::default())
            .map(|p| p.into_inner().director_keys)
            .unwrap_or_default()
    }

    pub fn load(cfg: &Config) -> Result<Trust, InstallError> {
        let t = &cfg.trust;
        let policy_path = t.policy.as_ref().ok_or_else(|| {
            InstallError::Setup("no trust policy configured: set [trust] policy or pass --trust".into())
        })?;
        if t.root_pubs.is_empty() {
            return Err(InstallError::Setup(
                "no root public key configured: set [trust] root_pub or pass --root-pub".into(),
            ));
        }
        let read = |p: &Path| std::fs::read(p).map_err(|e| InstallError::Setup(format!("{}: {e}", p.display())));
        let policy = read(policy_path)?;
        let mut roots = Vec::new();
        for p in &t.root_pubs {
            let pem = String::from_utf8(read(p)?)
                .map_err(|_| InstallError::Setup(format!("{}: not PEM text", p.display())))?;
            roots.push(
                keys::public_key_from_pem(&pem, &p.display().to_string())
                    .map_err(|e| InstallError::Setup(e.to_string()))?,
            );
        }
        Ok(Trust {
            policy,
            roots: RootKeys { keys: roots, threshold: t.root_threshold },
            grace_secs: t.expiry_grace.as_secs(),
        })
    }
}

/// A bundle that passed verification, loaded in tract with its interface checked, and stored.
#[derive(Debug)]
pub struct Staged {
    pub manifest: Manifest,
    pub model: LoadedModel,
    /// The bundle's self-test vectors (also stored beside the model).
    pub selftest: Vec<SelfTestVector>,
    pub digest: outpost_protocol::Digest,
    pub policy_version: u64,
    /// The footprint the memory budget counts for this model: the larger of the estimate and the
    /// measured growth of the process when it loaded.
    pub mem_bytes: u64,
}

/// What a model is estimated to take before it is loaded: its weights twice (the parsed model and the
/// optimised plans' packed copies) plus 1 MiB of plans and buffers. `Staged::mem_bytes` adds the measure.
pub fn estimate_mem_bytes(manifest: &Manifest) -> u64 {
    manifest.payload.model_size.saturating_mul(2).saturating_add(1 << 20)
}

const MIB: f64 = (1 << 20) as f64;

/// Refuses a model whose footprint would take the models served together over the budget.
fn check_budget(name: &str, what: &str, mem: u64, slots: &Slots, budget: u64, how: &str) -> Result<(), Rejection> {
    let others = slots.mem_bytes_except(name);
    if others.saturating_add(mem) <= budget {
        return Ok(());
    }
    let serving: Vec<String> = slots
        .installed()
        .filter(|(n, _)| n.as_str() != name)
        .map(|(n, m)| format!("{n} {:.1} MiB", m.mem_bytes as f64 / MIB))
        .collect();
    let serving = if serving.is_empty() { "nothing else".to_string() } else { serving.join(", ") };
    Err(Rejection::new(
        RejectReason::InsufficientMemory,
        format!(
            "{what} takes {:.1} MiB ({how}); with the models already serving ({serving}) that is {:.1} MiB, \
             over the memory budget of {:.1} MiB",
            mem as f64 / MIB,
            others.saturating_add(mem) as f64 / MIB,
            budget as f64 / MIB
        ),
    ))
}

/// Verifies `bundle_bytes` against the device's trust, floors and active model (the delta base), loads
/// it in tract, checks its interface and stores it. Slots are not changed. The caller holds the lock.
pub fn verify_and_store(
    store: &Store,
    slots: &Slots,
    trust: &Trust,
    bundle_bytes: &[u8],
    now: u64,
    models: &ModelsConfig,
) -> Result<Staged, InstallError> {
    let limits = Limits::default();
    // The unverified name only picks which floor applies; verify re-checks everything it depends on.
    let name = bundle::inspect(bundle_bytes, &limits)?.manifest.name;
    // Each model's floor and delta base are its own: a bundle of one model never touches another's.
    let base = match slots.active_digest(name.as_str()) {
        Some(d) => Some(store.read_model(&d)?.0),
        None => None,
    };
    let arch = Arch::current().ok_or_else(|| InstallError::Setup("this CPU architecture is not supported".into()))?;
    let device = DeviceFacts { arch, agent_version: crate::version() };
    let verified = verify::verify(&VerifyRequest {
        policy: &trust.policy,
        roots: &trust.roots,
        bundle: bundle_bytes,
        now,
        expiry_grace: trust.grace_secs,
        floor: slots.floor(name.as_str()),
        policy_floor: slots.policy_floor,
        device: &device,
        base: base.as_deref(),
        limits: &limits,
    })?
    .into_inner();
    let name = verified.manifest.name.as_str();
    let what = format!("{name} {}", verified.manifest.version);
    // A device may pin the models it runs: the verified name decides, not the request that brought it.
    if !models.accepts(name) {
        let accepted: Vec<&str> = models.accept.iter().flatten().map(|n| n.as_str()).collect();
        return Err(Rejection::new(
            RejectReason::DesiredMismatch,
            format!("{what}: this device accepts only the models {}", accepted.join(", ")),
        )
        .into());
    }
    // The memory budget: estimated before anything is loaded, then measured after loading.
    let estimate = estimate_mem_bytes(&verified.manifest);
    check_budget(name, &what, estimate, slots, models.memory_budget, "estimated from its size")?;
    let model = LoadedModel::load(&verified.model, verified.manifest.clone(), 1)
        .map_err(|e| Rejection::new(RejectReason::ModelUnloadable, format!("{what}: {e}")))?;
    let mem_bytes = estimate.max(model.mem_bytes);
    check_budget(name, &what, model.mem_bytes, slots, models.memory_budget, "measured after loading")?;
    let digest = store.put_model(&verified.model, &verified.manifest, &verified.selftest_bytes)?;
    Ok(Staged {
        manifest: verified.manifest,
        model,
        digest,
        policy_version: verified.policy_version,
        mem_bytes,
        selftest: verified.selftest,
    })
}

/// Runs a model's self-test vectors.
pub fn self_test(model: &LoadedModel, vectors: &[SelfTestVector]) -> Result<usize, Rejection> {
    let what = format!("{} {}", model.manifest.name, model.manifest.version);
    selftest::run(model, vectors).map_err(|e| Rejection::new(RejectReason::SelfTestFailed, format!("{what}: {e}")))
}

/// Runs the self-test vectors stored beside a model; unreadable vectors fail the test.
pub fn self_test_stored(store: &Store, model: &LoadedModel) -> Result<usize, Rejection> {
    let vectors = store.read_selftest(&model.digest, &model.manifest).map_err(|e| {
        let what = format!("{} {}", model.manifest.name, model.manifest.version);
        Rejection::new(RejectReason::SelfTestFailed, format!("{what}: {e}"))
    })?;
    self_test(model, &vectors)
}

/// Verifies and installs `bundle_bytes` (the offline path: `outpost-agent install`). `now` is Unix seconds.
/// Only the slots of the bundle's own model change; every other installed model keeps serving.
pub fn install(
    store: &Store,
    trust: &Trust,
    bundle_bytes: &[u8],
    now: u64,
    target: Target,
) -> Result<Installed, InstallError> {
    install_with(store, trust, bundle_bytes, now, target, &ModelsConfig { accept: None, memory_budget: u64::MAX })
}

/// `install` under the device's model rules: the accepted names and the memory budget.
pub fn install_with(
    store: &Store,
    trust: &Trust,
    bundle_bytes: &[u8],
    now: u64,
    target: Target,
    models: &ModelsConfig,
) -> Result<Installed, InstallError> {
    let _lock = store.lock()?;
    let mut slots = store.slots()?;
    let staged = verify_and_store(store, &slots, trust, bundle_bytes, now, models)?;
    let selftests = self_test(&staged.model, &staged.selftest)?;
    let model = slots.model_mut(staged.manifest.name.as_str());
    match target {
        // A local install is final at once: activated and committed (the floor rises to its verified
        // sequence); the model it replaces stays as `previous`.
        Target::Activate => {
            model.activate(staged.digest, staged.mem_bytes);
            model.commit(staged.manifest.sequence);
        }
        Target::Candidate { shadow_percent } => model.stage(staged.digest, Some(shadow_percent)),
    }
    slots.policy_floor = slots.policy_floor.max(staged.policy_version);
    store.write_slots(&slots)?;
    store.gc(&slots)?;
    Ok(Installed { manifest: staged.manifest, selftests, slots })
}

/// What `remove` did.
#[derive(Debug, Clone)]
pub struct Removed {
    pub name: String,
    pub version: Option<String>,
}

/// Stops serving model `name` (`outpost-agent remove`): its slots are emptied, its floor kept, its files
/// collected. Refused while the fleet's retained desired state names the model (`fleet_names`): the next
/// reconnect would install it again, so the operator must take it off through the fleet instead.
pub fn remove(store: &Store, name: &str, fleet_names: &[String]) -> Result<Removed, InstallError> {
    let _lock = store.lock()?;
    let mut slots = store.slots()?;
    let installed = slots.model(name).is_some_and(|m| m.installed() || m.candidate.is_some());
    if !installed {
        let have: Vec<&str> = slots.installed().map(|(n, _)| n.as_str()).collect();
        let have = if have.is_empty() { "none".to_string() } else { have.join(", ") };
        return Err(InstallError::Setup(format!("model {name:?} is not installed (installed: {have})")));
    }
    if fleet_names.iter().any(|n| n == name) {
        return Err(InstallError::Setup(format!(
            "model {name:?} is still named by the fleet's desired state for this device; remove it with a \
             removal rollout on the controller, or the device would install it again"
        )));
    }
    let version =
        slots.active_digest(name).and_then(|d| store.read_manifest(&d, name).ok()).map(|m| m.version.to_string());
    slots.model_mut(name).remove();
    store.write_slots(&slots)?;
    store.gc(&slots)?;
    Ok(Removed { name: name.to_owned(), version })
}

/// Loads the model a slot names, for serving.
pub fn load_slot(
    store: &Store,
    digest: &outpost_protocol::Digest,
    name: &str,
    max_batch: usize,
    calibrate: bool,
) -> Result<LoadedModel, String> {
    let (bytes, manifest) = store.read_model_as(digest, name).map_err(|e| e.to_string())?;
    let mut model = LoadedModel::load(&bytes, manifest, max_batch).map_err(|e| e.to_string())?;
    if calibrate {
        model.calibrate(std::time::Duration::from_millis(300));
    }
    Ok(model)
}

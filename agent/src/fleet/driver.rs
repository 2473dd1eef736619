//! The shell around the pure update machines, one per model: it turns link messages into machine inputs,
//! persists every machine's state (write-new, fsync, rename) before performing any effect, and performs
//! the effects against the staging files, the store, the slots and the link. The clock is injected.
//! Slot switches are `slots.rs`'s pure transitions; the effects carry the data they need.

use crate::config::ModelsConfig;
use crate::install::{self, InstallError};
use crate::link::Link;
use crate::runtime::Runtime;
use crate::store::{Store, StoreError, write_atomic};
use crate::telemetry::queue::TelemetryQueue;
use crate::trust::TrustStore;
use crate::update::machine::{Effect, Health, Input, Machine, Release, UpdateState};
use outpost_protocol::messages::{Chunk, ChunkRequest, DesiredState, Message};
use outpost_protocol::telemetry::{RecordBody, UpdateEvent, UpdateStage};
use outpost_protocol::topics::Up;
use outpost_protocol::{Digest, Limits, ModelName, RejectReason};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// What reaches the driver from the link.
#[derive(Debug)]
pub enum FromLink {
    Desired(DesiredState),
    Withdrawn(ModelName),
    Chunk(Chunk),
}

/// Unix time in milliseconds: the driver's one clock, injected so tests and the simulator drive time.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The wall clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Every model's update machine state, as `update.json` holds it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DriverState {
    #[serde(default)]
    pub models: BTreeMap<String, UpdateState>,
}

impl DriverState {
    pub fn load(store: &Store) -> DriverState {
        std::fs::read(store.dir().join("update.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }
}

pub struct Driver {
    machines: BTreeMap<String, Machine>,
    state_path: PathBuf,
    staging_dir: PathBuf,
    store: Store,
    trust: Option<TrustStore>,
    models: ModelsConfig,
    rt: Arc<Runtime>,
    link: Option<Link>,
    queue: Arc<TelemetryQueue>,
    clock: Clock,
    last_selftest_ms: BTreeMap<String, u64>,
    /// Re-announces the device after a running model changed, so the fleet view never lags.
    hello: Option<Arc<dyn Fn() -> outpost_protocol::messages::Hello + Send + Sync>>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let stages: BTreeMap<&String, UpdateStage> = self.machines.iter().map(|(n, m)| (n, m.stage())).collect();
        f.debug_struct("Driver").field("stages", &stages).finish_non_exhaustive()
    }
}

impl Driver {
    pub fn new(
        store: Store,
        trust: Option<TrustStore>,
        models: ModelsConfig,
        rt: Arc<Runtime>,
        link: Option<Link>,
        queue: Arc<TelemetryQueue>,
    ) -> Driver {
        let state_path = store.dir().join("update.json");
        let staging_dir = store.dir().join("staging");
        let _ = std::fs::create_dir_all(&staging_dir);
        let accept = models.accept.clone();
        let machines = DriverState::load(&store)
            .models
            .into_iter()
            .map(|(name, state)| (name, Machine::new(state).with_accept(accept.clone())))
            .collect();
        Driver {
            machines,
            state_path,
            staging_dir,
            store,
            trust,
            models,
            rt,
            link,
            queue,
            clock: Arc::new(now_ms),
            last_selftest_ms: BTreeMap::new(),
            hello: None,
        }
    }

    pub fn with_hello(mut self, hello: Arc<dyn Fn() -> outpost_protocol::messages::Hello + Send + Sync>) -> Self {
        self.hello = Some(hello);
        self
    }

    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    async fn announce(&self) {
        if let (Some(link), Some(hello)) = (&self.link, &self.hello) {
            let _ = link.publish(Up::Hello, &Message::Hello(hello()), false).await;
        }
    }

    /// The update stage of `model`.
    pub fn stage(&self, model: &str) -> UpdateStage {
        self.machines.get(model).map(Machine::stage).unwrap_or(UpdateStage::Idle)
    }

    /// Runs until the link's channel closes.
    pub async fn run(mut self, mut from_link: mpsc::Receiver<FromLink>) {
        let names: Vec<String> = self.machines.keys().cloned().collect();
        for name in names {
            let valid = self.check_staging(&name);
            self.handle(&name, Input::Restarted { valid_chunks: valid }).await;
        }
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                msg = from_link.recv() => match msg {
                    None => return,
                    Some(FromLink::Desired(d)) => {
                        let already_active = self.is_active(&d);
                        let name = d.model.as_str().to_owned();
                        self.handle(&name, Input::Desired { desired: d, already_active }).await;
                    }
                    Some(FromLink::Withdrawn(model)) => {
                        if self.machines.contains_key(model.as_str()) {
                            self.handle(model.as_str(), Input::Withdrawn).await;
                        }
                    }
                    Some(FromLink::Chunk(c)) => {
                        // A chunk belongs to the model whose fetch names its bundle.
                        let owner = self.machines.iter().find(|(_, m)| {
                            m.state.job.as_ref().is_some_and(|j| j.stage == UpdateStage::Fetching && j.bundle() == c.bundle)
                        });
                        if let Some(name) = owner.map(|(n, _)| n.clone())
                            && let Some(input) = self.write_chunk(&name, &c)
                        {
                            self.handle(&name, input).await;
                        }
                    }
                },
                _ = tick.tick() => {
                    let names: Vec<String> = self.machines.keys().cloned().collect();
                    for name in names {
                        self.handle(&name, Input::Tick).await;
                        if self.stage(&name) == UpdateStage::Watching {
                            let health = self.health(&name);
                            self.handle(&name, Input::Health(health)).await;
                        }
                    }
                }
            }
        }
    }

    /// Steps `model`'s machine; persists every machine; performs the effects, feeding their results back
    /// in. When the state cannot be persisted the step is undone and nothing is performed: the same input
    /// comes again (the retained desired state on reconnect, chunks on the retry timer, ticks).
    async fn handle(&mut self, model: &str, input: Input) {
        let mut pending = VecDeque::from([input]);
        while let Some(input) = pending.pop_front() {
            let accept = self.models.accept.clone();
            let machine =
                self.machines.entry(model.to_owned()).or_insert_with(|| Machine::default().with_accept(accept));
            let saved = machine.state.clone();
            let before = machine.stage();
            let previous_job = machine.state.job.as_ref().map(|j| j.desired.clone());
            let effects = machine.step(input, (self.clock)());
            let after = machine.stage();
            let current_job = machine.state.job.as_ref().map(|j| j.desired.clone());
            // A step with no effects (a chunk arriving mid-window) need not be persisted: on restart the
            // staging file itself says which chunks are there.
            if !effects.is_empty()
                && let Err(e) = self.persist()
            {
                tracing::error!(model, error = %e, "cannot persist the update state; the step is undone");
                if let Some(m) = self.machines.get_mut(model) {
                    m.state = saved;
                }
                return;
            }
            // Events first (they are the record of the transition), then the stage's work.
            let (events, work): (Vec<Effect>, Vec<Effect>) =
                effects.into_iter().partition(|e| matches!(e, Effect::Event { .. }));
            for effect in events {
                if let Effect::Event { bundle, from, to, reason, detail } = effect {
                    // A superseded job's last event comes after the new job replaced it: name its release.
                    let desired = [current_job.clone(), previous_job.clone()]
                        .into_iter()
                        .flatten()
                        .find(|d| d.bundle.digest == bundle);
                    if let Some(d) = desired {
                        self.report(&d, from, to, reason, detail).await;
                    }
                }
            }
            if after != before && stall_requested(after) {
                tracing::warn!(stage = ?after, "failpoint: stalling before this stage's work");
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
            for effect in work {
                if let Some(next) = self.perform(model, effect).await {
                    pending.push_back(next);
                }
            }
        }
    }

    fn persist(&self) -> Result<(), StoreError> {
        let state = DriverState { models: self.machines.iter().map(|(n, m)| (n.clone(), m.state.clone())).collect() };
        write_atomic(&self.state_path, &serde_json::to_vec(&state).expect("state encodes"))
    }

    /// Whether `d` names exactly the release that serves its model (by the verified manifest on disk).
    fn is_active(&self, d: &DesiredState) -> bool {
        let Ok(slots) = self.store.slots() else { return false };
        let Some(digest) = slots.active_digest(d.model.as_str()) else { return false };
        let manifest = self.store.read_manifest(&digest, d.model.as_str());
        manifest.map(|m| m.name == d.model && m.sequence == d.sequence).unwrap_or(false)
    }

    fn job(&self, model: &str) -> Option<&crate::update::machine::Job> {
        self.machines.get(model)?.state.job.as_ref()
    }

    fn staging_file(&self, bundle: Digest) -> PathBuf {
        self.staging_dir.join(format!("{}.obundle.part", bundle.to_hex()))
    }

    /// Which chunks of `model`'s staging file match their digests (after a restart). Nothing is allocated
    /// by a bundle reference that exceeds the limits: the machine refuses such a job on restart.
    fn check_staging(&self, model: &str) -> Vec<bool> {
        let Some(job) = self.job(model) else { return vec![] };
        let b = &job.desired.bundle;
        if b.check(&Limits::default()).is_err() {
            return vec![];
        }
        let Ok(mut f) = std::fs::File::open(self.staging_file(b.digest)) else { return vec![] };
        let mut buf = vec![0u8; b.chunk_size as usize];
        (0..b.chunks.len())
            .map(|i| {
                let len = chunk_len(b.size, b.chunk_size, i);
                f.seek(SeekFrom::Start(i as u64 * u64::from(b.chunk_size))).is_ok()
                    && f.read_exact(&mut buf[..len]).is_ok()
                    && Digest::of(&buf[..len]) == b.chunks[i]
            })
            .collect()
    }

    /// Checks a chunk against the digest list and writes it; `None` for chunks of no current fetch.
    fn write_chunk(&self, model: &str, c: &Chunk) -> Option<Input> {
        let job = self.job(model).filter(|j| j.stage == UpdateStage::Fetching && j.bundle() == c.bundle)?;
        let b = &job.desired.bundle;
        let i = c.index as usize;
        let path = self.staging_file(b.digest);
        let valid = i < b.chunks.len()
            && c.data.len() == chunk_len(b.size, b.chunk_size, i)
            && Digest::of(&c.data) == b.chunks[i]
            && {
                let write = || -> std::io::Result<()> {
                    let mut f = std::fs::OpenOptions::new().write(true).open(&path)?;
                    f.seek(SeekFrom::Start(i as u64 * u64::from(b.chunk_size)))?;
                    f.write_all(&c.data)?;
                    f.sync_data()
                };
                write().is_ok()
            };
        if !valid {
            tracing::warn!(model, index = c.index, "chunk failed its digest check; asking again");
        }
        Some(Input::Chunk { bundle: c.bundle, index: c.index, valid })
    }

    fn health(&mut self, model: &str) -> Health {
        let w = self.rt.model(model).map(|s| s.metrics.watch_window()).unwrap_or_default();
        let mut selftest_ok = true;
        // Re-run the self-test on the serving model at the start of the watch and every minute.
        let now = (self.clock)();
        let last = self.last_selftest_ms.entry(model.to_owned()).or_insert(0);
        if now >= *last + 60_000 {
            *last = now;
            if let Some(m) = self.rt.active(model) {
                selftest_ok = install::self_test_stored(&self.store, &m).is_ok();
            }
        }
        Health { requests: w.requests, errors: w.errors, p95_us: w.latency.quantile_us(0.95), selftest_ok }
    }

    async fn perform(&mut self, model: &str, effect: Effect) -> Option<Input> {
        match effect {
            Effect::Event { .. } => None,
            Effect::PrepareStaging { bundle, size } => {
                // `size` passed `BundleRef::check` in the machine before this effect was emitted.
                let path = self.staging_file(bundle);
                if let Err(e) = std::fs::File::create(&path).and_then(|f| f.set_len(size)) {
                    tracing::error!(path = %path.display(), error = %e, "cannot create the staging file");
                }
                None
            }
            Effect::RequestChunks { first, count } => {
                let bundle = self.job(model)?.bundle();
                let msg = Message::ChunkRequest(ChunkRequest { bundle, first, count });
                if let Some(link) = &self.link {
                    // Offline: the machine's retry timer asks again.
                    let _ = link.publish(Up::Fetch, &msg, false).await;
                }
                None
            }
            Effect::Verify { bundle } => Some(Input::Verified(self.verify(model, bundle).await)),
            Effect::Stage { model: digest } => {
                self.edit_slots(|s| s.model_mut(model).stage(digest, None));
                None
            }
            Effect::SelfTest { model: digest } => Some(Input::SelfTested(self.self_test(model, digest).await)),
            Effect::StartShadow { sample_percent } => {
                self.edit_slots(|s| s.model_mut(model).shadow_percent = Some(sample_percent));
                None
            }
            Effect::StopShadow => {
                self.edit_slots(|s| s.model_mut(model).stop_shadow());
                None
            }
            Effect::Activate { model: digest, mem_bytes } => {
                self.edit_slots(|s| s.model_mut(model).activate(digest, mem_bytes));
                let r = self.wait_active(model, digest).await;
                self.last_selftest_ms.remove(model);
                self.announce().await;
                Some(Input::Activated(r))
            }
            Effect::RollBack => {
                let mut back = None;
                self.edit_slots(|s| back = s.model_mut(model).roll_back());
                if let Some(d) = back
                    && let Err(e) = self.wait_active(model, d).await
                {
                    tracing::error!(model, error = %e, "rollback target did not load");
                }
                self.announce().await;
                None
            }
            Effect::Revert => {
                let mut back = None;
                self.edit_slots(|s| back = s.model_mut(model).revert());
                match back {
                    Some(d) => {
                        let _ = self.wait_active(model, d).await;
                    }
                    None => tracing::warn!(model, "revert asked, but no previous model is kept"),
                }
                self.announce().await;
                None
            }
            Effect::Commit { sequence } => {
                self.edit_slots(|s| s.model_mut(model).commit(sequence));
                if let Some(bundle) = self.job(model).map(|j| j.bundle()) {
                    let _ = std::fs::remove_file(self.staging_file(bundle));
                }
                self.announce().await;
                None
            }
            Effect::Remove => {
                self.edit_slots(|s| s.model_mut(model).remove());
                self.announce().await;
                None
            }
            Effect::DiscardStaging { bundle } => {
                let _ = std::fs::remove_file(self.staging_file(bundle));
                self.edit_slots(|s| {
                    if let Some(m) = s.models.get_mut(model) {
                        m.discard_candidate();
                    }
                });
                None
            }
        }
    }

    fn edit_slots(&self, change: impl FnOnce(&mut crate::store::Slots)) {
        let result = (|| -> Result<(), StoreError> {
            let _lock = self.store.lock()?;
            let mut slots = self.store.slots()?;
            change(&mut slots);
            self.store.write_slots(&slots)?;
            self.store.gc(&slots)
        })();
        if let Err(e) = result {
            tracing::error!(error = %e, "cannot update the slots");
        }
    }

    /// Waits until the runtime serves `digest` as `model` (the slot follower loads it).
    async fn wait_active(&self, model: &str, digest: Digest) -> Result<(), String> {
        for _ in 0..600 {
            if self.rt.active(model).map(|m| m.digest) == Some(digest) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!("model {} did not load within 60 s", digest.short()))
    }

    /// Verifies `model`'s staging file and stores its model; the slots are untouched (the machine stages
    /// it once the verified release matches what was asked for).
    async fn verify(&self, model: &str, bundle: Digest) -> Result<Release, (RejectReason, String)> {
        let trust =
            // The policy held now: a newer one taken over the air applies to the next verification.
            self.trust.as_ref().and_then(TrustStore::snapshot).ok_or((
                RejectReason::Malformed,
                "no trust policy on this device yet (configure one, or wait for the fleet's trust update)".into(),
            ))?;
        let size =
            self.job(model).map(|j| j.desired.bundle.size).ok_or((RejectReason::Malformed, "no update".into()))?;
        let path = self.staging_file(bundle);
        let (store, models, now) = (self.store.clone(), self.models.clone(), (self.clock)() / 1000);
        let work = move || -> Result<Release, (RejectReason, String)> {
            // Read no more than the checked size: the file is ours, but its length is the message's word.
            let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            if len != size {
                return Err((RejectReason::Truncated, format!("the staging file holds {len} of {size} bytes")));
            }
            let bytes =
                std::fs::read(&path).map_err(|e| (RejectReason::Truncated, format!("{}: {e}", path.display())))?;
            if Digest::of(&bytes) != bundle {
                return Err((
                    RejectReason::PayloadDigestMismatch,
                    "the fetched bundle does not match its digest".into(),
                ));
            }
            let _lock = store.lock().map_err(|e| (RejectReason::Malformed, e.to_string()))?;
            let mut slots = store.slots().map_err(|e| (RejectReason::Malformed, e.to_string()))?;
            let staged = install::verify_and_store(&store, &slots, &trust, &bytes, now, &models).map_err(rejection)?;
            slots.policy_floor = slots.policy_floor.max(staged.policy_version);
            store.write_slots(&slots).map_err(|e| (RejectReason::Malformed, e.to_string()))?;
            let m = &staged.manifest;
            Ok(Release {
                name: m.name.clone(),
                version: m.version,
                sequence: m.sequence,
                model: staged.digest,
                mem_bytes: staged.mem_bytes,
            })
        };
        tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| Err((RejectReason::Malformed, e.to_string())))
    }

    async fn self_test(&self, name: &str, digest: Digest) -> Result<(), (RejectReason, String)> {
        let (store, name) = (self.store.clone(), name.to_owned());
        let work = move || -> Result<(), (RejectReason, String)> {
            let model =
                install::load_slot(&store, &digest, &name, 1, false).map_err(|e| (RejectReason::ModelUnloadable, e))?;
            install::self_test_stored(&store, &model).map(|_| ()).map_err(|r| (r.reason, r.detail))
        };
        tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| Err((RejectReason::Malformed, e.to_string())))
    }

    /// Every transition goes into the durable telemetry queue, and to `up/events` when online.
    async fn report(
        &self,
        d: &DesiredState,
        from: UpdateStage,
        to: UpdateStage,
        reason: Option<RejectReason>,
        detail: String,
    ) {
        let event = UpdateEvent {
            rollout: d.rollout.clone(),
            model: d.model.clone(),
            version: d.version,
            bundle: d.bundle.digest,
            from,
            to,
            reason,
            detail,
        };
        tracing::info!(model = %event.model, from = ?event.from, to = ?event.to, reason = ?event.reason, detail = %event.detail, "update");
        if let Some(o) = self.rt.metrics.fleet() {
            o.update_event(&event);
        }
        if let Err(e) = self.queue.append(&[((self.clock)() / 1000, RecordBody::Update(event.clone()))]) {
            tracing::error!(error = %e, "cannot buffer an update event");
        }
        if let Some(link) = &self.link {
            let _ = link.publish(Up::Events, &Message::Event(event), false).await;
        }
    }
}

/// The models the fleet's retained desired state names for this device, as the update driver last
/// persisted it (`outpost-agent remove` refuses these).
pub fn fleet_desired_models(store: &Store) -> Vec<String> {
    DriverState::load(store).models.into_iter().filter(|(_, s)| s.retained).map(|(n, _)| n).collect()
}

/// Each model's update as the driver last persisted it, for `outpost-agent status`.
pub fn update_summaries(store: &Store) -> BTreeMap<String, serde_json::Value> {
    DriverState::load(store)
        .models
        .into_iter()
        .filter_map(|(name, s)| {
            let j = s.job?;
            let outcome = j.outcome.as_ref().map(|(r, d)| serde_json::json!([r.code(), d]));
            let v = serde_json::json!({
                "version": j.desired.version.to_string(),
                "stage": format!("{:?}", j.stage),
                "outcome": outcome,
                "rollout": j.desired.rollout,
                "fleet_desired": s.retained,
            });
            Some((name, v))
        })
        .collect()
}

/// Fault injection for crash tests: `OUTPOST_FAILPOINT_STALL=SelfTest` makes the agent stall right after
/// persisting its entry into that stage, so a test can `kill -9` it inside the stage. Unset in production.
fn stall_requested(stage: UpdateStage) -> bool {
    std::env::var("OUTPOST_FAILPOINT_STALL").is_ok_and(|s| s == format!("{stage:?}"))
}

fn rejection(e: InstallError) -> (RejectReason, String) {
    match e {
        InstallError::Rejected(r) => (r.reason, r.detail),
        other => (RejectReason::Malformed, other.to_string()),
    }
}

/// Bytes in chunk `i` of a bundle of `size` bytes cut into `chunk_size` pieces.
pub fn chunk_len(size: u64, chunk_size: u32, i: usize) -> usize {
    let start = i as u64 * u64::from(chunk_size);
    size.saturating_sub(start).min(u64::from(chunk_size)) as usize
}

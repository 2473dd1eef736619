//! The shell around the pure update machine: it turns link messages into machine inputs, persists the
//! machine's state (write-new, fsync, rename) before performing any effect, and performs the effects
//! against the staging file, the store, the slots and the link.

use crate::install::{self, InstallError, Trust};
use crate::link::Link;
use crate::runtime::Runtime;
use crate::store::{Store, write_atomic};
use crate::telemetry::queue::TelemetryQueue;
use crate::update::machine::{Effect, Health, Input, Machine, UpdateState};
use outpost_protocol::messages::{Chunk, ChunkRequest, DesiredState, Message, Mode};
use outpost_protocol::telemetry::{RecordBody, UpdateEvent, UpdateStage};
use outpost_protocol::topics::Up;
use outpost_protocol::{Digest, RejectReason};
use std::collections::VecDeque;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// What reaches the driver from the link.
#[derive(Debug)]
pub enum FromLink {
    Desired(DesiredState),
    Withdrawn(outpost_protocol::ModelName),
    Chunk(Chunk),
}

pub struct Driver {
    machine: Machine,
    state_path: PathBuf,
    staging_dir: PathBuf,
    store: Store,
    trust: Option<Trust>,
    rt: Arc<Runtime>,
    link: Option<Link>,
    queue: Arc<TelemetryQueue>,
    last_selftest_ms: u64,
    /// Re-announces the device after its running model changed, so the fleet view never lags.
    hello: Option<Arc<dyn Fn() -> outpost_protocol::messages::Hello + Send + Sync>>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver").field("stage", &self.machine.stage()).finish_non_exhaustive()
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Driver {
    pub fn new(
        store: Store,
        trust: Option<Trust>,
        rt: Arc<Runtime>,
        link: Option<Link>,
        queue: Arc<TelemetryQueue>,
    ) -> Driver {
        let state_path = store.dir().join("update.json");
        let staging_dir = store.dir().join("staging");
        let _ = std::fs::create_dir_all(&staging_dir);
        let state: UpdateState =
            std::fs::read(&state_path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        Driver {
            machine: Machine::new(state),
            state_path,
            staging_dir,
            store,
            trust,
            rt,
            link,
            queue,
            last_selftest_ms: 0,
            hello: None,
        }
    }

    pub fn with_hello(mut self, hello: Arc<dyn Fn() -> outpost_protocol::messages::Hello + Send + Sync>) -> Self {
        self.hello = Some(hello);
        self
    }

    async fn announce(&self) {
        if let (Some(link), Some(hello)) = (&self.link, &self.hello) {
            let _ = link.publish(Up::Hello, &Message::Hello(hello()), false).await;
        }
    }

    pub fn stage(&self) -> UpdateStage {
        self.machine.stage()
    }

    /// Runs until the link's channel closes.
    pub async fn run(mut self, mut from_link: mpsc::Receiver<FromLink>) {
        let valid = self.check_staging();
        self.handle(Input::Restarted { valid_chunks: valid }).await;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                msg = from_link.recv() => match msg {
                    None => return,
                    Some(FromLink::Desired(d)) => {
                        let already_active = self.is_active(&d);
                        self.handle(Input::Desired { desired: d, already_active }).await;
                    }
                    // One update machine serves one model at a time for now: a withdrawal of another
                    // model's desired state is not this job's.
                    Some(FromLink::Withdrawn(model)) => {
                        if self.machine.state.job.as_ref().is_some_and(|j| j.desired.model == model) {
                            self.handle(Input::Withdrawn).await;
                        }
                    }
                    Some(FromLink::Chunk(c)) => {
                        let input = self.write_chunk(&c);
                        if let Some(input) = input {
                            self.handle(input).await;
                        }
                    }
                },
                _ = tick.tick() => {
                    self.handle(Input::Tick).await;
                    if self.machine.stage() == UpdateStage::Watching {
                        let health = self.health();
                        self.handle(Input::Health(health)).await;
                    }
                }
            }
        }
    }

    /// Steps the machine; persists; performs effects, feeding their results back in.
    async fn handle(&mut self, input: Input) {
        let mut pending = VecDeque::from([input]);
        while let Some(input) = pending.pop_front() {
            let before = self.machine.stage();
            let previous_job = self.machine.state.job.as_ref().map(|j| j.desired.clone());
            let effects = self.machine.step(input, now_ms());
            // A step with no effects (a chunk arriving mid-window) need not be persisted: on restart the
            // staging file itself says which chunks are there.
            if !effects.is_empty() {
                self.persist();
            }
            let after = self.machine.stage();
            // Events first (they are the record of the transition), then the stage's work.
            let (events, work): (Vec<Effect>, Vec<Effect>) =
                effects.into_iter().partition(|e| matches!(e, Effect::Event { .. }));
            for effect in events {
                if let Effect::Event { bundle, from, to, reason, detail } = effect {
                    // A superseded job's last event comes after the new job replaced it: name its release.
                    let current = self.machine.state.job.as_ref().map(|j| j.desired.clone());
                    let desired =
                        [current, previous_job.clone()].into_iter().flatten().find(|d| d.bundle.digest == bundle);
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
                if let Some(next) = self.perform(effect).await {
                    pending.push_back(next);
                }
            }
        }
    }

    fn persist(&self) {
        let bytes = serde_json::to_vec(&self.machine.state).expect("state encodes");
        if let Err(e) = write_atomic(&self.state_path, &bytes) {
            tracing::error!(error = %e, "cannot persist the update state");
        }
    }

    fn is_active(&self, d: &DesiredState) -> bool {
        let Ok(slots) = self.store.slots() else { return false };
        let Some(digest) = slots.active_digest(d.model.as_str()) else { return false };
        self.store
            .read_manifest(&digest, d.model.as_str())
            .map(|m| m.name == d.model && m.sequence == d.sequence)
            .unwrap_or(false)
    }

    fn staging_path(&self) -> Option<PathBuf> {
        Some(self.staging_file(self.machine.state.job.as_ref()?.bundle()))
    }

    fn staging_file(&self, bundle: Digest) -> PathBuf {
        self.staging_dir.join(format!("{}.obundle.part", bundle.to_hex()))
    }

    /// Which chunks of the staging file match their digests (after a restart).
    fn check_staging(&self) -> Vec<bool> {
        let (Some(job), Some(path)) = (self.machine.state.job.as_ref(), self.staging_path()) else { return vec![] };
        let Ok(mut f) = std::fs::File::open(path) else { return vec![] };
        let b = &job.desired.bundle;
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

    /// Checks a chunk against the digest list and writes it; `None` for chunks of no current job.
    fn write_chunk(&self, c: &Chunk) -> Option<Input> {
        let job =
            self.machine.state.job.as_ref().filter(|j| j.stage == UpdateStage::Fetching && j.bundle() == c.bundle)?;
        let b = &job.desired.bundle;
        let i = c.index as usize;
        let valid = i < b.chunks.len()
            && c.data.len() == chunk_len(b.size, b.chunk_size, i)
            && Digest::of(&c.data) == b.chunks[i]
            && self.staging_path().is_some_and(|path| {
                let write = || -> std::io::Result<()> {
                    let mut f = std::fs::OpenOptions::new().write(true).open(&path)?;
                    f.seek(SeekFrom::Start(i as u64 * u64::from(b.chunk_size)))?;
                    f.write_all(&c.data)?;
                    f.sync_data()
                };
                write().is_ok()
            });
        if !valid {
            tracing::warn!(index = c.index, "chunk failed its digest check; asking again");
        }
        Some(Input::Chunk { bundle: c.bundle, index: c.index, valid })
    }

    /// The model the current job updates.
    fn job_model(&self) -> String {
        self.machine.state.job.as_ref().map(|j| j.desired.model.as_str().to_owned()).unwrap_or_default()
    }

    fn health(&mut self) -> Health {
        let name = self.job_model();
        let w = self.rt.model(&name).map(|s| s.metrics.watch_window()).unwrap_or_default();
        let mut selftest_ok = true;
        // Re-run the self-test on the serving model at the start of the watch and every minute.
        let now = now_ms();
        if now >= self.last_selftest_ms + 60_000 {
            self.last_selftest_ms = now;
            if let Some(model) = self.rt.active(&name) {
                selftest_ok = install::self_test(&model).is_ok();
            }
        }
        Health { requests: w.requests, errors: w.errors, p95_us: w.latency.quantile_us(0.95), selftest_ok }
    }

    async fn perform(&mut self, effect: Effect) -> Option<Input> {
        match effect {
            Effect::Event { .. } => None,
            Effect::PrepareStaging { bundle, size } => {
                let path = self.staging_file(bundle);
                if let Err(e) = std::fs::File::create(&path).and_then(|f| f.set_len(size)) {
                    tracing::error!(path = %path.display(), error = %e, "cannot create the staging file");
                }
                None
            }
            Effect::RequestChunks { first, count } => {
                let job = self.machine.state.job.as_ref()?;
                let msg = Message::ChunkRequest(ChunkRequest { bundle: job.bundle(), first, count });
                if let Some(link) = &self.link {
                    // Offline: the machine's retry timer asks again.
                    let _ = link.publish(Up::Fetch, &msg, false).await;
                }
                None
            }
            Effect::Verify => Some(Input::Verified(self.verify().await)),
            Effect::SelfTest => Some(Input::SelfTested(self.self_test().await)),
            Effect::StartShadow { sample_percent } => {
                let name = self.job_model();
                self.edit_slots(|s| s.model_mut(&name).shadow_percent = Some(sample_percent));
                None
            }
            Effect::StopShadow => {
                let name = self.job_model();
                self.edit_slots(|s| s.model_mut(&name).stop_shadow());
                None
            }
            Effect::Activate => {
                let name = self.job_model();
                let slots = self.store.slots().ok()?;
                let m = slots.model(&name)?;
                let target = m.candidate_digest().or(m.active_digest())?;
                self.edit_slots(|s| s.model_mut(&name).activate(target, 0));
                let r = self.wait_active(target).await;
                self.last_selftest_ms = 0;
                self.announce().await;
                Some(Input::Activated(r))
            }
            Effect::RollBack => {
                let name = self.job_model();
                let mut back = None;
                self.edit_slots(|s| back = s.model_mut(&name).roll_back());
                if let Some(d) = back
                    && let Err(e) = self.wait_active(d).await
                {
                    tracing::error!(error = %e, "rollback target did not load");
                }
                self.announce().await;
                None
            }
            Effect::Revert => {
                let name = self.job_model();
                let mut back = None;
                self.edit_slots(|s| back = s.model_mut(&name).revert());
                match back {
                    Some(d) => {
                        let _ = self.wait_active(d).await;
                    }
                    None => tracing::warn!("revert asked, but no previous model is kept"),
                }
                self.announce().await;
                None
            }
            Effect::Commit => {
                let job = self.machine.state.job.as_ref()?;
                let (name, seq) = (job.desired.model.as_str().to_owned(), job.desired.sequence);
                self.edit_slots(|s| s.model_mut(&name).commit(seq));
                self.discard_staging();
                self.announce().await;
                None
            }
            Effect::DiscardStaging { bundle } => {
                let _ = std::fs::remove_file(self.staging_file(bundle));
                let name = self.job_model();
                self.edit_slots(|s| {
                    if let Some(m) = s.models.get_mut(&name) {
                        m.discard_candidate();
                    }
                });
                None
            }
        }
    }

    fn discard_staging(&self) {
        if let Some(p) = self.staging_path() {
            let _ = std::fs::remove_file(p);
        }
    }

    fn edit_slots(&self, change: impl FnOnce(&mut crate::store::Slots)) {
        let result = (|| -> Result<(), crate::store::StoreError> {
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

    /// Waits until the runtime serves `digest` (the slot follower loads it).
    async fn wait_active(&self, digest: Digest) -> Result<(), String> {
        let name = self.job_model();
        for _ in 0..600 {
            if self.rt.active(&name).map(|m| m.digest) == Some(digest) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!("model {} did not load within 60 s", digest.short()))
    }

    async fn verify(&self) -> Result<(), (RejectReason, String)> {
        let trust =
            self.trust.clone().ok_or((RejectReason::Malformed, "no trust policy configured on this device".into()))?;
        let path = self.staging_path().ok_or((RejectReason::Malformed, "no update in progress".into()))?;
        let expected = self.machine.state.job.as_ref().map(|j| j.bundle()).expect("job");
        let store = self.store.clone();
        let work = move || -> Result<(), (RejectReason, String)> {
            let bytes =
                std::fs::read(&path).map_err(|e| (RejectReason::Truncated, format!("{}: {e}", path.display())))?;
            if Digest::of(&bytes) != expected {
                return Err((
                    RejectReason::PayloadDigestMismatch,
                    "the fetched bundle does not match its digest".into(),
                ));
            }
            let _lock = store.lock().map_err(|e| (RejectReason::Malformed, e.to_string()))?;
            let mut slots = store.slots().map_err(|e| (RejectReason::Malformed, e.to_string()))?;
            let staged =
                install::verify_and_store(&store, &slots, &trust, &bytes, now_ms() / 1000).map_err(rejection)?;
            slots.model_mut(staged.manifest.name.as_str()).stage(staged.digest, None);
            slots.policy_floor = slots.policy_floor.max(staged.policy_version);
            store.write_slots(&slots).map_err(|e| (RejectReason::Malformed, e.to_string()))
        };
        tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| Err((RejectReason::Malformed, e.to_string())))
    }

    async fn self_test(&self) -> Result<(), (RejectReason, String)> {
        let store = self.store.clone();
        let name = self.job_model();
        let work = move || -> Result<(), (RejectReason, String)> {
            let slots = store.slots().map_err(|e| (RejectReason::Malformed, e.to_string()))?;
            let digest = slots
                .model(&name)
                .and_then(|m| m.candidate_digest())
                .ok_or((RejectReason::Malformed, "no staged candidate".into()))?;
            let model =
                install::load_slot(&store, &digest, &name, 1, false).map_err(|e| (RejectReason::ModelUnloadable, e))?;
            install::self_test(&model).map(|_| ()).map_err(|r| (r.reason, r.detail))
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
        tracing::info!(from = ?event.from, to = ?event.to, reason = ?event.reason, detail = %event.detail, "update");
        if let Err(e) = self.queue.append(&[(now_ms() / 1000, RecordBody::Update(event.clone()))]) {
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
    let state: UpdateState = std::fs::read(store.dir().join("update.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    state.job.iter().filter(|j| j.desired.mode != Mode::Revert).map(|j| j.desired.model.as_str().to_owned()).collect()
}

/// Each model's update as the driver last persisted it, for `outpost-agent status`.
pub fn update_summaries(store: &Store) -> std::collections::BTreeMap<String, serde_json::Value> {
    let state: UpdateState = std::fs::read(store.dir().join("update.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    state
        .job
        .iter()
        .map(|j| {
            let outcome = j.outcome.as_ref().map(|(r, d)| serde_json::json!([r.code(), d]));
            let v = serde_json::json!({
                "version": j.desired.version.to_string(),
                "stage": format!("{:?}", j.stage),
                "outcome": outcome,
                "rollout": j.desired.rollout,
            });
            (j.desired.model.as_str().to_owned(), v)
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

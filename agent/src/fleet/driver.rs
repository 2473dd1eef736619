//! The agent's side of the update shell: the [`Platform`] over the real world (MQTT through the link, the
//! staging files, the store and its slot table, tract on blocking threads, the runtime's slot follower,
//! the redb telemetry queue) and the loop that feeds the shell (`shell.rs`) its inputs: link messages,
//! answers of slow work, models the follower loaded, and a one-second tick. The clock is injected.

use super::platform::{Clock as ClockSeam, Directors, Disk, Fabric, Serving, Sink, Watched, Work};
use super::shell::{Done, DriverState, Shell};
use crate::config::ModelsConfig;
use crate::install::{self, InstallError};
use crate::link::Link;
use crate::runtime::Runtime;
use crate::slots::Slots;
use crate::store::{Store, StoreError, write_atomic};
use crate::telemetry::queue::TelemetryQueue;
use crate::trust::TrustStore;
use crate::update::machine::Release;
use outpost_protocol::director::SignedDesired;
use outpost_protocol::keys::PublicKey;
use outpost_protocol::messages::{BundleRef, Chunk, DesiredState, Hello, Message};
use outpost_protocol::telemetry::{RecordBody, UpdateEvent, UpdateStage};
use outpost_protocol::topics::Up;
use outpost_protocol::{DeviceId, Digest, ModelName, RejectReason};
use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};

pub use super::shell::chunk_len;

/// What reaches the driver from the link.
#[derive(Debug)]
pub enum FromLink {
    Desired(DesiredState),
    Directed(SignedDesired),
    Withdrawn(ModelName),
    Chunk(Chunk),
}

/// The slot follower's word that it loaded (or failed to load) a model as the active one.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub model: String,
    pub digest: Digest,
    pub result: Result<(), String>,
}

/// Unix time in milliseconds: the driver's one clock, injected so tests and the simulator drive time.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The wall clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
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
    shell: Shell,
    platform: AgentPlatform,
    done_rx: mpsc::UnboundedReceiver<(String, Done)>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let stages: BTreeMap<&str, UpdateStage> = self.shell.machines().map(|(n, m)| (n, m.stage())).collect();
        f.debug_struct("Driver").field("stages", &stages).finish_non_exhaustive()
    }
}

/// The shell's platform on a device.
struct AgentPlatform {
    /// The device's id: a director statement must name it. `None` (no link): nothing is directed.
    device: Option<DeviceId>,
    state_path: PathBuf,
    staging_dir: PathBuf,
    store: Store,
    trust: Option<TrustStore>,
    models: ModelsConfig,
    rt: Arc<Runtime>,
    /// Messages for the link, published in order by a task of their own (the shell does not wait).
    outbox: Option<mpsc::UnboundedSender<(Up, Message)>>,
    queue: Arc<TelemetryQueue>,
    clock: Clock,
    hello: Option<Arc<dyn Fn() -> Hello + Send + Sync>>,
    done: mpsc::UnboundedSender<(String, Done)>,
    /// Models a verification stored that no slot names yet: spared by the garbage collection until the
    /// machine staged or refused them (another model's slot change must not collect them meanwhile).
    pinned: Arc<Mutex<HashSet<Digest>>>,
    /// Woken after every slot change, so the follower loads without waiting for its poll.
    slots_changed: Arc<Notify>,
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
        let staging_dir = store.dir().join("staging");
        let _ = std::fs::create_dir_all(&staging_dir);
        remove_shared_staging_files(&staging_dir);
        let shell = Shell::new(DriverState::load(&store), models.accept.clone());
        let (done, done_rx) = mpsc::unbounded_channel();
        let platform = AgentPlatform {
            device: None,
            state_path: store.dir().join("update.json"),
            staging_dir,
            store,
            trust,
            models,
            rt,
            outbox: link.map(spawn_outbox),
            queue,
            clock: Arc::new(now_ms),
            hello: None,
            done,
            pinned: Arc::default(),
            slots_changed: Arc::default(),
        };
        Driver { shell, platform, done_rx }
    }

    /// The device id director statements must name.
    pub fn with_device(mut self, device: DeviceId) -> Self {
        self.platform.device = Some(device);
        self
    }

    pub fn with_hello(mut self, hello: Arc<dyn Fn() -> Hello + Send + Sync>) -> Self {
        self.platform.hello = Some(hello);
        self
    }

    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.platform.clock = clock;
        self
    }

    /// The slot follower waits on this besides its poll.
    pub fn with_slots_changed(mut self, notify: Arc<Notify>) -> Self {
        self.platform.slots_changed = notify;
        self
    }

    /// The update stage of `model`.
    pub fn stage(&self, model: &str) -> UpdateStage {
        self.shell.stage(model)
    }

    /// Runs until the link's channel closes. `loaded`: what the slot follower loaded.
    pub async fn run(mut self, mut from_link: mpsc::Receiver<FromLink>, mut loaded: mpsc::UnboundedReceiver<Loaded>) {
        let (shell, p) = (&mut self.shell, &mut self.platform);
        shell.restarted(p);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                msg = from_link.recv() => match msg {
                    None => return,
                    Some(FromLink::Desired(d)) => shell.desired(p, d),
                    Some(FromLink::Directed(s)) => shell.directed(p, &s),
                    Some(FromLink::Withdrawn(model)) => shell.withdrawn(p, &model),
                    Some(FromLink::Chunk(c)) => shell.chunk(p, c.bundle, c.index, &c.data),
                },
                Some((model, done)) = self.done_rx.recv() => {
                    let stored = match &done { Done::Verified { result: Ok(r), .. } => Some(r.model), _ => None };
                    shell.complete(p, &model, done);
                    // Staged (named by a slot) or refused: the collection may judge it now.
                    if let Some(d) = stored {
                        p.pinned.lock().expect("pins").remove(&d);
                    }
                }
                Some(l) = loaded.recv() => shell.complete(p, &l.model, Done::Activated { digest: l.digest, result: l.result }),
                _ = tick.tick() => shell.tick(p),
            }
        }
    }
}

/// Publishes the shell's messages in order; offline ones are dropped (their senders retry).
fn spawn_outbox(link: Link) -> mpsc::UnboundedSender<(Up, Message)> {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Up, Message)>();
    tokio::spawn(async move {
        while let Some((kind, msg)) = rx.recv().await {
            let _ = link.publish(kind, &msg, false).await;
        }
    });
    tx
}

/// Agents before per-model staging named a staging file by its bundle alone (`HEX.obundle.part`). A fetch
/// such a file belonged to starts over in the model's own file on restart; the old one would stay for ever.
fn remove_shared_staging_files(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.strip_suffix(".obundle.part").is_some_and(|hex| hex.len() == 64 && !hex.contains('-')) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

impl AgentPlatform {
    /// One file per model and bundle. Model names hold no `/` and no `..` (`ModelName`), and are at most
    /// 64 bytes: the name stays a plain file name inside the staging directory.
    fn staging_file(&self, model: &str, bundle: &Digest) -> PathBuf {
        self.staging_dir.join(format!("{model}-{}.obundle.part", bundle.to_hex()))
    }

    fn answer(&self, model: &str, done: Done) {
        let _ = self.done.send((model.to_owned(), done));
    }
}

impl ClockSeam for AgentPlatform {
    fn now_ms(&self) -> u64 {
        (self.clock)()
    }
}

impl Fabric for AgentPlatform {
    fn publish(&mut self, kind: Up, msg: Message) {
        if let Some(outbox) = &self.outbox {
            let _ = outbox.send((kind, msg));
        }
    }

    fn announce(&mut self) {
        if let Some(hello) = &self.hello {
            let msg = Message::Hello(hello());
            self.publish(Up::Hello, msg);
        }
    }
}

impl Disk for AgentPlatform {
    fn save_state(&mut self, state: DriverState) -> Result<(), String> {
        write_atomic(&self.state_path, &serde_json::to_vec(&state).expect("state encodes")).map_err(|e| e.to_string())
    }

    fn edit_slots(&mut self, change: &mut dyn FnMut(&mut Slots)) -> Result<(), String> {
        let result = (|| -> Result<(), StoreError> {
            let _lock = self.store.lock()?;
            let mut slots = self.store.slots()?;
            change(&mut slots);
            self.store.write_slots(&slots)?;
            let pinned: Vec<Digest> = self.pinned.lock().expect("pins").iter().copied().collect();
            self.store.gc_keeping(&slots, &pinned)
        })();
        self.slots_changed.notify_one();
        result.map_err(|e| e.to_string())
    }

    fn active_release(&self, model: &str) -> Option<(ModelName, u64)> {
        let digest = self.store.slots().ok()?.active_digest(model)?;
        let m = self.store.read_manifest(&digest, model).ok()?;
        Some((m.name, m.sequence))
    }

    fn prepare_staging(&mut self, model: &str, bundle: &BundleRef) -> Result<(), String> {
        let path = self.staging_file(model, &bundle.digest);
        std::fs::File::create(&path)
            .and_then(|f| f.set_len(bundle.size))
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    fn write_chunk(&mut self, model: &str, bundle: &BundleRef, index: u32, data: &[u8]) -> Result<(), String> {
        let path = self.staging_file(model, &bundle.digest);
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new().write(true).open(&path)?;
            f.seek(SeekFrom::Start(u64::from(index) * u64::from(bundle.chunk_size)))?;
            f.write_all(data)?;
            f.sync_data()
        };
        write().map_err(|e| format!("{}: {e}", path.display()))
    }

    fn check_staging(&mut self, model: &str, b: &BundleRef) -> Vec<bool> {
        let Ok(mut f) = std::fs::File::open(self.staging_file(model, &b.digest)) else { return vec![] };
        // `b` passed `BundleRef::check`: the chunk size is bounded by `Limits::max_chunk`.
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

    fn discard_staging(&mut self, model: &str, bundle: &Digest) {
        let _ = std::fs::remove_file(self.staging_file(model, bundle));
    }
}

impl Directors for AgentPlatform {
    fn device(&self) -> Option<&DeviceId> {
        self.device.as_ref()
    }

    /// The policy held now: a policy taken over the air that names a new director key applies at once.
    fn director_keys(&self) -> Vec<PublicKey> {
        let now = self.now_ms() / 1000;
        self.trust.as_ref().and_then(TrustStore::snapshot).map(|t| t.director_keys(now)).unwrap_or_default()
    }
}

impl Work for AgentPlatform {
    /// Verifies the staging file and stores its model on a blocking thread; the slots are untouched (the
    /// machine stages it once the verified release matches what was asked for).
    fn verify(&mut self, model: &str, bundle: &BundleRef) {
        let (store, models, now, pinned) =
            (self.store.clone(), self.models.clone(), self.now_ms() / 1000, self.pinned.clone());
        let (path, size, digest, trust) =
            (self.staging_file(model, &bundle.digest), bundle.size, bundle.digest, self.trust.clone());
        let work = move || -> Result<Release, (RejectReason, String)> {
            // The policy held now: a newer one taken over the air applies to the next verification.
            let trust = trust.as_ref().and_then(TrustStore::snapshot).ok_or((
                RejectReason::Malformed,
                "no trust policy on this device yet (configure one, or wait for the fleet's trust update)".into(),
            ))?;
            // Read no more than the checked size: the file is ours, but its length is the message's word.
            let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            if len != size {
                return Err((RejectReason::Truncated, format!("the staging file holds {len} of {size} bytes")));
            }
            let bytes =
                std::fs::read(&path).map_err(|e| (RejectReason::Truncated, format!("{}: {e}", path.display())))?;
            if Digest::of(&bytes) != digest {
                return Err((
                    RejectReason::PayloadDigestMismatch,
                    "the fetched bundle does not match its digest".into(),
                ));
            }
            let _lock = store.lock().map_err(|e| (RejectReason::Malformed, e.to_string()))?;
            let mut slots = store.slots().map_err(|e| (RejectReason::Malformed, e.to_string()))?;
            let staged = install::verify_and_store(&store, &slots, &trust, &bytes, now, &models).map_err(rejection)?;
            pinned.lock().expect("pins").insert(staged.digest);
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
        let (done, model) = (self.done.clone(), model.to_owned());
        tokio::task::spawn_blocking(move || {
            let result = work();
            let _ = done.send((model, Done::Verified { bundle: digest, result }));
        });
    }

    fn self_test(&mut self, model: &str, bundle: Digest, digest: Digest) {
        let (store, name, done) = (self.store.clone(), model.to_owned(), self.done.clone());
        tokio::task::spawn_blocking(move || {
            let result = install::load_slot(&store, &digest, &name, 1, false)
                .map_err(|e| (RejectReason::ModelUnloadable, e))
                .and_then(|m| install::self_test_stored(&store, &m).map(|_| ()).map_err(|r| (r.reason, r.detail)));
            let _ = done.send((name, Done::SelfTested { bundle, result }));
        });
    }

    /// Fault injection for crash tests: `OUTPOST_FAILPOINT_STALL=SelfTest` holds the driver for 30 s right
    /// after it persisted its entry into that stage, before the stage's work, so a test can `kill -9` it
    /// inside the stage. Unset in production.
    fn entered(&mut self, stage: UpdateStage) {
        if std::env::var("OUTPOST_FAILPOINT_STALL").is_ok_and(|s| s == format!("{stage:?}")) {
            tracing::warn!(?stage, "failpoint: stalling before this stage's work");
            let stall = || std::thread::sleep(Duration::from_secs(30));
            // The driver is held, the rest of the agent is not: on a multi-thread runtime the worker hands
            // its queue to another thread first. A plain sleep kept the task this step woke last (tokio's
            // LIFO slot, which no other worker steals: here the outbox publishing the stage's event) asleep
            // with it, so a crash test waiting for that event could not act inside the stage.
            match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
                Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(stall),
                _ => stall(),
            }
        }
    }
}

impl Serving for AgentPlatform {
    fn await_active(&mut self, model: &str, digest: Digest) {
        // Already serving (re-activation after a restart): answer now; otherwise the follower's `Loaded`
        // answers once it loaded the slot.
        if self.rt.active(model).is_some_and(|m| m.digest == digest) {
            self.answer(model, Done::Activated { digest, result: Ok(()) });
        }
    }

    fn watch(&mut self, model: &str) -> Watched {
        let w = self.rt.model(model).map(|s| s.metrics.watch_window()).unwrap_or_default();
        Watched { requests: w.requests, errors: w.errors, p95_us: w.latency.quantile_us(0.95) }
    }

    fn self_test_active(&mut self, model: &str) -> bool {
        self.rt.active(model).is_none_or(|m| install::self_test_stored(&self.store, &m).is_ok())
    }
}

impl Sink for AgentPlatform {
    fn record(&mut self, event: &UpdateEvent) {
        tracing::info!(model = %event.model, from = ?event.from, to = ?event.to, reason = ?event.reason, detail = %event.detail, "update");
        if let Some(o) = self.rt.metrics.fleet() {
            o.update_event(event);
        }
        if let Err(e) = self.queue.append(&[(self.now_ms() / 1000, RecordBody::Update(event.clone()))]) {
            tracing::error!(error = %e, "cannot buffer an update event");
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

fn rejection(e: InstallError) -> (RejectReason, String) {
    match e {
        InstallError::Rejected(r) => (r.reason, r.detail),
        other => (RejectReason::Malformed, other.to_string()),
    }
}

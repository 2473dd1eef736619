//! `outpost-agent run`: load the slots, start the runtime, serve the local API, and follow slot changes
//! made by `install` or the updater without a restart, model by model.

use crate::api;
use crate::config::Config;
use crate::fleet::driver::Loaded;
use crate::install::load_slot;
use crate::runtime::model::LoadedModel;
use crate::runtime::{Runtime, RuntimeConfig};
use crate::store::{Slots, Store};
use outpost_protocol::Digest;
use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, mpsc};

/// How often the slot table is re-read for changes made by other processes.
pub const SLOT_POLL: Duration = Duration::from_millis(250);

pub fn runtime_config(cfg: &Config) -> RuntimeConfig {
    RuntimeConfig {
        inference: cfg.inference.clone(),
        cache: cfg.cache.clone(),
        shadow: cfg.shadow.clone(),
        drift: cfg.drift.clone(),
    }
}

/// Serves on `listener` until `shutdown` resolves. The runtime is returned by `start` for tests.
pub async fn serve(
    cfg: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let store = Store::open(&cfg.data_dir)?;
    let rt = Runtime::start(runtime_config(&cfg));
    // Load the installed model before answering: after a restart the first request finds it ready.
    let (loaded_tx, loaded) = tokio::sync::mpsc::unbounded_channel();
    let slots_changed = Arc::new(Notify::new());
    let mut follower = Follower {
        rt: rt.clone(),
        store: store.clone(),
        max_batch: cfg.inference.max_batch,
        failed: HashSet::new(),
        loaded: loaded_tx,
        slots_changed: slots_changed.clone(),
    };
    follower.sync().await;
    let watcher = tokio::spawn(follow_slots(follower));
    let fleet = crate::fleet::start(&cfg, store, rt.clone(), crate::fleet::FollowerLink { loaded, slots_changed })?;
    let app = api::router(rt.clone());
    tracing::info!(addr = %listener.local_addr()?, "serving the Open Inference Protocol");
    // Under systemd (Type=notify): READY=1 now, watchdog pings while serving, STOPPING=1 on shutdown.
    let systemd = crate::systemd::Notifier::from_env();
    let _watchdog = systemd.ready();
    let result = axum::serve(listener, app).with_graceful_shutdown(systemd.stopping_on(shutdown)).await;
    watcher.abort();
    for task in fleet {
        task.abort();
    }
    rt.shutdown();
    Ok(result?)
}

/// One model as the slot table wants it served: its active model and its shadow candidate with the share
/// of requests to sample.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Want {
    pub active: Option<Digest>,
    pub candidate: Option<(Digest, u8)>,
}

/// What the slot table asks the runtime to serve, by model name.
pub fn wanted(slots: &Slots) -> BTreeMap<String, Want> {
    slots
        .models
        .iter()
        .map(|(name, m)| {
            let candidate = m.candidate_digest().zip(m.shadow_percent);
            (name.clone(), Want { active: m.active_digest(), candidate })
        })
        .filter(|(_, w)| w.active.is_some() || w.candidate.is_some())
        .collect()
}

/// Keeps the runtime's models equal to the slot table: loads each model's active and candidate, unloads
/// models the table no longer names. A model that fails to load is logged once and skipped (not retried
/// until the table names another): the models already serving keep serving. Every load of an active model
/// is told to the update driver (`Loaded`): an activation waits for it.
struct Follower {
    rt: Arc<Runtime>,
    store: Store,
    max_batch: usize,
    failed: HashSet<Digest>,
    loaded: mpsc::UnboundedSender<Loaded>,
    slots_changed: Arc<Notify>,
}

async fn follow_slots(mut f: Follower) {
    loop {
        f.sync().await;
        // The driver nudges after its own slot changes; other processes' (`install`, `remove`) are polled.
        tokio::select! {
            _ = tokio::time::sleep(SLOT_POLL) => {}
            _ = f.slots_changed.notified() => {}
        }
    }
}

impl Follower {
    async fn sync(&mut self) {
        let Ok(slots) = self.store.slots() else { return };
        let wants = wanted(&slots);
        self.rt.set_installed(wants.iter().filter(|(_, w)| w.active.is_some()).map(|(n, _)| n.clone()).collect());
        for served in self.rt.models() {
            if !wants.contains_key(served.name()) {
                tracing::info!(model = served.name(), "unloaded: no longer installed");
                self.rt.remove(served.name());
            }
        }
        self.failed.retain(|d| wants.values().any(|w| w.active == Some(*d) || w.candidate.map(|c| c.0) == Some(*d)));
        for (name, want) in wants {
            self.sync_model(&name, &want).await;
        }
    }

    async fn sync_model(&mut self, name: &str, want: &Want) {
        let have = self.rt.active(name).map(|m| m.digest);
        if let Some(digest) = want.active.filter(|w| Some(*w) != have && !self.failed.contains(w)) {
            let result = match self.load(digest, name, self.max_batch, true).await {
                Ok(model) => {
                    tracing::info!(model = model.name(), version = %model.manifest.version,
                        load_ms = model.load_time.as_millis() as u64, max_batch = model.max_rows(), "activated");
                    self.rt.activate(model);
                    Ok(())
                }
                Err(e) => Err(e),
            };
            let _ = self.loaded.send(Loaded { model: name.to_owned(), digest, result });
        }
        let have_c = self.rt.candidate(name).map(|m| m.digest);
        let want_c = want.candidate.map(|(d, _)| d);
        if want_c == have_c || want_c.is_some_and(|d| self.failed.contains(&d)) {
            return;
        }
        match want.candidate {
            None => self.rt.set_candidate(name, None),
            Some((digest, percent)) => {
                if let Ok(model) = self.load(digest, name, 1, false).await {
                    tracing::info!(model = model.name(), version = %model.manifest.version, "shadowing candidate");
                    self.rt.set_candidate_sampled(name, Some(model), percent);
                }
            }
        }
    }

    async fn load(
        &mut self,
        digest: Digest,
        name: &str,
        max_batch: usize,
        calibrate: bool,
    ) -> Result<LoadedModel, String> {
        let (s, name) = (self.store.clone(), name.to_owned());
        match tokio::task::spawn_blocking(move || load_slot(&s, &digest, &name, max_batch, calibrate)).await {
            Ok(Ok(model)) => Ok(model),
            Ok(Err(e)) => {
                tracing::error!(digest = %digest.short(), error = %e, "cannot load a slot's model; keeping what serves");
                self.failed.insert(digest);
                Err(e)
            }
            Err(e) => {
                tracing::error!(error = %e, "model loading task failed");
                Err(format!("the loading task failed: {e}"))
            }
        }
    }
}

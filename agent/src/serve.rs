//! `outpost-agent run`: load the slots, start the runtime, serve the local API, and follow slot changes
//! made by `install` (or, later, the updater) without a restart.

use crate::api;
use crate::config::Config;
use crate::install::load_slot;
use crate::runtime::{Runtime, RuntimeConfig};
use crate::store::Store;
use outpost_protocol::Digest;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

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
    let mut failed = None;
    sync_slots(&rt, &store, cfg.inference.max_batch, &mut failed).await;
    let watcher = tokio::spawn(follow_slots(rt.clone(), store.clone(), cfg.inference.max_batch));
    let fleet = crate::fleet::start(&cfg, store, rt.clone())?;
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

/// Keeps the runtime's active and candidate models equal to the slot table. A slot whose model fails
/// to load is logged once and skipped: the current model keeps serving.
async fn follow_slots(rt: Arc<Runtime>, store: Store, max_batch: usize) {
    let mut failed: Option<Digest> = None;
    loop {
        sync_slots(&rt, &store, max_batch, &mut failed).await;
        tokio::time::sleep(SLOT_POLL).await;
    }
}

async fn sync_slots(rt: &Arc<Runtime>, store: &Store, max_batch: usize, failed: &mut Option<Digest>) {
    let Ok(slots) = store.slots() else { return };
    let have = rt.active().map(|m| m.digest);
    if let Some(digest) = slots.active_digest().filter(|w| Some(*w) != have && Some(*w) != *failed) {
        let s = store.clone();
        match tokio::task::spawn_blocking(move || load_slot(&s, &digest, max_batch, true)).await {
            Ok(Ok(model)) => {
                tracing::info!(model = model.name(), version = %model.manifest.version,
                    load_ms = model.load_time.as_millis() as u64, max_batch = model.max_rows(), "activated");
                rt.activate(model);
            }
            Ok(Err(e)) => {
                tracing::error!(digest = %digest.short(), error = %e, "cannot load the active slot; keeping the current model");
                *failed = Some(digest);
            }
            Err(e) => tracing::error!(error = %e, "model loading task failed"),
        }
    }
    let want_c = slots.candidate_digest().filter(|_| slots.shadow_percent.is_some());
    let percent = slots.shadow_percent.unwrap_or(0);
    let have_c = rt.candidate().map(|m| m.digest);
    if want_c != have_c && (want_c.is_none() || want_c != *failed) {
        match want_c {
            None => rt.set_candidate(None),
            Some(digest) => {
                let s = store.clone();
                match tokio::task::spawn_blocking(move || load_slot(&s, &digest, 1, false)).await {
                    Ok(Ok(model)) => {
                        tracing::info!(model = model.name(), version = %model.manifest.version, "shadowing candidate");
                        rt.set_candidate_sampled(Some(model), percent);
                    }
                    Ok(Err(e)) => {
                        tracing::error!(digest = %digest.short(), error = %e, "cannot load the candidate slot");
                        *failed = Some(digest);
                    }
                    Err(e) => tracing::error!(error = %e, "model loading task failed"),
                }
            }
        }
    }
}

//! The agent's fleet side: the link, the durable telemetry (windows in, batches out, acks back) and the
//! update driver. Without a broker configured, telemetry is still recorded and waits for one.

pub mod driver;
pub mod observe;
pub mod platform;
pub mod shell;
pub mod shipper;
pub mod window;

use crate::config::Config;
use crate::identity;
use crate::link::{self, Incoming};
use crate::runtime::Runtime;
use crate::store::Store;
use crate::telemetry::queue::{QueueConfig, TelemetryQueue};
use crate::trust::{self, TrustStore};
use driver::{Driver, FromLink, Loaded};
use outpost_protocol::messages::{Hello, RunningModel};
use std::sync::Arc;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;

/// A boot-unique id: a new one tells the controller the device restarted.
pub fn boot_id() -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    (nanos as u64) ^ (u64::from(std::process::id()) << 32)
}

/// How the update driver hears from the slot follower (`serve.rs`): what it loaded, and a nudge after
/// every slot change so it loads at once.
#[derive(Debug)]
pub struct FollowerLink {
    pub loaded: mpsc::UnboundedReceiver<Loaded>,
    pub slots_changed: Arc<Notify>,
}

/// Starts telemetry and, when a broker is configured, the link and the update driver. A device without a
/// certificate but with an enrollment token enrolls first (in the background: inference serves meanwhile).
pub fn start(
    cfg: &Config,
    store: Store,
    rt: Arc<Runtime>,
    follower: FollowerLink,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let queue = Arc::new(TelemetryQueue::open(
        &cfg.data_dir.join("telemetry.redb"),
        QueueConfig { max_records: cfg.telemetry.max_records, ..QueueConfig::default() },
    )?);
    let observer = observe::FleetObserver::new(queue.clone());
    rt.metrics.set_fleet(observer.clone());
    let mut tasks =
        vec![tokio::spawn(window::produce(rt.clone(), queue.clone(), cfg.telemetry.window, cfg.data_dir.clone()))];
    let Some(mut link_cfg) = cfg.link.clone() else {
        tracing::info!("no broker configured: serving locally, telemetry buffered");
        return Ok(tasks);
    };
    observer.link_configured();
    let paths = identity::Paths::new(&cfg.data_dir);
    let boot = boot_id();
    // A certificate named in the config (`link.client_cert`) is the operator's choice: it wins over the
    // identity folder and enrollment.
    let configured = link_cfg.client_cert.is_some();
    let facts = identity::enroll::Facts {
        arch: outpost_protocol::Arch::current().unwrap_or(outpost_protocol::Arch::X86_64),
        agent_version: crate::version(),
        labels: cfg.labels.clone(),
    };
    // With an enrollment endpoint, the enrolled identity renews its certificate when due.
    let renewal = (!configured).then(|| link_cfg.enroll.clone()).flatten().map(|enroll_cfg| {
        identity::renew::renew_forever(link_cfg.clone(), enroll_cfg, paths.clone(), facts.clone(), boot)
    });
    match (&link_cfg.enroll, paths.enrolled()) {
        (Some(enroll_cfg), false) if !configured => {
            let (cfg, enroll_cfg) = (cfg.clone(), enroll_cfg.clone());
            tasks.push(tokio::spawn(async move {
                identity::enroll::enroll(&link_cfg, &enroll_cfg, &paths, &facts, boot).await;
                use_identity(&mut link_cfg, &paths);
                match join(&cfg, link_cfg, store, rt, queue, boot, follower) {
                    // Dropping this task (shutdown) aborts the fleet tasks it started.
                    Ok(mut joined) => {
                        joined.extend(renewal.map(tokio::spawn));
                        AbortOnDrop(joined).wait().await
                    }
                    Err(e) => tracing::error!(error = %e, "enrolled, but the fleet link cannot start"),
                }
            }));
        }
        _ => {
            if paths.enrolled() && !configured {
                use_identity(&mut link_cfg, &paths);
                tasks.extend(renewal.map(tokio::spawn));
            }
            tasks.extend(join(cfg, link_cfg, store, rt, queue, boot, follower)?);
        }
    }
    Ok(tasks)
}

/// Connects with the enrolled identity: its certificate and key, and its CA unless `link.ca` names one.
fn use_identity(link: &mut link::LinkConfig, paths: &identity::Paths) {
    link.client_cert = Some(paths.cert());
    link.client_key = Some(paths.key());
    if link.ca.is_none() && paths.ca().is_file() {
        link.ca = Some(paths.ca());
    }
}

struct AbortOnDrop(Vec<JoinHandle<()>>);

impl AbortOnDrop {
    async fn wait(mut self) {
        for t in self.0.iter_mut() {
            let _ = t.await;
        }
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// The link, the telemetry shipper and the update driver.
fn join(
    cfg: &Config,
    link_cfg: link::LinkConfig,
    store: Store,
    rt: Arc<Runtime>,
    queue: Arc<TelemetryQueue>,
    boot: u64,
    follower: FollowerLink,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let mut tasks = Vec::new();
    let device = link_cfg.device.clone();
    let labels = cfg.labels.clone();
    let hello_store = store.clone();
    let hello: Arc<dyn Fn() -> Hello + Send + Sync> = Arc::new(move || Hello {
        device: device.clone(),
        arch: outpost_protocol::Arch::current().unwrap_or(outpost_protocol::Arch::X86_64),
        agent_version: crate::version(),
        labels: labels.clone(),
        running: running_models(&hello_store),
        boot_id: boot,
        max_packet: link::MAX_PACKET as u32,
    });
    let link_hello = hello.clone();
    // Reports are signed with the key the link authenticates with (the enrolled or configured one).
    let (device_id, report_key) = (link_cfg.device.clone(), link_cfg.client_key.clone());
    let (link, mut incoming) = link::start(link_cfg, boot, move || link_hello())?;
    let trust = match TrustStore::open(cfg) {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::warn!(error = %e, "updates over the link are refused until trust is configured");
            None
        }
    };
    let (to_driver, from_link) = mpsc::channel(64);
    let (acks, acked) = watch::channel(0u64);
    let (online_tx, online) = watch::channel(false);
    let link_rt = rt.clone();
    // The controller missed this device (a telemetry ack that wants a hello): it missed its report too.
    let report_wanted = Arc::new(tokio::sync::Notify::new());
    let wants_report = report_wanted.clone();
    if let Some(t) = &trust {
        match trust::report::Reporter::open(cfg, report_key.as_deref(), &device_id, store.clone(), t.clone()) {
            Ok(r) => {
                tasks.push(tokio::spawn(trust::report::run(r, link.clone(), online.clone(), report_wanted.clone())))
            }
            Err(e) => tracing::warn!(error = %e, "no signed version reports: no device key"),
        }
    }
    let (heard, trust_store, trust_queue) = (trust.clone(), store.clone(), queue.clone());
    tasks.push(tokio::spawn(async move {
        // The link's state for /metrics (fleet/observe.rs).
        let observe = |f: fn(&observe::FleetObserver)| link_rt.metrics.fleet().map(f);
        while let Some(msg) = incoming.recv().await {
            match msg {
                Incoming::Connected => {
                    observe(observe::FleetObserver::connected);
                    let _ = online_tx.send(true);
                }
                Incoming::Disconnected => {
                    observe(observe::FleetObserver::disconnected);
                    let _ = online_tx.send(false);
                }
                Incoming::TelemetryAck { up_to: n, hello_wanted } => {
                    acks.send_modify(|a| *a = (*a).max(n));
                    if hello_wanted {
                        wants_report.notify_one();
                    }
                }
                Incoming::Desired(d) => {
                    let _ = to_driver.send(FromLink::Desired(d)).await;
                }
                Incoming::Directed(s) => {
                    let _ = to_driver.send(FromLink::Directed(s)).await;
                }
                Incoming::Withdrawn(model) => {
                    let _ = to_driver.send(FromLink::Withdrawn(model)).await;
                }
                Incoming::Chunk(c) => {
                    let _ = to_driver.send(FromLink::Chunk(c)).await;
                }
                // Taken (or refused) before the next message is handled: a desired state heard after it
                // is verified with what it brought.
                Incoming::Trust(u) => {
                    if let Some(t) = &heard {
                        trust::hear(t, &trust_store, &trust_queue, &u);
                    }
                }
            }
        }
    }));
    tasks.push(tokio::spawn(shipper::ship(link.clone(), queue.clone(), online, acked, cfg.telemetry.max_batch_bytes)));
    tasks.push(tokio::spawn(announce_slot_changes(link.clone(), hello.clone(), store.clone())));
    let driver = Driver::new(store, trust, cfg.models.clone(), rt, Some(link), queue)
        .with_device(device_id)
        .with_hello(hello)
        .with_slots_changed(follower.slots_changed);
    tasks.push(tokio::spawn(driver.run(from_link, follower.loaded)));
    Ok(tasks)
}

/// A local `outpost-agent install` (another process) changes the slot table behind the driver's back:
/// announce what runs now, so the fleet does not see the old model until the agent restarts. The driver
/// announces its own changes at once; a hello that repeats one is harmless.
async fn announce_slot_changes(link: link::Link, hello: Arc<dyn Fn() -> Hello + Send + Sync>, store: Store) {
    let mut announced = running_models(&store);
    loop {
        tokio::time::sleep(crate::serve::SLOT_POLL * 4).await;
        let now = running_models(&store);
        if now != announced {
            let msg = outpost_protocol::messages::Message::Hello(hello());
            // Offline, the link says hello when it connects again.
            let _ = link.publish(outpost_protocol::topics::Up::Hello, &msg, false).await;
            announced = now;
        }
    }
}

/// Every model the device serves, in name order, for the hello.
fn running_models(store: &Store) -> Vec<RunningModel> {
    let Ok(slots) = store.slots() else { return Vec::new() };
    slots
        .installed()
        .filter_map(|(name, m)| {
            let digest = m.active_digest()?;
            let m = store.read_manifest(&digest, name).ok()?;
            Some(RunningModel { name: m.name, version: m.version, digest, sequence: m.sequence })
        })
        .collect()
}

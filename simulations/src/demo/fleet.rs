//! The demo's fleet on loopback, all in this process: the controller daemon (`outpost serve` with its
//! embedded broker) and N real agents (tract runtime, local inference API, telemetry store, update
//! machine, MQTT link), each with its own data directory, device id and labels.

use super::setup::Trust;
use crate::inprocess::{AgentSpec, spawn_agent, stopped, wait_listening};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use tokio::sync::watch;

/// Architectures and regions the demo's devices carry as labels, round robin.
const ARCHS: [&str; 3] = ["aarch64", "x86_64", "armv7"];
const REGIONS: [&str; 3] = ["eu", "us", "ap"];

#[derive(Debug, Clone)]
pub struct Device {
    pub id: String,
    /// The device's local inference API.
    pub api: SocketAddr,
}

#[derive(Debug)]
pub struct Fleet {
    pub api: SocketAddr,
    pub mqtt: SocketAddr,
    pub controller_data: PathBuf,
    pub devices: Vec<Device>,
    stop: watch::Sender<bool>,
}

impl Fleet {
    /// Asks the controller and the agents to stop (each finishes in-flight requests).
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

/// `preferred` when free (the documented default, so the CLI's defaults work), else any free port.
fn loopback_listener(preferred: u16) -> anyhow::Result<TcpListener> {
    Ok(TcpListener::bind(("127.0.0.1", preferred)).or_else(|_| TcpListener::bind("127.0.0.1:0"))?)
}

/// Starts the controller and `n` agents on `rt`; returns once all of them listen.
pub fn start(rt: &tokio::runtime::Runtime, out: &Path, trust: &Trust, n: usize) -> anyhow::Result<Fleet> {
    let (stop, rx) = watch::channel(false);
    let api = loopback_listener(8480)?;
    let mqtt = {
        // rumqttd binds the address itself: find a free one, then hand it over.
        let l = loopback_listener(1883)?;
        l.local_addr()?
    };
    let controller_data = out.join("controller");
    let cfg = outpost_controller::daemon::config::load(
        None,
        &outpost_controller::daemon::config::Overrides {
            data_dir: Some(controller_data.clone()),
            api: Some(api.local_addr()?.to_string()),
            mqtt_listen: Some(mqtt.to_string()),
            trust: Some(trust.policy.clone()),
            root_pubs: vec![trust.root_pub.clone()],
            director_key: Some(trust.director_key.clone()),
            broker: None,
        },
    )
    .map_err(|e| anyhow::anyhow!("controller config: {e}"))?;
    let api_addr = api.local_addr()?;
    api.set_nonblocking(true)?;
    let listener = {
        let _g = rt.enter();
        tokio::net::TcpListener::from_std(api)?
    };
    let shutdown = stopped(rx.clone());
    rt.spawn(async move {
        if let Err(e) = outpost_controller::daemon::serve::serve(cfg, listener, shutdown).await {
            tracing::error!(error = %e, "the controller stopped");
        }
    });
    wait_listening(mqtt)?;

    let mut devices = Vec::new();
    for i in 0..n {
        let (arch, region) = (ARCHS[i % ARCHS.len()], REGIONS[(i / ARCHS.len()) % REGIONS.len()]);
        let id = format!("edge-{region}-{:02}", i + 1);
        let data_dir = out.join("devices").join(&id);
        let toml = format!(
            "[link]\nlabels = {{ arch = \"{arch}\", region = \"{region}\" }}\n\
                 [telemetry]\nwindow = \"2s\"\n"
        );
        let spec = AgentSpec { id: &id, toml: &toml, data_dir, broker: &format!("mqtt://{mqtt}") };
        let addr = spawn_agent(rt, spec, trust, &rx)?;
        devices.push(Device { id, api: addr });
    }
    wait_listening(api_addr)?;
    Ok(Fleet { api: api_addr, mqtt, controller_data, devices, stop })
}

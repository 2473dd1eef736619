//! The load run's fleet: the controller daemon (a separate `outpost serve` process, or in this process)
//! against mosquitto, and N real agents in this process, each with its own data directory, device id,
//! MQTT connection, durable telemetry queue, update driver and tract runtime.

use crate::demo::setup::Trust;
use crate::inprocess::{AgentSpec, spawn_agent, stopped, wait_listening};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use tokio::sync::watch;

/// Regions the devices carry as labels, round robin (the rollouts select all of them).
const REGIONS: [&str; 3] = ["eu", "us", "ap"];

/// What each simulated device runs, as an agent config. The lightest honest agent: the whole fleet side
/// (link, update driver, durable telemetry queue, verify, self-test, slot switch, runtime activation) is
/// the production code; only the serving runtime is sized for one machine hosting a thousand devices:
/// one inference worker, batches of one (calibration only times three runs), no result cache.
pub fn agent_toml(region: &str, window_secs: u64) -> String {
    format!(
        "[inference]\nworkers = 1\nmax_batch = 1\n\
         [cache]\nmax_entries = 0\n\
         [link]\nlabels = {{ region = \"{region}\", fleet = \"load\" }}\n\
         [telemetry]\nwindow = \"{window_secs}s\"\n"
    )
}

pub fn device_id(i: usize) -> String {
    format!("load-{:04}", i + 1)
}

/// The controller, wherever it runs.
#[derive(Debug)]
pub struct Controller {
    pub api: SocketAddr,
    pub data: PathBuf,
    /// The `outpost serve` process, when it runs as one: its CPU and memory are then its own.
    child: Option<Child>,
}

impl Controller {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts `outpost serve` from `bin` as a child process, or (`bin == None`) the same daemon in `rt`.
pub fn start_controller(
    rt: &tokio::runtime::Runtime,
    bin: Option<&Path>,
    dir: &Path,
    trust: &Trust,
    broker: &str,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Controller> {
    let data = dir.join("controller");
    let api = TcpListener::bind("127.0.0.1:0")?;
    let addr = api.local_addr()?;
    let child = if let Some(bin) = bin {
        drop(api);
        let log = std::fs::File::create(dir.join("controller.log"))?;
        let child = Command::new(bin)
            .arg("serve")
            .arg("--data-dir")
            .arg(&data)
            .args(["--api", &addr.to_string(), "--broker", broker])
            .arg("--trust")
            .arg(&trust.policy)
            .arg("--root-pub")
            .arg(&trust.root_pub)
            .arg("--director-key")
            .arg(&trust.director_key)
            .env("OUTPOST_LOG", std::env::var("OUTPOST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start {}: {e}", bin.display()))?;
        Some(child)
    } else {
        let cfg = outpost_controller::daemon::config::load(
            None,
            &outpost_controller::daemon::config::Overrides {
                data_dir: Some(data.clone()),
                api: Some(addr.to_string()),
                broker: Some(broker.to_owned()),
                trust: Some(trust.policy.clone()),
                root_pubs: vec![trust.root_pub.clone()],
                director_key: Some(trust.director_key.clone()),
                mqtt_listen: None,
            },
        )
        .map_err(|e| anyhow::anyhow!("controller config: {e}"))?;
        api.set_nonblocking(true)?;
        let listener = {
            let _g = rt.enter();
            tokio::net::TcpListener::from_std(api)?
        };
        rt.spawn(async move {
            if let Err(e) = outpost_controller::daemon::serve::serve(cfg, listener, stopped(stop)).await {
                tracing::error!(error = %e, "the controller stopped");
            }
        });
        None
    };
    let c = Controller { api: addr, data, child };
    wait_listening(addr)?;
    Ok(c)
}

/// Starts `n` agents on `rt` (they connect, say hello and wait for a desired state); returns their ids.
pub fn start_agents(
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    trust: &Trust,
    broker: &str,
    n: usize,
    window_secs: u64,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<Vec<(String, SocketAddr)>> {
    let mut devices = Vec::with_capacity(n);
    for i in 0..n {
        let id = device_id(i);
        let region = REGIONS[i % REGIONS.len()];
        let toml = agent_toml(region, window_secs);
        let spec = AgentSpec { id: &id, toml: &toml, data_dir: dir.join("devices").join(&id), broker };
        let addr = spawn_agent(rt, spec, trust, stop)?;
        devices.push((id, addr));
    }
    Ok(devices)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_config_is_valid_and_sized_for_many_devices_on_one_machine() {
        let raw = outpost_agent::config::parse(&agent_toml("eu", 5), "t").unwrap();
        let o = outpost_agent::config::Overrides {
            broker: Some("mqtt://127.0.0.1:1883".into()),
            device_id: Some(device_id(0)),
            ..Default::default()
        };
        let cfg = outpost_agent::config::Config::validate(raw, &o, "t").unwrap();
        assert_eq!((cfg.inference.workers, cfg.inference.max_batch, cfg.cache.max_entries), (1, 1, 0));
        assert_eq!(cfg.telemetry.window, std::time::Duration::from_secs(5));
        assert!(cfg.labels.contains(&("region".into(), "eu".into())));
        assert_eq!(device_id(999), "load-1000");
    }
}

//! Real agents and the controller inside this process, for the demo and the load run: each agent is
//! `outpost_agent::serve::serve` with its own config and listener on the shared tokio runtime, stopped
//! through one watch channel.

use crate::demo::setup::Trust;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use tokio::sync::watch;

/// Resolves once `true` is sent on the stop channel (or its sender is gone).
pub async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// What differs between the agents of a fleet.
#[derive(Debug)]
pub struct AgentSpec<'a> {
    pub id: &'a str,
    /// The agent config file's text (labels, telemetry window, inference sizing).
    pub toml: &'a str,
    pub data_dir: PathBuf,
    pub broker: &'a str,
}

/// Starts one agent on `rt` with its local API on a fresh loopback port; returns that address.
pub fn spawn_agent(
    rt: &tokio::runtime::Runtime,
    spec: AgentSpec,
    trust: &Trust,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<SocketAddr> {
    let local = TcpListener::bind("127.0.0.1:0")?;
    let addr = local.local_addr()?;
    let raw = outpost_agent::config::parse(spec.toml, spec.id)?;
    let cfg = outpost_agent::config::Config::validate(
        raw,
        &outpost_agent::config::Overrides {
            data_dir: Some(spec.data_dir),
            listen: Some(addr.to_string()),
            trust: Some(trust.policy.clone()),
            root_pubs: vec![trust.root_pub.clone()],
            broker: Some(spec.broker.to_owned()),
            device_id: Some(spec.id.to_owned()),
            telemetry_window: None,
        },
        spec.id,
    )?;
    local.set_nonblocking(true)?;
    let listener = {
        let _g = rt.enter();
        tokio::net::TcpListener::from_std(local)?
    };
    let shutdown = stopped(stop.clone());
    let name = spec.id.to_owned();
    rt.spawn(async move {
        if let Err(e) = outpost_agent::serve::serve(cfg, listener, shutdown).await {
            tracing::error!(device = %name, error = %e, "an agent stopped");
        }
    });
    Ok(addr)
}

/// Waits (up to 20 s) until something accepts connections on `addr`.
pub fn wait_listening(addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        if std::time::Instant::now() > deadline {
            anyhow::bail!("nothing listens on {addr} after 20 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Ok(())
}

//! `outpost serve [--config controller.toml]` and `outpost print-default-config`.

use super::Failure;
use crate::daemon::config::{self, Overrides};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A controller.toml (`outpost print-default-config` prints every key with its default).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where to keep the controller's data (default ./outpost-data): its store, API token and device CA.
    #[arg(long = "data-dir")]
    data_dir: Option<PathBuf>,
    /// The HTTP API address, e.g. 127.0.0.1:8480.
    #[arg(long)]
    api: Option<String>,
    /// Run the embedded broker on this loopback address.
    #[arg(long = "mqtt-listen")]
    mqtt_listen: Option<String>,
    /// Use an external broker instead: mqtt://HOST:PORT or mqtts://HOST:PORT.
    #[arg(long)]
    broker: Option<String>,
    /// Trust policy to verify pushed bundles with.
    #[arg(long)]
    trust: Option<PathBuf>,
    /// The root public key(s) devices pin: the trust policy is checked against them.
    #[arg(long = "root-pub")]
    root_pub: Vec<PathBuf>,
    /// The director key that signs desired states (default: <data-dir>/director.key, made at first start).
    #[arg(long = "director-key")]
    director_key: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<(), Failure> {
    let o = Overrides {
        data_dir: a.data_dir,
        api: a.api,
        mqtt_listen: a.mqtt_listen,
        broker: a.broker,
        trust: a.trust,
        root_pubs: a.root_pub,
        director_key: a.director_key,
    };
    // Everything is validated before a socket is bound.
    let cfg = config::load(a.config.as_deref(), &o).map_err(Failure::Error)?;
    let filter = tracing_subscriber::EnvFilter::try_from_env("OUTPOST_LOG").unwrap_or_else(|_| "info".into());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).try_init();
    let rt =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| Failure::Error(e.to_string()))?;
    // The API token exists before the API port opens: whoever sees the port can read the token.
    std::fs::create_dir_all(&cfg.data_dir)
        .and_then(|()| crate::daemon::serve::token(&cfg.data_dir).map_err(std::io::Error::other))
        .map_err(|e| Failure::Error(format!("{}: {e}", cfg.data_dir.display())))?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(cfg.api)
            .await
            .map_err(|e| Failure::Error(format!("cannot listen on {}: {e}", cfg.api)))?;
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        crate::daemon::serve::serve(cfg, listener, shutdown).await.map_err(|e| Failure::Error(format!("error: {e:#}")))
    })
}

//! The `outpost-agent` command line. Exit codes: 0 success, 1 a bundle was refused or a self-test
//! failed, 2 any other error (bad config, unreadable files); failures print one line naming what.

use crate::config::{Config, DEFAULT_CONFIG, Overrides};
use crate::install::{self, Target};
use crate::runtime::model::LoadedModel;
use crate::store::Store;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(name = "outpost-agent", version, about = "Outpost device agent: local inference and verified model updates")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args, Clone, Default)]
pub struct Common {
    /// Configuration file (TOML); every key is optional.
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long = "data-dir")]
    data_dir: Option<PathBuf>,
    /// Trust policy file.
    #[arg(long)]
    trust: Option<PathBuf>,
    /// Pinned root public key (PEM); repeatable.
    #[arg(long = "root-pub")]
    root_pub: Vec<PathBuf>,
    /// Address of the local API, e.g. 127.0.0.1:8470.
    #[arg(long)]
    listen: Option<String>,
    /// Fleet broker, mqtt://HOST:PORT or mqtts://HOST:PORT.
    #[arg(long)]
    broker: Option<String>,
    #[arg(long = "device-id")]
    device_id: Option<String>,
    /// Telemetry aggregation window, e.g. 60s.
    #[arg(long = "telemetry-window")]
    telemetry_window: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve local inference (Open Inference Protocol over HTTP).
    Run {
        #[command(flatten)]
        common: Common,
    },
    /// Verify a signed bundle with the pinned trust root, self-test it, and install it.
    Install {
        bundle: PathBuf,
        #[command(flatten)]
        common: Common,
        /// Install as the shadow candidate instead of activating it.
        #[arg(long)]
        shadow: bool,
        /// Do nothing when a model is already active: a device image's first-boot install, which must
        /// not fight the models the fleet sent since.
        #[arg(long = "if-no-model")]
        if_no_model: bool,
    },
    /// Stop serving an installed model and drop its files (its release floor is kept). Refused while the
    /// fleet's desired state names the model: take it off with a removal rollout instead.
    Remove {
        /// The model name, as `status` lists it.
        model: String,
        #[command(flatten)]
        common: Common,
    },
    /// Run the self-test vectors of every installed model (or of MODEL); exit 1 on a mismatch.
    Selftest {
        /// Test only this model.
        model: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Show every model's slots, version, floor and update state and, when the agent runs, its figures.
    Status {
        #[command(flatten)]
        common: Common,
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: Output,
    },
    /// Print the documented default configuration.
    PrintDefaultConfig,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    #[default]
    Table,
    Json,
}

/// How a command failed; `main` maps it to the exit code.
#[derive(Debug)]
pub enum Failure {
    Refused(String),
    Error(String),
}

impl Failure {
    pub fn exit_code(&self) -> i32 {
        match self {
            Failure::Refused(_) => 1,
            Failure::Error(_) => 2,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Refused(m) | Failure::Error(m) => f.write_str(m),
        }
    }
}

fn err(e: impl std::fmt::Display) -> Failure {
    Failure::Error(format!("error: {e}"))
}

fn load_config(common: &Common) -> Result<Config, Failure> {
    let overrides = Overrides {
        data_dir: common.data_dir.clone(),
        listen: common.listen.clone(),
        broker: common.broker.clone(),
        device_id: common.device_id.clone(),
        telemetry_window: common.telemetry_window.clone(),
        trust: common.trust.clone(),
        root_pubs: common.root_pub.clone(),
    };
    Config::load(common.config.as_deref(), &overrides).map_err(err)
}

pub fn run(cli: Cli) -> Result<(), Failure> {
    // Before any command reaches tract (install's self-test reads the model's interface first).
    crate::runtime::kernels::defaults();
    match cli.command {
        Command::PrintDefaultConfig => {
            print!("{DEFAULT_CONFIG}");
            Ok(())
        }
        Command::Run { common } => {
            // The config is fully validated before any socket is bound.
            let cfg = load_config(&common)?;
            init_tracing();
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().map_err(err)?;
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind(cfg.listen)
                    .await
                    .map_err(|e| err(format!("cannot listen on {}: {e}", cfg.listen)))?;
                crate::serve::serve(cfg, listener, shutdown_signal()).await.map_err(err)
            })
        }
        Command::Install { bundle, common, shadow, if_no_model } => {
            let cfg = load_config(&common)?;
            let store = Store::open(&cfg.data_dir).map_err(err)?;
            if if_no_model && let Some((name, _)) = store.slots().map_err(err)?.installed().next() {
                println!("a model is already active ({name}); nothing to install");
                return Ok(());
            }
            // The newest trust the device holds: a policy (and root) taken over the air outranks the image's.
            let trust = crate::trust::TrustStore::open(&cfg).map_err(err)?.snapshot().ok_or_else(|| {
                err("no trust policy configured: set [trust] policy or pass --trust (a device on the fleet also \
                     takes the fleet's over the air)")
            })?;
            let bytes = std::fs::read(&bundle).map_err(|e| err(format!("{}: {e}", bundle.display())))?;
            let target =
                if shadow { Target::Candidate { shadow_percent: cfg.shadow.sample_percent } } else { Target::Activate };
            match install::install_with(&store, &trust, &bytes, now(), target, &cfg.models) {
                Ok(done) => {
                    let m = &done.manifest;
                    let slot = if shadow { "candidate (shadow)" } else { "active" };
                    println!(
                        "installed {} {} (sequence {}) as {slot}: {} self-test vector(s) passed",
                        m.name, m.version, m.sequence, done.selftests
                    );
                    Ok(())
                }
                Err(install::InstallError::Rejected(r)) => Err(Failure::Refused(format!("rejected: {r}"))),
                Err(e) => Err(err(e)),
            }
        }
        Command::Remove { model, common } => {
            let cfg = load_config(&common)?;
            let store = Store::open(&cfg.data_dir).map_err(err)?;
            let fleet = crate::fleet::driver::fleet_desired_models(&store);
            let removed =
                install::remove(&store, &model, &fleet).map_err(|e| Failure::Refused(format!("refused: {e}")))?;
            let version = removed.version.map(|v| format!(" {v}")).unwrap_or_default();
            println!("removed {}{version}: no longer served; its release floor is kept", removed.name);
            Ok(())
        }
        Command::Selftest { model, common } => {
            let cfg = load_config(&common)?;
            let store = Store::open(&cfg.data_dir).map_err(err)?;
            let slots = store.slots().map_err(err)?;
            let targets: Vec<_> = slots
                .installed()
                .filter(|(name, _)| model.as_ref().is_none_or(|m| m == *name))
                .filter_map(|(name, m)| Some((name.clone(), m.active_digest()?)))
                .collect();
            if targets.is_empty() {
                return Err(err(match model {
                    Some(m) => format!("model {m:?} is not installed"),
                    None => "no installed model to test".into(),
                }));
            }
            for (name, digest) in targets {
                let (bytes, manifest) = store.read_model_as(&digest, &name).map_err(err)?;
                let what = format!("{} {}", manifest.name, manifest.version);
                let model = LoadedModel::load(&bytes, manifest, 1)
                    .map_err(|e| Failure::Refused(format!("selftest failed: {what}: {e}")))?;
                let vectors = store.read_selftest(&digest, &model.manifest).map_err(err)?;
                match crate::runtime::selftest::run(&model, &vectors) {
                    Ok(n) => println!("selftest passed: {what}, {n} vector(s)"),
                    Err(e) => return Err(Failure::Refused(format!("selftest failed: {what}: {e}"))),
                }
            }
            Ok(())
        }
        Command::Status { common, output } => crate::status::print(&load_config(&common)?, output == Output::Json),
    }
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// `OUTPOST_LOG` takes `level` or `target=level,...` directives (e.g. `debug`, `info,rumqttc=warn`), as the
/// controller's does; `filter::Targets` rather than `EnvFilter` because the latter's span and field
/// matching brings regex into the device binary. An unparsable value falls back to `info`.
fn init_tracing() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let info = || tracing_subscriber::filter::Targets::new().with_default(tracing::Level::INFO);
    let filter = std::env::var("OUTPOST_LOG").ok().and_then(|v| v.parse().ok()).unwrap_or_else(info);
    // No colours even on a terminal: the device build leaves out tracing-subscriber's `ansi` feature (size),
    // and asking for colours without it prints a warning (a panic in debug builds).
    let fmt = tracing_subscriber::fmt().with_ansi(false).with_writer(std::io::stderr).finish();
    let _ = fmt.with(filter).try_init();
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}

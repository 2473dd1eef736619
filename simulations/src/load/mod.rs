//! `outpost-sim load`: the real-network scale run. Debian's mosquitto on loopback, the real controller
//! daemon, and N real agents (each with its own data directory, device id and MQTT connection); v1
//! installed on every device, then v2 rolled out in gated waves. The report gives the time for all
//! devices to register and for each rollout to converge, broker traffic, telemetry ingest, and CPU and
//! memory of the broker, the controller and the agents. Exits 1 when the fleet did not converge.
//! `--together` rolls the two models' upgrades out at the same time instead of one after the other.

mod broker;
mod fleet;
pub mod meter;
pub mod procstat;
mod report;
mod script;

pub use report::{Inputs, RolloutRun, memory_per_device};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Devices in the fleet.
    #[arg(long, default_value_t = 1000)]
    pub devices: usize,
    /// Where the report goes (the run's keys, broker and data directories go to `OUT/work`).
    #[arg(long, default_value = "outpost-load-report")]
    pub out: PathBuf,
    /// The v2 rollout's waves.
    #[arg(long, default_value = "1%,10%,50%,100%")]
    pub waves: String,
    /// Bake time of each wave, seconds; the hold after it is as long. Every simulated device shares this
    /// machine's cores, so a wave installs at the pace of the machine, not of a device: at 1,000 devices on
    /// 2 cores the one-wave installs took 16-60 s from the wave's start, and the 80 % quorum then waits
    /// for a request and a telemetry window on each. With 20 s (40 s to the end of the hold) the first
    /// install paused on its quorum (487 of 1,000 had reported); with 40 s every rollout passed.
    #[arg(long, default_value_t = 40)]
    pub bake: u64,
    /// Inference requests each device's application sends per second (0.2: one every 5 s).
    #[arg(long, default_value_t = 0.2)]
    pub rps: f64,
    /// Each agent's telemetry window, seconds (one inference and one health record per window).
    #[arg(long, default_value_t = 10)]
    pub window: u64,
    /// Longest a rollout may take before the run calls it stuck, seconds.
    #[arg(long, default_value_t = 900)]
    pub rollout_timeout: u64,
    /// Where the controller runs: `process` (`outpost serve`, found beside this binary: its CPU and
    /// memory are then measured apart), `in-process`, or `auto` (a process when the binary is there).
    #[arg(long, default_value = "auto")]
    pub controller: ControllerMode,
    /// Tokio worker threads shared by the agents (and the controller when in process).
    #[arg(long, default_value_t = 4)]
    pub threads: usize,
    /// Keep the devices' data directories (removed at the end otherwise: a thousand model stores).
    #[arg(long)]
    pub keep_data: bool,
    /// Roll out digits 2.0.0 and vibration 1.1.0 at the same time (two rollouts, each in its own waves,
    /// to the same devices) instead of one after the other. Their spans then overlap in the report.
    #[arg(long)]
    pub together: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ControllerMode {
    Auto,
    Process,
    InProcess,
}

#[derive(Debug)]
pub struct Outcome {
    /// Every device registered, both rollouts completed, every device serves the last release.
    pub converged: bool,
    pub inputs: Inputs,
    /// `OUT/summary.md`.
    pub report: PathBuf,
}

pub fn main(args: Args) -> anyhow::Result<u8> {
    let outcome = run(&args)?;
    println!("\n{}", std::fs::read_to_string(&outcome.report)?.split("\n## Per phase").next().unwrap_or_default());
    println!("report: {}", outcome.report.display());
    Ok(if outcome.converged { 0 } else { 1 })
}

/// Runs the load; `Err` only when it could not run at all (a fleet that did not converge is an
/// `Outcome` with `converged == false`, and the report is written anyway).
pub fn run(args: &Args) -> anyhow::Result<Outcome> {
    if args.devices == 0 || args.devices > 20_000 {
        anyhow::bail!("--devices {}: between 1 and 20000", args.devices);
    }
    if args.window == 0 || args.threads == 0 {
        anyhow::bail!("--window and --threads must be at least 1");
    }
    if !(args.rps > 0.0 && args.rps <= 100.0) {
        anyhow::bail!("--rps {}: between 0 (exclusive) and 100 per device", args.rps);
    }
    let bin = controller_bin(args.controller)?;
    prepare_out(&args.out)?;
    raise_fd_limit(args.devices)?;
    let filter = tracing_subscriber::EnvFilter::try_from_env("OUTPOST_LOG").unwrap_or_else(|_| "warn".into());
    let log = std::fs::File::create(args.out.join("load.log"))?;
    // A second run in one process (tests) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(log))
        .try_init();
    script::run(args, bin.as_deref())
}

/// The `outpost` binary beside this one (cargo builds both into the same target folder).
fn controller_bin(mode: ControllerMode) -> anyhow::Result<Option<PathBuf>> {
    let beside = std::env::current_exe()?.with_file_name("outpost");
    match mode {
        ControllerMode::InProcess => Ok(None),
        ControllerMode::Auto => Ok(beside.exists().then_some(beside)),
        ControllerMode::Process if beside.exists() => Ok(Some(beside)),
        ControllerMode::Process => anyhow::bail!(
            "{} is missing: build it with `cargo build --workspace --bin outpost` (same profile)",
            beside.display()
        ),
    }
}

/// The run owns its folder: it starts from an empty one, and refuses to wipe a folder it did not make.
fn prepare_out(out: &Path) -> anyhow::Result<()> {
    const MARK: &str = ".outpost-load";
    if out.exists() {
        let empty = std::fs::read_dir(out)?.next().is_none();
        if !empty && !out.join(MARK).exists() {
            anyhow::bail!("{} exists and was not made by the load run; refusing to overwrite it", out.display());
        }
        std::fs::remove_dir_all(out)?;
    }
    std::fs::create_dir_all(out)?;
    std::fs::write(out.join(MARK), "made by outpost-sim load; deleted and remade by the next run\n")?;
    Ok(())
}

/// File descriptors the fleet needs in this process: per agent its local API listener, MQTT socket,
/// telemetry database, model store and lock, plus slack. mosquitto (a child) inherits the limit and
/// needs one per connection.
pub fn fds_needed(devices: usize) -> u64 {
    devices as u64 * 8 + 256
}

/// Raises this process's soft `RLIMIT_NOFILE` to the hard limit when the fleet needs more, with util-linux
/// `prlimit` on our own pid (the crate forbids `unsafe`, so no `setrlimit` call). Fails with the numbers
/// when even the hard limit is too low.
fn raise_fd_limit(devices: usize) -> anyhow::Result<()> {
    let need = fds_needed(devices);
    let limits = std::fs::read_to_string("/proc/self/limits")?;
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap_or_default();
    let nums: Vec<u64> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    let (soft, hard) = (nums.first().copied().unwrap_or(1024), nums.get(1).copied().unwrap_or(u64::MAX));
    if soft >= need {
        return Ok(());
    }
    if hard < need {
        anyhow::bail!(
            "{devices} devices need about {need} open files; the hard limit is {hard} (raise it: ulimit -Hn)"
        );
    }
    let pid = std::process::id().to_string();
    let status =
        std::process::Command::new("prlimit").args(["--pid", &pid, &format!("--nofile={hard}:{hard}")]).status();
    match status {
        Ok(s) if s.success() => Ok(()),
        _ => anyhow::bail!(
            "{devices} devices need about {need} open files, the soft limit is {soft}: run `ulimit -n {hard}` first"
        ),
    }
}

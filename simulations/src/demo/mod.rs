//! `outpost-sim demo`: the quick start. On loopback, with nothing set up beforehand: keys and a trust
//! policy, the controller with its embedded broker, N real agents under constant inference load, each
//! serving two models; digits v1 everywhere, the vibration anomaly detector added beside it, digits v2
//! and vibration 1.1.0 each in its own waves behind shadow and metric gates, then `digits-subtle` (fine
//! by every measure but one: it answers differently) caught by the shadow-agreement gate at the canary
//! and rolled back, vibration untouched. Live progress while it runs, a report at the end, exit 0 only if every expected outcome happened.

pub(crate) mod fleet;
pub(crate) mod load;
pub(crate) mod progress;
mod report;
mod script;
pub(crate) mod setup;

pub use report::Check;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Devices in the fleet (at least 4: a canary, a 25 % wave and the rest).
    #[arg(long, default_value_t = 20)]
    pub devices: usize,
    /// Leave the controller, the agents and the load running at the end, and print how to use the CLI
    /// against them (Ctrl-C stops everything).
    #[arg(long)]
    pub keep_running: bool,
    /// Where keys, bundles, data directories, the log and the report go.
    #[arg(long, default_value = "outpost-demo")]
    pub out: PathBuf,
    /// Inference requests each device gets per second from the load generator.
    #[arg(long, default_value_t = 15)]
    pub rps: u32,
}

/// What a run found.
#[derive(Debug)]
pub struct Outcome {
    pub passed: bool,
    pub checks: Vec<Check>,
    /// The report's folder (`OUT/report`).
    pub report: PathBuf,
}

pub fn main(args: Args) -> anyhow::Result<u8> {
    let outcome = run(&args)?;
    println!();
    for c in &outcome.checks {
        println!("{} {}: {}", if c.ok { "ok  " } else { "FAIL" }, c.what, c.observed);
    }
    println!("\nreport: {}", outcome.report.join("summary.md").display());
    Ok(if outcome.passed { 0 } else { 1 })
}

/// Runs the whole demo; `Err` only when it could not run at all (an expected outcome that did not
/// happen is a failed [`Check`], with the report written anyway).
pub fn run(args: &Args) -> anyhow::Result<Outcome> {
    if !(4..=500).contains(&args.devices) {
        anyhow::bail!("--devices {}: the demo needs 4 to 500 devices", args.devices);
    }
    if args.rps == 0 || args.rps > 1000 {
        anyhow::bail!("--rps {}: between 1 and 1000 requests per device per second", args.rps);
    }
    prepare_out(&args.out)?;
    log_to(&args.out.join("demo.log"))?;
    script::run(args)
}

/// The demo owns its folder: it starts from an empty one, and refuses to wipe a folder it did not make.
fn prepare_out(out: &Path) -> anyhow::Result<()> {
    const MARK: &str = ".outpost-demo";
    if out.exists() {
        let empty = std::fs::read_dir(out)?.next().is_none();
        if !empty && !out.join(MARK).exists() {
            anyhow::bail!(
                "{} exists and was not made by the demo; refusing to overwrite it (use --out)",
                out.display()
            );
        }
        std::fs::remove_dir_all(out)?;
    }
    std::fs::create_dir_all(out)?;
    std::fs::write(out.join(MARK), "made by outpost-sim demo; deleted and remade by the next run\n")?;
    Ok(())
}

/// Controller and agent logs go to a file (OUTPOST_LOG sets the filter): the terminal shows progress.
fn log_to(path: &Path) -> anyhow::Result<()> {
    let file = std::fs::File::create(path)?;
    let filter = tracing_subscriber::EnvFilter::try_from_env("OUTPOST_LOG").unwrap_or_else(|_| "info".into());
    // A second run in one process (tests) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .try_init();
    Ok(())
}

//! `outpost-sim run SCENARIO.toml`: a deterministic fleet simulation in virtual time. The agent's own
//! update shell on every device (`outpost_agent::fleet::shell`: its machines, slot transitions and effect
//! handling, run over simulated seams) and the real rollout planner, joined by a simulated network that delays,
//! drops, duplicates and reorders, with offline devices, partitions, power loss mid-update, clock skew,
//! bad models and a controller restart. Fleet invariants are checked after every step; a violation prints
//! the seed and step, and `--seed` replays it exactly.
//!
//! - `scenario`: the TOML file format and its validation.
//! - `world`: the event loop and the closed event enum; `queue`: the (time, seq) event queue; `rng`: the
//!   seeded generator.
//! - `fabric`: the network and broker; `device`: a device (link, messages, ticks), the agent's shell over
//!   the simulated platform (`device_platform.rs`) and its local traffic, windows and power (`device_local.rs`);
//!   `controller`: registry, planner, chunk serving, crash and reload; `catalog`: the releases;
//!   `telemetry`: the device's durable telemetry queue.
//! - `invariants`: the fleet invariants; `summary`: the markdown and SVG report.

pub mod catalog;
pub mod controller;
pub mod device;
pub mod fabric;
pub mod invariants;
pub mod queue;
pub mod rng;
pub mod scenario;
pub mod summary;
pub mod telemetry;
pub mod world;

pub use invariants::Violation;
pub use scenario::{Expect, Scenario, ScenarioError};
pub use summary::Report;
pub use world::Outcome;

use std::path::PathBuf;

/// Command-line arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The scenario file (see simulations/scenarios/).
    pub scenario: PathBuf,
    /// Fleet size (default: the scenario's).
    #[arg(long)]
    pub devices: Option<u32>,
    /// Seed of every random choice (default: the scenario's). A run with the same seed replays exactly.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Where to write the report.
    #[arg(long, default_value = "outpost-sim-report")]
    pub out: PathBuf,
}

/// Overrides of the scenario's fleet size and seed.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    pub devices: Option<u32>,
    pub seed: Option<u64>,
}

/// Runs a scenario to its end. Pure apart from the clock-free simulation itself: no I/O.
pub fn run(scenario: &Scenario, opts: RunOptions) -> Result<Outcome, String> {
    // Refuse a bad rollout spec before anything runs, naming the key.
    let models = scenario.models();
    let catalog = catalog::Catalog::new(&models);
    for (m, cfg) in models.iter().enumerate() {
        controller::spec(cfg, m as u8, &catalog)?;
    }
    let devices = opts.devices.unwrap_or(scenario.devices);
    if devices == 0 {
        return Err("devices: must be > 0".into());
    }
    let seed = opts.seed.unwrap_or(scenario.seed);
    Ok(world::World::new(scenario.clone(), devices, seed).run())
}

/// Runs the command; exit code 0 when every invariant held and the expected outcome happened, 1 otherwise.
pub fn main(args: Args) -> anyhow::Result<u8> {
    let scenario = Scenario::load(&args.scenario)?;
    let opts = RunOptions { devices: args.devices, seed: args.seed };
    let started = std::time::Instant::now();
    eprintln!(
        "outpost-sim: {} with {} devices, seed {}",
        scenario.name,
        opts.devices.unwrap_or(scenario.devices),
        opts.seed.unwrap_or(scenario.seed)
    );
    let outcome = run(&scenario, opts).map_err(|e| anyhow::anyhow!("{}: {e}", args.scenario.display()))?;
    let wall = started.elapsed();
    let report = summary::render(&outcome);
    let timing = summary::timing(&outcome, wall);
    summary::write(&args.out, &report, &timing)
        .map_err(|e| anyhow::anyhow!("cannot write the report to {}: {e}", args.out.display()))?;
    if let Some(v) = &outcome.violation {
        eprintln!("outpost-sim: {v}");
    }
    let converge = match (outcome.converged_ms, outcome.rollout_started_ms) {
        (Some(c), Some(s)) => {
            format!("converged {:.0} s (virtual) after the first rollout started", (c - s) as f64 / 1000.0)
        }
        _ => "did not converge".into(),
    };
    let t = outcome.traffic.total();
    let ended: Vec<String> = outcome
        .models
        .iter()
        .map(|m| {
            let name = if outcome.models.len() > 1 { format!("{}: ", m.model) } else { String::new() };
            format!("{name}{} ({})", m.expectation_note, m.phase)
        })
        .collect();
    println!(
        "{}: {}; {converge}; {} messages, {} bytes; {} invariant violation(s); wall {:.1} s, peak memory {}; report in {}",
        if outcome.ok() { "PASS" } else { "FAIL" },
        ended.join("; "),
        t.sent,
        t.bytes,
        u32::from(outcome.violation.is_some()),
        wall.as_secs_f64(),
        summary::peak_memory().unwrap_or_else(|| "unknown".into()),
        args.out.display()
    );
    if outcome.models.len() > 1 {
        for m in &outcome.models {
            println!("  {}", summary::model_line(m));
        }
    }
    Ok(if outcome.ok() { 0 } else { 1 })
}

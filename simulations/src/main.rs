//! `outpost-sim`: the quick-start demo, the deterministic fleet simulator and the real-network load run.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(name = "outpost-sim", version, about = "Outpost quick-start demo and fleet simulator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Controller, embedded broker and real agents on loopback: v1 everywhere, v2 in waves, a subtly worse
    /// model caught by the shadow gate at the canary and rolled back. Exits 0 only when all of it happened.
    Demo(outpost_simulations::demo::Args),
    /// Deterministic simulation of a large fleet in virtual time (real update machines and planner).
    Run(outpost_simulations::sim::Args),
    /// Real agent links over loopback MQTT (mosquitto) against the real controller: a full rollout.
    Load(outpost_simulations::load::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(a) => outpost_simulations::demo::main(a),
        Command::Run(a) => outpost_simulations::sim::main(a),
        Command::Load(a) => outpost_simulations::load::main(a),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("outpost-sim: {e:#}");
            ExitCode::from(2)
        }
    }
}

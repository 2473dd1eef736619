//! `outpost-agent`: thin wrapper. Parses arguments, runs the command, maps failures to exit codes.

use clap::Parser;

fn main() {
    let cli = outpost_agent::cli::Cli::parse();
    if let Err(failure) = outpost_agent::cli::run(cli) {
        eprintln!("{failure}");
        std::process::exit(failure.exit_code());
    }
}

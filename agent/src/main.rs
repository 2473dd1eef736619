//! `outpost-agent`: thin wrapper. Parses arguments, runs the command, maps failures to exit codes.

use clap::Parser;

/// `outpost image build` reads the version of the agent it packs from this marker: the binary may be for
/// another CPU, so it cannot be run to ask. `black_box` below keeps the bytes through LTO and the linker's
/// section garbage collection.
static IMAGE_VERSION_MARK: &str = concat!("\0outpost-agent-version=", env!("CARGO_PKG_VERSION"), "\0");

fn main() {
    std::hint::black_box(IMAGE_VERSION_MARK);
    let cli = outpost_agent::cli::Cli::parse();
    if let Err(failure) = outpost_agent::cli::run(cli) {
        eprintln!("{failure}");
        std::process::exit(failure.exit_code());
    }
}

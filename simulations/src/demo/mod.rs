//! Placeholder: being written.

/// Command-line arguments.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the command; the exit code on success.
pub fn main(_args: Args) -> anyhow::Result<u8> {
    anyhow::bail!("not built yet")
}

//! `outpost keys gen --out DIR --name NAME`

use super::Failure;
use crate::release::keys;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Write NAME.key (PKCS#8 PEM, mode 0600) and NAME.pub (SPKI PEM) into DIR; refuses to overwrite.
    ///
    /// Example: outpost keys gen --out keys --name release-1
    Gen {
        /// The directory to write the key pair into (made if missing).
        #[arg(long)]
        out: PathBuf,
        /// The key pair's file name, e.g. root or release-1.
        #[arg(long)]
        name: String,
    },
}

pub fn run(args: Args) -> Result<(), Failure> {
    match args.command {
        Command::Gen { out, name } => {
            let (key, public, id) = keys::generate(&out, &name)?;
            println!("key {id}: private {} (keep it offline), public {}", key.display(), public.display());
            Ok(())
        }
    }
}

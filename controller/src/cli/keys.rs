//! `outpost keys gen --out DIR --name NAME`

use super::{Failure, Output};
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
        /// table for people, json for scripts (documented shapes: docs/cli-json.md).
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: Output,
    },
}

pub fn run(args: Args) -> Result<(), Failure> {
    match args.command {
        Command::Gen { out, name, output } => {
            let (key, public, id) = keys::generate(&out, &name)?;
            match output {
                Output::Json => super::json::print(&serde_json::json!({
                    "key_id": id.to_string(), "private": key.display().to_string(), "public": public.display().to_string(),
                })),
                Output::Table => {
                    println!("key {id}: private {} (keep it offline), public {}", key.display(), public.display())
                }
            }
            Ok(())
        }
    }
}

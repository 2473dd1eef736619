//! `outpost trust init | inspect`

use super::{Failure, Output, parse_lifetime};
use crate::files;
use crate::release::{self, keys::TrustInit};
use outpost_protocol::Limits;
use outpost_protocol::trust;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Write a trust policy naming the release keys, signed by the root key(s).
    Init {
        /// Root private key(s) that sign the policy; devices pin the matching public keys.
        #[arg(long = "root-key", required = true)]
        root_keys: Vec<PathBuf>,
        /// Release public key(s) allowed to sign manifests.
        #[arg(long = "release-pub", required = true)]
        release_pubs: Vec<PathBuf>,
        /// Distinct release signatures a manifest needs (k of n).
        #[arg(long, default_value_t = 1)]
        threshold: u8,
        /// Policy version; raise it with every rotation.
        #[arg(long = "policy-version", default_value_t = 1)]
        version: u64,
        /// Lifetime, e.g. 365d.
        #[arg(long, default_value = "365d", value_parser = parse_lifetime)]
        expires: u64,
        #[arg(long)]
        out: PathBuf,
    },
    /// Print a trust policy's contents (signatures are not checked; `bundle verify` does that).
    Inspect {
        policy: PathBuf,
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: Output,
    },
}

pub fn run(args: Args) -> Result<(), Failure> {
    match args.command {
        Command::Init { root_keys, release_pubs, threshold, version, expires, out } => {
            let now = release::now();
            let p = release::keys::trust_init(&TrustInit {
                root_keys,
                release_pubs,
                threshold,
                version,
                now,
                lifetime_secs: expires,
                out: out.clone(),
            })?;
            println!(
                "trust policy v{} → {}: {} of {} release key(s), expires at {}",
                p.version,
                out.display(),
                p.threshold,
                p.release_keys.len(),
                p.expires
            );
            Ok(())
        }
        Command::Inspect { policy, output } => {
            let bytes = files::read(&policy).map_err(|e| Failure::Error(e.to_string()))?;
            let (p, sigs) = trust::read_policy_unverified(&bytes, &Limits::default())
                .map_err(|r| Failure::Rejected(r.to_string()))?;
            let ids: Vec<String> = p.release_key_ids().iter().map(|k| k.to_string()).collect();
            let signers: Vec<String> = sigs.iter().map(|s| s.key_id.to_string()).collect();
            match output {
                Output::Json => println!(
                    "{}",
                    serde_json::json!({
                        "version": p.version, "created": p.created, "expires": p.expires,
                        "threshold": p.threshold, "release_keys": ids, "signed_by": signers,
                    })
                ),
                Output::Table => {
                    println!("version     {}", p.version);
                    println!("expires     {} (created {})", p.expires, p.created);
                    println!("threshold   {} of {}", p.threshold, ids.len());
                    println!("release     {}", ids.join(", "));
                    println!("signed by   {}", signers.join(", "));
                }
            }
            Ok(())
        }
    }
}

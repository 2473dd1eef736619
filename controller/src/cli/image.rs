//! `outpost image build`: a flashable device image (firmware-images/README.md). The work is in
//! `crate::image`; this module parses flags and prints.

use super::{Failure, Output};
use crate::image::{self, ImageError, ImageSpec};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Write rootfs.tar.zst, outpost-data.ext4 and manifest.json into --out.
    ///
    /// Example: outpost image build --target aarch64-unknown-linux-musl --agent outpost-agent
    /// --controller mqtts://broker:8883 --ca ca.pem --trust trust.policy --root-pub root.pub
    /// --enroll-token @token --out image
    Build(Build),
}

#[derive(Debug, clap::Args)]
struct Build {
    /// x86_64-unknown-linux-musl, aarch64-unknown-linux-musl or armv7-unknown-linux-gnueabihf.
    #[arg(long)]
    target: String,
    /// The outpost-agent binary for the target (cross/build.sh TARGET).
    #[arg(long)]
    agent: PathBuf,
    /// The broker devices connect to: mqtts://HOST:8883 (mqtt:// only for labs and tests).
    #[arg(long)]
    controller: String,
    /// CA certificate (PEM) devices verify the broker with; required for mqtts://.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Trust policy (signed by the root key below).
    #[arg(long)]
    trust: PathBuf,
    /// Root public key (PEM) the devices pin.
    #[arg(long = "root-pub")]
    root_pub: PathBuf,
    /// Enrollment token; `@FILE` reads it from a file, which keeps it out of the process list.
    #[arg(long = "enroll-token")]
    enroll_token: String,
    /// A signed bundle to install at first boot.
    #[arg(long)]
    bundle: Option<PathBuf>,
    /// Device labels, k=v,k2=v2.
    #[arg(long, default_value = "")]
    labels: String,
    /// Size of outpost-data.ext4, e.g. 64M or 1G.
    #[arg(long = "data-size", default_value = "64M")]
    data_size: String,
    /// The directory to write the image files into.
    #[arg(long)]
    out: PathBuf,
    /// table for people, json for scripts (documented shapes: docs/cli-json.md).
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    output: Output,
}

pub fn run(args: Args) -> Result<(), Failure> {
    let Command::Build(b) = args.command;
    let enroll_token = match b.enroll_token.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| Failure::Error(format!("enrollment token {path}: {e}")))?
            .trim()
            .to_owned(),
        None => b.enroll_token,
    };
    // SOURCE_DATE_EPOCH (reproducible builds) fixes the file times; otherwise now.
    let now = std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|s| s.parse().ok()).unwrap_or_else(crate::release::now);
    let spec = ImageSpec {
        target: b.target,
        agent: b.agent,
        controller: b.controller,
        ca: b.ca,
        trust: b.trust,
        root_pub: b.root_pub,
        enroll_token,
        bundle: b.bundle,
        labels: b.labels,
        data_size: b.data_size,
        out: b.out.clone(),
        now,
    };
    let m = image::build(&spec).map_err(|e| match e {
        ImageError::Invalid(m) => Failure::Error(format!("refused: {m}")),
        other => Failure::Error(other.to_string()),
    })?;
    match b.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&m).expect("json")),
        Output::Table => {
            println!("image for {} (outpost-agent {}) → {}", m.target, m.agent_version, m.controller);
            for f in &m.images {
                println!("  {:<20} {:>12} bytes  sha256 {}", f.path, f.size, f.sha256);
            }
            println!("  manifest.json        {} files listed", m.files.len());
        }
    }
    Ok(())
}

//! The `outpost` command line: clap derive, one module per subcommand, human output by default and
//! `-o json` for scripts. Exit codes: 0 success, 1 a bundle or policy was rejected, 2 any other error
//! (an unreachable controller included), 3 `rollout status --watch` saw the rollout end other than
//! completed (paused, aborted, rolled back); failures print one line naming what was wrong.

mod agents;
mod audit;
mod bundle;
mod certs;
pub mod client;
mod devices;
mod enroll_token;
mod image;
mod keys;
mod rollout;
mod rollout_file;
mod rollout_show;
mod serve;
mod trust;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "outpost", version, about = "Outpost: ship signed ML models to edge fleets")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Make ed25519 key pairs (root and release keys).
    Keys(keys::Args),
    /// Trust policies and root rotations: make, inspect, push to the fleet, status.
    Trust(trust::Args),
    /// Create, sign, verify and inspect signed model bundles (.obundle); push them to the controller.
    Bundle(bundle::Args),
    /// The device CA: issue device, broker and controller certificates.
    Certs(certs::Args),
    /// Run the controller daemon (embedded broker by default).
    Serve(serve::Args),
    /// Print the documented default `outpost serve` configuration.
    PrintDefaultConfig,
    /// The fleet's devices.
    Devices(devices::Args),
    /// Enrollment tokens: devices enroll with one on first boot and get their certificate.
    EnrollToken(enroll_token::Args),
    /// Staged rollouts of a pushed bundle.
    Rollout(rollout::Args),
    /// Which model versions run where, and how the fleet stands against its targets.
    Skew {
        #[arg(long)]
        model: Option<String>,
        /// Agent versions across the fleet instead (claimed and attested), the root and policy versions
        /// devices attest to, and devices too old for each rollout's release.
        #[arg(long)]
        agents: bool,
        /// With --agents: also the devices too old for this pushed bundle (NAME@VERSION or a digest prefix).
        #[arg(long, requires = "agents")]
        bundle: Option<String>,
        #[command(flatten)]
        remote: client::Remote,
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: Output,
    },
    /// Flashable device images (firmware-images/).
    Image(image::Args),
    /// The controller's audit log: every rollout decision (who, why, with its evidence), enrollment,
    /// approval, revocation and trust event, oldest first.
    ///
    /// Example: outpost audit --since 2h --limit 20
    Audit {
        /// Only the decisions of this rollout.
        #[arg(long)]
        rollout: Option<String>,
        /// Only entries from this long ago on (e.g. 30m, 2h, 7d) or from a UTC time (2026-12-06T08:00:00Z).
        #[arg(long)]
        since: Option<String>,
        /// Only the newest N entries (after the other filters).
        #[arg(long)]
        limit: Option<usize>,
        #[command(flatten)]
        remote: client::Remote,
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: Output,
    },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    #[default]
    Table,
    Json,
}

/// How a command ended, mapped to the process exit code by `main`.
#[derive(Debug)]
pub enum Failure {
    /// Verification refused the input (exit 1).
    Rejected(String),
    /// Bad arguments, unreadable files, unloadable models... (exit 2).
    Error(String),
    /// The controller did not answer (exit 2): `--watch` retries these.
    Unreachable(String),
    /// A watched rollout paused, aborted or rolled back (exit 3).
    Stopped(String),
}

impl Failure {
    pub fn exit_code(&self) -> i32 {
        match self {
            Failure::Rejected(_) => 1,
            Failure::Error(_) | Failure::Unreachable(_) => 2,
            Failure::Stopped(_) => 3,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Rejected(m) => write!(f, "rejected: {m}"),
            Failure::Error(m) | Failure::Unreachable(m) => write!(f, "error: {m}"),
            Failure::Stopped(m) => write!(f, "stopped: {m}"),
        }
    }
}

impl From<crate::release::ReleaseError> for Failure {
    fn from(e: crate::release::ReleaseError) -> Self {
        match e {
            crate::release::ReleaseError::Rejected(r) => Failure::Rejected(r.to_string()),
            other => Failure::Error(other.to_string()),
        }
    }
}

/// Parses arguments and runs the command; returns the process exit code.
pub fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Keys(a) => keys::run(a),
        Command::Trust(a) => trust::run(a),
        Command::Bundle(a) => bundle::run(a),
        Command::Certs(a) => certs::run(a),
        Command::Serve(a) => serve::run(a),
        Command::PrintDefaultConfig => {
            print!("{}", crate::daemon::config::DEFAULT_CONFIG);
            Ok(())
        }
        Command::Devices(a) => devices::run(a),
        Command::EnrollToken(a) => enroll_token::run(a),
        Command::Rollout(a) => rollout::run(a),
        Command::Image(a) => image::run(a),
        Command::Skew { agents: true, bundle, remote, output, .. } => agents::run(&remote, bundle.as_deref(), output),
        Command::Skew { model, remote, output, .. } => rollout::skew(&remote, model.as_deref(), output),
        Command::Audit { rollout, since, limit, remote, output } => {
            audit::run(&remote, &audit::Filter { rollout, since, limit }, output)
        }
    }
}

pub(crate) fn parse_lifetime(s: &str) -> Result<u64, String> {
    crate::duration::parse(s).map(|d| d.as_secs())
}

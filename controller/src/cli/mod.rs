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
pub mod json;
mod keys;
mod operators;
mod rollout;
mod rollout_file;
mod rollout_show;
mod serve;
mod table;
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
    ///
    /// Example: outpost serve --trust trust.policy --root-pub root.pub --broker mqtts://broker:8883
    Serve(serve::Args),
    /// Print the documented default `outpost serve` configuration.
    ///
    /// Example: outpost print-default-config > controller.toml
    PrintDefaultConfig,
    /// The fleet's devices.
    Devices(devices::Args),
    /// Enrollment tokens: devices enroll with one on first boot and get their certificate.
    EnrollToken(enroll_token::Args),
    /// Operators: a token per person, so the audit log names who did what.
    Operators(operators::Args),
    /// Staged rollouts of a pushed bundle.
    Rollout(rollout::Args),
    /// Which model versions run where, and how the fleet stands against its targets.
    ///
    /// Example: outpost skew --model digits
    Skew {
        /// Only this model (default: every model).
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
        /// table for people, json for scripts (documented shapes: docs/cli-json.md).
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
        /// table for people, json for scripts (documented shapes: docs/cli-json.md).
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
        Command::Operators(a) => operators::run(a),
        Command::Rollout(a) => rollout::run(a),
        Command::Image(a) => image::run(a),
        Command::Skew { agents: true, bundle, remote, output, .. } => agents::run(&remote, bundle.as_deref(), output),
        Command::Skew { model, remote, output, .. } => rollout::skew(&remote, model.as_deref(), output),
        Command::Audit { rollout, since, limit, remote, output } => {
            audit::run(&remote, &audit::Filter { rollout, since, limit }, output)
        }
    }
}

/// Unix seconds now: the CLI's one clock read for "3m ago" and `--since`.
pub(crate) fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

pub(crate) fn parse_lifetime(s: &str) -> Result<u64, String> {
    crate::duration::parse(s).map(|d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every command people run, with its path (`outpost rollout start`).
    fn leaves(cmd: &clap::Command, path: String, out: &mut Vec<(String, clap::Command)>) {
        let path = format!("{path} {}", cmd.get_name()).trim().to_owned();
        if cmd.get_subcommands().next().is_none() {
            out.push((path.clone(), cmd.clone()));
        }
        // clap's own `help` subcommands (added by `build`) print help, nothing else.
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            leaves(sub, path.clone(), out);
        }
    }

    #[test]
    fn every_command_has_help_with_an_example_and_every_flag_says_what_it_is() {
        let mut all = Vec::new();
        // Built, so global flags (`--controller`, `-o` of `certs`) show on every subcommand.
        let mut cli = super::Cli::command();
        cli.build();
        leaves(&cli, String::new(), &mut all);
        let mut missing = Vec::new();
        for (path, cmd) in &all {
            let about = cmd.get_long_about().or(cmd.get_about()).map(|s| s.to_string()).unwrap_or_default();
            if about.is_empty() {
                missing.push(format!("{path}: no description"));
            }
            if !about.contains("Example: outpost") {
                missing.push(format!("{path}: no example"));
            }
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path}: {id} has no help"));
                }
            }
        }
        assert!(missing.is_empty(), "{} gap(s):\n{}", missing.len(), missing.join("\n"));
    }

    /// What prints something other than a record: the daemon (its log) and the default configuration (TOML).
    const NO_JSON: [&str; 2] = ["outpost serve", "outpost print-default-config"];

    #[test]
    fn every_command_that_prints_a_record_takes_o_json() {
        let mut all = Vec::new();
        // Built, so global flags (`--controller`, `-o` of `certs`) show on every subcommand.
        let mut cli = super::Cli::command();
        cli.build();
        leaves(&cli, String::new(), &mut all);
        let without: Vec<&str> = all
            .iter()
            .filter(|(path, cmd)| {
                !NO_JSON.contains(&path.as_str()) && !cmd.get_arguments().any(|a| a.get_long() == Some("output"))
            })
            .map(|(path, _)| path.as_str())
            .collect();
        assert!(without.is_empty(), "no -o json: {without:?}");
    }

    #[test]
    fn gate_flags_say_their_units_and_defaults() {
        let cmd = super::Cli::command();
        let start = cmd.find_subcommand("rollout").and_then(|r| r.find_subcommand("start")).unwrap();
        for (flag, unit, default) in [
            ("max_failure_rate", "%", "Default 10%"),
            ("max_error_rate", "percentage points", "Default 2%"),
            ("max_p95_regression", "%", "Default 100%"),
            ("min_shadow_agreement", "%", "Default 90%"),
            ("max_psi", "PSI", "No default"),
            ("quorum", "%", "default 80%"),
        ] {
            let arg = start.get_arguments().find(|a| a.get_id() == flag).unwrap();
            let help = arg.get_long_help().or(arg.get_help()).map(|s| s.to_string()).unwrap_or_default();
            assert!(help.contains(unit) && help.contains(default), "--{flag}: {help}");
        }
    }
}

//! `outpost rollout start|remove|status|list|pause|resume|promote|abort|undo|history` and `outpost skew`.

use super::client::Remote;
use super::rollout_show::{self as show, typed};
use super::{Failure, Output, parse_lifetime};

/// The waves of a rollout that names none.
pub const DEFAULT_WAVES: &str = "1%,10%,50%,100%";

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    remote: Remote,
}

/// `2%` or `0.02` → 0.02. A bare number of 1 or more is refused: `--max-error-rate 1` could mean 1 % or
/// 100 %, and guessing wrong either blocks every release or lets any through.
pub fn rate(s: &str) -> Result<f64, String> {
    let v = match s.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|p| p / 100.0),
        None => {
            let v = s.trim().parse::<f64>().map_err(|_| format!("{s:?} is not a rate like 2% or 0.02"))?;
            if v >= 1.0 {
                return Err(format!(
                    "{s:?} is ambiguous: write a percentage ({s}%) or a fraction below 1 (0.02 for 2%)"
                ));
            }
            Ok(v)
        }
    }
    .map_err(|_| format!("{s:?} is not a rate like 2% or 0.02"))?;
    if !(0.0..=1.0).contains(&v) {
        return Err(format!("{s:?} is out of range (0% to 100%)"));
    }
    Ok(v)
}

// Parsed once per process: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Roll a pushed bundle out in waves, gated on device telemetry. Unless --no-default-gates, the gates
    /// not named get their defaults: install failures at most 10%, error rate at most 2 points above the
    /// old release's, p95 at most +100% (or 10 ms), and with --shadow on a classifier top-1 agreement at
    /// least 90%; a default gate fails a wave on evidence but never holds it for lack of evidence.
    /// `rollout status` lists them.
    ///
    /// Example: outpost rollout start --bundle digits@2.1.0 -l region=eu --waves 1,10%,100% --bake 10m
    /// --max-error-rate 1%
    /// Example: outpost rollout start -f rollout.toml   (the same keys in a file; see docs/operating.md)
    Start {
        /// NAME@VERSION or a digest prefix of a pushed bundle.
        #[arg(long, required_unless_present = "file")]
        bundle: Option<String>,
        /// Read the whole rollout from a TOML file (keys named like these flags) instead of flags.
        #[arg(
            short = 'f',
            long,
            conflicts_with_all = ["bundle", "selector", "waves", "bake", "max_failure_rate", "max_error_rate",
                "max_p95_regression", "min_shadow_agreement", "max_psi", "shadow", "quorum", "on_failure",
                "watch", "id", "no_default_gates"]
        )]
        file: Option<std::path::PathBuf>,
        /// Label selector, e.g. arch=aarch64,region=eu (default: every device).
        #[arg(short = 'l', long, default_value = "")]
        selector: String,
        /// Cumulative wave sizes: percentages or device counts, e.g. 1,25%,100%.
        #[arg(long, default_value = DEFAULT_WAVES)]
        waves: String,
        /// Bake time of each wave, e.g. 30s, 5m, 2h.
        #[arg(long, default_value = "5m", value_parser = parse_lifetime)]
        bake: u64,
        /// Install gate: the largest share of a wave's finished installs that may fail, e.g. 10% (or 0.1).
        /// Default 10%.
        #[arg(long = "max-failure-rate", value_parser = rate)]
        max_failure_rate: Option<f64>,
        /// Error-rate gate: how far the wave's error rate may exceed the old release's, in percentage
        /// points, e.g. 1% (or 0.01); an absolute limit when no device is left on the old release.
        /// Default 2%.
        #[arg(long = "max-error-rate", value_parser = rate)]
        max_error_rate: Option<f64>,
        /// Latency gate: how much slower the wave's median p95 may be than the old release's, e.g. 25%.
        /// Default 100% (twice as slow), and then only when more than 10 ms slower.
        #[arg(long = "max-p95-regression", value_parser = rate)]
        max_p95_regression: Option<f64>,
        /// Shadow gate (with --shadow): the least share of sampled requests on which the candidate must
        /// agree with the serving model (top-1), e.g. 95%. Default 90% for a classifier.
        #[arg(long = "min-shadow-agreement", value_parser = rate)]
        min_shadow_agreement: Option<f64>,
        /// Drift gate: the most the median device's PSI may be (a device counts its largest over inputs
        /// and output classes), e.g. 0.25. No default.
        /// A device's PSI counts only from windows with enough samples (docs/operating.md, "Drift").
        #[arg(long = "max-psi")]
        max_psi: Option<f64>,
        /// Run the candidate in shadow this long before activating it, e.g. 10m.
        #[arg(long, value_parser = parse_lifetime)]
        shadow: Option<u64>,
        /// The share of a wave's devices that must have sent fresh evidence before its gates decide;
        /// default 80%. Devices send windows only when they serve traffic.
        #[arg(long, value_parser = rate)]
        quorum: Option<f64>,
        /// What a failed gate does: pause (devices not yet on the release are held back) or rollback.
        #[arg(long = "on-failure", default_value = "pause")]
        on_failure: String,
        /// The devices' own watch window after activation, e.g. 5m.
        #[arg(long, default_value = "5m", value_parser = parse_lifetime)]
        watch: u64,
        /// Name the rollout (default: MODEL-VERSION-TIME).
        #[arg(long)]
        id: Option<String>,
        /// Only the gates named by flags: no default install, error-rate, latency and shadow gates.
        #[arg(long = "no-default-gates")]
        no_default_gates: bool,
        /// table for people, json for scripts (documented shapes: docs/cli-json.md).
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: Output,
    },
    /// Take a model off devices, in waves: each selected device that runs MODEL stops serving it and
    /// drops its slots. Rollouts of other models on the same devices are not touched. A removal cannot
    /// be reverted: to bring the model back, roll it out again.
    ///
    /// Example: outpost rollout remove kws -l region=eu --waves 1,100% --bake 2m
    Remove {
        /// The model to remove.
        model: String,
        /// Label selector, e.g. arch=aarch64,region=eu (default: every device that runs MODEL).
        #[arg(short = 'l', long, default_value = "")]
        selector: String,
        /// Cumulative wave sizes: percentages or device counts, e.g. 1,100%.
        #[arg(long, default_value = "100%")]
        waves: String,
        /// Bake time of each wave: it advances once the bake is over and enough of its devices confirmed
        /// the removal; with too few confirmations it holds one more bake, then pauses.
        #[arg(long, default_value = "30s", value_parser = parse_lifetime)]
        bake: u64,
        /// Share of a wave that must confirm the removal (their hello no longer lists MODEL).
        #[arg(long, value_parser = rate)]
        quorum: Option<f64>,
        /// Pause when more than this share of a wave's devices refuse the removal.
        #[arg(long = "max-failure-rate", value_parser = rate)]
        max_failure_rate: Option<f64>,
        /// Name the rollout (default: MODEL-remove-TIME).
        #[arg(long)]
        id: Option<String>,
        /// table for people, json for scripts (documented shapes: docs/cli-json.md).
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: Output,
    },
    /// Waves, devices per state, each gate with its threshold and last verdict, the latest events.
    ///
    /// With --watch: redraws until the rollout ends (on a terminal, in place), rides out a controller
    /// restart, and exits 0 when it completes, 3 when it pauses, aborts or rolls back, so CI can drive it.
    ///
    /// Example: outpost rollout status digits-2.1.0-1764979200 --watch
    Status {
        /// The rollout id (rollout list shows them).
        id: String,
        /// Redraw until the rollout ends; exit 0 when it completes, 3 when it pauses, aborts or rolls back.
        #[arg(long)]
        watch: bool,
        /// Seconds between redraws with --watch.
        #[arg(long, default_value_t = 2)]
        interval: u64,
        /// table for people, json for scripts (documented shapes: docs/cli-json.md).
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: Output,
    },
    /// The rollouts still going (pending, progressing, paused); --all for every one, like history.
    ///
    /// Example: outpost rollout list -o json
    List {
        /// Finished rollouts too (completed, aborted, rolled back).
        #[arg(long)]
        all: bool,
        /// table for people, json for scripts (documented shapes: docs/cli-json.md).
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: Output,
    },
    /// Stop telling devices anything new; devices already told keep their desired state.
    ///
    /// Example: outpost rollout pause digits-2.1.0-1764979200
    Pause {
        /// The rollout id (rollout list shows them).
        id: String,
        /// table for people, json for scripts (documented shapes: docs/cli-json.md).
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: Output,
    },
    /// Continue a paused rollout: the current wave's bake starts again, held-back devices are told again.
    ///
    /// Example: outpost rollout resume digits-2.1.0-1764979200
    Resume {
        /// The rollout id (rollout list shows them).
        id: String,
        /// table for people, json for scripts (documented shapes: docs/cli-json.md).
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: Output,
    },
    /// Skip the rest of the current wave's bake and gates and start the next wave.
    ///
    /// Example: outpost rollout promote digits-2.1.0-1764979200 --full
    Promote {
        /// The rollout id (rollout list shows them).
        id: String,
        /// Skip every remaining wave: every selected device is told now.
        #[arg(long)]
        full: bool,
        /// table for people, json for scripts (documented shapes: docs/cli-json.md).
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: Output,
    },
    /// Stop for good; devices on the release keep it unless --revert.
    ///
    /// Example: outpost rollout abort digits-2.1.0-1764979200 --revert
    Abort {
        /// The rollout id (rollout list shows them).
        id: String,
        /// Tell every device that installed it to switch back to its previous model.
        #[arg(long)]
        revert: bool,
        /// table for people, json for scripts (documented shapes: docs/cli-json.md).
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: Output,
    },
    /// Roll the whole rollout back, also after it completed: every device on the release switches back.
    /// Only the newest rollout of a model can (an older one's previous model may be an aborted release).
    ///
    /// Example: outpost rollout undo digits-2.1.0-1764979200
    Undo {
        /// The rollout id (rollout list shows them).
        id: String,
        /// table for people, json for scripts (documented shapes: docs/cli-json.md).
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: Output,
    },
    /// Every rollout in the order they started, newest last, with start time and how long each ran.
    ///
    /// Example: outpost rollout history --model digits
    History {
        /// Only the rollouts of this model.
        #[arg(long)]
        model: Option<String>,
        /// table for people, json for scripts (documented shapes: docs/cli-json.md).
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: Output,
    },
}

/// Prints the rollout the API answered: JSON as it came, or `prefix ID: PHASE`.
fn answer(r: &serde_json::Value, prefix: &str, output: Output) -> Result<(), Failure> {
    let t = typed(r)?;
    match output {
        Output::Json => super::json::print(&t),
        Output::Table => println!("{prefix}{}: {}", t.spec.id, show::phase(&t.state.phase)),
    }
    Ok(())
}

fn rollouts(remote: &Remote) -> Result<Vec<(serde_json::Value, crate::rollout::Rollout)>, Failure> {
    let list = remote.get("/api/v1/rollouts")?;
    let mut rows = Vec::new();
    for v in list.as_array().into_iter().flatten() {
        rows.push((v.clone(), typed(v)?));
    }
    // The API lists rollouts by id; people and scripts read them in the order things happened.
    rows.sort_by_key(|(_, r)| crate::rollout::started(r));
    Ok(rows)
}

fn print_rows(rows: Vec<(serde_json::Value, crate::rollout::Rollout)>, output: Output) {
    match output {
        Output::Json => super::json::print(&rows.into_iter().map(|(_, r)| r).collect::<Vec<_>>()),
        Output::Table => show::print_table(&rows.into_iter().map(|(_, r)| r).collect::<Vec<_>>()),
    }
}

/// `rollout status --watch`: until the rollout ends. A controller that stops answering (a restart) is
/// retried for a minute before giving up.
fn watch(remote: &Remote, id: &str, interval: u64, output: Output) -> Result<(), Failure> {
    use std::io::IsTerminal;
    let tty = std::io::stdout().is_terminal() && output == Output::Table;
    let mut unreachable_since: Option<std::time::Instant> = None;
    loop {
        let v = match remote.get(&format!("/api/v1/rollouts/{id}")) {
            Ok(v) => v,
            Err(Failure::Unreachable(e)) => {
                let since = *unreachable_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() > std::time::Duration::from_secs(60) {
                    return Err(Failure::Unreachable(e));
                }
                eprintln!("{e}; retrying");
                std::thread::sleep(std::time::Duration::from_secs(interval.max(1)));
                continue;
            }
            Err(e) => return Err(e),
        };
        unreachable_since = None;
        let r = typed(&v)?;
        match output {
            // One line per poll (JSON Lines), so a script reads each as it comes.
            Output::Json => println!("{}", super::json::readable(&r)),
            // Home and clear: the page redraws in place instead of scrolling.
            Output::Table if tty => print!("\x1b[H\x1b[2J"),
            Output::Table => {}
        }
        if output == Output::Table {
            show::print_status(&r);
        }
        let p = &r.state.phase;
        if *p == crate::rollout::Phase::Completed {
            return Ok(());
        }
        if show::finished(p) || matches!(p, crate::rollout::Phase::Paused { .. }) {
            return Err(Failure::Stopped(format!("rollout {id} is {}", show::phase(p))));
        }
        std::thread::sleep(std::time::Duration::from_secs(interval.max(1)));
        if !tty && output == Output::Table {
            println!();
        }
    }
}

pub fn run(a: Args) -> Result<(), Failure> {
    let remote = a.remote;
    let verb = |id: &str, verb: &str, query: &str, output: Output| -> Result<(), Failure> {
        let r = remote.post_json(&format!("/api/v1/rollouts/{id}/{verb}{query}"), &serde_json::json!({}))?;
        answer(&r, "", output)
    };
    match a.command {
        Command::Start {
            bundle,
            file,
            selector,
            waves,
            bake,
            max_failure_rate,
            max_error_rate,
            max_p95_regression,
            min_shadow_agreement,
            max_psi,
            shadow,
            quorum,
            on_failure,
            watch,
            id,
            no_default_gates,
            output,
        } => {
            let req = match file {
                Some(path) => {
                    let text = std::fs::read_to_string(&path)
                        .map_err(|e| Failure::Error(format!("{}: {e}", path.display())))?;
                    super::rollout_file::parse(&path.display().to_string(), &text).map_err(Failure::Error)?
                }
                None => crate::daemon::rollouts::StartRequest {
                    remove: None,
                    bundle: bundle.unwrap_or_default(),
                    selector,
                    waves,
                    bake_secs: bake,
                    max_failure_rate,
                    max_error_rate,
                    max_p95_regression,
                    min_shadow_agreement,
                    max_psi,
                    shadow_secs: shadow.map(|s| s as u32),
                    quorum,
                    on_failure: Some(on_failure),
                    watch_secs: Some(watch as u32),
                    id,
                    no_default_gates,
                },
            };
            let r = remote.post_json("/api/v1/rollouts", &serde_json::to_value(&req).expect("json"))?;
            answer(&r, "started ", output)
        }
        Command::Remove { model, selector, waves, bake, quorum, max_failure_rate, id, output } => {
            let req = crate::daemon::rollouts::StartRequest {
                remove: Some(model),
                selector,
                waves,
                bake_secs: bake,
                quorum,
                max_failure_rate,
                on_failure: Some("pause".into()),
                id,
                ..Default::default()
            };
            let r = remote.post_json("/api/v1/rollouts", &serde_json::to_value(&req).expect("json"))?;
            answer(&r, "started ", output)
        }
        Command::Status { id, watch: true, interval, output } => watch(&remote, &id, interval, output),
        Command::Status { id, output, .. } => {
            let r = typed(&remote.get(&format!("/api/v1/rollouts/{id}"))?)?;
            match output {
                Output::Json => super::json::print(&r),
                Output::Table => show::print_status(&r),
            }
            Ok(())
        }
        Command::List { all, output } => {
            let rows = rollouts(&remote)?;
            let rows = rows.into_iter().filter(|(_, r)| all || !show::finished(&r.state.phase)).collect::<Vec<_>>();
            if rows.is_empty() && output == Output::Table {
                println!("no live rollout{}", if all { "" } else { " (--all lists finished ones too)" });
                return Ok(());
            }
            print_rows(rows, output);
            Ok(())
        }
        Command::Pause { id, output } => verb(&id, "pause", "", output),
        Command::Resume { id, output } => verb(&id, "resume", "", output),
        Command::Promote { id, full, output } => verb(&id, "promote", if full { "?full=true" } else { "" }, output),
        Command::Abort { id, revert, output } => verb(&id, "abort", if revert { "?revert=true" } else { "" }, output),
        Command::Undo { id, output } => verb(&id, "undo", "", output),
        Command::History { model, output } => {
            let rows = rollouts(&remote)?;
            let rows =
                rows.into_iter().filter(|(_, r)| model.as_deref().is_none_or(|m| r.spec.release.model.as_str() == m));
            print_rows(rows.collect(), output);
            Ok(())
        }
    }
}

/// `outpost skew [--model NAME]`.
pub fn skew(remote: &Remote, model: Option<&str>, output: Output) -> Result<(), Failure> {
    let all = remote.get("/api/v1/skew")?;
    let rows: Vec<&serde_json::Value> =
        all.as_array().into_iter().flatten().filter(|m| model.is_none_or(|name| m["model"] == name)).collect();
    if output == Output::Json {
        let typed: Vec<crate::skew::ModelSkew> = rows
            .into_iter()
            .map(|m| serde_json::from_value(m.clone()))
            .collect::<Result<_, _>>()
            .map_err(|e| Failure::Error(format!("the controller's skew: {e}")))?;
        super::json::print(&typed);
        return Ok(());
    }
    for m in rows {
        let c = &m["compliance"];
        println!("model {}", m["model"].as_str().unwrap_or("?"));
        for v in m["versions"].as_array().into_iter().flatten() {
            let ver = &v["version"];
            // Attested: the device's signed version report says so; the rest only claim it (their hello).
            let total = v["online"].as_u64().unwrap_or(0) + v["offline"].as_u64().unwrap_or(0);
            let attested = v["attested"].as_u64().unwrap_or(0);
            println!(
                "  {}.{}.{}  {} online, {} offline; {attested} attested, {} only claimed",
                ver["major"],
                ver["minor"],
                ver["patch"],
                v["online"],
                v["offline"],
                total.saturating_sub(attested)
            );
        }
        println!(
            "  on target {}, behind {}, ahead {}, in progress {}, failed {}, unknown {}",
            c["on_target"], c["behind"], c["ahead"], c["in_progress"], c["failed"], c["unknown"]
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn rates_are_percentages_or_fractions_and_a_bare_one_is_refused() {
        assert_eq!(super::rate("1%"), Ok(0.01));
        assert_eq!(super::rate("0.05"), Ok(0.05));
        assert_eq!(super::rate("100%"), Ok(1.0));
        let err = super::rate("1").unwrap_err();
        assert!(err.contains("ambiguous") && err.contains("1%"), "{err}");
        assert!(super::rate("5").is_err() && super::rate("150%").is_err() && super::rate("x").is_err());
    }
}

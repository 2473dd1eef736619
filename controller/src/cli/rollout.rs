//! `outpost rollout start|remove|status|pause|resume|promote|abort|undo|history` and `outpost skew`.

use super::client::Remote;
use super::{Failure, Output, parse_lifetime};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    remote: Remote,
}

/// `2%` or `0.02` → 0.02. A bare number of 1 or more is refused: `--max-error-rate 1` could mean 1 % or
/// 100 %, and guessing wrong either blocks every release or lets any through.
fn rate(s: &str) -> Result<f64, String> {
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
    /// Roll a pushed bundle out in waves, gated on device telemetry.
    Start {
        /// NAME@VERSION or a digest prefix of a pushed bundle.
        #[arg(long)]
        bundle: String,
        /// Label selector, e.g. arch=aarch64,region=eu (default: every device).
        #[arg(short = 'l', long, default_value = "")]
        selector: String,
        /// Cumulative wave sizes: percentages or device counts, e.g. 1,25%,100%.
        #[arg(long, default_value = "1%,10%,50%,100%")]
        waves: String,
        /// Bake time of each wave.
        #[arg(long, default_value = "5m", value_parser = parse_lifetime)]
        bake: u64,
        /// Install gate: the largest share of a wave's finished installs that may fail, e.g. 10% (or 0.1).
        #[arg(long = "max-failure-rate", value_parser = rate)]
        max_failure_rate: Option<f64>,
        /// Error-rate gate: how far the wave's error rate may exceed the old release's, in percentage
        /// points, e.g. 1% (or 0.01); an absolute limit when no device is left on the old release.
        #[arg(long = "max-error-rate", value_parser = rate)]
        max_error_rate: Option<f64>,
        /// Latency gate: how much slower the wave's median p95 may be than the old release's, e.g. 25%.
        #[arg(long = "max-p95-regression", value_parser = rate)]
        max_p95_regression: Option<f64>,
        /// Shadow gate (with --shadow): the least share of sampled requests on which the candidate must
        /// agree with the serving model (top-1), e.g. 95%.
        #[arg(long = "min-shadow-agreement", value_parser = rate)]
        min_shadow_agreement: Option<f64>,
        /// Drift gate: the largest mean PSI of the wave's inputs and output classes, e.g. 0.25.
        #[arg(long = "max-psi")]
        max_psi: Option<f64>,
        /// Run the candidate in shadow this long before activating it.
        #[arg(long, value_parser = parse_lifetime)]
        shadow: Option<u64>,
        /// The share of a wave's devices that must have sent fresh evidence before its gates decide;
        /// default 80%. Devices send windows only when they serve traffic.
        #[arg(long, value_parser = rate)]
        quorum: Option<f64>,
        /// What a failed gate does: pause (devices not yet on the release are held back) or rollback.
        #[arg(long = "on-failure", default_value = "pause")]
        on_failure: String,
        /// The devices' own watch window after activation.
        #[arg(long, default_value = "5m", value_parser = parse_lifetime)]
        watch: u64,
        /// Name the rollout (default: MODEL-VERSION-TIME).
        #[arg(long)]
        id: Option<String>,
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
    },
    /// Waves, devices per state, gate values.
    Status {
        id: String,
        #[arg(long)]
        watch: bool,
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: Output,
    },
    Pause {
        id: String,
    },
    Resume {
        id: String,
    },
    Promote {
        id: String,
        #[arg(long)]
        full: bool,
    },
    Abort {
        id: String,
        /// Tell every device that installed it to switch back to its previous model.
        #[arg(long)]
        revert: bool,
    },
    Undo {
        id: String,
    },
    /// Every rollout in the order they started, newest last, with start time and how long each ran.
    History {
        #[arg(long)]
        model: Option<String>,
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: Output,
    },
}

fn phase(r: &serde_json::Value) -> String {
    match &r["state"]["phase"] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Object(o) => {
            let (name, v) = o.iter().next().expect("one variant");
            match v.get("reason").and_then(|x| x.as_str()) {
                Some(reason) => format!("{name}: {reason}"),
                None => format!("{name} {v}"),
            }
        }
        other => other.to_string(),
    }
}

fn print_status(r: &serde_json::Value) {
    let spec = &r["spec"];
    let rel = &spec["release"];
    let v = &rel["version"];
    let removal = spec["kind"] == "Remove";
    println!("rollout   {}", spec["id"].as_str().unwrap_or("?"));
    if removal {
        println!("removes   {} from the selected devices", rel["model"].as_str().unwrap_or("?"));
    } else {
        println!(
            "release   {} {}.{}.{} (sequence {})",
            rel["model"].as_str().unwrap_or("?"),
            v["major"],
            v["minor"],
            v["patch"],
            rel["sequence"]
        );
    }
    println!("phase     {}", phase(r));
    let waves = spec["waves"].as_array().map(|w| w.len()).unwrap_or(0);
    println!("wave      {} of {}", r["state"]["wave"].as_u64().unwrap_or(0) + 1, waves);
    let mut intents = std::collections::BTreeMap::<String, u32>::new();
    for m in r["state"]["members"].as_object().into_iter().flatten().map(|(_, m)| m) {
        *intents.entry(m["intent"].as_str().unwrap_or("?").to_owned()).or_default() += 1;
    }
    println!("devices   {}", intents.iter().map(|(k, n)| format!("{n} {k}")).collect::<Vec<_>>().join(", "));
    let current = r["state"]["wave"].as_u64().unwrap_or(0) as usize;
    let mut per_wave = vec![0u64; waves];
    for m in r["state"]["members"].as_object().into_iter().flatten().map(|(_, m)| m) {
        if let Some(c) = m["wave"].as_u64().and_then(|w| per_wave.get_mut(w as usize)) {
            *c += 1;
        }
    }
    for (i, w) in spec["waves"].as_array().into_iter().flatten().enumerate() {
        let size = &w["size"];
        // Percentages are stored in basis points (10000 = 100 %).
        let size = size["Percent"]
            .as_f64()
            .map(|bp| format!("{}%", bp / 100.0))
            .or_else(|| size["Count"].as_u64().map(|n| n.to_string()));
        let mark = if i == current { ">" } else { " " };
        println!(
            "  {mark} wave {:<2} {:>6}  {} device(s) told, bake {} s",
            i + 1,
            size.unwrap_or_default(),
            per_wave[i],
            w["bake_secs"]
        );
    }
    let ev = &r["state"]["last_evidence"];
    // Every wave, refreshed in every phase (older controllers: the current wave's evidence).
    let progress = &r["state"]["progress"];
    let p = if progress.is_object() { progress } else { ev };
    if p.is_object() {
        let n = |k: &str| p[k].as_u64().unwrap_or(0);
        println!(
            "progress  {} {}/{} {}, {} in progress, {} failed, {} switched back",
            bar(n("installed"), n("selected"), 24),
            n("installed"),
            n("selected"),
            if removal { "removed" } else { "installed" },
            n("in_progress"),
            n("failed"),
            n("reverted")
        );
    }
    if ev.is_object() {
        println!("gates ({} of the wave's devices reporting)", ev["reporting"].as_u64().unwrap_or(0));
        for g in ev["gates"].as_array().into_iter().flatten() {
            println!(
                "  {:<16} {:<12} {}",
                g["gate"].as_str().unwrap_or("?"),
                g["verdict"].as_str().unwrap_or("?"),
                g["note"].as_str().unwrap_or("")
            );
        }
    }
    for h in r["state"]["history"].as_array().into_iter().flatten().rev().take(8).collect::<Vec<_>>().into_iter().rev()
    {
        println!(
            "  {} wave {} {}",
            super::audit::utc(h["at"].as_u64().unwrap_or(0)),
            h["wave"].as_u64().unwrap_or(0) + 1,
            serde_json::to_string(&h["decision"]).unwrap_or_default()
        );
    }
}

/// When the rollout started: its first decision.
fn started_at(r: &serde_json::Value) -> u64 {
    r["state"]["history"].as_array().and_then(|h| h.first()).and_then(|e| e["at"].as_u64()).unwrap_or(0)
}

/// `45s`, `5m`, `2h10m`, `3d4h`: how long, to the unit that matters.
fn duration(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 if secs.is_multiple_of(60) => format!("{}m", secs / 60),
        60..3600 => format!("{}m{}s", secs / 60, secs % 60),
        3600..86_400 => format!("{}h{}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d{}h", secs / 86_400, secs % 86_400 / 3600),
    }
}

/// `[########........]`: `done` of `total` in `width` cells.
fn bar(done: u64, total: u64, width: usize) -> String {
    let filled = if total == 0 { 0 } else { ((done.min(total) as f64 / total as f64) * width as f64).round() as usize };
    format!("[{}{}]", "#".repeat(filled), ".".repeat(width - filled))
}

pub fn run(a: Args) -> Result<(), Failure> {
    let remote = a.remote;
    let verb = |id: &str, verb: &str, query: &str| -> Result<(), Failure> {
        let r = remote.post_json(&format!("/api/v1/rollouts/{id}/{verb}{query}"), &serde_json::json!({}))?;
        println!("{}: {}", r["spec"]["id"].as_str().unwrap_or(id), phase(&r));
        Ok(())
    };
    match a.command {
        Command::Start {
            bundle,
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
        } => {
            let req = crate::daemon::rollouts::StartRequest {
                remove: None,
                bundle,
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
            };
            let r = remote.post_json("/api/v1/rollouts", &serde_json::to_value(&req).expect("json"))?;
            println!("started {}: {}", r["spec"]["id"].as_str().unwrap_or("?"), phase(&r));
            Ok(())
        }
        Command::Remove { model, selector, waves, bake, quorum, max_failure_rate, id } => {
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
            println!("started {}: {}", r["spec"]["id"].as_str().unwrap_or("?"), phase(&r));
            Ok(())
        }
        Command::Status { id, watch, output } => loop {
            let r = remote.get(&format!("/api/v1/rollouts/{id}"))?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&r).expect("json")),
                Output::Table => print_status(&r),
            }
            let done = ["Completed", "RolledBack", "Aborted"].iter().any(|p| phase(&r).starts_with(p));
            if !watch || done {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_secs(2));
            println!();
        },
        Command::Pause { id } => verb(&id, "pause", ""),
        Command::Resume { id } => verb(&id, "resume", ""),
        Command::Promote { id, full } => verb(&id, "promote", if full { "?full=true" } else { "" }),
        Command::Abort { id, revert } => verb(&id, "abort", if revert { "?revert=true" } else { "" }),
        Command::Undo { id } => verb(&id, "undo", ""),
        Command::History { model, output } => {
            let list = remote.get("/api/v1/rollouts")?;
            let mut rows: Vec<&serde_json::Value> = list
                .as_array()
                .into_iter()
                .flatten()
                .filter(|r| model.as_deref().is_none_or(|m| r["spec"]["release"]["model"] == m))
                .collect();
            // The API lists rollouts by id; people and scripts read history in the order things happened.
            rows.sort_by_key(|r| (started_at(r), r["spec"]["id"].as_str().unwrap_or("").to_owned()));
            if output == Output::Json {
                println!("{}", serde_json::to_string_pretty(&rows).expect("json"));
                return Ok(());
            }
            println!("{:<36} {:<8} {:<20} {:>8}  PHASE", "ROLLOUT", "RELEASE", "STARTED (UTC)", "RAN");
            for r in rows {
                let v = &r["spec"]["release"]["version"];
                let history = r["state"]["history"].as_array();
                let last = history.and_then(|h| h.last()).and_then(|e| e["at"].as_u64()).unwrap_or(0);
                let start = started_at(r);
                println!(
                    "{:<36} {:<8} {:<20} {:>8}  {}",
                    r["spec"]["id"].as_str().unwrap_or("?"),
                    format!("{}.{}.{}", v["major"], v["minor"], v["patch"]),
                    super::audit::utc(start),
                    duration(last.saturating_sub(start)),
                    phase(r)
                );
            }
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
        println!("{}", serde_json::to_string_pretty(&rows).expect("json"));
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
    fn progress_bars_fill_in_proportion_and_never_overflow() {
        assert_eq!(super::bar(0, 10, 10), "[..........]");
        assert_eq!(super::bar(5, 10, 10), "[#####.....]");
        assert_eq!(super::bar(12, 10, 10), "[##########]");
        assert_eq!(super::bar(3, 0, 4), "[....]");
    }

    #[test]
    fn rates_are_percentages_or_fractions_and_a_bare_one_is_refused() {
        assert_eq!(super::rate("1%"), Ok(0.01));
        assert_eq!(super::rate("0.05"), Ok(0.05));
        assert_eq!(super::rate("100%"), Ok(1.0));
        let err = super::rate("1").unwrap_err();
        assert!(err.contains("ambiguous") && err.contains("1%"), "{err}");
        assert!(super::rate("5").is_err() && super::rate("150%").is_err() && super::rate("x").is_err());
    }

    #[test]
    fn durations_read_like_people_write_them() {
        let d = super::duration;
        assert_eq!(
            (d(0), d(45), d(300), d(330), d(7_800), d(273_600)),
            ("0s".into(), "45s".into(), "5m".into(), "5m30s".into(), "2h10m".into(), "3d4h".into())
        );
    }
}

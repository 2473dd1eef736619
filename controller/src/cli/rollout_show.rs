//! How a rollout reads for people: `rollout status`, `rollout list` and `rollout history` tables, from the
//! API's JSON read back into the planner's own types (no `Debug` forms, waves 1-based, times in UTC,
//! durations like `5m`).

use super::audit::utc;
use crate::duration::format as duration;
use crate::rollout::{Kind, Phase, Rollout, WaveSize};

/// The API's rollout JSON as the planner's type. A controller too old or too new to read is named.
pub fn typed(v: &serde_json::Value) -> Result<Rollout, super::Failure> {
    serde_json::from_value(v.clone())
        .map_err(|e| super::Failure::Error(format!("the controller answered a rollout this CLI cannot read: {e}")))
}

/// `Completed`, `Paused: wave 1: ...`, `Aborted (reverted)`: the phase and its reason on one line.
pub fn phase(p: &Phase) -> String {
    match p {
        Phase::Pending => "Pending".into(),
        Phase::Progressing => "Progressing".into(),
        Phase::Paused { reason } => format!("Paused: {reason}"),
        Phase::Completed => "Completed".into(),
        Phase::RolledBack { reason } => format!("RolledBack: {reason}"),
        Phase::Aborted { reverted: false } => "Aborted".into(),
        Phase::Aborted { reverted: true } => "Aborted (reverted)".into(),
    }
}

/// Whether the rollout ended (`--watch` stops; only Completed is a success for CI).
pub fn finished(p: &Phase) -> bool {
    matches!(p, Phase::Completed | Phase::RolledBack { .. } | Phase::Aborted { .. })
}

fn release(r: &Rollout) -> String {
    let rel = &r.spec.release;
    match r.spec.kind {
        Kind::Install => format!("{} {}", rel.model, rel.version),
        Kind::Remove => format!("{} (remove)", rel.model),
    }
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// When the rollout started: its first decision.
pub fn started_at(r: &Rollout) -> u64 {
    r.state.history.first().map(|e| e.at).unwrap_or(0)
}

/// The status page, as `rollout status` prints it. `now` for the bake time left.
pub fn status(r: &Rollout, now: u64) -> String {
    let mut out = Vec::new();
    let (spec, st) = (&r.spec, &r.state);
    out.push(format!("rollout   {}", spec.id));
    match spec.kind {
        Kind::Install => out.push(format!(
            "release   {} {} (sequence {}, bundle {})",
            spec.release.model,
            spec.release.version,
            spec.release.sequence,
            spec.release.bundle.digest.to_string().get(..12).unwrap_or_default()
        )),
        Kind::Remove => out.push(format!("removes   {} from the selected devices", spec.release.model)),
    }
    let selector = spec.selector.to_string();
    out.push(format!("selector  {}", if selector.is_empty() { "every device".into() } else { selector }));
    out.push(format!("phase     {}", phase(&st.phase)));
    let k = st.wave.min(spec.waves.len().saturating_sub(1));
    let mut wave = format!("wave      {} of {}", k + 1, spec.waves.len());
    if st.phase == Phase::Progressing {
        let end = st.wave_started_at.saturating_add(spec.waves[k].bake_secs);
        wave += &match end.checked_sub(now) {
            Some(left) if left > 0 => format!(", bake {} left", duration(left)),
            _ if st.holding => ", bake over, holding for conclusive evidence".into(),
            _ => ", bake over".into(),
        };
    }
    out.push(wave);
    let per_wave = st.members_per_wave(spec.waves.len());
    for (i, w) in spec.waves.iter().enumerate() {
        let size = match w.size {
            WaveSize::Percent(p) => p.to_string(),
            WaveSize::Count(n) => n.to_string(),
        };
        let mark = if i == k { ">" } else { " " };
        out.push(format!(
            "  {mark} wave {:<2} {size:>6}  {} device(s) told, bake {}",
            i + 1,
            per_wave[i],
            duration(w.bake_secs)
        ));
    }
    let p = st.progress;
    out.push(format!(
        "progress  {} {}/{} {}, {} in progress, {} failed, {} switched back",
        bar(u64::from(p.installed), u64::from(p.selected), 24),
        p.installed,
        p.selected,
        if spec.kind == Kind::Remove { "removed" } else { "installed" },
        p.in_progress,
        p.failed,
        p.reverted
    ));
    match &st.last_evidence {
        Some(ev) => out.push(format!(
            "gates     judged {} ago: {} of the wave's {} device(s) reporting, baseline {} of {}",
            duration(now.saturating_sub(ev.at)),
            ev.reporting,
            ev.cohort,
            ev.baseline_reporting,
            ev.baseline_devices
        )),
        None => out.push("gates     not judged yet".into()),
    }
    for (kind, what) in spec.gates.describe() {
        let judged = st.last_evidence.as_ref().and_then(|ev| ev.gates.iter().find(|g| g.gate == kind));
        let verdict = judged.map_or("-", |g| g.verdict.name());
        out.push(format!("  {:<17} {verdict:<13} {what}", kind.name()));
        if let Some(g) = judged.filter(|g| !g.note.is_empty()) {
            out.push(format!("  {:<17} {:<13} {}", "", "", g.note));
        }
    }
    out.push("events".into());
    let skip = st.history.len().saturating_sub(8);
    let events: Vec<Vec<String>> = st.history[skip..]
        .iter()
        .map(|h| {
            let wave = format!("wave {}", h.wave + 1);
            vec![utc(h.at), wave, h.decision.describe(), h.by.name().to_owned(), h.reason.clone()]
        })
        .collect();
    // Aligned on the widest decision and name: "gate failed, rolled back" ran into the name before.
    out.extend(super::table::render(events, &[]).lines().map(|l| format!("  {l}")));
    out.join("\n")
}

pub fn print_status(r: &Rollout) {
    println!("{}", status(r, now()));
}

/// One line per rollout: `rollout list` (live ones) and `rollout history` (all, in start order).
pub fn table(rows: &[Rollout], now: u64) -> String {
    let head = ["ROLLOUT", "RELEASE", "STARTED (UTC)", "RAN", "WAVE", "DEVICES", "PHASE"].map(String::from).to_vec();
    let lines = rows.iter().map(|r| {
        let start = started_at(r);
        // A live rollout has run until now; an ended one until its last decision.
        let end = if finished(&r.state.phase) { r.state.history.last().map_or(start, |e| e.at) } else { now };
        let p = r.state.progress;
        vec![
            r.spec.id.clone(),
            release(r),
            utc(start),
            duration(end.saturating_sub(start)),
            format!("{}/{}", r.state.wave + 1, r.spec.waves.len()),
            format!("{}/{}", p.installed, p.selected),
            phase(&r.state.phase),
        ]
    });
    super::table::render(std::iter::once(head).chain(lines).collect(), &[3]).trim_end().to_owned()
}

pub fn print_table(rows: &[Rollout]) {
    println!("{}", table(rows, now()));
}

/// `[########........]`: `done` of `total` in `width` cells.
pub fn bar(done: u64, total: u64, width: usize) -> String {
    let filled = if total == 0 { 0 } else { ((done.min(total) as f64 / total as f64) * width as f64).round() as usize };
    format!("[{}{}]", "#".repeat(filled), ".".repeat(width - filled))
}

#[cfg(test)]
mod tests {
    use crate::rollout::testkit::{World, spec};
    use crate::rollout::{Gates, Kind, Rollout};

    #[test]
    fn progress_bars_fill_in_proportion_and_never_overflow() {
        assert_eq!(super::bar(0, 10, 10), "[..........]");
        assert_eq!(super::bar(5, 10, 10), "[#####.....]");
        assert_eq!(super::bar(12, 10, 10), "[##########]");
        assert_eq!(super::bar(3, 0, 4), "[....]");
    }

    #[test]
    fn status_reads_without_rust_forms_and_shows_every_gate_with_its_default() {
        let mut s = spec(&["1", "100%"], 300);
        s.gates = Gates::default().with_defaults(Kind::Install, false, false);
        let mut r = Rollout::new(s).unwrap();
        let mut w = World::new(3);
        w.tick(&mut r, 0);
        w.tick(&mut r, 10);
        let now = w.now + 20;
        let text = super::status(&r, now);
        for want in [
            "release   digits 1.1.0 (sequence 11, bundle 020202020202)",
            "selector  every device",
            "phase     Progressing",
            "wave      1 of 2, bake 4m30s left",
            "install-failures",
            "at most 10% of finished installs fail (default)",
            "error rate at most the old release's + 2% (absolute; requests since told, judged from 20 requests) (default)",
            "median p95 at most 100% slower than the old release's or at most 10 ms more (default)",
            "wave 1  started",
        ] {
            assert!(text.contains(want), "{want:?} missing from:\n{text}");
        }
        for rust in ["{", "Some(", "\"", "Advanced", "Install"] {
            assert!(!text.contains(rust), "{rust:?} in:\n{text}");
        }
        let table = super::table(&[r.clone()], now);
        let row = table.lines().nth(1).unwrap();
        assert!(
            row.starts_with("r1") && row.contains("digits 1.1.0") && row.contains("30s") && row.contains("1/2"),
            "{table}"
        );
    }
}

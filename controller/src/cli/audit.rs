//! `outpost audit [--rollout ID] [--since 2h] [--limit N]`: the append-only decision log, as a table for
//! people or JSON.

use super::{Failure, Output, client::Remote};

pub use crate::duration::{parse_utc, utc};

/// What `outpost audit` shows.
#[derive(Debug, Default)]
pub struct Filter {
    pub rollout: Option<String>,
    /// A duration back from now (`2h`) or a UTC time.
    pub since: Option<String>,
    pub limit: Option<usize>,
}

impl Filter {
    /// The first second shown, from `--since` and `now`.
    fn from(&self, now: u64) -> Result<Option<u64>, Failure> {
        let Some(s) = &self.since else { return Ok(None) };
        if let Ok(secs) = super::parse_lifetime(s) {
            return Ok(Some(now.saturating_sub(secs)));
        }
        parse_utc(s).map(Some).ok_or_else(|| {
            Failure::Error(format!(
                "--since {s:?} is neither a duration (30m, 2h, 7d) nor a UTC time (2026-12-06T08:00:00Z)"
            ))
        })
    }

    pub fn apply<'a>(&self, log: &'a [serde_json::Value], now: u64) -> Result<Vec<&'a serde_json::Value>, Failure> {
        let from = self.from(now)?;
        let mut entries: Vec<&serde_json::Value> = log
            .iter()
            .filter(|e| self.rollout.as_deref().is_none_or(|id| e["entry"]["rollout"].as_str() == Some(id)))
            .filter(|e| from.is_none_or(|from| e["entry"]["at"].as_u64().is_some_and(|at| at >= from)))
            .collect();
        if let Some(n) = self.limit {
            entries.drain(..entries.len().saturating_sub(n));
        }
        Ok(entries)
    }
}

fn decision(d: &serde_json::Value) -> String {
    match serde_json::from_value::<crate::rollout::Decision>(d.clone()) {
        Ok(d) => d.describe(),
        Err(_) => d.as_str().map_or_else(|| d.to_string(), str::to_owned),
    }
}

fn actor(by: &serde_json::Value) -> String {
    by.as_str().map(str::to_lowercase).or_else(|| by["Operator"].as_str().map(str::to_owned)).unwrap_or_default()
}

/// An entry that is not a rollout decision (enrollment, approval, trust): its `what`, who did it (the
/// operator named by their token; `controller` for what devices asked and the controller decided), and
/// its other fields as `key=value`.
fn other(x: &serde_json::Value) -> (String, String, String) {
    let what = x["what"].as_str().unwrap_or("event").to_owned();
    let rest: Vec<String> = x
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, v)| !matches!(k.as_str(), "at" | "what" | "by" | "operator") && !v.is_null())
        .map(|(k, v)| format!("{k}={}", v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
        .collect();
    (what, who(x).to_owned(), rest.join(" "))
}

/// `outpost audit` for people: one line per entry, columns aligned on their widest cell. A rollout
/// decision shows its rollout, 1-based wave, decision, who took it and why; any other entry its `what`,
/// who did it and its other fields as `key=value`.
pub fn table(entries: &[&serde_json::Value]) -> String {
    let head = ["N", "TIME (UTC)", "ROLLOUT", "WAVE", "DECISION", "BY", "REASON"].map(String::from).to_vec();
    let rows = entries.iter().map(|e| {
        let x = &e["entry"];
        let n = e["n"].as_u64().map_or_else(|| "-".into(), |n| n.to_string());
        let at = utc(x["at"].as_u64().unwrap_or(0));
        if x["rollout"].is_string() {
            vec![
                n,
                at,
                x["rollout"].as_str().unwrap_or("").to_owned(),
                x["wave"].as_u64().map_or_else(|| "-".into(), |w| (w + 1).to_string()),
                decision(&x["decision"]),
                actor(&x["by"]),
                x["reason"].as_str().unwrap_or("").to_owned(),
            ]
        } else {
            let (what, who, rest) = other(x);
            vec![n, at, "-".into(), "-".into(), what, who, rest]
        }
    });
    super::table::render(std::iter::once(head).chain(rows).collect(), &[0, 3])
}

/// An entry as `-o json` shows it: a rollout decision with 1-based waves and hex digests, a pushed
/// bundle's `min_agent` as `"0.1.0"`; anything else as it was logged.
fn readable_entry(x: &serde_json::Value) -> serde_json::Value {
    if let Ok(decision) = serde_json::from_value::<crate::rollout::AuditEntry>(x.clone()) {
        return super::json::readable(&decision);
    }
    let mut x = x.clone();
    if let Ok(meta) = serde_json::from_value::<crate::daemon::bundles::BundleMeta>(x["bundle"].clone()) {
        x["bundle"] = super::json::readable(&meta);
    }
    x
}

/// Who an entry that is not a rollout decision names.
pub fn who(x: &serde_json::Value) -> &str {
    x["operator"].as_str().or(x["by"].as_str()).unwrap_or("controller")
}

pub fn run(remote: &Remote, filter: &Filter, output: Output) -> Result<(), Failure> {
    let log = remote.get("/api/v1/audit")?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let all = log.as_array().cloned().unwrap_or_default();
    let entries = filter.apply(&all, now)?;
    if let Some(id) = &filter.rollout
        && entries.is_empty()
        && filter.since.is_none()
    {
        return Err(Failure::Error(format!("no audit entries for rollout {id}")));
    }
    match output {
        // `[{"n": …, "entry": …}]`, as the API answers (scripts can resume from a number), each entry in
        // the readable shapes.
        Output::Json => {
            let readable: Vec<serde_json::Value> = entries
                .iter()
                .map(|e| serde_json::json!({"n": e["n"], "entry": readable_entry(&e["entry"])}))
                .collect();
            println!("{}", serde_json::to_string_pretty(&readable).expect("json"));
        }
        Output::Table => print!("{}", table(&entries)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_dates_are_right_around_leap_years_and_epochs() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00");
        assert_eq!(super::utc(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(super::utc(1_795_887_487), "2026-11-28 17:38:07");
        assert_eq!(super::utc(4_107_542_399), "2100-02-28 23:59:59");
    }

    #[test]
    fn utc_times_parse_back_and_nonsense_is_refused() {
        for secs in [0, 951_782_400, 1_795_887_487, 4_107_542_399] {
            let text = super::utc(secs);
            assert_eq!(super::parse_utc(&text), Some(secs), "{text}");
            assert_eq!(super::parse_utc(&format!("{}Z", text.replace(' ', "T"))), Some(secs), "{text}");
        }
        assert_eq!(super::parse_utc("2026-12-06"), Some(1_796_515_200));
        for bad in ["", "yesterday", "2026-13-01T00:00:00Z", "2026-12-06T25:00:00Z", "2026-12"] {
            assert_eq!(super::parse_utc(bad), None, "{bad}");
        }
    }

    #[test]
    fn since_and_limit_keep_the_newest_entries_in_order() {
        let log: Vec<serde_json::Value> = (0..10)
            .map(|i| serde_json::json!({"n": i, "entry": {"at": 1_000 + i * 100, "rollout": if i % 2 == 0 { "a" } else { "b" }}}))
            .collect();
        let n = |f: super::Filter| {
            f.apply(&log, 2_000).unwrap().iter().map(|e| e["n"].as_u64().unwrap()).collect::<Vec<_>>()
        };
        assert_eq!(n(super::Filter { limit: Some(3), ..Default::default() }), [7, 8, 9]);
        assert_eq!(n(super::Filter { since: Some("5m".into()), ..Default::default() }), [7, 8, 9]);
        assert_eq!(n(super::Filter { rollout: Some("a".into()), limit: Some(2), ..Default::default() }), [6, 8]);
        let at = super::utc(1_500);
        assert_eq!(n(super::Filter { since: Some(at), limit: Some(100), ..Default::default() }), [5, 6, 7, 8, 9]);
        assert!(super::Filter { since: Some("soon".into()), ..Default::default() }.apply(&log, 2_000).is_err());
    }
}

#[cfg(test)]
mod table_tests {
    #[test]
    fn the_audit_table_aligns_decisions_and_other_entries_and_names_who_did_each() {
        let log = [
            serde_json::json!({"n": 9, "entry": {"at": 1_796_515_200, "rollout": "digits-2.0.0-long-name", "wave": 0,
                "decision": {"Advanced": {"to": 1}}, "by": "Planner", "reason": "wave 1 passed"}}),
            serde_json::json!({"n": 10, "entry": {"at": 1_796_515_260, "rollout": "d", "wave": 1,
                "decision": "Paused", "by": {"Operator": "ada"}, "reason": "paused by ada in wave 2"}}),
            serde_json::json!({"n": 11, "entry": {"at": 1_796_515_320, "what": "device deleted", "device": "dev-1",
                "operator": "ada", "crl": null}}),
            serde_json::json!({"n": 12, "entry": {"at": 1_796_515_380, "what": "device enrolled", "device": "dev-2"}}),
        ];
        let text = super::table(&log.iter().collect::<Vec<_>>());
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with(" N  TIME (UTC)           ROLLOUT"), "{text}");
        let col = |l: &str, w: &str| l.find(w);
        assert_eq!(col(lines[1], "Planner").or(col(lines[1], "planner")), col(lines[0], "BY"), "{text}");
        assert!(lines[1].contains("advanced to wave 2") && lines[1].contains("   1  "), "1-based waves: {text}");
        assert_eq!(col(lines[2], "ada"), col(lines[0], "BY"), "{text}");
        assert_eq!(col(lines[3], "ada"), col(lines[0], "BY"), "{text}");
        assert!(lines[3].ends_with("device=dev-1"), "null fields left out: {text}");
        assert_eq!(col(lines[4], "controller"), col(lines[0], "BY"), "{text}");
        assert!(lines[1].starts_with(" 9  2026-12-06 00:00:00"), "{text}");
    }
}

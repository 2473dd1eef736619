//! `outpost audit [--rollout ID] [--since 2h] [--limit N]`: the append-only decision log, as a table for
//! people or JSON.

use super::{Failure, Output, client::Remote};

/// `2026-11-28 17:04:05` (UTC) from Unix seconds: the audit log is read by people across time zones.
pub fn utc(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// `2026-12-06T08:00:00Z` (or with a space, without the Z: always UTC) → Unix seconds.
pub fn parse_utc(s: &str) -> Option<u64> {
    let s = s.trim().trim_end_matches('Z');
    let (date, time) = s.split_once(['T', ' ']).unwrap_or((s, "00:00:00"));
    let num = |p: &str| p.parse::<i64>().ok();
    let d: Vec<i64> = date.split('-').map(num).collect::<Option<_>>()?;
    let t: Vec<i64> = time.split(':').map(num).collect::<Option<_>>()?;
    let [y, m, day] = d[..] else { return None };
    let [hh, mm, ss] = t[..] else { return None };
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm), the inverse of `utc`.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
}

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

/// An entry that is not a rollout decision (enrollment, approval, trust): its `what`, then its other
/// fields as `key=value`.
fn other(x: &serde_json::Value) -> String {
    let what = x["what"].as_str().unwrap_or("event");
    let rest: Vec<String> = x
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, v)| !matches!(k.as_str(), "at" | "what" | "by") && !v.is_null())
        .map(|(k, v)| format!("{k}={}", v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
        .collect();
    format!("{what:<26} {:<10} {}", x["by"].as_str().unwrap_or("-"), rest.join(" "))
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
        // `[{"n": …, "entry": …}]`, as the API answers: scripts can resume from a number.
        Output::Json => println!("{}", serde_json::to_string_pretty(&entries).expect("json")),
        Output::Table => {
            println!(
                "{:>5}  {:<19}  {:<16} {:>4}  {:<26} {:<10} reason",
                "n", "time (UTC)", "rollout", "wave", "decision", "by"
            );
            for e in entries {
                let x = &e["entry"];
                let at = utc(x["at"].as_u64().unwrap_or(0));
                if x["rollout"].is_string() {
                    println!(
                        "{:>5}  {at:<19}  {:<16} {:>4}  {:<26} {:<10} {}",
                        e["n"],
                        x["rollout"].as_str().unwrap_or(""),
                        x["wave"].as_u64().map(|w| w + 1).unwrap_or(0),
                        decision(&x["decision"]),
                        actor(&x["by"]),
                        x["reason"].as_str().unwrap_or("")
                    );
                } else {
                    println!("{:>5}  {at:<19}  {:<16} {:>4}  {}", e["n"], "-", "-", other(x));
                }
            }
        }
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

//! `outpost audit [--rollout ID]`: the append-only decision log, as a table for people or JSON.

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

fn decision(d: &serde_json::Value) -> String {
    match d {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Object(o) => o
            .iter()
            .next()
            .map(|(k, v)| {
                let args: Vec<String> =
                    v.as_object().map(|a| a.iter().map(|(k, v)| format!("{k}={v}")).collect()).unwrap_or_default();
                if args.is_empty() { k.clone() } else { format!("{k}({})", args.join(",")) }
            })
            .unwrap_or_default(),
        other => other.to_string(),
    }
}

fn actor(by: &serde_json::Value) -> String {
    by.as_str().map(str::to_lowercase).or_else(|| by["Operator"].as_str().map(str::to_owned)).unwrap_or_default()
}

pub fn run(remote: &Remote, rollout: Option<&str>, output: Output) -> Result<(), Failure> {
    let log = remote.get("/api/v1/audit")?;
    let entries: Vec<&serde_json::Value> = log
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| rollout.is_none_or(|id| e["entry"]["rollout"].as_str() == Some(id)))
        .collect();
    if let Some(id) = rollout
        && entries.is_empty()
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
                if x["rollout"].is_string() {
                    println!(
                        "{:>5}  {:<19}  {:<16} {:>4}  {:<26} {:<10} {}",
                        e["n"],
                        utc(x["at"].as_u64().unwrap_or(0)),
                        x["rollout"].as_str().unwrap_or(""),
                        x["wave"].as_u64().map(|w| w + 1).unwrap_or(0),
                        decision(&x["decision"]),
                        actor(&x["by"]),
                        x["reason"].as_str().unwrap_or("")
                    );
                } else {
                    // Entries of other kinds (enrollment, bundles) as they were recorded.
                    println!("{:>5}  {x}", e["n"]);
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
}

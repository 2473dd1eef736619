//! Human durations on the command line (`90d`, `12h`, `30m`, `45s`) and UTC times (`2026-12-06 08:00:00`).

use std::time::Duration;

pub fn parse(s: &str) -> Result<Duration, String> {
    let bad = || format!("duration {s:?} is not a number followed by s, m, h or d (e.g. 90d)");
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(bad()),
    };
    Ok(Duration::from_secs(secs))
}

/// `45s`, `5m`, `2h10m`, `3d4h`: how long, to the unit that matters (the inverse of [`parse`] where exact).
pub fn format(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 if secs.is_multiple_of(60) => format!("{}m", secs / 60),
        60..3600 => format!("{}m{}s", secs / 60, secs % 60),
        3600..86_400 if secs.is_multiple_of(3600) => format!("{}h", secs / 3600),
        3600..86_400 => format!("{}h{}m", secs / 3600, secs % 3600 / 60),
        _ if secs.is_multiple_of(86_400) => format!("{}d", secs / 86_400),
        _ => format!("{}d{}h", secs / 86_400, secs % 86_400 / 3600),
    }
}

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

#[cfg(test)]
mod tests {
    #[test]
    fn durations_read_like_people_write_them() {
        let d = super::format;
        assert_eq!(
            [d(0), d(45), d(300), d(330), d(7_200), d(7_800), d(86_400), d(273_600)],
            ["0s", "45s", "5m", "5m30s", "2h", "2h10m", "1d", "3d4h"]
        );
    }

    #[test]
    fn durations_parse_with_units_and_refuse_anything_else() {
        assert_eq!(super::parse("90d").unwrap().as_secs(), 90 * 86_400);
        assert_eq!(super::parse("45s").unwrap().as_secs(), 45);
        for bad in ["", "90", "d", "1.5h", "10y", "-1d"] {
            assert!(super::parse(bad).is_err(), "{bad}");
        }
    }
}

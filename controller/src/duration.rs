//! Human durations on the command line: `90d`, `12h`, `30m`, `45s`.

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

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

#[cfg(test)]
mod tests {
    #[test]
    fn durations_parse_with_units_and_refuse_anything_else() {
        assert_eq!(super::parse("90d").unwrap().as_secs(), 90 * 86_400);
        assert_eq!(super::parse("45s").unwrap().as_secs(), 45);
        for bad in ["", "90", "d", "1.5h", "10y", "-1d"] {
            assert!(super::parse(bad).is_err(), "{bad}");
        }
    }
}

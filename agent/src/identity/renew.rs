//! Certificate renewal. Device certificates expire (a year by default), so the agent renews its own from
//! two thirds of its lifetime on, over the enrollment endpoint with the key the certificate names; the
//! controller issues a new one in the second half of the old one's lifetime (asking earlier gets the same
//! one back). The link reads the certificate again at every reconnect, so the new one is used from the
//! next connection on, before the old one expires. The validity is read from the certificate's DER
//! directly: the agent carries no X.509 crate.

use super::Paths;
use super::enroll::{self, EnrollConfig, Facts};
use crate::link::LinkConfig;
use crate::link::backoff::Backoff;
use std::time::Duration;

/// When to renew a certificate valid `from..to`: two thirds into its lifetime. The controller renews from
/// half way, so a device clock up to a sixth of the lifetime ahead still asks inside its window.
pub fn renew_at(from: u64, to: u64) -> u64 {
    to.saturating_sub(to.saturating_sub(from) / 3)
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Renews the certificate in `paths` whenever it is due, for as long as the agent runs.
pub async fn renew_forever(link: LinkConfig, cfg: EnrollConfig, paths: Paths, facts: Facts, seed: u64) {
    // After a renewal that brought no newer certificate (a controller clock behind the device's), wait.
    let mut same = Backoff::new(Duration::from_secs(10), Duration::from_secs(3600), seed);
    loop {
        let Some((from, to)) = std::fs::read_to_string(paths.cert()).ok().and_then(|pem| validity(&pem)) else {
            tracing::warn!(cert = %paths.cert().display(), "cannot read the certificate's validity; not renewing it");
            tokio::time::sleep(Duration::from_secs(3600)).await;
            continue;
        };
        let (due, t) = (renew_at(from, to), now());
        if t < due {
            // Wake up at least hourly: the wall clock may jump (NTP after a cold boot).
            tokio::time::sleep(Duration::from_secs((due - t).min(3600))).await;
            continue;
        }
        tracing::info!(device = %link.device, valid_until = to, "renewing the device certificate");
        enroll::enroll(&link, &cfg, &paths, &facts, seed.wrapping_add(t)).await;
        match std::fs::read_to_string(paths.cert()).ok().and_then(|pem| validity(&pem)) {
            Some((_, new_to)) if new_to > to => {
                tracing::info!(device = %link.device, valid_until = new_to, "device certificate renewed");
                same.reset();
            }
            _ => tokio::time::sleep(same.next_delay()).await,
        }
    }
}

/// The (notBefore, notAfter) of a PEM certificate, in Unix seconds.
pub fn validity(cert_pem: &str) -> Option<(u64, u64)> {
    let (label, der) = pem_rfc7468::decode_vec(cert_pem.as_bytes()).ok()?;
    if label != "CERTIFICATE" {
        return None;
    }
    let (cert, _) = tlv(&der, 0x30)?;
    let (tbs, _) = tlv(cert, 0x30)?;
    // TBSCertificate: [0] version (optional), serialNumber, signature, issuer, validity, ...
    let mut rest = tbs;
    if rest.first() == Some(&0xa0) {
        rest = skip(rest)?;
    }
    for _ in 0..3 {
        rest = skip(rest)?;
    }
    let (validity, _) = tlv(rest, 0x30)?;
    let (from, after) = time(validity)?;
    let (to, _) = time(after)?;
    Some((from, to))
}

/// The content and the rest of a DER element with tag `tag` (definite lengths up to 64 KiB).
fn tlv(b: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    if *b.first()? != tag {
        return None;
    }
    let (len, header): (usize, usize) = match *b.get(1)? {
        n if n < 0x80 => (usize::from(n), 2),
        0x81 => (usize::from(*b.get(2)?), 3),
        0x82 => (usize::from(u16::from_be_bytes([*b.get(2)?, *b.get(3)?])), 4),
        _ => return None,
    };
    let end = header.checked_add(len)?;
    Some((b.get(header..end)?, b.get(end..)?))
}

fn skip(b: &[u8]) -> Option<&[u8]> {
    tlv(b, *b.first()?).map(|(_, rest)| rest)
}

/// A UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) as Unix seconds, and what follows.
fn time(b: &[u8]) -> Option<(u64, &[u8])> {
    let tag = *b.first()?;
    let (content, rest) = tlv(b, tag)?;
    let s = std::str::from_utf8(content).ok()?.strip_suffix('Z')?;
    let (year, s) = match tag {
        0x17 => {
            let yy: u64 = s.get(..2)?.parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, s.get(2..)?)
        }
        0x18 => (s.get(..4)?.parse().ok()?, s.get(4..)?),
        _ => return None,
    };
    let n = |i: usize| s.get(i..i + 2)?.parse::<u64>().ok();
    if s.len() != 10 {
        return None;
    }
    let (month, day, h, m, sec) = (n(0)?, n(2)?, n(4)?, n(6)?, n(8)?);
    Some((days_from_civil(year, month, day)? * 86_400 + h * 3600 + m * 60 + sec, rest))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: u64, m: u64, d: u64) -> Option<u64> {
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || y < 1970 {
        return None;
    }
    let y = if m <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).checked_sub(719_468)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(not_before: i64, not_after: i64) -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["dev-1".into()]).unwrap();
        p.not_before = time::OffsetDateTime::from_unix_timestamp(not_before).unwrap();
        p.not_after = time::OffsetDateTime::from_unix_timestamp(not_after).unwrap();
        p.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn the_validity_is_read_from_utc_and_generalized_times() {
        // 2026 is a UTCTime, 2051 a GeneralizedTime (RFC 5280: from 2050 on).
        for (from, to) in [(1_760_000_000, 1_791_536_000), (1_760_000_000, 2_556_143_999), (86_400, 951_782_400)] {
            assert_eq!(validity(&cert(from, to)), Some((from as u64, to as u64)), "{from}..{to}");
        }
        assert_eq!(validity("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), None);
        assert_eq!(validity("not pem"), None);
    }

    #[test]
    fn renewal_starts_two_thirds_into_the_lifetime() {
        assert_eq!(renew_at(0, 300), 200);
        assert_eq!(renew_at(1_000, 1_090), 1_060);
        assert_eq!(renew_at(500, 100), 100, "a backwards validity renews at once");
    }
}

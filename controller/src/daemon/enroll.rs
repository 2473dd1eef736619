//! Enrollment decisions, pure: tokens (made, hashed, checked) and what to answer a device that asks for
//! its identity, given what the registry knows of it. The shell (`enrollment.rs`) stores, issues and
//! publishes.

use outpost_protocol::UnixTime;
use outpost_protocol::enroll::EnrollRefusal;
use serde::{Deserialize, Serialize};

/// Tokens are `opt_` and 32 random bytes in hex (68 characters): recognisable in a file or a leak scan.
pub const TOKEN_PREFIX: &str = "opt_";

/// An enrollment token as stored: only its SHA-256 (a stolen database does not enroll anything).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollToken {
    /// The first 12 hex characters of the hash: names the token in the audit log and `enroll-token list`.
    pub id: String,
    pub hash: String,
    pub created: UnixTime,
    pub expires: UnixTime,
    pub auto_approve: bool,
    /// Devices that enrolled (or asked for approval) with it.
    #[serde(default)]
    pub uses: u64,
    /// How many devices may use it (`None`: a token from before caps existed, unlimited).
    #[serde(default)]
    pub max_uses: Option<u64>,
    /// Device ids it may enroll: exact ids, or patterns where `*` stands for any run of characters
    /// (`dev-*`). Empty: any id.
    #[serde(default)]
    pub devices: Vec<String>,
}

/// A token's limits, as the operator asks for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenLimits {
    pub lifetime_secs: u64,
    pub auto_approve: bool,
    pub max_uses: u64,
    pub devices: Vec<String>,
}

/// The default use cap of a new token: an image builder puts one token in every image, so a leaked image
/// enrolls at most this many devices (`--max-uses` sets it).
pub const DEFAULT_MAX_USES: u64 = 100;

pub fn hash(secret: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(secret.trim().as_bytes()))
}

/// A new token from 32 random bytes: the secret (shown once) and its stored form.
pub fn new_token(random: [u8; 32], now: UnixTime, limits: &TokenLimits) -> (String, EnrollToken) {
    let secret = format!("{TOKEN_PREFIX}{}", hex::encode(random));
    let hash = hash(&secret);
    let token = EnrollToken {
        id: hash[..12].to_owned(),
        hash,
        created: now,
        expires: now.saturating_add(limits.lifetime_secs),
        auto_approve: limits.auto_approve,
        uses: 0,
        max_uses: Some(limits.max_uses),
        devices: limits.devices.clone(),
    };
    (secret, token)
}

/// Whether `id` matches `pattern`: exact, or with `*` standing for any run of characters.
pub fn id_matches(pattern: &str, id: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = id.strip_prefix(first) else { return false };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else { return rest.is_empty() };
    for p in middle {
        match rest.find(p) {
            Some(i) => rest = &rest[i + p.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Checks a presented secret's stored token (`None`: no such token) for `device`. `first_use`: the
/// request would count as a new use (the device is not registered with it yet), so the cap applies.
pub fn check_token<'a>(
    stored: Option<&'a EnrollToken>,
    device: &str,
    first_use: bool,
    now: UnixTime,
) -> Result<&'a EnrollToken, (EnrollRefusal, String)> {
    match stored {
        None => Err((EnrollRefusal::InvalidToken, "no such enrollment token".into())),
        // Expired tokens stop working even if leaked later: a short --expires bounds the exposure.
        Some(t) if now >= t.expires => Err((
            EnrollRefusal::ExpiredToken,
            format!("enrollment token {} expired at {} (now {now})", t.id, t.expires),
        )),
        Some(t) if !t.devices.is_empty() && !t.devices.iter().any(|p| id_matches(p, device)) => Err((
            EnrollRefusal::DeviceNotAllowed,
            format!("enrollment token {} is for device ids {} only", t.id, t.devices.join(", ")),
        )),
        Some(t) if first_use && t.max_uses.is_some_and(|m| t.uses >= m) => Err((
            EnrollRefusal::TokenUsedUp,
            format!("enrollment token {} was used by {} device(s), all it allows", t.id, t.uses),
        )),
        Some(t) => Ok(t),
    }
}

/// Where a device stands with its identity. Devices that joined without enrollment (quick start, or
/// certificates from `outpost certs issue`) are `Unenrolled`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    #[default]
    Unenrolled,
    /// Asked with a token that needs an operator's approval, or claimed an id the registry already knew.
    Pending,
    /// Approved by the operator; the certificate goes out on the device's next request.
    Approved,
    Enrolled,
    /// Refused for good: its messages are ignored, its certificates are on the CRL, it never enrolls again.
    Revoked {
        at: UnixTime,
    },
}

impl Status {
    pub fn label(&self) -> &'static str {
        match self {
            Status::Unenrolled => "unenrolled",
            Status::Pending => "pending",
            Status::Approved => "approved",
            Status::Enrolled => "enrolled",
            Status::Revoked { .. } => "revoked",
        }
    }
}

/// Serials kept per device in the registry (the CA's `issued.jsonl` has all of them, for the CRL).
pub const SERIALS_KEPT: usize = 8;

/// A device's identity as the registry keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrollment {
    pub status: Status,
    /// SHA-256 of the device's public key: the id is bound to this key once it asked.
    pub key: Option<String>,
    /// Which token it used.
    pub token: Option<String>,
    pub requested: UnixTime,
    /// Serials of the latest certificates issued to it (at most [`SERIALS_KEPT`]).
    pub serials: Vec<String>,
    /// The latest certificate (PEM, public) and its validity: sent again to a device that asks before
    /// its renewal window, instead of a new one.
    #[serde(default)]
    pub certificate: Option<String>,
    #[serde(default)]
    pub not_before: Option<UnixTime>,
    #[serde(default)]
    pub not_after: Option<UnixTime>,
    /// Pending because it claims an id the registry knew before (it said hello): only an operator may
    /// give a known id to a key.
    #[serde(default)]
    pub claim: bool,
}

/// Whether a certificate valid `not_before..not_after` may be renewed at `now`: in the second half of its
/// lifetime, or expired. Agents ask from two thirds of it on, so they are always inside.
pub fn renewal_due(not_before: UnixTime, not_after: UnixTime, now: UnixTime) -> bool {
    now >= not_after.saturating_sub(not_after.saturating_sub(not_before) / 2)
}

/// What the registry and the CA know of the id asking.
#[derive(Debug, Clone, Default)]
pub struct Known<'a> {
    pub current: Enrollment,
    /// The registry has a record of the id that is not bound to a key (it said hello).
    pub seen: bool,
    /// The newest unexpired certificate `outpost certs issue` made for the id: (key, not_before,
    /// not_after). Its key is bound to the id just as an enrolled key is.
    pub hand_issued: Option<(&'a str, UnixTime, UnixTime)>,
}

/// What to answer one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Issue a certificate (and record the device as enrolled); `renewal` when it replaces one.
    Issue {
        renewal: bool,
    },
    /// Send the latest certificate again: the device asked before its renewal window (a lost answer).
    Resend,
    /// Record the request and wait for the operator; `claim` when the id was known before.
    Pending {
        claim: bool,
    },
    Refuse(EnrollRefusal, String),
}

/// The answer to a request whose CSR passed its checks and carried the key `key`, at `now`. `token`
/// checks the presented token, told whether this request would be a first use; it is called only when
/// the token matters.
pub fn decide(
    known: &Known,
    key: &str,
    now: UnixTime,
    token: impl FnOnce(bool) -> Result<(String, bool), (EnrollRefusal, String)>,
) -> Decision {
    let current = &known.current;
    if let Status::Revoked { at } = current.status {
        return Decision::Refuse(EnrollRefusal::Revoked, format!("this device was revoked at {at}"));
    }
    let bound = matches!(current.status, Status::Pending | Status::Approved | Status::Enrolled);
    // A valid token does not let anyone take over an id that already has a key: the id stays bound to
    // the first key that asked, or the key of its hand-issued certificate (an operator revokes, and a new
    // id enrolls, to replace hardware).
    if bound && current.key.as_deref() != Some(key) {
        return Decision::Refuse(
            EnrollRefusal::KeyMismatch,
            format!("this device id is {} with another key", current.status.label()),
        );
    }
    if let (false, Some((hand_key, from, to))) = (bound, known.hand_issued) {
        if hand_key != key {
            return Decision::Refuse(
                EnrollRefusal::KeyMismatch,
                "this device id has a certificate from `outpost certs issue` for another key".into(),
            );
        }
        // Its own key: a renewal of the hand-issued certificate, in its window only.
        return if renewal_due(from, to, now) {
            Decision::Issue { renewal: true }
        } else {
            Decision::Refuse(
                EnrollRefusal::NotDue,
                format!("its certificate is valid until {to}; renew after {}", to - (to - from) / 2),
            )
        };
    }
    match current.status {
        // Approval happened: the token is not needed again.
        Status::Approved => Decision::Issue { renewal: false },
        // The key matches (the CSR proved possession). A new certificate only in the renewal window;
        // before it, the latest one again (a lost answer), so asking in a loop issues nothing new.
        Status::Enrolled => match (current.not_before, current.not_after, &current.certificate) {
            (Some(from), Some(to), _) if renewal_due(from, to, now) => Decision::Issue { renewal: true },
            (Some(_), Some(_), Some(_)) => Decision::Resend,
            // Enrolled before certificates were kept: one new certificate, then the rule above holds.
            _ => Decision::Issue { renewal: true },
        },
        Status::Pending => match token(false) {
            Err((reason, detail)) => Decision::Refuse(reason, detail),
            Ok(_) => Decision::Pending { claim: current.claim },
        },
        Status::Unenrolled | Status::Revoked { .. } => match token(true) {
            Err((reason, detail)) => Decision::Refuse(reason, detail),
            // An id the registry knew (it said hello) is not given to a key on a token alone.
            Ok(_) if known.seen => Decision::Pending { claim: true },
            Ok((_, true)) => Decision::Issue { renewal: false },
            Ok((_, false)) => Decision::Pending { claim: false },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: UnixTime = 1_000_000;

    fn with(status: Status, key: &str) -> Known<'static> {
        Known { current: Enrollment { status, key: Some(key.into()), ..Enrollment::default() }, ..Known::default() }
    }

    fn limits(auto_approve: bool) -> TokenLimits {
        TokenLimits { lifetime_secs: 3600, auto_approve, max_uses: 2, devices: vec![] }
    }

    fn ok(auto: bool) -> impl FnOnce(bool) -> Result<(String, bool), (EnrollRefusal, String)> {
        move |_| Ok(("t".into(), auto))
    }

    fn refused(d: Decision) -> EnrollRefusal {
        match d {
            Decision::Refuse(r, _) => r,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn a_token_is_stored_only_as_its_hash_and_checks_by_it() {
        let (secret, t) = new_token([7; 32], 100, &limits(true));
        assert!(secret.starts_with(TOKEN_PREFIX) && secret.len() == 68);
        assert!(!serde_json::to_string(&t).unwrap().contains(&secret[4..]), "the secret is not stored");
        assert_eq!(t.hash, hash(&secret));
        assert_eq!(hash(&format!("{secret}\n")), t.hash, "a trailing newline from a token file is ignored");
        assert_eq!(check_token(Some(&t), "d", true, 200).unwrap().id, t.id);
    }

    #[test]
    fn unknown_expired_used_up_and_foreign_tokens_are_refused_with_their_own_reason() {
        let (_, mut t) = new_token([7; 32], 100, &TokenLimits { lifetime_secs: 60, ..limits(false) });
        assert_eq!(check_token(None, "d", true, 120).unwrap_err().0, EnrollRefusal::InvalidToken);
        let (reason, detail) = check_token(Some(&t), "d", true, 160).unwrap_err();
        assert_eq!(reason, EnrollRefusal::ExpiredToken);
        assert!(detail.contains(&t.id), "{detail}");
        t.uses = 2;
        assert_eq!(check_token(Some(&t), "d", true, 120).unwrap_err().0, EnrollRefusal::TokenUsedUp);
        assert!(check_token(Some(&t), "d", false, 120).is_ok(), "a device already counted asks again");
        t.uses = 0;
        t.devices = vec!["site1-*".into(), "spare".into()];
        assert!(check_token(Some(&t), "site1-cam-4", true, 120).is_ok());
        assert!(check_token(Some(&t), "spare", true, 120).is_ok());
        assert_eq!(check_token(Some(&t), "site2-cam-4", true, 120).unwrap_err().0, EnrollRefusal::DeviceNotAllowed);
        assert_eq!(check_token(Some(&t), "spare-2", true, 120).unwrap_err().0, EnrollRefusal::DeviceNotAllowed);
    }

    #[test]
    fn id_patterns_match_whole_ids_with_stars_for_any_run() {
        for (pattern, id, want) in [
            ("dev-*", "dev-1", true),
            ("dev-*", "dev-", true),
            ("dev-*", "xdev-1", false),
            ("*-cam", "site-cam", true),
            ("*-cam", "site-cam-2", false),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "acb", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("*", "anything", true),
        ] {
            assert_eq!(id_matches(pattern, id), want, "{pattern} ~ {id}");
        }
    }

    #[test]
    fn a_new_device_is_issued_with_an_auto_approve_token_and_waits_with_another() {
        let new = Known::default();
        assert_eq!(decide(&new, "k", NOW, ok(true)), Decision::Issue { renewal: false });
        assert_eq!(decide(&new, "k", NOW, ok(false)), Decision::Pending { claim: false });
        let invalid = |_| Err((EnrollRefusal::InvalidToken, "no".to_string()));
        assert_eq!(refused(decide(&new, "k", NOW, invalid)), EnrollRefusal::InvalidToken);
    }

    #[test]
    fn an_id_that_said_hello_is_claimed_only_with_approval_whatever_the_token() {
        let seen = Known { seen: true, ..Known::default() };
        assert_eq!(decide(&seen, "k", NOW, ok(true)), Decision::Pending { claim: true });
        let pending = Known { current: Enrollment { claim: true, ..with(Status::Pending, "k").current }, ..seen };
        assert_eq!(decide(&pending, "k", NOW, ok(true)), Decision::Pending { claim: true }, "stays pending");
    }

    #[test]
    fn a_hand_issued_certificate_binds_its_key() {
        let hand = Known { hand_issued: Some(("k1", NOW - 10, NOW + 1_000)), ..Known::default() };
        assert_eq!(refused(decide(&hand, "k2", NOW, ok(true))), EnrollRefusal::KeyMismatch);
        assert_eq!(refused(decide(&hand, "k1", NOW, ok(true))), EnrollRefusal::NotDue, "renewal only in the window");
        assert_eq!(decide(&hand, "k1", NOW + 600, ok(true)), Decision::Issue { renewal: true });
    }

    #[test]
    fn a_pending_device_stays_pending_until_approved_then_gets_its_certificate_without_the_token() {
        let pending = with(Status::Pending, "k");
        assert_eq!(decide(&pending, "k", NOW, ok(false)), Decision::Pending { claim: false });
        assert_eq!(
            decide(&pending, "k", NOW, ok(true)),
            Decision::Pending { claim: false },
            "only an operator approves"
        );
        let no_token = |_| -> Result<(String, bool), (EnrollRefusal, String)> { panic!("the token is not needed") };
        assert_eq!(decide(&with(Status::Approved, "k"), "k", NOW, no_token), Decision::Issue { renewal: false });
    }

    #[test]
    fn an_enrolled_key_gets_its_certificate_again_before_the_window_and_a_new_one_in_it() {
        let mut enrolled = with(Status::Enrolled, "k");
        enrolled.current.not_before = Some(NOW);
        enrolled.current.not_after = Some(NOW + 1_000);
        enrolled.current.certificate = Some("pem".into());
        let no_token = |_| -> Result<(String, bool), (EnrollRefusal, String)> { panic!("the token is not needed") };
        assert_eq!(decide(&enrolled, "k", NOW + 10, no_token), Decision::Resend, "a lost answer, nothing new");
        assert_eq!(decide(&enrolled, "k", NOW + 499, no_token), Decision::Resend);
        assert_eq!(decide(&enrolled, "k", NOW + 500, no_token), Decision::Issue { renewal: true });
        assert_eq!(decide(&enrolled, "k", NOW + 5_000, no_token), Decision::Issue { renewal: true }, "expired too");
        assert!(renewal_due(0, 100, 50) && !renewal_due(0, 100, 49));
    }

    #[test]
    fn another_key_cannot_take_over_a_known_id_even_with_a_valid_token() {
        for status in [Status::Pending, Status::Approved, Status::Enrolled] {
            let d = decide(&with(status.clone(), "k1"), "k2", NOW, ok(true));
            assert_eq!(refused(d), EnrollRefusal::KeyMismatch, "{status:?}");
        }
    }

    #[test]
    fn a_revoked_device_never_enrolls_again_whatever_it_presents() {
        let revoked = with(Status::Revoked { at: 5 }, "k");
        for key in ["k", "k2"] {
            assert_eq!(refused(decide(&revoked, key, NOW, ok(true))), EnrollRefusal::Revoked);
        }
    }
}

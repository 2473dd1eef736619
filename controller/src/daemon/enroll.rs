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
}

pub fn hash(secret: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(secret.trim().as_bytes()))
}

/// A new token from 32 random bytes: the secret (shown once) and its stored form.
pub fn new_token(random: [u8; 32], now: UnixTime, lifetime_secs: u64, auto_approve: bool) -> (String, EnrollToken) {
    let secret = format!("{TOKEN_PREFIX}{}", hex::encode(random));
    let hash = hash(&secret);
    let token = EnrollToken {
        id: hash[..12].to_owned(),
        hash,
        created: now,
        expires: now.saturating_add(lifetime_secs),
        auto_approve,
        uses: 0,
    };
    (secret, token)
}

/// Checks a presented secret against the stored token with its hash (`None`: no such token).
pub fn check_token(stored: Option<&EnrollToken>, now: UnixTime) -> Result<&EnrollToken, (EnrollRefusal, String)> {
    match stored {
        None => Err((EnrollRefusal::InvalidToken, "no such enrollment token".into())),
        // Expired tokens stop working even if leaked later: a short --expires bounds the exposure.
        Some(t) if now >= t.expires => Err((
            EnrollRefusal::ExpiredToken,
            format!("enrollment token {} expired at {} (now {now})", t.id, t.expires),
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
    /// Asked with a token that needs an operator's approval.
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

/// A device's identity as the registry keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrollment {
    pub status: Status,
    /// SHA-256 of the device's public key: the id is bound to this key once it asked.
    pub key: Option<String>,
    /// Which token it used.
    pub token: Option<String>,
    pub requested: UnixTime,
    /// Serials of the certificates issued to it.
    pub serials: Vec<String>,
}

/// What to answer one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Issue the certificate (and record the device as enrolled).
    Issue,
    /// Record the request and wait for the operator.
    Pending,
    Refuse(EnrollRefusal, String),
}

/// The answer to a request whose CSR passed its checks and carried the key `key`. `token` is the result
/// of `check_token` for the token presented (its id and auto-approve flag when valid).
pub fn decide(current: &Enrollment, key: &str, token: Result<(&str, bool), (EnrollRefusal, String)>) -> Decision {
    if let Status::Revoked { at } = current.status {
        return Decision::Refuse(EnrollRefusal::Revoked, format!("this device was revoked at {at}"));
    }
    let bound = matches!(current.status, Status::Pending | Status::Approved | Status::Enrolled);
    // A valid token does not let anyone take over an id that already has a key: the id stays bound to
    // the first key that asked (an operator revokes, and a new id enrolls, to replace hardware).
    if bound && current.key.as_deref() != Some(key) {
        return Decision::Refuse(
            EnrollRefusal::KeyMismatch,
            format!("this device id is {} with another key", current.status.label()),
        );
    }
    match current.status {
        // The key matches (the CSR proved possession): approval or an earlier issue already happened, so
        // the token is not needed again. This also repeats a certificate whose answer was lost.
        Status::Approved | Status::Enrolled => Decision::Issue,
        _ => match token {
            Err((reason, detail)) => Decision::Refuse(reason, detail),
            Ok((_, true)) => Decision::Issue,
            Ok((_, false)) => Decision::Pending,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(status: Status, key: &str) -> Enrollment {
        Enrollment { status, key: Some(key.into()), ..Enrollment::default() }
    }

    #[test]
    fn a_token_is_stored_only_as_its_hash_and_checks_by_it() {
        let (secret, t) = new_token([7; 32], 100, 3600, true);
        assert!(secret.starts_with(TOKEN_PREFIX) && secret.len() == 68);
        assert!(!serde_json::to_string(&t).unwrap().contains(&secret[4..]), "the secret is not stored");
        assert_eq!(t.hash, hash(&secret));
        assert_eq!(hash(&format!("{secret}\n")), t.hash, "a trailing newline from a token file is ignored");
        assert_eq!(check_token(Some(&t), 200).unwrap().id, t.id);
    }

    #[test]
    fn unknown_and_expired_tokens_are_refused_with_their_own_reason() {
        let (_, t) = new_token([7; 32], 100, 60, false);
        assert_eq!(check_token(None, 120).unwrap_err().0, EnrollRefusal::InvalidToken);
        let (reason, detail) = check_token(Some(&t), 160).unwrap_err();
        assert_eq!(reason, EnrollRefusal::ExpiredToken);
        assert!(detail.contains(&t.id), "{detail}");
    }

    #[test]
    fn a_new_device_is_issued_with_an_auto_approve_token_and_waits_with_another() {
        let new = Enrollment::default();
        assert_eq!(decide(&new, "k", Ok(("t", true))), Decision::Issue);
        assert_eq!(decide(&new, "k", Ok(("t", false))), Decision::Pending);
        let refused = decide(&new, "k", Err((EnrollRefusal::InvalidToken, "no".into())));
        assert!(matches!(refused, Decision::Refuse(EnrollRefusal::InvalidToken, _)));
    }

    #[test]
    fn a_pending_device_stays_pending_until_approved_then_gets_its_certificate_without_the_token() {
        let pending = with(Status::Pending, "k");
        assert_eq!(decide(&pending, "k", Ok(("t", false))), Decision::Pending);
        let approved = with(Status::Approved, "k");
        let expired = Err((EnrollRefusal::ExpiredToken, "expired".into()));
        assert_eq!(decide(&approved, "k", expired.clone()), Decision::Issue);
        assert_eq!(decide(&with(Status::Enrolled, "k"), "k", expired), Decision::Issue, "a lost answer is repeated");
    }

    #[test]
    fn another_key_cannot_take_over_a_known_id_even_with_a_valid_token() {
        for status in [Status::Pending, Status::Approved, Status::Enrolled] {
            let d = decide(&with(status.clone(), "k1"), "k2", Ok(("t", true)));
            assert!(matches!(d, Decision::Refuse(EnrollRefusal::KeyMismatch, _)), "{status:?}: {d:?}");
        }
    }

    #[test]
    fn a_revoked_device_never_enrolls_again_whatever_it_presents() {
        let revoked = with(Status::Revoked { at: 5 }, "k");
        for key in ["k", "k2"] {
            let d = decide(&revoked, key, Ok(("t", true)));
            assert!(matches!(d, Decision::Refuse(EnrollRefusal::Revoked, _)), "{d:?}");
        }
    }
}

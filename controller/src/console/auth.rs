//! Who is asking: the API token (operator `admin`), a per-operator token, or a console session.
//!
//! - Tokens come as `Authorization: Bearer <token>` (CLI, scripts, Prometheus). Browsers never attach that
//!   header by themselves, so token requests need no CSRF defence.
//! - A person signs in on the console with a token and gets a session: a random id in an `HttpOnly`,
//!   `SameSite=Strict` cookie (`Secure` when the listener serves TLS). Only the id's SHA-256 is kept, in
//!   memory: a restart signs everyone out. Sessions end after [`SESSION_IDLE_SECS`] without use and at
//!   most [`SESSION_MAX_SECS`] after sign-in.
//! - A request that changes something with a session cookie must also carry the session's CSRF token in
//!   `X-Outpost-CSRF` (the page reads it from `/console/session`). Another site can neither read that
//!   token nor set a custom header on a cross-site request without a CORS preflight, which is never
//!   granted; `SameSite=Strict` keeps the cookie off cross-site requests as a second wall.
//! - Operator tokens are stored hashed in `<data>/operators.json` (mode 0600). Only `admin` (the API
//!   token) adds or removes operators. Everything an operator does is audited with their name.

use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

pub const COOKIE: &str = "outpost_session";
pub const CSRF_HEADER: &str = "x-outpost-csrf";
pub const SESSION_IDLE_SECS: u64 = 8 * 3600;
pub const SESSION_MAX_SECS: u64 = 24 * 3600;
/// The operator name of the API token.
pub const ADMIN: &str = "admin";

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    pub name: String,
    /// Signed in through the console (a cookie), as opposed to a bearer token.
    pub session: bool,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct OperatorEntry {
    pub name: String,
    /// Hex SHA-256 of the token; the token itself is shown once, when made.
    pub token_sha256: String,
    pub created: u64,
}

#[derive(Debug)]
struct Session {
    operator: String,
    csrf: String,
    started: u64,
    last_used: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No credentials, or wrong ones: 401.
    Unauthenticated,
    /// A session without the CSRF token on a request that changes something: 403.
    Csrf,
}

#[derive(Debug)]
pub struct Access {
    admin_sha256: [u8; 32],
    operators_file: PathBuf,
    operators: Mutex<Vec<OperatorEntry>>,
    sessions: Mutex<HashMap<[u8; 32], Session>>,
    /// The listener serves TLS: session cookies get `Secure`.
    pub tls: bool,
}

fn sha256(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

pub fn random_hex(bytes: usize) -> Result<String, String> {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).map_err(|e| format!("no OS randomness: {e}"))?;
    Ok(hex::encode(b))
}

/// Operator names: what an audit entry and a label carry; no spaces or markup.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name != ADMIN
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
}

impl Access {
    pub fn open(data_dir: &std::path::Path, admin_token: &str, tls: bool) -> anyhow::Result<Access> {
        let operators_file = data_dir.join("operators.json");
        let operators = match std::fs::read(&operators_file) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", operators_file.display()))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => anyhow::bail!("{}: {e}", operators_file.display()),
        };
        Ok(Access {
            admin_sha256: sha256(admin_token),
            operators_file,
            operators: Mutex::new(operators),
            sessions: Mutex::default(),
            tls,
        })
    }

    /// The operator a token belongs to. Compares SHA-256 digests, so the time taken says nothing about
    /// how much of a guess was right.
    pub fn token_operator(&self, token: &str) -> Option<String> {
        let h = sha256(token);
        if h == self.admin_sha256 {
            return Some(ADMIN.into());
        }
        let hex = hex::encode(h);
        self.operators.lock().expect("operators").iter().find(|o| o.token_sha256 == hex).map(|o| o.name.clone())
    }

    /// Starts a session for a token; returns (session id for the cookie, CSRF token, operator).
    pub fn sign_in(&self, token: &str, now: u64) -> Result<(String, String, String), Refusal> {
        let operator = self.token_operator(token).ok_or(Refusal::Unauthenticated)?;
        let id = random_hex(32).map_err(|_| Refusal::Unauthenticated)?;
        let csrf = random_hex(24).map_err(|_| Refusal::Unauthenticated)?;
        let mut sessions = self.sessions.lock().expect("sessions");
        sessions.retain(|_, s| live(s, now));
        sessions.insert(
            sha256(&id),
            Session { operator: operator.clone(), csrf: csrf.clone(), started: now, last_used: now },
        );
        Ok((id, csrf, operator))
    }

    pub fn sign_out(&self, session_id: &str) -> Option<String> {
        self.sessions.lock().expect("sessions").remove(&sha256(session_id)).map(|s| s.operator)
    }

    /// The session's operator and CSRF token, if it is live (and marks it used).
    pub fn session(&self, session_id: &str, now: u64) -> Option<(String, String)> {
        let mut sessions = self.sessions.lock().expect("sessions");
        let key = sha256(session_id);
        let s = sessions.get_mut(&key)?;
        if !live(s, now) {
            sessions.remove(&key);
            return None;
        }
        s.last_used = now;
        Some((s.operator.clone(), s.csrf.clone()))
    }

    /// Decides a request: `bearer` from `Authorization`, `cookie` the session id from the Cookie header,
    /// `csrf` the `X-Outpost-CSRF` header, `safe` for GET and HEAD.
    pub fn authenticate(
        &self,
        bearer: Option<&str>,
        cookie: Option<&str>,
        csrf: Option<&str>,
        safe: bool,
        now: u64,
    ) -> Result<Operator, Refusal> {
        if let Some(token) = bearer {
            return self
                .token_operator(token)
                .map(|name| Operator { name, session: false })
                .ok_or(Refusal::Unauthenticated);
        }
        let (name, want) = cookie.and_then(|id| self.session(id, now)).ok_or(Refusal::Unauthenticated)?;
        if !safe && csrf.map(sha256) != Some(sha256(&want)) {
            return Err(Refusal::Csrf);
        }
        Ok(Operator { name, session: true })
    }

    pub fn operators(&self) -> Vec<OperatorEntry> {
        self.operators.lock().expect("operators").clone()
    }

    /// Adds an operator; returns their token (shown once).
    pub fn add_operator(&self, name: &str, now: u64) -> Result<String, String> {
        if !valid_name(name) {
            return Err(format!("{name:?} is not an operator name (1-64 of A-Z a-z 0-9 - _ . @; not {ADMIN:?})"));
        }
        let mut ops = self.operators.lock().expect("operators");
        if ops.iter().any(|o| o.name == name) {
            return Err(format!("operator {name} exists: remove it first to give them a new token"));
        }
        let token = random_hex(24)?;
        let mut next = ops.clone();
        next.push(OperatorEntry { name: name.into(), token_sha256: hex::encode(sha256(&token)), created: now });
        self.write(&next)?;
        *ops = next;
        Ok(token)
    }

    /// Removes an operator and ends their sessions.
    pub fn remove_operator(&self, name: &str) -> Result<(), String> {
        let mut ops = self.operators.lock().expect("operators");
        let next: Vec<_> = ops.iter().filter(|o| o.name != name).cloned().collect();
        if next.len() == ops.len() {
            return Err(format!("no operator {name}"));
        }
        self.write(&next)?;
        *ops = next;
        self.sessions.lock().expect("sessions").retain(|_, s| s.operator != name);
        Ok(())
    }

    fn write(&self, ops: &[OperatorEntry]) -> Result<(), String> {
        let bytes = serde_json::to_vec_pretty(ops).expect("serializable");
        crate::files::write_atomic(&self.operators_file, &bytes, Some(0o600)).map_err(|e| e.to_string())
    }

    /// The `Set-Cookie` value for a new session, or for clearing it (`id` = None).
    pub fn cookie(&self, id: Option<&str>) -> String {
        let secure = if self.tls { "; Secure" } else { "" };
        match id {
            Some(id) => format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={SESSION_MAX_SECS}{secure}"),
            None => format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
        }
    }
}

fn live(s: &Session, now: u64) -> bool {
    now < s.started + SESSION_MAX_SECS && now < s.last_used + SESSION_IDLE_SECS
}

/// The session id from a `Cookie` header.
pub fn session_cookie(header: &str) -> Option<&str> {
    header.split(';').map(str::trim).find_map(|kv| kv.strip_prefix(COOKIE)?.strip_prefix('='))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access() -> (Access, PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("outpost-access-{}-{}", std::process::id(), random_hex(4).unwrap()));
        std::fs::create_dir_all(&dir).unwrap();
        (Access::open(&dir, "admin-token", false).unwrap(), dir)
    }

    #[test]
    fn tokens_sessions_and_csrf_decide_who_may_do_what() {
        let (a, dir) = access();
        assert_eq!(a.authenticate(Some("admin-token"), None, None, false, 0).unwrap().name, "admin");
        assert_eq!(a.authenticate(Some("wrong"), None, None, true, 0), Err(Refusal::Unauthenticated));
        assert_eq!(a.authenticate(None, None, None, true, 0), Err(Refusal::Unauthenticated));
        let token = a.add_operator("ada", 0).unwrap();
        let (id, csrf, who) = a.sign_in(&token, 10).unwrap();
        assert_eq!(who, "ada");
        assert_eq!(
            a.authenticate(None, Some(&id), None, true, 11).unwrap(),
            Operator { name: "ada".into(), session: true }
        );
        assert_eq!(
            a.authenticate(None, Some(&id), None, false, 11),
            Err(Refusal::Csrf),
            "a change needs the CSRF token"
        );
        assert_eq!(a.authenticate(None, Some(&id), Some("guess"), false, 11), Err(Refusal::Csrf));
        assert!(a.authenticate(None, Some(&id), Some(&csrf), false, 11).is_ok());
        assert_eq!(a.authenticate(None, Some("forged"), Some(&csrf), false, 11), Err(Refusal::Unauthenticated));
        // Idle too long: the session is gone.
        assert_eq!(a.authenticate(None, Some(&id), None, true, 11 + SESSION_IDLE_SECS), Err(Refusal::Unauthenticated));
        // Operators persist hashed, and removing one ends their sessions and their token.
        let (id2, _, _) = a.sign_in(&token, 20).unwrap();
        let stored = std::fs::read_to_string(dir.join("operators.json")).unwrap();
        assert!(stored.contains("ada") && !stored.contains(&token));
        let reopened = Access::open(&dir, "admin-token", false).unwrap();
        assert_eq!(reopened.token_operator(&token).as_deref(), Some("ada"));
        a.remove_operator("ada").unwrap();
        assert_eq!(a.authenticate(None, Some(&id2), None, true, 21), Err(Refusal::Unauthenticated));
        assert_eq!(a.token_operator(&token), None);
        assert!(a.add_operator("admin", 0).is_err() && a.add_operator("a b", 0).is_err());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_cookie_is_http_only_same_site_and_secure_under_tls() {
        let (mut a, dir) = access();
        let c = a.cookie(Some("abc"));
        assert!(c.starts_with("outpost_session=abc;") && c.contains("HttpOnly") && c.contains("SameSite=Strict"));
        assert!(!c.contains("Secure"));
        a.tls = true;
        assert!(a.cookie(Some("abc")).contains("; Secure"));
        assert_eq!(session_cookie("a=1; outpost_session=xyz; b=2"), Some("xyz"));
        let _ = std::fs::remove_dir_all(dir);
    }
}

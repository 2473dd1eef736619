//! `keys gen` and `trust init`: the key files and the root-signed trust policy.

use super::ReleaseError;
use crate::files;
use outpost_protocol::keys::{self, KeyId, PrivateKey, PublicKey};
use outpost_protocol::trust::{self, POLICY_FORMAT, TrustPolicy};
use std::path::{Path, PathBuf};

/// A fresh key pair as `DIR/NAME.key` (PKCS#8 PEM, mode 0600) and `DIR/NAME.pub` (SPKI PEM).
/// Refuses to overwrite: losing a root or release key by a typo cannot be undone.
pub fn generate(dir: &Path, name: &str) -> Result<(PathBuf, PathBuf, KeyId), ReleaseError> {
    if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
        return Err(ReleaseError::Invalid(format!("key name {name:?} must be a plain file name")));
    }
    std::fs::create_dir_all(dir).map_err(|source| files::FileError { path: dir.to_owned(), source })?;
    let key_path = dir.join(format!("{name}.key"));
    let pub_path = dir.join(format!("{name}.pub"));
    for p in [&key_path, &pub_path] {
        if p.exists() {
            return Err(ReleaseError::Invalid(format!("{} exists; refusing to overwrite a key", p.display())));
        }
    }
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| ReleaseError::Invalid(format!("no OS randomness for a key: {e}")))?;
    let key = keys::private_key_from_seed(seed);
    files::write_atomic(&key_path, keys::private_key_to_pem(&key).as_bytes(), Some(0o600))?;
    files::write_atomic(&pub_path, keys::public_key_to_pem(&key.verifying_key()).as_bytes(), None)?;
    Ok((key_path, pub_path, KeyId::of(&key.verifying_key())))
}

pub fn read_private(path: &Path) -> Result<PrivateKey, ReleaseError> {
    Ok(keys::private_key_from_pem(&files::read_string(path)?, &path.display().to_string())?)
}

pub fn read_public(path: &Path) -> Result<PublicKey, ReleaseError> {
    Ok(keys::public_key_from_pem(&files::read_string(path)?, &path.display().to_string())?)
}

#[derive(Debug, Clone)]
pub struct TrustInit {
    pub root_keys: Vec<PathBuf>,
    pub release_pubs: Vec<PathBuf>,
    /// The controller's director public key(s): what signs reverts and removals for devices.
    pub director_pubs: Vec<PathBuf>,
    pub threshold: u8,
    pub version: u64,
    pub now: u64,
    pub lifetime_secs: u64,
    pub out: PathBuf,
}

/// Writes a trust policy listing the release keys, signed by every given root key.
pub fn trust_init(t: &TrustInit) -> Result<TrustPolicy, ReleaseError> {
    if t.release_pubs.is_empty() {
        return Err(ReleaseError::Invalid("a trust policy needs at least one --release-pub".into()));
    }
    let mut release_keys: Vec<[u8; 32]> = Vec::new();
    for p in &t.release_pubs {
        let k = read_public(p)?.to_bytes();
        if !release_keys.contains(&k) {
            release_keys.push(k);
        }
    }
    if t.threshold == 0 || usize::from(t.threshold) > release_keys.len() {
        return Err(ReleaseError::Invalid(format!(
            "--threshold {} must be between 1 and the number of distinct release keys ({})",
            t.threshold,
            release_keys.len()
        )));
    }
    let mut director_keys: Vec<[u8; 32]> = Vec::new();
    for p in &t.director_pubs {
        let k = read_public(p)?.to_bytes();
        if !director_keys.contains(&k) {
            director_keys.push(k);
        }
    }
    let roots = t.root_keys.iter().map(|p| read_private(p)).collect::<Result<Vec<_>, _>>()?;
    if roots.is_empty() {
        return Err(ReleaseError::Invalid("a trust policy needs at least one --root-key".into()));
    }
    let policy = TrustPolicy {
        format: POLICY_FORMAT,
        version: t.version,
        created: t.now,
        expires: t.now + t.lifetime_secs,
        threshold: t.threshold,
        release_keys,
        director_keys,
    };
    files::write_atomic(&t.out, &trust::create_policy(&policy, &roots), None)?;
    Ok(policy)
}

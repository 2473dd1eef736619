//! The device's identity for mutual TLS: `<data_dir>/identity/device.key` (ECDSA P-256, PKCS#8 PEM, mode
//! 0600, made here and never sent anywhere), `device.crt` (from enrollment or installed by hand) and
//! `ca.pem` (the device CA that issued it). With a certificate there, the link uses it; without one and
//! with `[link] enroll_token`, the agent enrolls first (`enroll.rs`).

pub mod csr;
pub mod enroll;
pub mod renew;

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error(transparent)]
    Key(#[from] csr::KeyError),
}

/// Where the identity files live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub dir: PathBuf,
}

impl Paths {
    pub fn new(data_dir: &Path) -> Paths {
        Paths { dir: data_dir.join("identity") }
    }
    pub fn key(&self) -> PathBuf {
        self.dir.join("device.key")
    }
    pub fn cert(&self) -> PathBuf {
        self.dir.join("device.crt")
    }
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Whether the device holds a certificate and its key: then it connects with them, never a token.
    pub fn enrolled(&self) -> bool {
        self.key().is_file() && self.cert().is_file()
    }

    /// The device key, made (and written, mode 0600) on first need. It is written before any request goes
    /// out, so a crash after the controller issued a certificate still finds the key that certificate names.
    pub fn ensure_key(&self) -> Result<ring::signature::EcdsaKeyPair, IdentityError> {
        let path = self.key();
        let io = |source| IdentityError::Io { path: path.clone(), source };
        match std::fs::read(&path) {
            Ok(bytes) => {
                let (label, der) = pem_rfc7468::decode_vec(&bytes)
                    .map_err(|e| IdentityError::Invalid { path: path.clone(), message: format!("not PEM: {e}") })?;
                if label != "PRIVATE KEY" {
                    let message = format!("a {label:?} PEM; expected a PKCS#8 \"PRIVATE KEY\"");
                    return Err(IdentityError::Invalid { path: path.clone(), message });
                }
                Ok(csr::key_pair(&der, &path.display().to_string())?)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let der = csr::generate_pkcs8()?;
                let pem = pem_rfc7468::encode_string("PRIVATE KEY", pem_rfc7468::LineEnding::LF, &der)
                    .map_err(|e| IdentityError::Invalid { path: path.clone(), message: e.to_string() })?;
                std::fs::create_dir_all(&self.dir)
                    .map_err(|source| IdentityError::Io { path: self.dir.clone(), source })?;
                write_atomic(&path, pem.as_bytes(), 0o600)?;
                tracing::info!(path = %path.display(), "made the device key");
                Ok(csr::key_pair(&der, &path.display().to_string())?)
            }
            Err(e) => Err(io(e)),
        }
    }

    /// Stores an issued certificate and its CA; the certificate last, because its presence means enrolled.
    pub fn store(&self, cert_pem: &str, ca_pem: &str) -> Result<(), IdentityError> {
        write_atomic(&self.ca(), ca_pem.as_bytes(), 0o644)?;
        write_atomic(&self.cert(), cert_pem.as_bytes(), 0o644)
    }
}

/// Whether a PEM certificate names this public key (a certificate for another key is useless, and a sign
/// that the answer was not meant for this device).
pub fn certificate_names_key(cert_pem: &str, public_key: &[u8]) -> bool {
    match pem_rfc7468::decode_vec(cert_pem.as_bytes()) {
        Ok(("CERTIFICATE", der)) => der.windows(public_key.len()).any(|w| w == public_key),
        _ => false,
    }
}

/// Write new, fsync, rename, fsync the directory (`crate::files`): an interrupted write never leaves
/// half a key.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), IdentityError> {
    outpost_files::write_atomic(path, bytes, mode).map_err(|source| IdentityError::Io { path: path.to_owned(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("outpost-identity-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn the_key_is_made_once_with_mode_0600_and_read_back_the_same() {
        let p = Paths::new(&tempdir("key"));
        let first = p.ensure_key().unwrap();
        let again = p.ensure_key().unwrap();
        assert_eq!(csr::public_key(&first), csr::public_key(&again));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(p.key()).unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert!(!p.enrolled(), "a key alone is not an identity");
        p.store("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n", "ca").unwrap();
        assert!(p.enrolled());
    }

    #[test]
    fn a_damaged_key_file_is_refused_by_path_and_left_alone() {
        let p = Paths::new(&tempdir("bad"));
        std::fs::create_dir_all(&p.dir).unwrap();
        std::fs::write(p.key(), "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n").unwrap();
        let err = p.ensure_key().unwrap_err().to_string();
        assert!(err.contains("device.key") && err.contains("RSA PRIVATE KEY"), "{err}");
        assert!(std::fs::read_to_string(p.key()).unwrap().contains("RSA"), "nothing is overwritten");
    }
}

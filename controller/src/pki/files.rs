//! Writing an identity for an operator: `NAME.key` (mode 0600, only when the key was made here),
//! `NAME.crt` and the CA as `ca.pem`, refusing to overwrite a key or certificate that is there.

use super::PkiError;
use crate::files;
use std::path::{Path, PathBuf};

/// Writes the files into `out`; returns their paths in the order key (if any), certificate, CA.
pub fn write_identity(
    out: &Path,
    name: &str,
    key_pem: Option<&str>,
    cert_pem: &str,
    ca_pem: &str,
) -> Result<Vec<PathBuf>, PkiError> {
    std::fs::create_dir_all(out).map_err(|source| files::FileError { path: out.to_owned(), source })?;
    let key_path = out.join(format!("{name}.key"));
    let cert_path = out.join(format!("{name}.crt"));
    for p in key_pem.map(|_| &key_path).into_iter().chain([&cert_path]) {
        if p.exists() {
            return Err(PkiError::Invalid(format!("{} exists; refusing to overwrite it", p.display())));
        }
    }
    let mut written = Vec::new();
    if let Some(k) = key_pem {
        files::write_atomic(&key_path, k.as_bytes(), Some(0o600))?;
        written.push(key_path);
    }
    files::write_atomic(&cert_path, cert_pem.as_bytes(), None)?;
    written.push(cert_path);
    // The CA certificate is public and the same for every identity: rewriting it is harmless.
    let ca_path = out.join("ca.pem");
    files::write_atomic(&ca_path, ca_pem.as_bytes(), None)?;
    written.push(ca_path);
    Ok(written)
}

//! The controller's director key (Uptane's director role): it signs every desired state the controller
//! publishes, for the device it is published to (`outpost_protocol::director`). Devices take a revert or
//! a removal only when a director key their root-signed trust policy names signed it, so a client that
//! can write to a device's `down/desired` topics cannot take models off devices.

use outpost_protocol::keys::{self, PrivateKey};
use std::path::{Path, PathBuf};

/// The configured key, or `<data_dir>/director.key`, made at first start with `director.pub` beside it
/// (the file `outpost trust init --director-pub` takes). A configured key that cannot be read is an
/// error: signing with a key the devices' policy does not name would silently disable reverts.
pub fn open_or_init(data_dir: &Path, configured: Option<&Path>) -> anyhow::Result<(PrivateKey, PathBuf)> {
    let path = configured.map(Path::to_owned).unwrap_or_else(|| data_dir.join("director.key"));
    match std::fs::read_to_string(&path) {
        Ok(pem) => Ok((keys::private_key_from_pem(&pem, &path.display().to_string())?, path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && configured.is_none() => {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no OS randomness for the director key: {e}"))?;
            let key = keys::private_key_from_seed(seed);
            std::fs::create_dir_all(data_dir).map_err(|e| anyhow::anyhow!("{}: {e}", data_dir.display()))?;
            crate::files::write_atomic(&path, keys::private_key_to_pem(&key).as_bytes(), Some(0o600))?;
            let public = data_dir.join("director.pub");
            crate::files::write_atomic(&public, keys::public_key_to_pem(&key.verifying_key()).as_bytes(), None)?;
            tracing::info!(
                key = %public.display(),
                "made the director key; name it in the trust policy (outpost trust init --director-pub) so \
                 devices take reverts and removals"
            );
            Ok((key, path))
        }
        Err(e) => Err(anyhow::anyhow!("director key {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_key_is_made_once_and_read_back_and_a_missing_configured_key_is_an_error() {
        let dir = std::env::temp_dir().join(format!("outpost-director-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (made, path) = open_or_init(&dir, None).unwrap();
        assert_eq!(path, dir.join("director.key"));
        let public = std::fs::read_to_string(dir.join("director.pub")).unwrap();
        assert_eq!(keys::public_key_from_pem(&public, "pub").unwrap(), made.verifying_key());
        let (again, _) = open_or_init(&dir, None).unwrap();
        assert_eq!(again.to_bytes(), made.to_bytes(), "the same key at every start");
        let missing = dir.join("elsewhere.key");
        let err = open_or_init(&dir, Some(&missing)).unwrap_err().to_string();
        assert!(err.contains("elsewhere.key"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

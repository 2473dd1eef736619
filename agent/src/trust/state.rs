//! The device's trust state on disk: `DATA_DIR/trust.json`, replaced atomically (write-new, fsync,
//! rename, fsync-dir), so a crash leaves the old state or the new one.
//!
//! ```json
//! { "roots": ["<hex of root-2>", "<hex of root-3>"], "policy": "<hex of the policy>", "report_counter": 12 }
//! ```
//! `roots` is the chain from version 2 up to the root the device pins, contiguous. Nothing in the file is
//! trusted as it stands: at start the chain is walked again from the image's root, and the policy is
//! checked against the root it reaches, so a corrupt or tampered file can lose a rotation (the retained
//! trust update brings it back) but never put in a key that was not signed for.

use crate::store::{StoreError, write_atomic};
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustFile {
    /// Root documents from version 2 on, hex.
    #[serde(default)]
    pub roots: Vec<String>,
    /// The policy accepted over the air, hex (empty: none yet, the image's is used).
    #[serde(default)]
    pub policy: String,
    /// The last version report counter used: reports count up from it, so the controller can tell a
    /// replayed report from a new one across restarts.
    #[serde(default)]
    pub report_counter: u64,
}

impl TrustFile {
    /// Reads the file; `Ok(None)` when there is none yet.
    pub fn load(path: &Path) -> Result<Option<TrustFile>, StoreError> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| StoreError::Corrupt { path: path.to_owned(), message: format!("trust state: {e}") }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StoreError::Io { path: path.to_owned(), source }),
        }
    }

    pub fn save(&self, path: &Path) -> Result<(), StoreError> {
        write_atomic(path, &serde_json::to_vec_pretty(self).expect("trust state encodes"))
    }

    /// The chain as bytes; a document that is not hex is dropped with the ones after it (they could not
    /// be walked to without it).
    pub fn chain(&self) -> Vec<Vec<u8>> {
        self.roots.iter().map_while(|h| hex::decode(h).ok()).collect()
    }

    pub fn policy_bytes(&self) -> Option<Vec<u8>> {
        hex::decode(&self.policy).ok().filter(|b| !b.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_round_trips_and_a_broken_file_is_an_error_naming_it() {
        let dir = std::env::temp_dir().join(format!("outpost-trust-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("trust.json");
        assert_eq!(TrustFile::load(&path).unwrap(), None);
        let f =
            TrustFile { roots: vec![hex::encode(b"r2"), "zz".into()], policy: hex::encode(b"p"), report_counter: 7 };
        f.save(&path).unwrap();
        let back = TrustFile::load(&path).unwrap().unwrap();
        assert_eq!(back, f);
        assert_eq!(back.chain(), vec![b"r2".to_vec()], "the chain stops at the first document that is not hex");
        assert_eq!(back.policy_bytes(), Some(b"p".to_vec()));
        std::fs::write(&path, b"{ not json").unwrap();
        let err = TrustFile::load(&path).unwrap_err().to_string();
        assert!(err.contains("trust.json") && err.contains("trust state"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

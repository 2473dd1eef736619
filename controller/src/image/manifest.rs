//! `manifest.json`: what an image holds, for the installer who flashes it and for audits later: the
//! target, the agent version, the controller, and the SHA-256 and size of the image files and of every
//! file inside the root filesystem.

use super::plan::{Entry, Node};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageManifest {
    /// Bumped when the layout or this file changes incompatibly.
    pub format: u32,
    pub target: String,
    pub arch: String,
    pub agent_version: String,
    pub controller: String,
    pub labels: std::collections::BTreeMap<String, String>,
    /// The model installed at first boot, when the image carries one.
    pub first_bundle: Option<FirstBundle>,
    /// Unix seconds; also the modification time of every file in the archive.
    pub created: u64,
    pub data_size: u64,
    /// `rootfs.tar.zst` and `outpost-data.ext4`.
    pub images: Vec<FileSum>,
    /// Every regular file in the tree, by absolute path on the device.
    pub files: Vec<FileSum>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirstBundle {
    pub path: String,
    pub model: String,
    pub version: String,
    pub sequence: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSum {
    pub path: String,
    pub size: u64,
    pub sha256: String,
    /// Octal permission bits, e.g. "0755".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Hashes a file without holding it in memory (an ext4 image can be large).
pub fn sum_file(path: &std::path::Path, name: &str) -> std::io::Result<FileSum> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
    Ok(FileSum { path: name.to_owned(), size, sha256: hex::encode(h.finalize()), mode: None })
}

/// The regular files of `tree` with their sums and modes.
pub fn tree_sums(tree: &[Entry]) -> Vec<FileSum> {
    tree.iter()
        .filter_map(|e| match &e.node {
            Node::File(bytes) => Some(FileSum {
                path: e.path.clone(),
                size: bytes.len() as u64,
                sha256: sha256_hex(bytes),
                mode: Some(format!("{:04o}", e.mode)),
            }),
            _ => None,
        })
        .collect()
}

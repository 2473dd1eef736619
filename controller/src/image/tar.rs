//! `rootfs.tar.zst`: the image tree as a tar archive (owner root, fixed times, so the same inputs give
//! the same bytes) compressed with zstd.

use super::plan::{Entry, Node};
use std::io::Write;

/// zstd level for the archive: images are built once and downloaded to many devices, so spend the time.
const LEVEL: i32 = 19;

/// Writes `tree` as a zstd-compressed tar to `out`. Paths in the archive are relative (`usr/bin/...`),
/// the form `tar -C / -x` and image tools expect.
pub fn write(tree: &[Entry], mtime: u64, out: impl Write) -> std::io::Result<()> {
    let zst = zstd::Encoder::new(out, LEVEL)?;
    let mut tar = tar::Builder::new(zst);
    for e in tree {
        let mut h = tar::Header::new_ustar();
        h.set_mode(e.mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_username("root")?;
        h.set_groupname("root")?;
        h.set_mtime(mtime);
        let path = format!(".{}", e.path);
        match &e.node {
            Node::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                tar.append_data(&mut h, format!("{path}/"), std::io::empty())?;
            }
            Node::File(bytes) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(bytes.len() as u64);
                tar.append_data(&mut h, path, bytes.as_slice())?;
            }
            Node::Symlink(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                tar.append_link(&mut h, path, target)?;
            }
        }
    }
    tar.into_inner()?.finish()?.flush()
}

//! The one crash-safe file write of the agent and the controller: write a new file, fsync, rename it over
//! the old one, fsync the folder. The agent's model store, update state and device identity, and the
//! controller's keys, certificates, CRL, trust files and bundles all go through it, so a `kill -9` or a
//! power cut leaves either the old file or the new one, never half of one.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Atomically replaces `path` with `bytes`, the new file made with Unix `mode` (0o600 for private keys).
///
/// The temporary file has an unpredictable name and is created exclusively (`O_CREAT | O_EXCL`, which also
/// refuses a symlink): with a guessable name and a plain create, anyone who can write the folder could plant
/// a symlink there and have a key written through it into a file of their choosing, or one they can read.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    let (tmp, mut f) = create_exclusive(dir, &name, mode)?;
    let written = f.write_all(bytes).and_then(|()| f.sync_all());
    drop(f);
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    // The rename is durable only once the folder's entry is on disk.
    std::fs::File::open(dir)?.sync_all()
}

/// A new file `.NAME.tmp-<random>` in `dir`, created exclusively with `mode`.
fn create_exclusive(dir: &Path, name: &str, mode: u32) -> std::io::Result<(PathBuf, std::fs::File)> {
    use ring::rand::SecureRandom;
    let rng = ring::rand::SystemRandom::new();
    for _ in 0..8 {
        let mut random = [0u8; 12];
        rng.fill(&mut random).map_err(|_| std::io::Error::other("no OS randomness for a temporary name"))?;
        let tmp = dir.join(format!(".{name}.tmp-{}", hex::encode(random)));
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(mode);
        }
        match opts.open(&tmp) {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::new(std::io::ErrorKind::AlreadyExists, "no free temporary name after 8 tries"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_symlink_planted_at_an_old_temporary_name_is_not_followed() {
        let dir = std::env::temp_dir().join(format!("outpost-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let victim = dir.join("victim");
        std::fs::write(&victim, "untouched").unwrap();
        // Every name the agent's and the controller's earlier writes used.
        let old = [format!(".key.tmp-{}", std::process::id()), ".key.tmp".into(), ".key.new".into()];
        for planted in &old {
            std::os::unix::fs::symlink(&victim, dir.join(planted)).unwrap();
        }
        let key = dir.join("key");
        write_atomic(&key, b"secret", 0o600).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
        let meta = std::fs::symlink_metadata(&key).unwrap();
        assert!(meta.file_type().is_file(), "the key is a file of its own, not a link");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read(&key).unwrap(), b"secret");
        write_atomic(&key, b"again", 0o644).unwrap();
        assert_eq!(std::fs::read(&key).unwrap(), b"again");
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
        assert_eq!(left.len(), 2 + old.len(), "no temporary file is left behind: {left:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary_one() {
        let dir = std::env::temp_dir().join(format!("outpost-files-fail-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("state");
        std::fs::write(&target, "old").unwrap();
        // Renaming a file over a non-empty folder fails after the temporary file was written.
        let blocked = dir.join("blocked");
        std::fs::create_dir_all(blocked.join("inside")).unwrap();
        assert!(write_atomic(&blocked, b"new", 0o644).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "old");
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
        assert_eq!(left.len(), 2, "the temporary file is removed: {left:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! The agent's one crash-safe file write: write a new file, fsync, rename over, fsync the folder. The
//! model store, the update driver's state and the device identity all go through it.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Atomically replaces `path` with `bytes`, the new file made with Unix `mode`. The temporary file has an
/// unpredictable name and is created exclusively (`O_CREAT | O_EXCL`, which also refuses a symlink):
/// with a guessable name and a plain create, a local user who can write the folder could plant a symlink
/// and have the device key written through it.
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
    std::fs::File::open(dir)?.sync_all()
}

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

    #[test]
    fn a_symlink_planted_at_an_old_temporary_name_is_not_followed() {
        let dir = std::env::temp_dir().join(format!("outpost-agent-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let victim = dir.join("victim");
        std::fs::write(&victim, "untouched").unwrap();
        // The names the identity and the store used to write through.
        for planted in [".device.key.new", ".device.key.tmp"] {
            std::os::unix::fs::symlink(&victim, dir.join(planted)).unwrap();
        }
        let key = dir.join("device.key");
        write_atomic(&key, b"secret", 0o600).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
        let meta = std::fs::symlink_metadata(&key).unwrap();
        assert!(meta.file_type().is_file());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read(&key).unwrap(), b"secret");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 4, "nothing else left behind");
    }
}

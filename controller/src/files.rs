//! File helpers with errors that name the path, and crash-safe writes (write new, fsync, rename, fsync
//! dir) so an interrupted `bundle create` never leaves a half-written bundle under the final name.

use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct FileError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

pub fn read(path: &Path) -> Result<Vec<u8>, FileError> {
    std::fs::read(path).map_err(|source| FileError { path: path.to_owned(), source })
}

pub fn read_string(path: &Path) -> Result<String, FileError> {
    std::fs::read_to_string(path).map_err(|source| FileError { path: path.to_owned(), source })
}

/// Atomically replaces `path` with `bytes`. `mode` sets Unix permissions (0o600 for private keys).
///
/// The temporary file has an unpredictable name and is created exclusively (`O_CREAT | O_EXCL`, which
/// also refuses a symlink): with a guessable name and a plain create, anyone who can write the folder
/// could plant a symlink there and have a key written through it into a file of their choosing, or a
/// file they can read.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: Option<u32>) -> Result<(), FileError> {
    let err = |source| FileError { path: path.to_owned(), source };
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    let (tmp, mut f) = create_exclusive(dir, &name, mode.unwrap_or(0o644)).map_err(err)?;
    let written = f.write_all(bytes).and_then(|()| f.sync_all());
    drop(f);
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(e));
    }
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// A new file `.NAME.tmp-<random>` in `dir`, created exclusively with `mode`.
fn create_exclusive(dir: &Path, name: &str, mode: u32) -> std::io::Result<(PathBuf, std::fs::File)> {
    for _ in 0..8 {
        let mut random = [0u8; 12];
        getrandom::fill(&mut random).map_err(|e| std::io::Error::other(format!("no OS randomness: {e}")))?;
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
    fn a_symlink_planted_at_the_old_temporary_name_is_not_followed() {
        let dir = std::env::temp_dir().join(format!("outpost-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let victim = dir.join("victim");
        std::fs::write(&victim, "untouched").unwrap();
        // Every name the old code would have used.
        for planted in [format!(".key.tmp-{}", std::process::id()), ".key.tmp".into(), ".key.new".into()] {
            std::os::unix::fs::symlink(&victim, dir.join(planted)).unwrap();
        }
        let key = dir.join("key");
        write_atomic(&key, b"secret", Some(0o600)).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
        let meta = std::fs::symlink_metadata(&key).unwrap();
        assert!(meta.file_type().is_file(), "the key is a file of its own, not a link");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read(&key).unwrap(), b"secret");
        write_atomic(&key, b"again", None).unwrap();
        assert_eq!(std::fs::read(&key).unwrap(), b"again");
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
        assert_eq!(left.len(), 5, "no temporary file is left behind: {left:?}");
    }
}

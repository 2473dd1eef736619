//! File helpers with errors that name the path, and the shared crash-safe write, so an interrupted `bundle
//! create` never leaves a half-written bundle under the final name.

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

/// Atomically replaces `path` with `bytes` (outpost_files::write_atomic: a new file created exclusively under
/// an unpredictable name, fsync, rename, fsync the folder). `mode` sets Unix permissions (0o600 for private
/// keys; 0o644 when None).
pub fn write_atomic(path: &Path, bytes: &[u8], mode: Option<u32>) -> Result<(), FileError> {
    outpost_files::write_atomic(path, bytes, mode.unwrap_or(0o644))
        .map_err(|source| FileError { path: path.to_owned(), source })
}

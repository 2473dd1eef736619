//! Release engineering: key pairs, trust policies and signed bundles, as library functions the CLI (and
//! tests, and the demo) call. All file I/O for these lives here; the formats live in `outpost-protocol`.

pub mod bundle;
pub mod keys;
pub mod payload_size;
pub mod reference;
pub mod roots;
pub mod selftest;

use crate::files::FileError;
use outpost_protocol::Rejection;
use outpost_protocol::keys::PemError;

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error(transparent)]
    Pem(#[from] PemError),
    #[error("{path}: {source}")]
    Model { path: String, source: outpost_models::ModelError },
    /// The bundle or policy was refused; the reason code is part of the message.
    #[error("rejected: {0}")]
    Rejected(#[from] Rejection),
    #[error("{0}")]
    Invalid(String),
}

/// The current time as Unix seconds: the one clock read of release tooling, passed on as `now`.
pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

//! The one crate the Outpost agent and controller share: wire messages, topics, the bundle and manifest
//! format, signing and verification, limits and compression.
//!
//! Architecture invariant: no I/O, no clock, no async runtime. Time is a parameter (`now`, Unix seconds),
//! bytes come in as slices and go out as `Vec<u8>`, so the same code runs in the agent, the controller, the
//! simulator and fuzzers.

pub mod bundle;
pub mod codec;
pub mod compress;
pub mod digest;
pub mod director;
pub mod drift;
pub mod enroll;
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
pub mod keys;
pub mod limits;
pub mod manifest;
pub mod messages;
pub mod names;
pub mod rejection;
pub mod report;
pub mod root;
pub mod signed;
pub mod telemetry;
pub mod topics;
pub mod trust;
pub mod trust_update;
pub mod verify;
pub mod version;

pub use digest::Digest;
pub use limits::Limits;
pub use names::{Arch, DeviceId, ModelName, NameError};
pub use rejection::{RejectReason, Rejection};
pub use version::Version;

/// Seconds since the Unix epoch. The protocol never reads a clock: callers pass `now`.
pub type UnixTime = u64;

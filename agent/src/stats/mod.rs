//! Pure accounting of what the agent serves: latency histograms, input/output drift against the
//! release's reference profile, shadow-model agreement, and the inference result cache.
//!
//! Nothing here does I/O, reads a clock or spawns tasks: callers pass `Instant`s and `Duration`s in and
//! take snapshots out, so the same code runs behind the HTTP API, in unit tests and in the fleet
//! simulator with a virtual clock. Snapshots map onto `outpost_protocol::telemetry` wire types.

pub mod cache;
pub mod drift;
pub mod histogram;
pub mod shadow;

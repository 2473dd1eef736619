//! The Outpost device agent: local inference with tract behind the Open Inference Protocol, durable
//! telemetry, and verified model updates over MQTT.
//!
//! Architecture invariant: depends on `outpost-protocol` only, never on the controller. Every check of an
//! incoming bundle goes through `outpost_protocol::verify::verify`; a model reaches a slot only as a
//! `Verified` bundle that loaded in tract and passed its self-test vectors.

pub mod api;
pub mod cli;
pub mod config;
pub mod fleet;
pub mod identity;
pub mod install;
pub mod link;
pub mod runtime;
pub mod serve;
pub mod slots;
pub mod stats;
pub mod status;
pub mod store;
pub mod sys;
pub mod systemd;
pub mod telemetry;
pub mod trust;
pub mod update;

/// This agent's version, as devices report it in `hello` and as manifests' `min_agent` compare it.
pub fn version() -> outpost_protocol::Version {
    env!("CARGO_PKG_VERSION").parse().expect("crate version is semver")
}

//! The Outpost device agent: local inference with tract behind the Open Inference Protocol, durable
//! telemetry, and verified model updates over MQTT.
//!
//! Architecture invariant: depends on `outpost-protocol` only, never on the controller. The runtime,
//! local API, link and update machine arrive with their issues; every check of an incoming bundle goes
//! through `outpost_protocol::verify::verify`.

pub mod stats;

/// This agent's version, as devices report it in `hello` and as manifests' `min_agent` compare it.
pub fn version() -> outpost_protocol::Version {
    env!("CARGO_PKG_VERSION").parse().expect("crate version is semver")
}

//! `outpost serve`: the controller daemon. The embedded broker (quick start) or an external one, the
//! fleet registry fed over MQTT, the bundle store, rollouts, and the HTTP API the CLI talks to.

pub mod api;
pub mod api_trust;
pub mod attestation;
pub mod broker;
pub mod bundles;
pub mod chunks;
pub mod config;
pub mod decommission;
pub mod device_list;
pub mod director;
pub mod enroll;
pub mod enrollment;
pub mod fleet;
pub mod fleet_trust;
pub mod inbox;
pub mod metrics;
pub mod observe;
pub mod prom;
pub mod ratelimit;
pub mod registry;
pub mod rollouts;
pub mod serve;
pub mod store;
pub mod store_redb;

#[cfg(test)]
mod tests_rollouts;

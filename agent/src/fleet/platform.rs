//! The seams between the update shell (`shell.rs`) and the world it runs in. The agent implements them
//! over MQTT, files, tract and its runtime (`driver.rs`); the fleet simulator over its simulated fabric,
//! virtual clock and in-memory disk (`simulations/src/sim/device_platform.rs`). Everything the shell
//! decides is in the shell, so both run the same decisions; only these calls differ.
//!
//! Every method is synchronous and returns at once. Slow work (verifying a bundle, self-testing a model,
//! loading a model to serve it) is started here and answered later through `Shell::complete`, as an
//! event of the caller's own loop: the agent's answers come from blocking threads and the slot follower,
//! the simulator's from its event queue after a simulated duration.

use super::shell::DriverState;
use crate::slots::Slots;
use outpost_protocol::keys::PublicKey;
use outpost_protocol::messages::{BundleRef, Message};
use outpost_protocol::telemetry::{UpdateEvent, UpdateStage};
use outpost_protocol::topics::Up;
use outpost_protocol::{DeviceId, Digest, ModelName};

/// The device's clock: Unix time in milliseconds.
pub trait Clock {
    fn now_ms(&self) -> u64;
}

/// Device → controller. A message published while offline is dropped: what must arrive is retried by
/// the protocol (the retained desired state on reconnect, chunk requests on the retry timer, events and
/// windows from the durable telemetry queue, the hello on every connect).
pub trait Fabric {
    fn publish(&mut self, kind: Up, msg: Message);
    /// Publishes the device's hello: every model it runs now (after a running model changed).
    fn announce(&mut self);
}

/// What is kept across a power loss: the machines' state, the slot table, the staging files.
pub trait Disk {
    /// Persists every machine's state, crash-safe, before any effect of a step is performed.
    fn save_state(&mut self, state: DriverState) -> Result<(), String>;
    /// Changes the slot table through `slots.rs`'s transitions, crash-safe, under the store's lock.
    fn edit_slots(&mut self, change: &mut dyn FnMut(&mut Slots)) -> Result<(), String>;
    /// The name and release sequence of the verified manifest stored with `model`'s active model.
    fn active_release(&self, model: &str) -> Option<(ModelName, u64)>;
    /// An empty staging file of `model` for `bundle`, its size already checked against `Limits`. Each model
    /// stages into its own file: two models fetching the same bundle (one of them told to by a forged
    /// desired state) neither share nor discard each other's.
    fn prepare_staging(&mut self, model: &str, bundle: &BundleRef) -> Result<(), String>;
    /// Writes chunk `index` of `bundle` (already checked against its digest) into `model`'s staging file.
    fn write_chunk(&mut self, model: &str, bundle: &BundleRef, index: u32, data: &[u8]) -> Result<(), String>;
    /// Which chunks of `model`'s staging file match their digests (after a restart).
    fn check_staging(&mut self, model: &str, bundle: &BundleRef) -> Vec<bool>;
    fn discard_staging(&mut self, model: &str, bundle: &Digest);
}

/// The slow steps. Each answers later with a `Done` for `Shell::complete`.
pub trait Work {
    /// Verify `model`'s complete staging file of `bundle` and store its model (no slot changes); answer
    /// `Done::Verified` with what the verified manifest says.
    fn verify(&mut self, model: &str, bundle: &BundleRef);
    /// Load the stored `digest` as `model` and run its self-test vectors; answer `Done::SelfTested`.
    fn self_test(&mut self, model: &str, bundle: Digest, digest: Digest);
    /// Called after a step entered `stage` and was persisted, before its work is performed (the agent's
    /// crash-test failpoint holds it here).
    fn entered(&mut self, _stage: UpdateStage) {}
}

/// The inference runtime, as the update watch sees it.
pub trait Serving {
    /// The slot table now names `digest` as `model`'s active model: answer `Done::Activated` once it
    /// serves (or failed to load).
    fn await_active(&mut self, model: &str, digest: Digest);
    /// Requests, errors and p95 latency of `model` since its activation.
    fn watch(&mut self, model: &str) -> Watched;
    /// Runs the self-test vectors on the model `model` serves now.
    fn self_test_active(&mut self, model: &str) -> bool;
}

/// The durable telemetry queue: every update event goes in, whether or not the device is online.
pub trait Sink {
    fn record(&mut self, event: &UpdateEvent);
}

/// Who may direct this device: a director statement is the controller's word only when it names this
/// device and a director key of the trust policy held now signed it (`outpost_protocol::director`).
pub trait Directors {
    /// `None`: the device has no fleet identity, and no statement is taken as the director's.
    fn device(&self) -> Option<&DeviceId>;
    fn director_keys(&self) -> Vec<PublicKey>;
}

/// Everything the shell needs.
pub trait Platform: Clock + Fabric + Disk + Work + Serving + Sink + Directors {}
impl<T: Clock + Fabric + Disk + Work + Serving + Sink + Directors> Platform for T {}

/// The serving model's figures since its activation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Watched {
    pub requests: u64,
    pub errors: u64,
    pub p95_us: u32,
}

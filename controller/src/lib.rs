//! The Outpost controller (`outpost serve`) and the operator / release-engineer CLI.
//!
//! The release-engineer side: keys, trust policies and signed bundles ([`release`]), with models converted
//! and probed by the shared model library (`outpost-models`, feature `onnx`); the fleet daemon
//! ([`daemon`]), the rollout planner ([`rollout`]), the operator verbs and the operator console
//! ([`console`]). Architecture invariant: depends on `outpost-protocol` and `outpost-models` only, never on
//! the agent.

pub mod agent_skew;
pub mod cli;
pub mod console;
pub mod daemon;
pub mod duration;
pub mod files;
pub mod image;
pub mod pki;
pub mod release;
pub mod rollout;
pub mod skew;

//! The Outpost controller (`outpost serve`) and the operator / release-engineer CLI.
//!
//! Today this crate holds the release-engineer side: keys, trust policies and signed bundles
//! ([`release`]), backed by tract to probe models ([`model_probe`]). The fleet daemon, rollout planner and
//! operator verbs arrive with their issues. Architecture invariant: depends on `outpost-protocol` only,
//! never on the agent.

pub mod agent_skew;
pub mod cli;
pub mod daemon;
pub mod duration;
pub mod files;
pub mod image;
pub mod model_probe;
pub mod pki;
pub mod release;
pub mod rollout;
pub mod skew;

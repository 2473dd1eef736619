//! The Outpost fleet simulator and quick-start demo. It is the one crate that depends on both the agent
//! and the controller: it wires real agents and a real controller together, on sockets (the demo and the
//! load run) or on a simulated message fabric with a virtual clock (the simulator).

pub(crate) mod controller_api;
pub mod demo;
pub(crate) mod inprocess;
pub mod load;
pub mod report;
pub mod sim;

/// Where the committed model fixtures live (`simulations/models/`).
pub fn models_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models")
}

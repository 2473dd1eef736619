//! `outpost-agent`: thin wrapper over the `outpost_agent` library.

fn main() {
    eprintln!(
        "outpost-agent {}: the serving and update commands are not built yet (local inference and the fleet link come next)",
        outpost_agent::version()
    );
    std::process::exit(2);
}

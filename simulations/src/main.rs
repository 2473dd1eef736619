//! `outpost-sim`: thin wrapper over the `outpost_simulations` library.

fn main() {
    eprintln!(
        "outpost-sim: the demo and the simulator are not built yet; models live in {}",
        outpost_simulations::models_dir().display()
    );
    std::process::exit(2);
}

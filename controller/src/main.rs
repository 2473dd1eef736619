//! `outpost`: thin wrapper. Parses arguments, runs the command, maps failures to exit codes.

use clap::Parser;

fn main() {
    quiet_on_broken_pipe();
    let cli = outpost_controller::cli::Cli::parse();
    if let Err(failure) = outpost_controller::cli::run(cli) {
        eprintln!("{failure}");
        std::process::exit(failure.exit_code());
    }
}

/// `outpost audit | head -3`: once `head` has its lines it closes the pipe. Rust ignores SIGPIPE, so the
/// next `println!` panics (rc 101 and a panic message) where Unix tools end quietly; restoring SIGPIPE
/// needs unsafe code, which the workspace forbids. A reader that left wants nothing more: exit 0.
fn quiet_on_broken_pipe() {
    const EPIPE: i32 = 32; // Linux, the BSDs and macOS alike.
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload.downcast_ref::<String>().map(String::as_str).or(payload.downcast_ref::<&str>().copied());
        if msg.is_some_and(|m| m.starts_with("failed printing to std") && m.contains(&format!("(os error {EPIPE})"))) {
            std::process::exit(0);
        }
        default(info)
    }));
}

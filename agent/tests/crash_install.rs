//! Real crashes: `kill -9` an `outpost-agent install` at random points, many times. Afterwards the slot
//! table always parses and names complete, digest-checked models: either the old one or the new one.

mod support;

use outpost_agent::store::Store;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::*;

#[test]
fn kill_9_during_install_never_leaves_a_broken_slot_table() {
    let dir = tempdir("crash");
    let _cfg = config(&dir, "");
    let d = |p: &str| dir.join(p).display().to_string();
    let bundles: Vec<String> = (0..12u64)
        .map(|i| {
            let name = if i % 2 == 0 { "v2" } else { "v1" };
            let path = dir.join(format!("b{i}.obundle"));
            std::fs::write(&path, signed_bundle(name, &format!("1.{i}.0"), i + 1)).unwrap();
            path.display().to_string()
        })
        .collect();
    let store = Store::open(&dir.join("data")).unwrap();
    let install = |bundle: &str, data: &str| {
        Command::new(env!("CARGO_BIN_EXE_outpost-agent"))
            .args([
                "install",
                bundle,
                "--data-dir",
                &d(data),
                "--trust",
                &d("trust.policy"),
                "--root-pub",
                &d("root.pub"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    // Kills land anywhere within 1.5× the time one whole install takes on this machine now (fsyncs dominate,
    // and they take far longer while the machine is busy), so some rounds finish and most are cut short.
    let start = std::time::Instant::now();
    let first = install(&bundles[0], "timing").wait().unwrap();
    assert!(first.success(), "an uninterrupted install succeeds");
    let mut window = (start.elapsed().as_micros() as u64 * 3 / 2).max(60_000);
    let mut completed = 0;
    let mut seed = 0x2545_f491_u64;
    for round in 0..40 {
        // The machine may have become busier since the timed install (a build beside the tests): while no
        // round has finished, every tenth widens the window, so the rounds still reach the end of an install.
        if round > 0 && round % 10 == 0 && completed == 0 {
            window *= 2;
        }
        let bundle = &bundles[round % bundles.len()];
        let mut child = install(bundle, "data");
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_micros(seed % window));
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        completed += usize::from(status.success());
        let slots = store.slots().unwrap_or_else(|e| panic!("round {round}: slot table unreadable: {e}"));
        let m = slots.model("digits").cloned().unwrap_or_default();
        for digest in [m.active_digest(), m.previous_digest()].into_iter().flatten() {
            store.read_model(&digest).unwrap_or_else(|e| panic!("round {round}: slot names a broken model: {e}"));
        }
    }
    println!("40 kill -9 rounds within {window} µs at the end: {completed} installs finished before the kill");
    let slots = store.slots().unwrap();
    assert!(slots.active_digest("digits").is_some(), "at least one install completed in 40 rounds");
}

//! `telemetry_writer PATH`: appends batches of 1–10 small `Health` records to the telemetry queue at PATH,
//! forever, and after each append that returned `Ok` prints the last sequence number it was given (one
//! line, flushed). `agent/tests/telemetry_crash.rs` kills it with `kill -9` and checks that every printed
//! number survived.

use anyhow::Context;
use outpost_agent::telemetry::queue::{QueueConfig, TelemetryQueue};
use outpost_protocol::telemetry::{DeviceHealth, RecordBody};
use std::io::Write;
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let path: PathBuf = std::env::args_os().nth(1).context("usage: telemetry_writer PATH")?.into();
    let queue = TelemetryQueue::open(&path, QueueConfig::default())?;
    let mut rng = u64::from(std::process::id()) | 1;
    let mut stdout = std::io::stdout().lock();
    for n in 0u64.. {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let count = 1 + rng % 10;
        let records: Vec<_> = (0..count)
            .map(|i| {
                let health = DeviceHealth {
                    rss_bytes: 30 << 20,
                    cpu_percent: (rng % 100) as f32,
                    disk_free_bytes: 1 << 30,
                    uptime_secs: n,
                    temperature_c: None,
                    queue_len: i,
                    dropped_total: 0,
                };
                (1_700_000_000 + n, RecordBody::Health(health))
            })
            .collect();
        let given = queue.append(&records)?;
        writeln!(stdout, "{}", given.end())?;
        stdout.flush()?;
    }
    Ok(())
}

//! Real crashes: run `examples/telemetry_writer` against one queue file and `kill -9` it at a random moment,
//! 30 times. Every sequence number the writer printed (it prints only after `append` returned `Ok`) must
//! be in the queue afterwards, the stored numbers must be contiguous and never reused, and acks must
//! survive a reopen too.
//!
//! The writer is an example, which Cargo builds for `cargo test` but gives no `CARGO_BIN_EXE_` variable:
//! it is found beside this test's own binary (`target/debug/deps/` → `target/debug/examples/`).
//! `OUTPOST_CRASH_SEED=N` replays a run.

mod support;

use outpost_agent::telemetry::queue::{QueueConfig, TelemetryQueue};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use support::tempdir;

const ROUNDS: usize = 30;

fn writer_exe() -> PathBuf {
    let me = std::env::current_exe().expect("test binary path");
    let profile_dir = me.parent().and_then(Path::parent).expect("test binary lives in target/<profile>/deps/");
    let exe = profile_dir.join("examples").join(format!("telemetry_writer{}", std::env::consts::EXE_SUFFIX));
    if !exe.is_file() {
        // `cargo test --test telemetry_crash` builds no examples (a plain `cargo test` does): build it.
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "outpost-agent", "--example", "telemetry_writer", "--target-dir"])
            .arg(profile_dir.parent().expect("target dir"))
            .status();
        println!("built the writer: {status:?}");
    }
    assert!(
        exe.is_file(),
        "{} is missing: build it with `cargo build -p outpost-agent --example telemetry_writer` \
         (a plain `cargo test -p outpost-agent` builds it too)",
        exe.display()
    );
    exe
}

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Every sequence number stored, in order, after checking nothing in the file is corrupt.
fn stored(queue: &TelemetryQueue) -> Vec<u64> {
    let seqs = queue.batch_after(0, usize::MAX).unwrap().map(|b| b.records.iter().map(|r| r.seq).collect());
    assert_eq!(queue.corrupt_skipped(), 0, "no record may be corrupt after a crash");
    seqs.unwrap_or_default()
}

#[test]
fn kill_9_never_loses_a_record_the_queue_acknowledged() {
    let exe = writer_exe();
    let dir = tempdir("telemetry-crash");
    let db = dir.join("telemetry.redb");
    let seed = std::env::var("OUTPOST_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    println!("seed {seed} (OUTPOST_CRASH_SEED={seed} replays the kill times)");
    let mut rng = seed;
    let (mut printed_total, mut last_seq) = (0usize, 0u64);
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .arg(&db)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", exe.display()));
        // Drain stdout as it comes, so a full pipe never blocks the writer.
        let mut out = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut text = String::new();
            out.read_to_string(&mut text).unwrap();
            text
        });
        let ms = 20 + xorshift(&mut rng) % 181;
        std::thread::sleep(Duration::from_millis(ms));
        if let Some(status) = child.try_wait().unwrap() {
            panic!("round {round}: the writer exited by itself ({status}) before the kill");
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let text = reader.join().unwrap();
        // A line without its newline was cut by the kill; it was never fully printed.
        let printed: Vec<u64> = text.split_inclusive('\n').filter_map(|l| l.strip_suffix('\n')?.parse().ok()).collect();
        assert!(printed.windows(2).all(|w| w[0] < w[1]), "round {round}: printed numbers must increase");
        if let Some(&first) = printed.first() {
            assert!(first > last_seq, "round {round}: seq {first} reused (the last round ended at {last_seq})");
        }

        let queue = TelemetryQueue::open(&db, QueueConfig::default()).unwrap();
        let stats = queue.stats().unwrap();
        let seqs = stored(&queue);
        assert_eq!(seqs, (1..=stats.last_seq).collect::<Vec<_>>(), "round {round}: stored seqs are 1..=last_seq");
        let lost: Vec<u64> = printed.iter().copied().filter(|&s| s > stats.last_seq).collect();
        assert!(lost.is_empty(), "round {round} ({ms} ms): acknowledged seqs lost: {lost:?}");
        assert!(stats.last_seq >= last_seq, "round {round}: last_seq went down");
        println!(
            "round {round:2}: killed after {ms:3} ms, {:4} appends acknowledged, queue holds {}",
            printed.len(),
            stats.len
        );
        printed_total += printed.len();
        last_seq = stats.last_seq;
        drop(queue); // the file lock: the next writer must be able to open it
    }

    // Ack half, reopen: the acked ones are gone, the rest all there.
    let half = last_seq / 2;
    let queue = TelemetryQueue::open(&db, QueueConfig::default()).unwrap();
    assert_eq!(queue.ack(half).unwrap(), half);
    drop(queue);
    let queue = TelemetryQueue::open(&db, QueueConfig::default()).unwrap();
    assert_eq!(queue.acked_up_to().unwrap(), half);
    assert_eq!(stored(&queue), (half + 1..=last_seq).collect::<Vec<_>>());
    assert_eq!(queue.dropped_total().unwrap(), 0);
    println!(
        "{ROUNDS} kill -9 rounds: {last_seq} records written ({printed_total} appends acknowledged on stdout), \
         0 records lost; acked {half}, {} left after reopen",
        last_seq - half
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `kill -9` during the very first start, while redb creates the file: the next start must open the queue
/// (before the fix, a file sized but without its magic number was "not a redb database" for ever and the
/// agent refused to start). Kill times sweep the first milliseconds of the writer's life, where the file
/// is created; the run prints how many kills landed inside the creation.
#[test]
fn kill_9_during_the_first_creation_of_the_queue_never_leaves_it_unopenable() {
    let exe = writer_exe();
    let dir = tempdir("telemetry-first-start");
    let (mut inside, mut before, mut after) = (0, 0, 0);
    for round in 0..40u64 {
        let db = dir.join(format!("telemetry-{round}.redb"));
        let mut child = Command::new(&exe).arg(&db).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        // 0–19 ms, then 20–39: from before the process opens the file to well after its first commit.
        std::thread::sleep(Duration::from_micros(500 * (round % 40)));
        child.kill().unwrap();
        child.wait().unwrap();
        match std::fs::read(&db) {
            Err(_) => before += 1,
            Ok(bytes) if bytes.is_empty() => before += 1,
            Ok(bytes) if bytes.iter().take(9).all(|b| *b == 0) => inside += 1,
            Ok(_) => after += 1,
        }
        let queue = TelemetryQueue::open(&db, QueueConfig::default())
            .unwrap_or_else(|e| panic!("round {round}: the queue no longer opens after kill -9 on first start: {e}"));
        assert_eq!(queue.append(&[]).unwrap().count(), 0);
        let stats = queue.stats().unwrap();
        assert_eq!(stored(&queue), (1..=stats.last_seq).collect::<Vec<_>>(), "round {round}");
    }
    println!(
        "40 kills during the first start: {before} before the file existed, {inside} inside its creation \
         (magic number not yet written), {after} after; every queue opened"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

//! Telemetry queue benchmark: append rate (one record per commit and 100 per commit), replay of a
//! 100,000-record backlog in 64 KiB batches, bytes per record (postcard and zstd), and bytes per device per
//! day for the default 60 s window. Prints Markdown tables; asserts no timing.
//!
//! ```sh
//! cargo bench -p outpost-agent --bench telemetry
//! ```
//! The queue file goes to `OUTPOST_BENCH_DIR` (default: the system temp dir): commit rates are fsync rates,
//! so point it at the storage you care about. `OUTPOST_BENCH_SCALE=0.2` shortens the timed loops.

use outpost_agent::telemetry::queue::{QueueConfig, TelemetryQueue};
use outpost_protocol::codec;
use outpost_protocol::messages::{Message, TelemetryBatch};
use outpost_protocol::telemetry::{
    DeviceHealth, FeatureStats, InferenceWindow, LATENCY_BUCKETS_US, Record, RecordBody,
};
use outpost_protocol::{Digest, ModelName, UnixTime};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const BACKLOG: u64 = 100_000;
const BATCH_BYTES: usize = 64 << 10;
const WINDOW_SECS: u64 = 60;
const T0: UnixTime = 1_760_000_000;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn health(rng: &mut Rng, uptime_secs: u64, queue_len: u64) -> RecordBody {
    RecordBody::Health(DeviceHealth {
        rss_bytes: (38 << 20) + rng.below(4 << 20),
        cpu_percent: 5.0 + (rng.unit() * 30.0) as f32,
        disk_free_bytes: (2 << 30) - rng.below(1 << 20),
        uptime_secs,
        temperature_c: Some(45.0 + (rng.unit() * 10.0) as f32),
        queue_len,
        dropped_total: 0,
    })
}

/// One 60 s window of a busy classifier: 1 input tensor with a 12-bin histogram, 10 output classes, no
/// shadow.
fn window(rng: &mut Rng, start: UnixTime) -> RecordBody {
    let requests = 500 + rng.below(700);
    let mut latency_hist = vec![0u64; LATENCY_BUCKETS_US.len() + 1];
    for _ in 0..requests {
        // Mostly 250 µs – 5 ms, a tail beyond.
        let bucket = (1 + rng.below(4) + rng.below(3) * rng.below(2)) as usize;
        latency_hist[bucket.min(LATENCY_BUCKETS_US.len())] += 1;
    }
    let mut bins = vec![0u64; 12];
    let elements = requests * 64;
    for _ in 0..200 {
        let (a, b) = (rng.below(12), rng.below(12));
        bins[((a + b) / 2) as usize] += elements / 200;
    }
    let mut output_classes = vec![0u64; 10];
    for _ in 0..requests {
        output_classes[rng.below(10) as usize] += 1;
    }
    let errors = rng.below(3);
    let cache_hits = rng.below(requests / 4);
    RecordBody::Inference(InferenceWindow {
        model: ModelName::new("digits").expect("valid name"),
        version: "1.4.0".parse().expect("valid version"),
        digest: Digest::of(b"digits-1.4.0"),
        window_start: start,
        window_secs: WINDOW_SECS as u32,
        requests,
        errors,
        timeouts: 0,
        rejected: 0,
        latency_hist,
        latency_p50_us: 700 + rng.below(300) as u32,
        latency_p95_us: 2_400 + rng.below(2_000) as u32,
        cache_hits,
        cache_misses: requests - cache_hits,
        shadow: None,
        features: vec![FeatureStats {
            tensor: "input".into(),
            count: elements,
            mean: 4.7 + rng.unit() * 0.2,
            variance: 36.0 + rng.unit() * 2.0,
            lo: 0.0,
            hi: 16.0,
            bins,
            psi: Some((rng.unit() * 0.05) as f32),
        }],
        output_classes,
        class_psi: Some((rng.unit() * 0.03) as f32),
    })
}

fn temp_queue(dir: &Path, name: &str) -> TelemetryQueue {
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    TelemetryQueue::open(&path, QueueConfig::default()).expect("open queue")
}

/// Appends `per_commit` health records per commit until `budget` or `max_commits` runs out.
fn append_rate(queue: &TelemetryQueue, per_commit: u64, budget: Duration, max_commits: u64) -> (u64, u64, Duration) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let records: Vec<_> = (0..per_commit).map(|i| (T0 + i, health(&mut rng, i, i))).collect();
    let started = Instant::now();
    let mut commits = 0;
    while commits < max_commits && started.elapsed() < budget {
        queue.append(&records).expect("append");
        commits += 1;
    }
    (commits, commits * per_commit, started.elapsed())
}

fn per_sec(n: u64, d: Duration) -> String {
    let r = n as f64 / d.as_secs_f64();
    if r >= 10_000.0 { format!("{:.0}k", r / 1_000.0) } else { format!("{r:.0}") }
}

fn batch_of(records: Vec<Record>) -> TelemetryBatch {
    TelemetryBatch { first_seq: records[0].seq, last_seq: records[records.len() - 1].seq, records }
}

fn main() {
    let scale: f64 = std::env::var("OUTPOST_BENCH_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1.0);
    let base = std::env::var_os("OUTPOST_BENCH_DIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("outpost-bench-telemetry-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench dir");
    let budget = Duration::from_secs_f64(3.0 * scale);
    println!("# Telemetry queue (redb, Durability::Immediate, {} MiB cache)", QueueConfig::default().cache_bytes >> 20);
    println!("queue files in {}\n", dir.display());

    // Append rates.
    println!("| append | commits | records | records/s | per commit |");
    println!("|---|---:|---:|---:|---:|");
    let row = |name: &str, queue: &TelemetryQueue, per_commit: u64, max_commits: u64| {
        let (commits, records, took) = append_rate(queue, per_commit, budget, max_commits);
        println!(
            "| {name} | {commits} | {records} | {} | {:.2} ms |",
            per_sec(records, took),
            took.as_secs_f64() * 1e3 / commits as f64
        );
    };
    row("1 record per commit", &temp_queue(&dir, "append-1.redb"), 1, 20_000);
    let queue = temp_queue(&dir, "append-100.redb");
    // Stays below the 100,000-record cap.
    row("100 records per commit", &queue, 100, BACKLOG / 100 - 1);
    // Then on a full queue, every commit also drops the 101 oldest and writes a `Dropped` marker.
    while queue.len().expect("len") < BACKLOG {
        append_rate(&queue, 1_000, Duration::MAX, 1);
    }
    row("100 per commit, queue full", &queue, 100, 20_000);
    let full = queue.stats().expect("stats");
    println!("\nfull queue afterwards: {} records, {} dropped in total", full.len, full.dropped_total);
    drop(queue);

    // Backlog replay: 100,000 records written offline, then shipped in 64 KiB batches and acked.
    let queue = temp_queue(&dir, "backlog.redb");
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let started = Instant::now();
    for chunk in 0..BACKLOG / 1_000 {
        let records: Vec<_> = (0..1_000).map(|i| (T0 + chunk * 1_000 + i, health(&mut rng, chunk, i))).collect();
        queue.append(&records).expect("append");
    }
    let fill = started.elapsed();
    let file_bytes = std::fs::metadata(queue.path()).map(|m| m.len()).unwrap_or(0);
    let (mut acked, mut batches, mut shipped, mut queue_time, mut zstd_time) =
        (0, 0u64, 0u64, Duration::ZERO, Duration::ZERO);
    let (mut wire_plain, mut wire_zstd) = (0usize, 0usize);
    loop {
        let t = Instant::now();
        let Some(batch) = queue.batch_after(acked, BATCH_BYTES).expect("batch") else { break };
        queue_time += t.elapsed();
        let (last, n) = (batch.last_seq, batch.records.len() as u64);
        let message = Message::Telemetry(batch);
        let t = Instant::now();
        wire_zstd += codec::encode_compressed(&message).len();
        zstd_time += t.elapsed();
        wire_plain += codec::encode(&message).len();
        let t = Instant::now();
        queue.ack(last).expect("ack");
        queue_time += t.elapsed();
        acked = last;
        batches += 1;
        shipped += n;
    }
    println!("\n| backlog of {BACKLOG} health records | value |");
    println!("|---|---:|");
    println!("| fill (1,000 per commit) | {} records/s |", per_sec(BACKLOG, fill));
    println!("| queue file | {:.1} MB, {:.0} B/record |", file_bytes as f64 / 1e6, file_bytes as f64 / BACKLOG as f64);
    println!("| batches of ≤ 64 KiB | {batches} ({} records each) |", shipped / batches.max(1));
    println!("| replay: batch_after + ack | {} records/s |", per_sec(shipped, queue_time));
    println!("| replay incl. zstd encode | {} records/s |", per_sec(shipped, queue_time + zstd_time));
    println!("| postcard bytes/record | {:.1} |", wire_plain as f64 / shipped as f64);
    println!(
        "| zstd bytes/record (codec::encode_compressed) | {:.1} ({:.1}×) |",
        wire_zstd as f64 / shipped as f64,
        wire_plain as f64 / wire_zstd as f64
    );
    assert_eq!(shipped, BACKLOG, "every record replayed once");

    // A device-day at the default window: one InferenceWindow + one DeviceHealth per 60 s.
    let windows = 24 * 3_600 / WINDOW_SECS;
    let mut rng = Rng(0x5851_f42d_4c95_7f2d);
    let records: Vec<Record> = (0..windows)
        .flat_map(|w| {
            let at = T0 + w * WINDOW_SECS;
            let inference = Record { seq: 2 * w + 1, at, body: window(&mut rng, at - WINDOW_SECS) };
            let health = Record { seq: 2 * w + 2, at, body: health(&mut rng, w * WINDOW_SECS, 0) };
            [inference, health]
        })
        .collect();
    let record_bytes = |r: &Record| postcard::to_allocvec(r).expect("encodes").len();
    println!("\n| per record, default window | postcard bytes |");
    println!("|---|---:|");
    println!("| InferenceWindow (12 bins, 10 classes, no shadow) | {} |", record_bytes(&records[0]));
    println!("| DeviceHealth | {} |", record_bytes(&records[1]));
    println!("\n| device-day, {windows} windows of {WINDOW_SECS} s | messages | postcard | zstd | per record (zstd) |");
    println!("|---|---:|---:|---:|---:|");
    for per_batch in [1usize, 60] {
        let (mut plain, mut zstd, mut messages) = (0usize, 0usize, 0usize);
        for chunk in records.chunks(2 * per_batch) {
            let message = Message::Telemetry(batch_of(chunk.to_vec()));
            plain += codec::encode(&message).len();
            zstd += codec::encode_compressed(&message).len();
            messages += 1;
        }
        println!(
            "| batches of {per_batch} window(s) | {messages} | {:.1} KB | {:.1} KB | {:.1} B |",
            plain as f64 / 1e3,
            zstd as f64 / 1e3,
            zstd as f64 / records.len() as f64
        );
    }
    println!("\n(payload bytes only: MQTT, TLS and TCP framing come on top of each message)");
    let _ = std::fs::remove_dir_all(&dir);
}

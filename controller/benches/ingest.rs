//! Controller ingest benchmark: 10,000 simulated devices (`OUTPOST_BENCH_DEVICES`) announce themselves and
//! send telemetry batches (the golden `telemetry.bin` batch: an inference window and a health record,
//! re-sequenced per device) to a real `outpost serve` process with its embedded broker, over loopback.
//! A device's telemetry counts as ingested when the controller acknowledges it on `down/ack` — which it
//! does only after the device record is durably stored (redb, fsync). Prints messages/s, the controller's
//! memory per registered device (RSS of the `outpost serve` process, measured before and after), and its
//! CPU time. Asserts no times.
//!
//! ```sh
//! CARGO_TARGET_DIR=/var/tmp/outpost-target cargo bench -p outpost-controller --bench ingest
//! ```
//! Devices are simulated by 16 MQTT connections publishing on the devices' topics: the embedded broker
//! does not check identities (production brokers do, with one certificate per device — see
//! `controller/deploy/`), and the controller cost under test is per message, not per connection.

use outpost_protocol::codec;
use outpost_protocol::messages::{Hello, Message, TelemetryBatch};
use outpost_protocol::topics::{self, Down, Up};
use outpost_protocol::{DeviceId, Limits};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const CONNECTIONS: usize = 16;

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// RSS (bytes) and CPU time (user + system, seconds) of a process, from /proc.
fn usage(pid: u32) -> (u64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces): utime and stime are 14th and 15th.
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (rss_kb * 1024, ticks / 100.0)
}

fn golden(name: &str) -> Message {
    let path = format!("{}/../protocol/tests/data/messages/{name}.bin", env!("CARGO_MANIFEST_DIR"));
    codec::decode(&std::fs::read(&path).unwrap(), &Limits::default()).unwrap()
}

fn device(i: usize) -> DeviceId {
    DeviceId::new(format!("bench-{i:05}")).unwrap()
}

async fn connect(port: u16, id: String) -> (AsyncClient, rumqttc::EventLoop) {
    let mut o = MqttOptions::new(id.clone(), "127.0.0.1", port);
    // The embedded broker admits a client under its own client id as username.
    o.set_credentials(id, "");
    o.set_keep_alive(Duration::from_secs(30));
    o.set_max_packet_size(1 << 20, 1 << 20);
    AsyncClient::new(o, 10_000)
}

/// Publishes `msgs` (topic, payload) on `CONNECTIONS` connections, QoS 1, and drives the event loops until
/// every publish is acknowledged by the broker.
async fn publish_all(port: u16, round: usize, msgs: Vec<(String, Vec<u8>)>) {
    let per = msgs.len().div_ceil(CONNECTIONS);
    let mut tasks = Vec::new();
    for (c, part) in msgs.chunks(per).map(<[_]>::to_vec).enumerate() {
        tasks.push(tokio::spawn(async move {
            let (client, mut ev) = connect(port, format!("bench-pub-{round}-{c}")).await;
            let n = part.len();
            let sender = tokio::spawn(async move {
                for (topic, payload) in part {
                    client.publish(topic, QoS::AtLeastOnce, false, payload).await.unwrap();
                }
                client
            });
            let mut acked = 0;
            while acked < n {
                if let Ok(Event::Incoming(Packet::PubAck(_))) = ev.poll().await {
                    acked += 1;
                }
            }
            let client = sender.await.unwrap();
            let _ = client.disconnect().await;
            let _ = tokio::time::timeout(Duration::from_millis(200), ev.poll()).await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::var("OUTPOST_BENCH_DEVICES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let rounds: u64 = 3;
    let dir = std::env::temp_dir().join(format!("outpost-ingest-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (mqtt, api) = (free_port(), free_port());
    let controller = Proc(
        Command::new(env!("CARGO_BIN_EXE_outpost"))
            .args(["serve", "--data-dir", &dir.display().to_string()])
            .args(["--api", &format!("127.0.0.1:{api}"), "--mqtt-listen", &format!("127.0.0.1:{mqtt}")])
            .env("OUTPOST_LOG", "warn")
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = controller.0.id();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", api)).is_err() {
        assert!(Instant::now() < deadline, "outpost serve did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss0, cpu0) = usage(pid);

    // Count acknowledgements per round: the highest acked sequence of each device reaching the round's.
    let acked = Arc::new(AtomicU64::new(0));
    let (watcher, mut wev) = connect(mqtt, "bench-acks".into()).await;
    watcher.subscribe("outpost/v1/devices/+/down/ack", QoS::AtMostOnce).await.unwrap();
    let target = Arc::new(AtomicU64::new(0));
    {
        let (acked, target) = (acked.clone(), target.clone());
        tokio::spawn(async move {
            let mut seen: HashSet<(String, u64)> = HashSet::new();
            loop {
                if let Ok(Event::Incoming(Packet::Publish(p))) = wev.poll().await
                    && let Ok(Message::TelemetryAck(a)) = codec::decode(&p.payload, &Limits::default())
                    && a.up_to_seq >= target.load(Ordering::Relaxed)
                    && seen.insert((p.topic.clone(), a.up_to_seq))
                {
                    acked.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let Message::Hello(hello) = golden("hello") else { panic!("hello.bin") };
    let Message::Telemetry(batch) = golden("telemetry") else { panic!("telemetry.bin") };
    let hellos: Vec<(String, Vec<u8>)> = (0..n)
        .map(|i| {
            let h = Hello { device: device(i), running: hello.running.clone(), ..hello.clone() };
            (topics::up(&device(i), Up::Hello), codec::encode(&Message::Hello(h)))
        })
        .collect();
    let t = Instant::now();
    publish_all(mqtt, 0, hellos).await;
    let hello_secs = t.elapsed().as_secs_f64();

    let per_batch = batch.records.len() as u64;
    let mut results = Vec::new();
    for round in 1..=rounds {
        let (first, last) = ((round - 1) * per_batch + 1, round * per_batch);
        target.store(last, Ordering::Relaxed);
        acked.store(0, Ordering::Relaxed);
        let msgs: Vec<(String, Vec<u8>)> = (0..n)
            .map(|i| {
                let mut b = TelemetryBatch { first_seq: first, last_seq: last, records: batch.records.clone() };
                for (k, r) in b.records.iter_mut().enumerate() {
                    r.seq = first + k as u64;
                }
                (topics::up(&device(i), Up::Telemetry), codec::encode_compressed(&Message::Telemetry(b)))
            })
            .collect();
        let bytes: usize = msgs.iter().map(|m| m.1.len()).sum();
        let t = Instant::now();
        publish_all(mqtt, round as usize, msgs).await;
        let deadline = Instant::now() + Duration::from_secs(600);
        while acked.load(Ordering::Relaxed) < n as u64 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let secs = t.elapsed().as_secs_f64();
        results.push((round, acked.load(Ordering::Relaxed), secs, bytes));
    }
    let (rss1, cpu1) = usage(pid);
    let _ = Down::Ack;

    println!("\n## Controller ingest: {n} simulated devices, `outpost serve` with its embedded broker\n");
    println!("| step | messages | acked | seconds | messages/s | payload bytes |");
    println!("|---|---:|---:|---:|---:|---:|");
    println!("| hello (registration) | {n} | - | {hello_secs:.2} | {:.0} | - |", n as f64 / hello_secs);
    for (round, got, secs, bytes) in &results {
        println!(
            "| telemetry round {round} ({per_batch} records/batch) | {n} | {got} | {secs:.2} | {:.0} | {bytes} |",
            *got as f64 / secs
        );
    }
    println!(
        "\ncontroller process: RSS {:.1} MiB idle → {:.1} MiB with {n} devices = {:.1} KiB per device; CPU {:.1} s",
        rss0 as f64 / 1048576.0,
        rss1 as f64 / 1048576.0,
        (rss1.saturating_sub(rss0)) as f64 / 1024.0 / n as f64,
        cpu1 - cpu0
    );
    println!("(the embedded broker runs inside the controller process: its memory and CPU are included)");
    let _ = std::fs::remove_dir_all(&dir);
}

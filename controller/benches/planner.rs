//! Rollout planner benchmark: evaluation time for 10,000 and 100,000 devices with realistic evidence
//! (labels, a running model, one inference window per device, update events for the devices told, shadow
//! statistics), in the moments that matter: the start, a quiet evaluation mid-rollout (the common case,
//! on every timer tick), the step to the 100 % wave, a rollback of the whole fleet, republishing every
//! desired state after a restart, and the skew view. Also the stored size of the rollout. Prints a
//! Markdown table; asserts no times.
//!
//! ```sh
//! CARGO_TARGET_DIR=/var/tmp/outpost-target cargo bench -p outpost-controller --bench planner
//! ```
//! `OUTPOST_BENCH_SCALE=0.2` shortens the timed loops.

use outpost_controller::rollout::{
    Action, DeviceView, ErrorRateGate, FailurePolicy, Gates, InstallGate, LatencyGate, Percent, Quorum, Release,
    Rollout, RolloutSpec, Selector, ShadowGate, ShadowView, UpdateView, Verb, Wave, WaveSize, WindowView,
};
use outpost_controller::skew::model_skew;
use outpost_protocol::manifest::Targets;
use outpost_protocol::messages::{BundleRef, RunningModel, Watch};
use outpost_protocol::telemetry::UpdateStage;
use outpost_protocol::{Arch, DeviceId, Digest, ModelName, UnixTime, Version};
use std::time::{Duration, Instant};

const T0: UnixTime = 1_760_000_000;
const OLD: Digest = Digest([1; 32]);
const NEW: Digest = Digest([2; 32]);
const BAKE: u64 = 600;

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
}

fn model() -> ModelName {
    ModelName::new("digits").unwrap()
}

fn running(digest: Digest) -> RunningModel {
    let (version, sequence) = if digest == NEW { (Version::new(1, 1, 0), 11) } else { (Version::new(1, 0, 0), 10) };
    RunningModel { name: model(), version, digest, sequence }
}

fn spec() -> RolloutSpec {
    let wave = |p: u32| Wave { size: WaveSize::Percent(Percent(p * 100)), bake_secs: BAKE };
    RolloutSpec {
        id: "bench-rollout".into(),
        release: Release {
            model: model(),
            version: Version::new(1, 1, 0),
            sequence: 11,
            // A 150 KB bundle in 16 KiB chunks.
            bundle: BundleRef { digest: NEW, size: 150_000, chunk_size: 16_384, chunks: vec![Digest([9; 32]); 10] },
            model_digest: NEW,
            targets: Targets { archs: vec![Arch::Aarch64, Arch::X86_64], min_agent: Version::new(0, 1, 0) },
        },
        // Nine devices in ten: the lab tier is left out.
        selector: Selector::parse("tier=prod").unwrap(),
        waves: vec![wave(1), wave(10), wave(50), wave(100)],
        gates: Gates {
            install: Some(InstallGate { max_failure_rate: 0.02, min_finished: 5 }),
            error_rate: Some(ErrorRateGate { max_increase: 0.01, min_requests: 1_000 }),
            latency: Some(LatencyGate { max_p95_regression: 0.25 }),
            shadow: Some(ShadowGate { min_agreement: 0.95, min_compared: 500 }),
            drift: None,
            quorum: Quorum { min_fraction: 0.8, min_devices: 3, max_evidence_age_secs: 600 },
            defaulted: vec![],
        },
        on_failure: FailurePolicy::Rollback,
        shadow: None,
        watch: Watch::default(),
        hold_secs: None,
        kind: outpost_controller::rollout::Kind::Install,
    }
}

fn window(digest: Digest, at: UnixTime, rng: &mut Rng) -> WindowView {
    let r = running(digest);
    WindowView {
        model: r.name,
        version: r.version,
        digest,
        received_at: at - rng.below(120),
        requests: 500 + rng.below(700),
        errors: rng.below(3),
        p95_us: 1_800 + rng.below(400) as u32,
        psi: Some(0.01 + rng.below(50) as f32 / 1_000.0),
        psi_unscored: false,
        implausible: false,
        counted: Default::default(),
    }
}

fn fleet(n: usize, rng: &mut Rng) -> Vec<DeviceView> {
    const REGIONS: [&str; 4] = ["eu-west", "eu-north", "us-east", "ap-south"];
    (0..n)
        .map(|i| {
            let mut d = DeviceView::new(DeviceId::new(format!("edge-{i:07}")).unwrap());
            d.arch = Some(if i % 3 == 0 { Arch::X86_64 } else { Arch::Aarch64 });
            d.agent_version = Some(Version::new(0, 1, (i % 3) as u32));
            d.labels = vec![
                ("region".into(), REGIONS[i % 4].into()),
                ("site".into(), format!("site-{}", i % 250)),
                ("tier".into(), if i % 10 == 0 { "lab" } else { "prod" }.into()),
            ];
            // 3 % of devices are offline at any time.
            d.online = rng.below(100) >= 3;
            d.last_seen = T0 - rng.below(60);
            d.running = vec![running(OLD)];
            d.windows = vec![window(OLD, T0, rng)];
            d
        })
        .collect()
}

/// Devices act on desired states: the told ones install (commit), report a window on the new release and
/// keep the shadow statistics of the candidate.
fn act(devices: &mut [DeviceView], actions: &[Action], now: UnixTime, rng: &mut Rng) {
    let told: std::collections::HashSet<&DeviceId> = actions
        .iter()
        .filter_map(|a| if let Action::Desire { device, .. } = a { Some(device) } else { None })
        .collect();
    for d in devices.iter_mut().filter(|d| told.contains(&d.id)) {
        d.running = vec![running(NEW)];
        d.updates = vec![UpdateView { bundle: NEW, stage: UpdateStage::Committed, reason: None, at: now, seq: 0 }];
        d.windows.insert(0, window(NEW, now, rng));
        d.shadows =
            vec![ShadowView { candidate: NEW, compared: 200, agreed: 196, received_at: now, implausible: false }];
    }
}

fn refresh(devices: &mut [DeviceView], now: UnixTime, rng: &mut Rng) {
    for d in devices.iter_mut().filter(|d| d.online) {
        let digest = d.running[0].digest;
        d.windows[0] = window(digest, now, rng);
    }
}

/// Median and minimum of `runs` timings of `f` on a fresh clone of `r` (cloning is not timed).
fn time(r: &Rollout, runs: usize, mut f: impl FnMut(&mut Rollout) -> usize) -> (Duration, Duration, usize) {
    let mut times = Vec::with_capacity(runs);
    let mut out = 0;
    for _ in 0..runs {
        let mut r = r.clone();
        let start = Instant::now();
        out = f(&mut r);
        times.push(start.elapsed());
    }
    times.sort();
    (times[times.len() / 2], times[0], out)
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

fn main() {
    let scale: f64 = std::env::var("OUTPOST_BENCH_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1.0);
    println!("## Rollout planner (waves 1 %, 10 %, 50 %, 100 %; four gates and quorum; 90 % selected)\n");
    println!("| devices | step | median ms | min ms | actions | µs/device |");
    println!("|---:|---|---:|---:|---:|---:|");
    for n in [10_000usize, 100_000] {
        let runs = (((if n > 10_000 { 7.0 } else { 31.0 }) * scale).ceil() as usize).max(3);
        let mut rng = Rng(0x5eed ^ n as u64);
        let mut devices = fleet(n, &mut rng);
        let row = |step: &str, (median, min, actions): (Duration, Duration, usize)| {
            let per = median.as_secs_f64() * 1e6 / n as f64;
            println!("| {n} | {step} | {} | {} | {actions} | {per:.2} |", ms(median), ms(min));
        };

        let pending = Rollout::new(spec()).unwrap();
        row("start (wave 1 desired)", time(&pending, runs, |r| r.evaluate(&devices, T0).len()));

        // Walk to wave 2 with real decisions, then time a quiet tick inside its bake.
        let mut r = pending.clone();
        let mut now = T0;
        let a = r.evaluate(&devices, now);
        act(&mut devices, &a, now, &mut rng);
        now += BAKE;
        refresh(&mut devices, now, &mut rng);
        let a = r.evaluate(&devices, now);
        act(&mut devices, &a, now, &mut rng);
        if r.state.wave != 1 {
            eprintln!("note: wave 1 did not pass ({:?}); the figures below are not mid-rollout", r.state.phase);
        }
        now += 60;
        refresh(&mut devices, now, &mut rng);
        row("quiet tick in wave 2 (bake)", time(&r, runs, |r| r.evaluate(&devices, now).len()));

        // Promote to wave 3 so the 100 % step enrolls half the fleet.
        let a = r.command(Verb::Promote { full: false }, "bench", &devices, now).unwrap();
        act(&mut devices, &a, now, &mut rng);
        now += BAKE;
        refresh(&mut devices, now, &mut rng);
        row("wave 3 passes, wave 4 desired", time(&r, runs, |r| r.evaluate(&devices, now).len()));

        let a = r.evaluate(&devices, now);
        act(&mut devices, &a, now, &mut rng);
        row("republish every desired state", time(&r, runs, |r| r.desired_states().len()));
        row(
            "undo: revert every device",
            time(&r, runs, |r| r.command(Verb::Undo, "bench", &devices, now).unwrap().len()),
        );
        row("skew of the model", time(&r, runs, |_| model_skew(&model(), None, &devices).versions.len()));

        let json = serde_json::to_vec(&r).unwrap();
        let per = json.len() as f64 / r.state.members.len() as f64;
        println!(
            "| {n} | stored rollout (JSON) | {:.1} MiB | | {} members | {per:.0} B/member |",
            json.len() as f64 / 1_048_576.0,
            r.state.members.len()
        );
    }
}

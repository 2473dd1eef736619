//! The load run, step by step: broker, controller, bundles, N agents; wait until all registered; digits
//! 1.0.0 on every device in one wave, then vibration 1.0.0 added beside it; digits 2.0.0 in gated waves,
//! then vibration 1.1.0 in its own (or both at once with `--together`); each device's own API asked what it
//! serves of both models. Every step leaves marks for the report.

use super::broker::{Mosquitto, SysCounters};
use super::fleet;
use super::meter::{Mark, Pids};
use super::report::{Inputs, RolloutRun};
use super::{Args, Outcome};
use crate::controller_api::Controller;
use crate::demo::progress;
use crate::demo::setup::{self, Release};
use outpost_controller::daemon::registry::DeviceRecord;
use outpost_controller::rollout::{Decision, Phase};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

/// How often the controller is polled (and a mark taken) while waiting: each poll lists every device, so
/// it is load on the controller too; once a second would be a tenth of its work at 1,000 devices.
const POLL: Duration = Duration::from_secs(2);

/// The bake of the one-wave first install of a model, at least: every device installs at once, and a
/// device reports a window of the new model only once it serves it and an application asked it, so a
/// short bake (and its hold) can end before the quorum had the time to report.
const FIRST_BAKE_SECS: u64 = 10;

struct Run {
    ctl: Controller,
    pids: Pids,
    sys: SysCounters,
    started: Instant,
    timeline: Vec<Mark>,
}

impl Run {
    fn mark(&mut self) -> (Mark, Vec<DeviceRecord>) {
        let (devices, bytes) = self.ctl.devices_sized().unwrap_or_default();
        let m = Mark::take(self.started.elapsed().as_secs_f64(), self.pids, &self.sys, &devices, bytes);
        self.timeline.push(m.clone());
        (m, devices)
    }
}

pub fn run(args: &Args, controller_bin: Option<&Path>) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let work = args.out.join("work");
    std::fs::create_dir_all(&work)?;
    println!("== keys, trust policy and signed digits and vibration bundles");
    let (trust, releases) = setup::prepare(&work, &crate::models_dir())?;
    let (v1, v2, vib1, vib2) = (&releases[0], &releases[1], &releases[3], &releases[4]);

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads).enable_all().build()?;
    let broker = Mosquitto::start(&work.join("broker"))?;
    let sys = SysCounters::subscribe(&rt, broker.addr);
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let controller = fleet::start_controller(&rt, controller_bin, &work, &trust, &broker.url(), stop_rx.clone())?;
    let where_ = if controller.pid().is_some() { "separate process" } else { "in this process" };
    println!("== mosquitto {} (pid {}), controller {where_} API http://{}", broker.addr, broker.pid(), controller.api);
    let ctl = Controller::connect(controller.api, &controller.data)?;
    for r in [v1, v2, vib1, vib2] {
        let bytes = std::fs::read(&r.bundle)?;
        ctl.push_bundle(&bytes)?;
        println!("   pushed {} ({} bytes)", r.reference(), bytes.len());
    }
    let pids = Pids { broker: broker.pid(), controller: controller.pid(), this: std::process::id() };
    let mut run = Run { ctl, pids, sys, started, timeline: Vec::new() };
    // Let the $SYS counters arrive once, so the first mark has them.
    std::thread::sleep(Duration::from_millis(1200));
    let before_agents = run.mark().0;
    let fds_before = super::procstat::open_fds();

    println!("== {} agents", args.devices);
    let t0 = Instant::now();
    let devices = fleet::start_agents(&rt, &work, &trust, &broker.url(), args.devices, args.window, &stop_rx)?;
    let spawned_secs = t0.elapsed().as_secs_f64();
    // The applications: a trickle of digits images to every device's local API, so each telemetry window
    // carries inference figures the quorum and error-rate gates judge (404/503 until a model is active).
    let apps: Vec<crate::demo::fleet::Device> =
        devices.iter().map(|(id, api)| crate::demo::fleet::Device { id: id.clone(), api: *api }).collect();
    let traffic = crate::demo::load::Load::start(&apps, crate::demo::load::workloads(&crate::models_dir())?, args.rps);
    let registered = wait_registered(&mut run, args.devices, register_timeout(args.devices));
    let register_secs = t0.elapsed().as_secs_f64();
    let after_register = run.mark().0;
    let fds_agents = super::procstat::open_fds().saturating_sub(fds_before);
    let mut rollouts = Vec::new();
    let mut ok = registered.is_ok();
    match &registered {
        Ok(n) => println!("   {n} devices online after {register_secs:.1} s"),
        Err(e) => println!("   ! {e:#}"),
    }
    let first_bake = FIRST_BAKE_SECS.max(args.bake);
    if ok {
        println!("== digits 1.0.0 on every device, one wave");
        let r = follow(&mut run, &[v1], "100%", first_bake, args, args.devices);
        ok &= r.iter().all(|r| r.converged);
        rollouts.extend(r);
    }
    if ok {
        println!("== vibration 1.0.0 added beside digits on every device, one wave");
        traffic.enable("vibration");
        let r = follow(&mut run, &[vib1], "100%", first_bake, args, args.devices);
        ok &= r.iter().all(|r| r.converged);
        rollouts.extend(r);
    }
    let at_v1 = traffic.snapshot();
    // By default one after the other, so each rollout's span (time, bytes through the broker, failed
    // requests) is its own in the report; `--together` runs both at once, as an operator would.
    let upgrades: Vec<Vec<&Release>> = if args.together { vec![vec![v2, vib2]] } else { vec![vec![v2], vec![vib2]] };
    for releases in upgrades {
        if ok {
            let names: Vec<String> = releases.iter().map(|r| r.label()).collect();
            println!("== {} in waves {}, bake {} s", names.join(" and "), args.waves, args.bake);
            let r = follow(&mut run, &releases, &args.waves, args.bake, args, args.devices);
            ok &= r.iter().all(|r| r.converged);
            rollouts.extend(r);
        }
    }
    let after_v2 = traffic.snapshot();
    let serving = serving(&devices, &[v2, vib2]);
    println!("== each device's own API: {} of {} serve {} and {}", serving, devices.len(), v2.label(), vib2.label());
    ok &= serving == devices.len();
    // A quiet stretch after the rollouts: steady-state telemetry ingest and idle CPU.
    let quiet_from = run.mark().0;
    std::thread::sleep(Duration::from_secs(args.window.max(5) * 2));
    let end = run.mark().0;
    let traffic = traffic.finish();
    let failures = |s: &crate::demo::load::LoadStats| s.failures.values().sum::<u64>();

    let inputs = Inputs {
        devices: args.devices,
        waves: args.waves.clone(),
        bake: args.bake,
        window: args.window,
        controller_separate: controller.pid().is_some(),
        together: args.together,
        spawned_secs,
        register_secs: registered.as_ref().ok().map(|_| register_secs),
        fds_agents,
        serving,
        requests: traffic.total(),
        failed_during_v2: failures(&after_v2) - failures(&at_v1),
        failed_by_status: after_v2
            .failures
            .iter()
            .map(|(s, n)| (*s, n - at_v1.failures.get(s).copied().unwrap_or(0)))
            .collect(),
        requests_during_v2: after_v2.total() - at_v1.total(),
        rps: args.rps,
        before_agents,
        after_register,
        quiet: (quiet_from, end),
        rollouts,
        timeline: std::mem::take(&mut run.timeline),
        wall_secs: started.elapsed().as_secs_f64(),
    };
    let report = args.out.clone();
    for (name, body) in super::report::render(&inputs) {
        std::fs::write(report.join(name), body)?;
    }
    let _ = stop.send(true);
    drop(controller);
    rt.shutdown_timeout(Duration::from_secs(5));
    drop(broker);
    if !args.keep_data {
        let _ = std::fs::remove_dir_all(work.join("devices"));
    }
    Ok(Outcome { converged: ok, inputs, report: report.join("summary.md") })
}

/// Generous: connecting is fast, but each hello is one durable commit at the controller.
fn register_timeout(n: usize) -> Duration {
    Duration::from_secs(60 + n as u64 / 5)
}

fn wait_registered(run: &mut Run, n: usize, timeout: Duration) -> anyhow::Result<usize> {
    let deadline = Instant::now() + timeout;
    let mut last = usize::MAX;
    loop {
        let (m, _) = run.mark();
        if m.online >= n {
            return Ok(m.online);
        }
        if m.online != last {
            println!("   {:>6.1} s  {} of {n} online", m.at, m.online);
            last = m.online;
        }
        if Instant::now() > deadline {
            anyhow::bail!("only {} of {n} devices came online within {} s", m.online, timeout.as_secs());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Starts one rollout per release, all at once, and follows each until it is over, every device runs its
/// release and none is mid-update of its model; or until the timeout.
fn follow(run: &mut Run, releases: &[&Release], waves: &str, bake: u64, args: &Args, n: usize) -> Vec<RolloutRun> {
    let (start, _) = run.mark();
    let mut outs: Vec<RolloutRun> = releases
        .iter()
        .map(|r| RolloutRun {
            id: format!("load-{}-{}", r.model, r.version),
            version: r.label(),
            waves: waves.into(),
            start: start.clone(),
            ..RolloutRun::default()
        })
        .collect();
    // The rollouts still followed.
    let mut open = vec![true; releases.len()];
    for (k, r) in releases.iter().enumerate() {
        if let Err(e) = run.ctl.start_rollout(&rollout_request(&outs[k].id, r, waves, bake)) {
            outs[k].note = format!("{e:#}");
            println!("   ! {}", outs[k].note);
            open[k] = false;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(args.rollout_timeout);
    let mut last_wave = vec![usize::MAX; releases.len()];
    while open.contains(&true) {
        let states: Vec<_> = outs.iter().zip(&open).map(|(out, open)| open.then(|| run.ctl.rollout(&out.id))).collect();
        let (m, devices) = run.mark();
        for (k, state) in states.into_iter().enumerate() {
            let (Some(state), r, out) = (state, releases[k], &mut outs[k]) else { continue };
            let Ok(rollout) = state else {
                out.note = "the controller stopped answering".into();
                out.end = m.clone();
                open[k] = false;
                continue;
            };
            if rollout.state.wave != last_wave[k] {
                last_wave[k] = rollout.state.wave;
                out.wave_starts.push(m.at);
            }
            let on = m.versions.get(&out.version).copied().unwrap_or(0) as usize;
            let model = outpost_protocol::ModelName::new(r.model).expect("a model name");
            let updating =
                devices.iter().filter(|d| d.last_event(&model).and_then(|e| progress::mid_update(e.to)).is_some());
            let updating = updating.count();
            println!(
                "   {:>6.1} s  {} wave {}/{}  {on}/{n} on {}  {updating} updating it",
                m.at,
                rollout.state.phase.name(),
                rollout.state.wave + 1,
                rollout.spec.waves.len(),
                out.version,
            );
            let over = !matches!(rollout.state.phase, Phase::Pending | Phase::Progressing);
            if over && updating == 0 && on == n && rollout.state.phase == Phase::Completed {
                out.converged = true;
            }
            if out.converged || (over && rollout.state.phase != Phase::Completed) || Instant::now() > deadline {
                out.phase = rollout.state.phase.name().to_string();
                out.advanced =
                    rollout.state.history.iter().filter(|e| matches!(e.decision, Decision::Advanced { .. })).count();
                out.failed_installs = devices.iter().filter(|d| failed(d, r)).count();
                out.on_target = on;
                if !out.converged {
                    let why = match &rollout.state.phase {
                        Phase::Paused { reason } | Phase::RolledBack { reason } => reason.clone(),
                        _ => "timed out".into(),
                    };
                    out.note = format!("{} ({why}) with {on} of {n} devices on {}", out.phase, out.version);
                }
                out.end = m.clone();
                open[k] = false;
            }
        }
        if open.contains(&true) {
            std::thread::sleep(POLL);
        }
    }
    outs
}

/// The rollout the run asks the controller for.
fn rollout_request(id: &str, r: &Release, waves: &str, bake: u64) -> serde_json::Value {
    serde_json::json!({
        "id": id,
        "bundle": r.reference(),
        "waves": waves,
        "bake_secs": bake,
        "watch_secs": 2,
        // Installs and who reports. The error-rate gate wants more requests than a trickle gives a small
        // wave in one bake; the demo runs it (and the latency and shadow gates) under real load.
        "max_failure_rate": 0.02,
        "quorum": 0.8,
        "on_failure": "pause",
        // Only these gates (the report says so): the default p95 latency gate would judge 20 debug-built
        // agents sharing two cores, which slow each other down, not the release.
        "no_default_gates": true,
    })
}

/// The device's last update event of the release's model is a refusal or a rollback of this version.
fn failed(d: &DeviceRecord, r: &Release) -> bool {
    use outpost_protocol::telemetry::UpdateStage;
    let model = outpost_protocol::ModelName::new(r.model).expect("a model name");
    d.last_event(&model)
        .is_some_and(|e| matches!(e.to, UpdateStage::Rejected | UpdateStage::RolledBack) && e.version == r.version)
}

/// How many devices' own inference APIs say they serve every one of `releases` (asked over HTTP, not the
/// controller).
fn serving(devices: &[(String, SocketAddr)], releases: &[&Release]) -> usize {
    let http: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let serves = |api: &SocketAddr, r: &Release| {
        http.get(&format!("http://{api}/v2/models/{}", r.model))
            .call()
            .ok()
            .and_then(|mut a| a.body_mut().read_json::<serde_json::Value>().ok())
            .is_some_and(|v| v["versions"][0].as_str() == Some(r.version.to_string().as_str()))
    };
    devices.iter().filter(|(_, api)| releases.iter().all(|r| serves(api, r))).count()
}

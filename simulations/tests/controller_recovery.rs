//! What operators fear during a rollout, end to end with real parts (mosquitto, the `outpost serve`
//! process, in-process agents): the controller is killed (`kill -9`) mid-rollout and restarted; a device
//! is offline during its wave and comes back later. Both catch up, nothing is decided twice. A controller
//! restarted with its wall clock two hours back still has its revert taken. Plus the CLI's refusals: a
//! one-line reason, a non-zero exit, nothing half-created.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::controller::{Controller, wait_until};
use support::*;

fn start_controller(data: &Path, mqtt: u16, dir: &Path, api_port: u16) -> Proc {
    start_controller_with(data, mqtt, dir, api_port, |_| {})
}

/// `start_controller`, with `env` setting the process's environment first.
fn start_controller_with(data: &Path, mqtt: u16, dir: &Path, api_port: u16, env: impl FnOnce(&mut Command)) -> Proc {
    let d = |p: &Path| p.display().to_string();
    let api = format!("127.0.0.1:{api_port}");
    // The director key the test policy names: devices take its reverts.
    director_key_into(data);
    let mut cmd = Command::new(outpost_bin());
    env(&mut cmd);
    let proc = Proc(
        cmd.args(["serve", "--data-dir", &d(data), "--api", &api, "--broker", &format!("mqtt://127.0.0.1:{mqtt}")])
            .args(["--trust", &d(&dir.join("trust.policy")), "--root-pub", &d(&dir.join("root.pub"))])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_port(api_port);
    proc
}

/// Debian's libfaketime (scripts/test.sh installs it): preloaded, it moves the process's wall clock only
/// (`FAKETIME_DONT_FAKE_MONOTONIC`: timers and timeouts run as usual).
fn clock_ahead(offset: &str) -> impl FnOnce(&mut Command) {
    let lib = format!("/usr/lib/{}-linux-gnu/faketime/libfaketimeMT.so.1", std::env::consts::ARCH);
    assert!(Path::new(&lib).exists(), "{lib} is missing: install Debian's libfaketime (scripts/test.sh does)");
    let offset = offset.to_owned();
    move |cmd: &mut Command| {
        cmd.env("LD_PRELOAD", lib).env("FAKETIME", offset).env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    }
}

/// What these tests ask of the controller beside `Controller`'s own.
impl Controller {
    /// Waits until `pred` holds for the rollout's JSON.
    fn wait_rollout(&self, id: &str, secs: u64, what: &str, pred: impl Fn(&serde_json::Value) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let out = self.cli(&["rollout", "status", id, "-o", "json"]);
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout)
                && pred(&v)
            {
                return;
            }
            if Instant::now() >= deadline {
                // What each device told the controller, beside the rollout: where a decision came from.
                let list = self.json(&["devices", "list"]);
                let ids = list.as_array().into_iter().flatten().filter_map(|d| d["id"].as_str());
                let shown: Vec<String> = ids.map(|id| self.run(&["devices", "show", id])).collect();
                panic!("{what}: {}\n{}", self.run(&["rollout", "status", id]), shown.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Local applications use the models the whole time, on every port in `ports` (a test takes a port out when
/// its device goes away): the gates judge real inference windows and the quorum counts them.
fn keep_inferring(ports: Arc<Mutex<Vec<u16>>>) {
    std::thread::spawn(move || {
        loop {
            let now: Vec<u16> = ports.lock().unwrap().clone();
            for p in now {
                infer(p);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
}

/// digits 1.0.0 (sequence 1) and 2.0.0 (sequence 2), pushed.
fn push_two_releases(cli: &Controller, dir: &Path) {
    for (model, version, seq) in [("v1", "1.0.0", 1u64), ("v2", "2.0.0", 2)] {
        let out = cli.push_bundle(dir, model, bundle_of(model, version, seq));
        assert!(out.status.success(), "push {model}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// Waits until the agent on `port` serves `version`, with what the controller knows on a timeout.
fn wait_serving(cli: &Controller, port: u16, version: &str, secs: u64, what: &str) {
    wait_until(
        what,
        secs,
        || serving(port).as_deref() == Some(version),
        || format!("serving {:?}\n{}", serving(port), cli.run(&["devices", "list"])),
    );
}

fn phase(v: &serde_json::Value) -> String {
    let p = &v["state"]["phase"];
    p.as_str().map(str::to_owned).or_else(|| p.as_object().and_then(|o| o.keys().next().cloned())).unwrap_or_default()
}

#[test]
fn a_controller_killed_mid_rollout_and_a_device_offline_during_its_wave_both_catch_up() {
    let dir = tempdir("recovery");
    let (_broker, mqtt) = mosquitto(&dir);
    trust_files(&dir);
    let data = dir.join("controller-data");
    let api_port = free_port();
    let mut controller = start_controller(&data, mqtt, &dir, api_port);
    let cli = Controller::attach(api_port, &data, &dir.join("controller.log"));
    let mut agents: Vec<(Running, u16)> =
        (0..3).map(|i| stoppable_agent(&dir, &format!("dev-{i}"), mqtt, "site = \"lab\"", 0)).collect();
    let ports = Arc::new(Mutex::new(agents.iter().map(|a| a.1).collect::<Vec<u16>>()));
    keep_inferring(ports.clone());
    cli.wait_devices("the three devices register", 30, |l| l.len() == 3);
    push_two_releases(&cli, &dir);
    let start = |bundle: &str, id: &str, waves: &str, bake: &str| {
        cli.run(&[
            "rollout",
            "start",
            "--bundle",
            bundle,
            "--waves",
            waves,
            "--bake",
            bake,
            "--watch",
            "1s",
            "--max-failure-rate",
            "50%",
            "--quorum",
            "50%",
            "--id",
            id,
        ])
    };
    start("digits@1.0.0", "first", "100%", "2s");
    cli.wait_rollout("first", 60, "v1 did not complete", |v| phase(v) == "Completed");

    // dev-2 goes offline; v2 starts with a 1-device canary and a long enough bake to kill the controller in.
    let (gone, gone_port) = agents.pop().unwrap();
    ports.lock().unwrap().retain(|p| *p != gone_port);
    gone.halt();
    let deadline = Instant::now() + Duration::from_secs(30);
    while cli.json(&["devices", "show", "dev-2"])["online"] != false {
        assert!(Instant::now() < deadline, "the controller never saw dev-2 go offline");
        std::thread::sleep(Duration::from_millis(100));
    }
    start("digits@2.0.0", "second", "1,100%", "6s");
    cli.wait_rollout("second", 30, "the canary was never told", |v| {
        v["state"]["members"].as_object().is_some_and(|m| m.len() == 1)
    });
    // kill -9 mid-bake, restart on the same data directory.
    controller.0.kill().unwrap();
    controller.0.wait().unwrap();
    drop(controller);
    std::thread::sleep(Duration::from_secs(2));
    let _controller = start_controller(&data, mqtt, &dir, api_port);
    cli.wait_rollout("second", 90, "the rollout did not resume and complete after the restart", |v| {
        phase(v) == "Completed"
    });
    for (_, port) in &agents {
        wait_serving(&cli, *port, "2.0.0", 30, "an online device gets v2");
    }
    // Each decision was taken once, across the crash.
    let audit = cli.run(&["audit", "--rollout", "second", "-o", "json"]);
    let entries: Vec<serde_json::Value> = serde_json::from_str(&audit).unwrap();
    let count = |d: &str| entries.iter().filter(|e| e.to_string().contains(d)).count();
    assert_eq!((count("Started"), count("Advanced"), count("\"Completed\"")), (1, 1, 1), "{audit}");

    // dev-2 returns to a completed rollout: its retained desired state is waiting, it installs v2.
    let (_back, port) = stoppable_agent(&dir, "dev-2", mqtt, "site = \"lab\"", 0);
    ports.lock().unwrap().push(port);
    wait_serving(&cli, port, "2.0.0", 60, "the returning device catches up");
    // The controller's view converges: the device announced its new model.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let skew = cli.run(&["skew"]);
        if skew.contains("2.0.0  3 online") && skew.contains("on target 3") {
            break;
        }
        assert!(Instant::now() < deadline, "{skew}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The controller's clock was two hours ahead when it told a device to install digits 2.0.0; then the
/// clock is put right (a restart after an NTP correction) and the operator aborts with revert. Devices
/// refuse a director statement issued before the newest they took, so before, the revert was refused as
/// stale (`stale_request`) until the clock caught up: the device kept serving 2.0.0 for two hours.
#[test]
fn a_revert_from_a_controller_whose_clock_stepped_back_is_taken() {
    let dir = tempdir("clock-back");
    let (_broker, mqtt) = mosquitto(&dir);
    trust_files(&dir);
    let data = dir.join("controller-data");
    let api_port = free_port();
    let mut controller = start_controller_with(&data, mqtt, &dir, api_port, clock_ahead("+2h"));
    let cli = Controller::attach(api_port, &data, &dir.join("controller.log"));
    let (_agent, port) = stoppable_agent(&dir, "dev-0", mqtt, "site = \"lab\"", 0);
    keep_inferring(Arc::new(Mutex::new(vec![port])));
    cli.wait_devices("the device registers", 30, |l| l.len() == 1);
    push_two_releases(&cli, &dir);
    let start = |bundle: &str, id: &str, bake: &str| {
        let waves = ["rollout", "start", "--bundle", bundle, "--waves", "1,100%", "--bake", bake, "--watch", "1s"];
        cli.run(
            &[&waves[..], &["--no-default-gates", "--quorum", "50%", "--max-failure-rate", "50%", "--id", id]].concat(),
        )
    };
    start("digits@1.0.0", "first", "10s");
    cli.wait_rollout("first", 60, "1.0.0 did not complete", |v| phase(v) == "Completed");
    // 2.0.0 to the device, baking long: the rollout is still in its first wave when it is aborted.
    start("digits@2.0.0", "second", "1h");
    wait_serving(&cli, port, "2.0.0", 60, "the device gets 2.0.0");
    cli.wait_rollout("second", 60, "the device did not commit 2.0.0", |v| v["state"]["progress"]["committed"] == 1);
    // The clock is put right: two hours back.
    controller.0.kill().unwrap();
    controller.0.wait().unwrap();
    drop(controller);
    let _controller = start_controller(&data, mqtt, &dir, api_port);
    cli.run(&["rollout", "abort", "--revert", "second"]);
    wait_serving(&cli, port, "1.0.0", 60, "the revert is taken");
}

#[test]
fn operator_mistakes_get_a_one_line_reason_a_nonzero_exit_and_create_nothing() {
    let dir = tempdir("cli-refusals");
    let (_broker, mqtt) = mosquitto(&dir);
    trust_files(&dir);
    let data = dir.join("controller-data");
    let api_port = free_port();
    let _controller = start_controller(&data, mqtt, &dir, api_port);
    let cli = Controller::attach(api_port, &data, &dir.join("controller.log"));
    let path = dir.join("v1.obundle");
    std::fs::write(&path, bundle_of("v1", "1.0.0", 1)).unwrap();
    cli.run(&["bundle", "push", &path.display().to_string()]);

    let base = ["rollout", "start", "--bundle", "digits@1.0.0"];
    let cases: &[(&[&str], &str)] = &[
        (&["rollout", "start", "--bundle", "digits@9.9.9"], "digits@9.9.9"),
        (&["--selector", "region"], "selector"),
        (&["--waves", "50%,10%"], "wave"),
        (&["--max-failure-rate", "150%"], "150%"),
        (&["--quorum", "120%"], "120%"),
        (&["--on-failure", "explode"], "explode"),
        // 1 % or 100 %? Refused rather than guessed.
        (&["--max-error-rate", "1"], "ambiguous"),
        // No device at all would install it: refused with the counts, not started empty.
        (&["--waves", "100%"], "no device would install digits 1.0.0: 0 of 0"),
    ];
    for (args, needle) in cases {
        let args: Vec<&str> = if args[0] == "rollout" { args.to_vec() } else { [&base[..], args].concat() };
        let out = cli.cli(&args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "outpost {args:?} was accepted");
        // The reason is the first line (clap adds a pointer to --help after its own refusals).
        let first = err.lines().next().unwrap_or_default().to_lowercase();
        assert!(first.contains(&needle.to_lowercase()), "outpost {args:?}: {err}");
        assert!(err.trim().lines().count() <= 3, "a reason, not a dump: {err}");
    }
    let history = cli.json(&["rollout", "history"]);
    assert_eq!(history.as_array().map(Vec::len), Some(0), "nothing half-created: {history}");

    // An unreachable controller: a reason naming it, exit 2.
    let out = Command::new(outpost_bin())
        .args(["devices", "list", "--controller", &format!("http://127.0.0.1:{}", free_port())])
        .env("OUTPOST_TOKEN", "x")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("cannot reach the controller"), "{err}");
}

//! The controller daemon with real agents over a real mosquitto: devices register and report, bundles
//! are verified on push, the operator CLI shows it all.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};
use support::*;

#[test]
fn devices_register_over_mosquitto_and_pushed_bundles_are_verified() {
    let dir = tempdir("controller");
    let (_broker, port) = mosquitto(&dir);
    let ctl = Controller::with_broker(&dir, port);
    let _a = agent(&dir, "dev-eu-1", port, "region = \"eu\"");
    let _b = agent(&dir, "dev-us-1", port, "region = \"us\"");
    let url = ctl.url.clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = ctl.cli(&["devices", "list", "-o", "json"]);
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        // Registered by its hello (labels), not only seen online through presence or telemetry.
        let joined = |d: &serde_json::Value| d["online"] == true && d["labels"]["region"].is_string();
        if list.as_array().map(|l| l.len()) == Some(2) && list.as_array().unwrap().iter().all(joined) {
            break;
        }
        assert!(Instant::now() < deadline, "devices did not register: {list} {}", String::from_utf8_lossy(&out.stderr));
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = ctl.cli(&["devices", "list", "-l", "region=eu"]);
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(table.contains("dev-eu-1") && !table.contains("dev-us-1"), "{table}");
    // Telemetry flows and is acked: the cursor advances.
    std::thread::sleep(Duration::from_secs(3));
    let out = ctl.cli(&["devices", "show", "dev-eu-1", "-o", "json"]);
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(shown["telemetry"]["received"].as_u64() >= Some(2), "{shown}");
    assert_eq!(shown["telemetry"]["missing"], 0);

    let out = ctl.push_bundle(&dir, "digits", digits_bundle("1.0.0", 1));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut bad = digits_bundle("1.0.1", 2);
    let n = bad.len();
    bad[n / 2] ^= 1;
    let out = ctl.push_bundle(&dir, "tampered", bad);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("payload_digest_mismatch"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ctl.cli(&["bundle", "list"]);
    let list = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(list.contains("digits@1.0.0") && !list.contains("1.0.1"), "{list}");
    // Without the token, nothing.
    let out = Command::new(outpost_bin())
        .args(["devices", "list", "--controller", &url, "--data-dir", "/nonexistent"])
        .env_remove("OUTPOST_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(outpost_bin())
        .args(["devices", "list", "--controller", &url])
        .env("OUTPOST_TOKEN", "wrong")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("API token"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn with_no_config_the_controller_runs_its_own_broker_and_devices_join_it() {
    let dir = tempdir("embedded");
    let (mqtt, api_port) = (free_port(), free_port());
    let data = dir.join("data");
    let api = format!("127.0.0.1:{api_port}");
    // The default data directory, with the director key the test trust policy names.
    director_key_into(&dir.join("outpost-data"));
    let _controller = Proc(
        Command::new(outpost_bin())
            .current_dir(&dir)
            .args(["serve", "--api", &api, "--mqtt-listen", &format!("127.0.0.1:{mqtt}")])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_port(api_port);
    trust_files(&dir);
    let _a = agent(&dir, "dev-embedded", mqtt, "site = \"lab\"");
    let url = format!("http://{api}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = Command::new(outpost_bin())
            .current_dir(&dir)
            .args(["devices", "list", "--controller", &url])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout).contains("dev-embedded") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no device joined the embedded broker: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The default data directory is ./outpost-data in the working folder, with the API token in it.
    assert!(dir.join("outpost-data/api-token").exists());
    let _ = data;
}

#[test]
fn a_good_rollout_completes_in_waves_and_a_bad_model_is_caught_at_the_canary_and_rolled_back() {
    let dir = tempdir("rollout");
    let (_broker, port) = mosquitto(&dir);
    let ctl = Controller::with_broker(&dir, port);
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let _agents: Vec<_> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| agent_on(&dir, &format!("dev-{i}"), port, "site = \"lab\"", *p))
        .collect();
    for p in &ports {
        wait_port(*p);
    }
    // Local applications use their models the whole time.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (stop, ports) = (stop.clone(), ports.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for p in &ports {
                    infer(*p);
                }
            }
        })
    };
    let run = |args: &[&str]| ctl.run(args);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !run(&["devices", "list"]).contains("dev-3") {
        assert!(Instant::now() < deadline, "devices did not register");
        std::thread::sleep(Duration::from_millis(100));
    }
    for (name, model, version, seq) in [("v1", "v1", "1.0.0", 1u64), ("bad", "bad", "2.0.0", 2)] {
        assert!(ctl.push_bundle(&dir, name, bundle_of(model, version, seq)).status.success());
    }

    // 1. v1 everywhere: one canary, then the rest.
    let started = now();
    run(&[
        "rollout",
        "start",
        "--bundle",
        "digits@1.0.0",
        "--waves",
        "1,100%",
        "--bake",
        "6s",
        "--watch",
        "1s",
        "--max-failure-rate",
        "50%",
        "--quorum",
        "50%",
        "--id",
        "first",
    ]);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let status = run(&["rollout", "status", "first"]);
        if status.contains("phase     Completed") && ports.iter().all(|p| serving(*p).as_deref() == Some("1.0.0")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rollout did not complete:\n{status}\n{}",
            (0..4).map(|i| run(&["devices", "show", &format!("dev-{i}")])).collect::<Vec<_>>().join("\n")
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // Each update event reaches the controller twice (live on up/events, then in the device's telemetry):
    // once both copies are in (nothing waits unmatched), `devices show` lists each event once.
    let deadline = Instant::now() + Duration::from_secs(60);
    let shown = loop {
        let json = run(&["devices", "show", "dev-0", "-o", "json"]);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
        let digits = &v["models"]["digits"];
        let matched = digits["events"].as_array().is_some_and(|e| !e.is_empty())
            && digits.get("unmatched_live").is_none()
            && digits.get("unmatched_recorded").is_none();
        if matched {
            break run(&["devices", "show", "dev-0"]);
        }
        assert!(Instant::now() < deadline, "the events' telemetry copies did not arrive: {json}");
        std::thread::sleep(Duration::from_millis(250));
    };
    // Each listed with when the controller received it (UTC, and how long ago), in that order.
    let events: Vec<&str> = shown.lines().skip_while(|l| !l.starts_with("events ")).skip(1).collect();
    let mut times = Vec::new();
    for step in ["idle -> fetching", "activating -> watching", "watching -> committed"] {
        let lines: Vec<&str> = events.iter().copied().filter(|l| l.contains(" digits ") && l.contains(step)).collect();
        assert_eq!(lines.len(), 1, "`{step}` listed once:\n{shown}");
        let at = lines[0].get(2..21).and_then(outpost_controller::duration::parse_utc);
        let at = at.unwrap_or_else(|| panic!("`{step}` has no UTC time: {:?}\n{shown}", lines[0]));
        assert!((started..=now()).contains(&at), "`{step}` received at {at}, the rollout started at {started}");
        assert!(lines[0].contains(" ago "), "{shown}");
        times.push(at);
    }
    assert!(times.is_sorted(), "oldest first: {shown}");
    let json: serde_json::Value = serde_json::from_str(&run(&["devices", "show", "dev-0", "-o", "json"])).unwrap();
    let ats: Vec<Option<u64>> =
        json["models"]["digits"]["events"].as_array().unwrap().iter().map(|e| e["at"].as_u64()).collect();
    assert!(
        ats.iter().all(|at| at.is_some_and(|at| (started..=now()).contains(&at))),
        "-o json has each event's `at`: {json}"
    );

    // 2. The scrambled model: shadowed at the canary, disagreement fails the gate, the canary reverts.
    run(&[
        "rollout",
        "start",
        "--bundle",
        "digits@2.0.0",
        "--waves",
        "1,100%",
        "--bake",
        "6s",
        "--shadow",
        "4s",
        "--watch",
        "1s",
        "--min-shadow-agreement",
        "90%",
        "--on-failure",
        "rollback",
        "--quorum",
        "50%",
        "--id",
        "second",
    ]);
    let mut saw_bad = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        for (i, p) in ports.iter().enumerate() {
            if serving(*p).as_deref() == Some("2.0.0") {
                saw_bad.insert(i);
            }
        }
        let status = run(&["rollout", "status", "second"]);
        if status.contains("phase     RolledBack") && ports.iter().all(|p| serving(*p).as_deref() == Some("1.0.0")) {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the bad rollout was not rolled back:\n{status}\n{}",
            (0..4).map(|i| run(&["devices", "show", &format!("dev-{i}"), "-o", "json"])).collect::<Vec<_>>().join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.join().unwrap();
    println!("{status}");
    assert!(saw_bad.len() <= 1, "only the canary may ever serve the bad model: {saw_bad:?}");
    let audit = run(&["audit"]);
    assert!(audit.contains("shadow"), "the decision is audited with its evidence:\n{audit}");
    let skew = run(&["skew"]);
    assert!(skew.contains("1.0.0  4 online"), "{skew}");
}

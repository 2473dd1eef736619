//! Rollout verbs off the happy path (issue 16), with real parts: mosquitto, the `outpost serve` process,
//! in-process agents running the digits models under inference load, and the `outpost` CLI read as text.
//! An older rollout's undo never puts an aborted release back and a fleet never gets stuck; a gate that
//! fails with `--on-failure pause` activates nothing more; evidence from an earlier rollout of the same
//! bytes does not count; progress reaches the whole fleet on completion; a local install shows at once;
//! history is in time order; piping the CLI into `head` ends quietly. Default gates show in status, `rollout
//! list` shows the live rollout, a rollout file starts one, `status --watch` exits 0 on completion.

mod support;

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::controller::Controller;
use support::*;

/// What these tests ask of the controller beside `Controller`'s own.
impl Controller {
    fn status(&self, id: &str) -> Value {
        self.json(&["rollout", "status", id])
    }

    /// Waits until `pred` holds for the rollout's JSON.
    fn wait_rollout(&self, id: &str, what: &str, pred: impl Fn(&Value) -> bool) {
        until(what, || pred(&self.status(id)), || self.run(&["rollout", "status", id]));
    }

    /// The version of digits each device runs, as `devices list` reports it.
    fn versions(&self) -> Vec<(String, String)> {
        let list = self.json(&["devices", "list"]);
        let mut out: Vec<(String, String)> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                let v = d["running"].as_array().and_then(|l| l.iter().find(|m| m["name"] == "digits"));
                let text = v.and_then(|m| m["version"].as_str()).unwrap_or_default().to_owned();
                (d["id"].as_str().unwrap().to_owned(), text)
            })
            .collect();
        out.sort();
        out
    }
}

/// Every device runs digits `v`, as `devices list` says.
fn all_on(v: &str) -> impl Fn(&Controller) -> bool + '_ {
    move |cli: &Controller| cli.versions().iter().all(|(_, have)| have == v)
}

/// Generous: a loaded machine fetches, verifies and self-tests slowly in a debug build.
fn until(what: &str, mut ok: impl FnMut() -> bool, context: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(240);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}:\n{}", context());
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn phase(v: &Value) -> String {
    let p = &v["state"]["phase"];
    p.as_str().map(str::to_owned).or_else(|| p.as_object().and_then(|o| o.keys().next().cloned())).unwrap_or_default()
}

/// `outpost ARGS | head` where head is gone before the first line: the CLI must end quietly, not panic.
fn into_a_closed_pipe(cli: &Controller, args: &[&str]) -> std::process::Output {
    let mut child = Command::new(outpost_bin())
        .args(args)
        .args(cli.remote())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    child.wait_with_output().unwrap()
}

#[test]
fn verbs_off_the_happy_path_never_bring_an_aborted_release_back_nor_leave_the_fleet_stuck() {
    let dir = tempdir("rollout-verbs");
    let (_broker, mqtt) = mosquitto(&dir);
    let (policy, root_pub) = trust_files(&dir);
    let d = |p: &Path| p.display().to_string();
    let cli = Controller::with_broker(&dir, mqtt);
    let agents: Vec<(Running, u16)> =
        (0..3).map(|i| stoppable_agent(&dir, &format!("dev-{i}"), mqtt, "site = \"lab\"", 0)).collect();
    // Applications ask every device about held-out digits the whole time: gates judge real windows.
    let raw = std::fs::read(outpost_simulations::models_dir().join("digits-test-inputs.f32")).unwrap();
    let floats: Vec<f32> = raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    let images: Vec<Vec<f32>> = floats.chunks_exact(64).map(<[f32]>::to_vec).collect();
    let ports = Arc::new(Mutex::new(agents.iter().map(|a| a.1).collect::<Vec<u16>>()));
    {
        let ports = ports.clone();
        std::thread::spawn(move || {
            for image in images.iter().cycle() {
                let now: Vec<u16> = ports.lock().unwrap().clone();
                for p in now {
                    infer_image(p, image);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
    }
    until("three devices", || cli.json(&["devices", "list"]).as_array().map(|l| l.len()) == Some(3), String::new);
    for (model, version, seq) in [("v1", "1.0.0", 1u64), ("v2", "2.0.0", 2), ("subtle", "2.1.0", 3), ("v2", "2.2.0", 4)]
    {
        let path = dir.join(format!("{version}.obundle"));
        std::fs::write(&path, bundle_of(model, version, seq)).unwrap();
        cli.run(&["bundle", "push", &d(&path)]);
    }
    // Only the first rollout keeps the default gates (its status shows them; a first install has no latency
    // baseline). The later ones name their gates: the default p95 gate judged three debug-built agents
    // sharing two loaded cores (16.8 ms against a 1.0 ms baseline paused d-second), not the release.
    let start = |bundle: &str, id: &str, waves: &str, bake: &str, extra: &[&str]| {
        let base = ["rollout", "start", "--bundle", bundle, "--waves", waves, "--bake", bake, "--watch", "1s"];
        let defaults: &[&str] = if id == "e-first" { &[] } else { &["--no-default-gates"] };
        cli.run(&[&base[..], &["--quorum", "50%", "--max-failure-rate", "50%", "--id", id], defaults, extra].concat())
    };

    // Bakes of 10 s: a loaded machine's debug build installs slower than a 2 s bake and its hold (the
    // rollout would pause, inconclusive). Ids are not in time order: history must be.
    start("digits@1.0.0", "e-first", "100%", "10s", &[]);
    // No gate flag but the quorum and the install gate: the default gates are there, and status says so.
    let status = cli.run(&["rollout", "status", "e-first"]);
    for want in ["error-rate", "p95-latency", "(default)", "install-failures", "at most 50% of finished installs fail"]
    {
        assert!(status.contains(want), "{want:?} missing:\n{status}");
    }
    assert!(
        !status.contains("at most 50% of finished installs fail (default)"),
        "a named gate is no default:\n{status}"
    );
    cli.wait_rollout("e-first", "v1 completes", |v| phase(v) == "Completed");
    start("digits@2.0.0", "d-second", "1,100%", "10s", &[]);
    cli.wait_rollout("d-second", "v2 completes", |v| phase(v) == "Completed");
    // Progress counts every wave, not the last wave's share (it froze at 2/3).
    until("everyone on 2.0.0", || all_on("2.0.0")(&cli), || format!("{:?}", cli.versions()));
    cli.wait_rollout("d-second", "progress 3/3", |v| v["state"]["progress"]["installed"] == 3);
    let status = cli.run(&["rollout", "status", "d-second"]);
    assert!(status.lines().any(|l| l.starts_with("progress") && l.contains(" 3/3 installed")), "{status}");

    // 2.1.0 (quietly wrong) goes to every device, then is aborted with revert: back to 2.0.0.
    start("digits@2.1.0", "c-subtle", "1,100%", "10m", &[]);
    cli.wait_rollout("c-subtle", "the canary is told", |v| {
        v["state"]["members"].as_object().is_some_and(|m| m.len() == 1)
    });
    cli.run(&["rollout", "promote", "--full", "c-subtle"]);
    until("everyone on 2.1.0", || all_on("2.1.0")(&cli), || format!("{:?}", cli.versions()));
    cli.wait_rollout("c-subtle", "2.1.0 committed everywhere", |v| v["state"]["progress"]["committed"] == 3);
    cli.run(&["rollout", "abort", "--revert", "c-subtle"]);
    until("everyone back on 2.0.0", || all_on("2.0.0")(&cli), || format!("{:?}", cli.versions()));

    // Undo of the older v2 rollout would switch devices to their previous model: the aborted 2.1.0.
    let audit_before = cli.json(&["audit"]).as_array().unwrap().len();
    let undo = cli.cli(&["rollout", "undo", "d-second"]);
    let err = String::from_utf8_lossy(&undo.stderr);
    assert_eq!(undo.status.code(), Some(2), "undo of a superseded rollout was accepted: {err}");
    assert!(err.contains("c-subtle") && err.contains("only the newest rollout"), "{err}");
    assert_eq!(phase(&cli.status("d-second")), "Completed");
    assert_eq!(cli.json(&["audit"]).as_array().unwrap().len(), audit_before, "a refused verb changes nothing");
    assert!(all_on("2.0.0")(&cli), "{:?}", cli.versions());

    // The same 2.1.0 bytes again, shadowed first, gated on agreement, pausing on failure. Right after the
    // start no device has reported anything about this rollout: the windows of c-subtle do not count.
    start(
        "digits@2.1.0",
        "b-subtle-again",
        "1,100%",
        "10m",
        &["--shadow", "60s", "--min-shadow-agreement", "99%", "--on-failure", "pause"],
    );
    let first = cli.status("b-subtle-again");
    assert_eq!(first["state"]["last_evidence"]["reporting"], 0, "judged on an earlier rollout's windows: {first}");
    assert_eq!(first["state"]["last_evidence"]["failed"], 0, "{first}");
    cli.wait_rollout("b-subtle-again", "the shadow gate to fail and pause", |v| {
        phase(v) == "Paused" && v["state"]["history"].to_string().contains("GateFailed")
    });
    let paused = cli.status("b-subtle-again");
    let canary = paused["state"]["members"].as_object().unwrap().keys().next().unwrap().clone();
    // The canary was withdrawn while shadowing: it drops the candidate and never activates it.
    until(
        "the canary to drop the candidate",
        || {
            let shown = cli.json(&["devices", "show", &canary]);
            let events = shown["models"]["digits"]["events"].as_array().cloned().unwrap_or_default();
            events.last().is_some_and(|e| e["to"] == "Rejected" && e["version"] == "2.1.0")
        },
        || cli.run(&["devices", "show", &canary]),
    );
    assert!(all_on("2.0.0")(&cli), "the paused release went live: {:?}", cli.versions());
    let port = agents[canary.trim_start_matches("dev-").parse::<usize>().unwrap()].1;
    assert_eq!(serving(port).as_deref(), Some("2.0.0"));

    // However the verbs went, a new rollout starts and completes.
    let live = cli.run(&["rollout", "list"]);
    assert!(
        live.lines().nth(1).is_some_and(|l| l.starts_with("b-subtle-again")) && live.lines().count() == 2,
        "{live}"
    );
    cli.run(&["rollout", "abort", "b-subtle-again"]);
    assert!(cli.run(&["rollout", "list"]).starts_with("no live rollout"));
    // The next one is described in a file, and CI waits for it with --watch: exit 0 once it completes.
    let file = dir.join("rollout.toml");
    std::fs::write(
        &file,
        "id = \"a-next\"\nbundle = \"digits@2.2.0\"\nwaves = [\"100%\"]\nbake = \"10s\"\nwatch = \"1s\"\n\
         quorum = \"50%\"\n[gates]\nmax_failure_rate = \"50%\"\n",
    )
    .unwrap();
    cli.run(&["rollout", "start", "-f", &d(&file)]);
    let watched = cli.cli(&["rollout", "status", "a-next", "--watch", "--interval", "1"]);
    let page = String::from_utf8_lossy(&watched.stdout);
    assert_eq!(watched.status.code(), Some(0), "{page}\n{}", String::from_utf8_lossy(&watched.stderr));
    assert!(page.contains("phase     Completed"), "{page}");
    until("everyone on 2.2.0", || all_on("2.2.0")(&cli), || format!("{:?}", cli.versions()));

    // A local install on dev-0 shows in the fleet view without restarting the agent.
    let local = dir.join("local.obundle");
    std::fs::write(&local, bundle_of("v2", "2.3.0", 5)).unwrap();
    let agent_bin = Path::new(&outpost_bin()).with_file_name("outpost-agent");
    let out = Command::new(agent_bin)
        .args(["install", &d(&local), "--data-dir", &d(&dir.join("dev-0"))])
        .args(["--trust", &d(&policy), "--root-pub", &d(&root_pub)])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    until(
        "devices list to show dev-0's local install",
        || cli.versions().iter().any(|(id, v)| id == "dev-0" && v == "2.3.0"),
        || format!("{:?}", cli.versions()),
    );

    // History in the order the rollouts started, with start times and durations.
    let history = cli.run(&["rollout", "history"]);
    let order: Vec<&str> = history.lines().skip(1).filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(order, ["e-first", "d-second", "c-subtle", "b-subtle-again", "a-next"], "{history}");
    assert!(history.lines().next().unwrap().contains("STARTED (UTC)"), "{history}");

    // The newest audit entries of a rollout, as a script reads them: a-next's start and completion.
    let last = cli.json(&["audit", "--rollout", "a-next", "--since", "1h", "--limit", "2"]);
    let decisions: Vec<&Value> = last.as_array().unwrap().iter().map(|e| &e["entry"]["decision"]).collect();
    assert_eq!(decisions, [&Value::from("Started"), &Value::from("Completed")], "{last}");

    // `outpost audit | head` and `devices show | head`: a reader that left ends the command quietly.
    for args in [&["audit"][..], &["devices", "show", "dev-0"][..], &["rollout", "history"][..]] {
        let out = into_a_closed_pipe(&cli, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && !err.contains("panicked"), "outpost {args:?}: {:?} {err}", out.status);
    }
    drop(agents);
}

//! The operator console and `/metrics`, as people and Prometheus see them. `/metrics` of the controller and
//! of an agent, read with Python's `prometheus_client` parser and checked against the API, on a controller
//! with real agents over mosquitto and a rollout in its first wave; the console driven in headless chromium
//! on the quick-start demo's fleet (sign in, the fleet, pause and resume a rollout from the page and see the
//! controller report it, a device's charts, the audit log), screenshots written to
//! `<target>/console-screenshots/`; the API and console over TLS.

#[path = "../support/mod.rs"]
mod support;

mod browser_session;
mod metrics;
mod tls;

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

const DEVICES: [&str; 3] = ["dev-a", "dev-b", "dev-c"];
const ROLLOUT: &str = "digits-first";

/// The device record runs digits 1.0.0 (devices hold a list of running models).
fn runs_v1(d: &Value) -> bool {
    runs(d, "digits", "1.0.0")
}

/// The device record runs `model` at `version` (`MAJOR.MINOR.PATCH`).
fn runs(d: &Value, model: &str, version: &str) -> bool {
    d["running"]
        .as_array()
        .is_some_and(|l| l.iter().any(|m| m["name"] == model && self::version(&m["version"]) == version))
}

fn version(v: &Value) -> String {
    format!("{}.{}.{}", v["major"], v["minor"], v["patch"])
}

struct Fleet {
    /// mosquitto, or the quick-start demo (controller, broker and agents in one process).
    _procs: Vec<Proc>,
    ctl: Controller,
    agents: Vec<(Running, u16)>,
    dir: PathBuf,
    url: String,
    token: String,
    http: ureq::Agent,
}

impl Fleet {
    fn get(&self, path: &str) -> (u16, Value) {
        let mut r = self
            .http
            .get(format!("{}{path}", self.url))
            .header("Authorization", format!("Bearer {}", self.token))
            .call()
            .unwrap();
        (r.status().as_u16(), r.body_mut().read_json().unwrap_or(Value::Null))
    }

    fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let mut r = self
            .http
            .post(format!("{}{path}", self.url))
            .header("Authorization", format!("Bearer {}", self.token))
            .send_json(body)
            .unwrap();
        (r.status().as_u16(), r.body_mut().read_json().unwrap_or(Value::Null))
    }

    fn text(&self, url: &str, token: Option<&str>) -> (u16, String) {
        let mut req = self.http.get(url);
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let mut r = req.call().unwrap();
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
    }

    fn cli(&self, args: &[&str]) -> String {
        self.ctl.run(args)
    }

    fn until(&self, what: &str, mut ok: impl FnMut(&Fleet) -> bool) {
        // Generous: a loaded machine self-tests the model slowly in a debug build.
        let deadline = Instant::now() + Duration::from_secs(180);
        while !ok(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// A controller, mosquitto, three agents; digits 1.0.0 rolling out in waves of 1 device then 100 %, the
/// first wave baking for 10 minutes, so the rollout is running (wave 1, canary installed) for the test.
fn fleet(name: &str) -> Fleet {
    let dir = tempdir(name);
    let (broker, port) = mosquitto(&dir);
    let ctl = Controller::with_broker(&dir, port);
    let agents = DEVICES
        .iter()
        .enumerate()
        .map(|(i, id)| stoppable_agent(&dir, id, port, &format!("region = \"{}\"", ["eu", "eu", "us"][i]), 0))
        .collect();
    // `outpost serve` writes the token before its API port opens: whoever sees the port finds the token.
    let token = std::fs::read_to_string(ctl.data.join("api-token")).expect("the api-token, once the port is open");
    let token = token.trim().to_owned();
    assert!(!token.is_empty(), "an empty api-token");
    let http: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let f = Fleet { _procs: vec![broker], url: ctl.url.clone(), ctl, agents, dir, token, http };
    f.until("three devices online", |f| {
        let (_, list) = f.get("/api/v1/devices");
        list.as_array().is_some_and(|l| l.len() == 3 && l.iter().all(|d| d["online"] == true))
    });
    let bundle = digits_bundle("1.0.0", 1);
    let mut r = f
        .http
        .post(format!("{}/api/v1/bundles", f.url))
        .header("Authorization", format!("Bearer {}", f.token))
        .send(&bundle[..])
        .unwrap();
    assert_eq!(r.status().as_u16(), 201, "{}", r.body_mut().read_to_string().unwrap());
    first_wave(&f, "digits@1.0.0", ROLLOUT);
    f
}

/// Starts a rollout of `release` (`MODEL@VERSION`) in waves of 1 device then 100 %, the first wave baking
/// for 10 minutes, and waits until its canary has committed it: the rollout is running for the test.
fn first_wave(f: &Fleet, release: &str, id: &str) {
    let (status, body) = f.post(
        "/api/v1/rollouts",
        // Its gates named: the default p95 gate judged contention between the debug-built agents and
        // chromium on the machine's loaded cores (24 ms vs 6.9 ms) and paused it before the test could.
        json!({"bundle": release, "waves": "1,100%", "bake_secs": 600, "watch_secs": 2,
               "max_error_rate": 0.05, "max_failure_rate": 0.1, "no_default_gates": true, "id": id}),
    );
    assert_eq!(status, 201, "{body}");
    let (model, version) = release.split_once('@').unwrap();
    f.until(&format!("the canary to commit {release}"), |f| {
        let (_, list) = f.get("/api/v1/devices");
        list.as_array().unwrap().iter().any(|d| {
            let events = d["models"][model]["events"].as_array();
            runs(d, model, version) && events.and_then(|e| e.last()).is_some_and(|e| e["to"] == "Committed")
        })
    });
}

/// The quick-start demo's fleet once its story has played (`outpost-sim demo --keep-running`): `devices`
/// agents under inference load serving digits 2.0.0 and vibration 1.1.0, the controller's console on its API
/// address, and digits-subtle 2.1.0 (rolled back at the canary by the demo) among its bundles.
fn demo_fleet(name: &str, devices: usize) -> Fleet {
    use std::io::BufRead;
    let dir = tempdir(name);
    let (out, log) = (dir.join("demo"), dir.join("demo.log"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_outpost-sim"))
        .args(["demo", "--keep-running", "--devices", &devices.to_string(), "--out", &path(&out)])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let demo = Proc(child);
    // Once its story is told the demo prints
    // `Console: http://127.0.0.1:PORT/  (sign in with the token T, in DATA/api-token)`.
    let mut said = String::new();
    let console = loop {
        let Some(Ok(line)) = lines.next() else {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            panic!(
                "the demo ended without keeping its fleet running:\n{said}\n{}",
                &log[log.len().saturating_sub(3000)..]
            );
        };
        said.push_str(&line);
        said.push('\n');
        if let Some(rest) = line.strip_prefix("Console: ") {
            break rest.to_owned();
        }
    };
    // Its output goes on being read, so the demo never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    let summary = std::fs::read_to_string(out.join("report/summary.md")).unwrap();
    assert!(summary.contains("Every expected outcome happened"), "the demo's story went otherwise:\n{summary}");
    let port: u16 = console.split("127.0.0.1:").nth(1).and_then(|p| p.split('/').next()).unwrap().parse().unwrap();
    let data = console.split(", in ").nth(1).and_then(|p| p.strip_suffix("/api-token)")).unwrap();
    let ctl = Controller::attach(port, Path::new(data), &log);
    let token = std::fs::read_to_string(ctl.data.join("api-token")).unwrap().trim().to_owned();
    let http: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    Fleet { _procs: vec![demo], url: ctl.url.clone(), ctl, agents: Vec::new(), dir, token, http }
}

/// Python's prometheus_client parser over an exposition: families with their type, help and samples.
fn parse_prometheus(text: &str) -> Vec<Value> {
    let python = if Path::new("/usr/bin/python3").exists() { "/usr/bin/python3" } else { "python3" };
    let script = "import sys, json\nfrom prometheus_client.parser import text_string_to_metric_families as parse\n\
                  print(json.dumps([{'name': f.name, 'type': f.type, 'help': f.documentation,\n\
                  'samples': [[s.name, s.labels, s.value] for s in f.samples]} for f in parse(sys.stdin.read())]))";
    let mut child = Command::new(python)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (scripts/test.sh installs python3-prometheus-client)");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser refused /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Value>(&out.stdout).unwrap().as_array().unwrap().clone()
}

/// Sample value by name and exact labels.
fn sample(families: &[Value], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    families.iter().flat_map(|f| f["samples"].as_array().unwrap().iter()).find_map(|s| {
        let got: BTreeMap<String, String> = serde_json::from_value(s[1].clone()).unwrap();
        (s[0] == name && got == want).then(|| s[2].as_f64().unwrap())
    })
}

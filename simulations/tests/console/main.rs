//! The operator console and `/metrics`, as people and Prometheus see them: a real controller with real
//! agents over mosquitto and a rollout in its first wave; the controller's and an agent's `/metrics` read
//! with Python's `prometheus_client` parser and checked against the API; the console driven in headless
//! chromium (sign in, fleet, pause and resume the rollout from the page and see the controller report it,
//! a device's charts, the audit log), screenshots written to `<target>/console-screenshots/`.

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
    d["running"].as_array().is_some_and(|l| l.iter().any(|m| m["name"] == "digits" && m["version"]["major"] == 1))
}

struct Fleet {
    _broker: Proc,
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
    let f = Fleet { _broker: broker, url: ctl.url.clone(), ctl, agents, dir, token, http };
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
    let (status, body) = f.post(
        "/api/v1/rollouts",
        json!({"bundle": "digits@1.0.0", "waves": "1,100%", "bake_secs": 600, "watch_secs": 2,
               "max_error_rate": 0.05, "id": ROLLOUT}),
    );
    assert_eq!(status, 201, "{body}");
    f.until("the canary to commit digits 1.0.0", |f| {
        let (_, list) = f.get("/api/v1/devices");
        list.as_array().unwrap().iter().any(|d| {
            let events = d["models"]["digits"]["events"].as_array();
            runs_v1(d) && events.and_then(|e| e.last()).is_some_and(|e| e["to"] == "Committed")
        })
    });
    f
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

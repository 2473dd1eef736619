//! The operator console and `/metrics`, as people and Prometheus see them: a real controller with real
//! agents over mosquitto and a rollout in its first wave; the controller's and an agent's `/metrics` read
//! with Python's `prometheus_client` parser and checked against the API; the console driven in headless
//! chromium (sign in, fleet, pause and resume the rollout from the page and see the controller report it,
//! a device's charts, the audit log), screenshots written to `<target>/console-screenshots/`.

mod support;

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::browser::Browser;
use support::*;

const DEVICES: [&str; 3] = ["dev-a", "dev-b", "dev-c"];
const ROLLOUT: &str = "digits-first";

/// The device record runs digits 1.0.0 (devices hold a list of running models).
fn runs_v1(d: &Value) -> bool {
    d["running"].as_array().is_some_and(|l| l.iter().any(|m| m["name"] == "digits" && m["version"]["major"] == 1))
}

struct Fleet {
    _broker: Proc,
    _controller: Proc,
    agents: Vec<(Running, u16)>,
    dir: PathBuf,
    data: PathBuf,
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
        let d = self.data.display().to_string();
        let out = outpost(&[args, &["--controller", &self.url, "--data-dir", &d]].concat());
        assert!(out.status.success(), "outpost {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
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
    let (policy, root_pub) = trust_files(&dir);
    let api_port = free_port();
    let data = dir.join("controller-data");
    let d = |p: &Path| p.display().to_string();
    let controller = Proc(
        Command::new(outpost_bin())
            .args(["serve", "--data-dir", &d(&data), "--api", &format!("127.0.0.1:{api_port}")])
            .args([
                "--broker",
                &format!("mqtt://127.0.0.1:{port}"),
                "--trust",
                &d(&policy),
                "--root-pub",
                &d(&root_pub),
            ])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_port(api_port);
    let agents = DEVICES
        .iter()
        .enumerate()
        .map(|(i, id)| stoppable_agent(&dir, id, port, &format!("region = \"{}\"", ["eu", "eu", "us"][i]), 0))
        .collect();
    // `outpost serve` writes the token before its API port opens: whoever sees the port finds the token.
    let token = std::fs::read_to_string(data.join("api-token")).expect("the api-token, once the port is open");
    let token = token.trim().to_owned();
    assert!(!token.is_empty(), "an empty api-token");
    let http: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let f = Fleet {
        _broker: broker,
        _controller: controller,
        agents,
        dir,
        data,
        url: format!("http://127.0.0.1:{api_port}"),
        token,
        http,
    };
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

fn version(v: &Value) -> String {
    format!("{}.{}.{}", v["major"], v["minor"], v["patch"])
}

/// What the API says, in the terms /metrics uses.
fn api_view(f: &Fleet) -> (BTreeMap<String, f64>, Value) {
    let mut want = BTreeMap::new();
    let (_, devices) = f.get("/api/v1/devices");
    for status in ["online", "offline", "pending", "revoked"] {
        let n = devices
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| match status {
                "online" => d["online"] == true,
                "offline" => d["online"] == false,
                _ => false,
            })
            .count();
        want.insert(format!("outpost_devices{{status={status}}}"), n as f64);
    }
    let (_, skew) = f.get("/api/v1/skew");
    for m in skew.as_array().unwrap() {
        for v in m["versions"].as_array().unwrap() {
            let key = format!(
                "outpost_model_devices{{model={},version={}}}",
                m["model"].as_str().unwrap(),
                version(&v["version"])
            );
            want.insert(key, v["online"].as_f64().unwrap() + v["offline"].as_f64().unwrap());
        }
        for (bucket, n) in m["compliance"].as_object().unwrap() {
            want.insert(
                format!("outpost_model_compliance_devices{{model={},bucket={bucket}}}", m["model"].as_str().unwrap()),
                n.as_f64().unwrap(),
            );
        }
    }
    let (_, rollout) = f.get(&format!("/api/v1/rollouts/{ROLLOUT}"));
    want.insert("outpost_rollouts{phase=progressing}".into(), f64::from(rollout["state"]["phase"] == "Progressing"));
    want.insert("outpost_rollout_wave".into(), rollout["state"]["wave"].as_f64().unwrap() + 1.0);
    (want, rollout["state"]["last_evidence"].clone())
}

fn metrics_view(fams: &[Value]) -> BTreeMap<String, f64> {
    let mut got = BTreeMap::new();
    for status in ["online", "offline", "pending", "revoked"] {
        got.insert(
            format!("outpost_devices{{status={status}}}"),
            sample(fams, "outpost_devices", &[("status", status)]).unwrap(),
        );
    }
    for f in fams {
        for s in f["samples"].as_array().unwrap() {
            let l = &s[1];
            if s[0] == "outpost_model_devices" {
                let key = format!(
                    "outpost_model_devices{{model={},version={}}}",
                    l["model"].as_str().unwrap(),
                    l["version"].as_str().unwrap()
                );
                *got.entry(key).or_insert(0.0) += s[2].as_f64().unwrap();
            }
            if s[0] == "outpost_model_compliance_devices" {
                let key = format!(
                    "outpost_model_compliance_devices{{model={},bucket={}}}",
                    l["model"].as_str().unwrap(),
                    l["bucket"].as_str().unwrap()
                );
                got.insert(key, s[2].as_f64().unwrap());
            }
        }
    }
    got.insert(
        "outpost_rollouts{phase=progressing}".into(),
        sample(fams, "outpost_rollouts", &[("phase", "progressing")]).unwrap(),
    );
    got.insert("outpost_rollout_wave".into(), sample(fams, "outpost_rollout_wave", &[("rollout", ROLLOUT)]).unwrap());
    got
}

#[test]
fn metrics_parse_with_prometheus_and_match_the_api() {
    let f = fleet("metrics");
    // Unauthenticated scrapes are refused, like the API.
    assert_eq!(f.text(&format!("{}/metrics", f.url), None).0, 401);
    // Fleet figures are read at scrape time: compare with API reads taken just before and after, retrying
    // while the fleet moved in between (a gate evaluation, a device's window).
    let mut tries = 0;
    let (fams, evidence) = loop {
        let (before, ev_before) = api_view(&f);
        let (status, text) = f.text(&format!("{}/metrics", f.url), Some(&f.token));
        assert_eq!(status, 200);
        let fams = parse_prometheus(&text);
        let (after, ev_after) = api_view(&f);
        if before == after && ev_before.get("gates") == ev_after.get("gates") {
            assert_eq!(metrics_view(&fams), before, "/metrics disagrees with the API");
            break (fams, ev_after);
        }
        tries += 1;
        assert!(tries < 20, "the fleet never held still between two API reads");
    };
    assert_eq!(sample(&fams, "outpost_devices", &[("status", "online")]), Some(3.0));
    assert_eq!(
        sample(&fams, "outpost_model_devices", &[("model", "digits"), ("version", "1.0.0"), ("online", "true")]),
        Some(1.0)
    );
    for g in evidence["gates"].as_array().expect("the wave was judged") {
        let gate = match g["gate"].as_str().unwrap() {
            "Quorum" => "quorum",
            "InstallFailure" => "install_failure",
            "ErrorRate" => "error_rate",
            "LatencyP95" => "latency_p95",
            "ShadowAgreement" => "shadow_agreement",
            other => panic!("gate {other}"),
        };
        let verdict = g["verdict"].as_str().unwrap().to_lowercase();
        let labels = [("rollout", ROLLOUT), ("gate", gate), ("verdict", verdict.as_str())];
        assert_eq!(sample(&fams, "outpost_rollout_gate_verdict", &labels), Some(1.0), "{gate} {verdict}");
        assert_eq!(sample(&fams, "outpost_rollout_gate_threshold", &labels[..2]), g["threshold"].as_f64());
    }
    // Counters moved: telemetry arrived with its lag, MQTT flowed both ways, the store committed.
    let count = |n: &str| sample(&fams, n, &[]).unwrap_or(0.0);
    assert!(count("outpost_telemetry_records_total") > 0.0 && count("outpost_telemetry_lag_seconds_count") > 0.0);
    // Presence is retained, so every device's reaches the controller whenever it subscribed.
    let received: Vec<_> = fams.iter().filter(|f| f["name"] == "outpost_mqtt_messages_received").collect();
    assert!(
        sample(&fams, "outpost_mqtt_messages_received_total", &[("kind", "presence")]) >= Some(3.0),
        "{received:?}"
    );
    assert!(
        sample(&fams, "outpost_mqtt_messages_received_total", &[("kind", "telemetry")]) > Some(0.0),
        "{received:?}"
    );
    assert!(count("outpost_mqtt_messages_sent_total") > 0.0 && count("outpost_store_write_seconds_count") > 0.0);
    let (_, devices) = f.get("/api/v1/devices");
    let stored: f64 = devices.as_array().unwrap().iter().map(|d| d["telemetry"]["received"].as_f64().unwrap()).sum();
    assert!(count("outpost_telemetry_records_stored_total") <= stored, "stored records only grow between reads");
    // Every series is documented, with help text.
    let docs = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/metrics.md")).unwrap();
    for fam in &fams {
        let name = fam["name"].as_str().unwrap();
        let exposed = if fam["type"] == "counter" { format!("{name}_total") } else { name.to_owned() };
        assert!(docs.contains(&format!("`{exposed}`")), "{exposed} is not in docs/metrics.md");
        assert!(!fam["help"].as_str().unwrap().is_empty(), "{exposed} has no help");
    }

    // An agent's /metrics: the fleet side a device operator alerts on, against the controller's view.
    let canary = devices.as_array().unwrap().iter().find(|d| runs_v1(d)).unwrap();
    let id = canary["id"].as_str().unwrap();
    let port = f.agents[DEVICES.iter().position(|d| *d == id).unwrap()].1;
    let (status, text) = f.text(&format!("http://127.0.0.1:{port}/metrics"), None);
    assert_eq!(status, 200);
    let fams = parse_prometheus(&text);
    let count = |n: &str| sample(&fams, n, &[]);
    assert_eq!(count("outpost_link_configured"), Some(1.0));
    assert_eq!(count("outpost_broker_connected"), Some(1.0));
    assert_eq!(count("outpost_broker_reconnects_total"), Some(0.0));
    assert_eq!(count("outpost_telemetry_dropped_total"), Some(0.0));
    assert!(
        count("outpost_telemetry_queue_records").is_some()
            && count("outpost_telemetry_oldest_unsent_age_seconds").is_some()
    );
    assert_eq!(sample(&fams, "outpost_update_stage", &[("model", "digits"), ("stage", "committed")]), Some(1.0));
    assert_eq!(sample(&fams, "outpost_update_stage", &[("model", "digits"), ("stage", "fetching")]), Some(0.0));
    for fam in &fams {
        let name = fam["name"].as_str().unwrap();
        let exposed = if fam["type"] == "counter" { format!("{name}_total") } else { name.to_owned() };
        assert!(docs.contains(&format!("`{exposed}`")), "agent series {exposed} is not in docs/metrics.md");
    }
    drop(f.agents);
}

fn screenshots_dir() -> PathBuf {
    // Beside the test binaries: <target>/debug/deps/console-… → <target>/console-screenshots.
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).unwrap().join("console-screenshots")
}

#[test]
fn an_operator_signs_in_and_pauses_and_resumes_the_rollout_in_headless_chromium() {
    let f = fleet("console");
    // A per-operator token, made by the admin: what this person does is audited with their name.
    let (status, op) = f.post("/api/v1/operators", json!({"name": "ada"}));
    assert_eq!(status, 201, "{op}");
    let ada = op["token"].as_str().unwrap().to_owned();

    // Without a session, the data stays shut; with a session but without the CSRF token, no action.
    let anon: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    assert_eq!(anon.get(format!("{}/api/v1/devices", f.url)).call().unwrap().status().as_u16(), 401);
    assert_eq!(
        anon.post(format!("{}/api/v1/rollouts/{ROLLOUT}/pause", f.url)).send_empty().unwrap().status().as_u16(),
        401
    );
    let mut login = anon
        .post(format!("{}/console/login", f.url))
        .header("Content-Type", "application/json")
        .send(json!({"token": ada}).to_string())
        .unwrap();
    assert_eq!(login.status().as_u16(), 200);
    let cookie = login.headers().get("set-cookie").unwrap().to_str().unwrap().to_owned();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    let session = cookie.split(';').next().unwrap().to_owned();
    let csrf = login.body_mut().read_json::<Value>().unwrap()["csrf"].as_str().unwrap().to_owned();
    let pause = |with_csrf: bool| {
        let mut req = anon.post(format!("{}/api/v1/rollouts/{ROLLOUT}/pause", f.url)).header("Cookie", &session);
        if with_csrf {
            req = req.header("X-Outpost-CSRF", &csrf);
        }
        req.send_empty().unwrap().status().as_u16()
    };
    assert_eq!(pause(false), 403, "a session without the CSRF token must not act");
    assert_eq!(
        anon.get(format!("{}/api/v1/devices", f.url)).header("Cookie", &session).call().unwrap().status().as_u16(),
        200
    );
    let wrong = anon
        .post(format!("{}/console/login", f.url))
        .header("Content-Type", "application/json")
        .send(json!({"token": "guess"}).to_string())
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    assert!(
        f.cli(&["rollout", "status", ROLLOUT]).lines().any(|l| l.starts_with("phase") && l.contains("Progressing"))
    );

    let shots = screenshots_dir();
    let b = Browser::start(&f.dir, &shots);
    b.goto(&format!("{}/", f.url));
    b.wait("#token");
    b.screenshot("signin");
    b.type_into("#token", &ada);
    b.click("#signin-button");
    b.wait_text("#who", |t| t.contains("ada"));
    let table = b.wait_text("#devices", |t| DEVICES.iter().all(|d| t.contains(d)));
    assert!(table.contains("digits 1.0.0"), "the canary's model shows: {table}");
    b.wait_text(".card[data-status=online] .status-count", |t| t == "3");
    b.screenshot("fleet");

    b.click("a[data-page=rollouts]");
    let row = format!("tr[data-rollout=\"{ROLLOUT}\"] .phase");
    b.wait_text(&row, |t| t == "progressing");
    b.screenshot("rollouts");
    b.click(&format!("tr[data-rollout=\"{ROLLOUT}\"] a"));
    b.wait_text("#phase", |t| t == "progressing");
    b.wait_text("#gates", |t| t.contains("quorum"));
    b.click("button[data-verb=pause]");
    b.wait_text("#confirm-text", |t| t.contains("Pause rollout"));
    b.screenshot("rollout-confirm");
    b.click("#confirm-yes");
    b.wait_text("#phase", |t| t == "paused");
    // The controller, asked through the CLI, says so, and the audit log names the operator.
    let status = f.cli(&["rollout", "status", ROLLOUT]);
    assert!(status.lines().any(|l| l.starts_with("phase") && l.contains("Paused")), "{status}");
    let (_, rollout) = f.get(&format!("/api/v1/rollouts/{ROLLOUT}"));
    let last = rollout["state"]["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!((last["decision"].clone(), last["by"].clone()), (json!("Paused"), json!({"Operator": "ada"})));
    b.wait_text("#trail", |t| t.contains("paused") && t.contains("ada"));

    b.click("button[data-verb=resume]");
    b.click("#confirm-yes");
    b.wait_text("#phase", |t| t == "progressing");
    let status = f.cli(&["rollout", "status", ROLLOUT]);
    assert!(status.lines().any(|l| l.starts_with("phase") && l.contains("Progressing")), "{status}");
    b.screenshot("rollout");

    // The canary's page: models, events and telemetry charts with data in them.
    let (_, devices) = f.get("/api/v1/devices");
    let canary = devices.as_array().unwrap().iter().find(|d| runs_v1(d)).unwrap()["id"].as_str().unwrap().to_owned();
    // Applications use the canary, so its windows carry requests (an idle model sends no windows).
    let port = f.agents[DEVICES.iter().position(|d| *d == canary).unwrap()].1;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                infer(port);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    f.until("windows with requests from the canary", |f| {
        let (_, w) = f.get(&format!("/api/v1/devices/{canary}/windows"));
        w.as_array().is_some_and(|w| w.iter().filter(|x| x["requests"].as_u64() > Some(0)).count() >= 2)
    });
    b.goto(&format!("{}/console/#/devices/{canary}", f.url));
    b.wait_text("#models", |t| t.contains("digits") && t.contains("1.0.0"));
    b.wait_text("#events", |t| t.contains("Committed"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let charts = b.eval("return document.querySelectorAll('#charts svg.chart').length");
        let lines = b.eval("return document.querySelectorAll('#charts svg.chart path').length");
        if charts.as_u64() >= Some(5) && lines.as_u64() >= Some(3) {
            break;
        }
        assert!(Instant::now() < deadline, "no telemetry charts with data: {charts} charts, {lines} lines");
        std::thread::sleep(Duration::from_millis(300));
    }
    b.screenshot("device");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.join().unwrap();

    b.click("a[data-page=audit]");
    b.wait_text("#audit", |t| t.contains("ada") && t.contains("signed in"));
    b.type_into("#audit-who", "ada");
    b.wait_text("#audit", |t| t.contains("paused") && !t.contains("planner"));
    b.screenshot("audit");
    for name in ["signin", "fleet", "rollouts", "rollout-confirm", "rollout", "device", "audit"] {
        let png = std::fs::read(shots.join(format!("{name}.png"))).unwrap();
        assert!(png.starts_with(b"\x89PNG") && png.len() > 5_000, "{name}.png is not a screenshot");
    }
    println!("screenshots in {}", shots.display());
    drop(f.agents);
}

/// `[api_tls]`: the API, the console and /metrics over TLS with a certificate from the device CA
/// (`outpost certs server`); a client that trusts that CA gets in, sessions are `Secure` cookies, plain
/// HTTP gets nothing, and the CLI reaches it with `--ca`.
#[test]
fn the_console_and_the_api_serve_tls_with_secure_session_cookies() {
    let dir = tempdir("console-tls");
    let (_broker, port) = mosquitto(&dir);
    let (policy, root_pub) = trust_files(&dir);
    let data = dir.join("controller-data");
    let d = |p: &Path| p.display().to_string();
    let tls = dir.join("api-tls");
    let out = outpost(&["certs", "server", "--host", "127.0.0.1", "--out", &d(&tls), "--data-dir", &d(&data)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let config = dir.join("controller.toml");
    std::fs::write(
        &config,
        format!("[api_tls]\ncert = {:?}\nkey = {:?}\n", d(&tls.join("server.crt")), d(&tls.join("server.key"))),
    )
    .unwrap();
    let api_port = free_port();
    let _controller = Proc(
        Command::new(outpost_bin())
            .args(["serve", "--config", &d(&config), "--data-dir", &d(&data)])
            .args(["--api", &format!("127.0.0.1:{api_port}"), "--broker", &format!("mqtt://127.0.0.1:{port}")])
            .args(["--trust", &d(&policy), "--root-pub", &d(&root_pub)])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_port(api_port);
    let token = std::fs::read_to_string(data.join("api-token")).unwrap().trim().to_owned();
    let ca = data.join("ca/ca.pem");
    let roots: Vec<_> = ureq::tls::parse_pem(&std::fs::read(&ca).unwrap())
        .filter_map(|i| match i {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    let https: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(roots)))
                .unversioned_rustls_crypto_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
                .build(),
        )
        .build()
        .into();
    let url = format!("https://127.0.0.1:{api_port}");

    // The console's page and a sign-in: the session cookie is Secure, HttpOnly, SameSite.
    let mut page = https.get(format!("{url}/")).call().unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.body_mut().read_to_string().unwrap().contains("<html"), "the console's page");
    let login = https
        .post(format!("{url}/console/login"))
        .header("Content-Type", "application/json")
        .send(json!({ "token": token }).to_string())
        .unwrap();
    assert_eq!(login.status().as_u16(), 200);
    let cookie = login.headers().get("set-cookie").unwrap().to_str().unwrap().to_owned();
    assert!(
        cookie.contains("; Secure") && cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_owned();
    let devices = https.get(format!("{url}/api/v1/devices")).header("Cookie", &session).call().unwrap();
    assert_eq!(devices.status().as_u16(), 200);
    let mut metrics =
        https.get(format!("{url}/metrics")).header("Authorization", format!("Bearer {token}")).call().unwrap();
    assert_eq!(metrics.status().as_u16(), 200);
    assert!(!parse_prometheus(&metrics.body_mut().read_to_string().unwrap()).is_empty());

    // Plain HTTP to the TLS port answers nothing usable.
    let plain: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let r = plain
        .get(format!("http://127.0.0.1:{api_port}/api/v1/devices"))
        .header("Authorization", format!("Bearer {token}"))
        .call();
    assert!(r.as_ref().map_or(true, |r| r.status().as_u16() != 200), "plain HTTP was served");

    // The CLI: with the CA it works; without it (a bundle that lacks the device CA) it says what to do.
    let cli = |extra: &[&str]| {
        Command::new(outpost_bin())
            .args(["devices", "list", "--controller", &url, "--data-dir", &d(&data)])
            .args(extra)
            .env_remove("OUTPOST_CA")
            .env("SSL_CERT_FILE", dir.join("no-such-bundle.pem"))
            .output()
            .unwrap()
    };
    let ok = cli(&["--ca", &d(&ca)]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let refused = cli(&[]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{err}");
    assert!(err.contains("--ca"), "{err}");
    let wrong_ca = cli(&["--ca", &d(&root_pub)]);
    assert_eq!(wrong_ca.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&wrong_ca.stderr).contains("no PEM certificate"));
}

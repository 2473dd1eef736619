//! The console in headless chromium on the quick-start demo's fleet: sign in, the fleet, pause and resume a
//! rollout, a device, the audit log.

use super::*;
use support::browser::Browser;

fn screenshots_dir() -> PathBuf {
    // Beside the test binaries: <target>/debug/deps/console-… → <target>/console-screenshots.
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).unwrap().join("console-screenshots")
}

#[test]
fn an_operator_signs_in_to_the_demo_fleet_and_pauses_and_resumes_a_rollout_in_headless_chromium() {
    let f = demo_fleet("console-demo", 4);
    let (_, list) = f.get("/api/v1/devices");
    let ids: Vec<String> = list.as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids.len(), 4, "{list}");
    // The operator tries digits-subtle 2.1.0 again, without a shadow period this time: its canary runs it
    // while the first wave bakes for 10 minutes.
    let rollout = "subtle-again";
    first_wave(&f, "digits@2.1.0", rollout);
    // A per-operator token, made by the admin: what this person does is audited with their name.
    let (status, op) = f.post("/api/v1/operators", json!({"name": "ada"}));
    assert_eq!(status, 201, "{op}");
    let ada = op["token"].as_str().unwrap().to_owned();

    // Without a session, the data stays shut; with a session but without the CSRF token, no action.
    let anon: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    assert_eq!(anon.get(format!("{}/api/v1/devices", f.url)).call().unwrap().status().as_u16(), 401);
    assert_eq!(
        anon.post(format!("{}/api/v1/rollouts/{rollout}/pause", f.url)).send_empty().unwrap().status().as_u16(),
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
        let mut req = anon.post(format!("{}/api/v1/rollouts/{rollout}/pause", f.url)).header("Cookie", &session);
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
        f.cli(&["rollout", "status", rollout]).lines().any(|l| l.starts_with("phase") && l.contains("Progressing"))
    );

    let shots = screenshots_dir();
    let b = Browser::start(&f.dir, &shots);
    b.goto(&format!("{}/", f.url));
    b.wait("#token");
    b.screenshot("signin");
    b.type_into("#token", &ada);
    b.click("#signin-button");
    b.wait_text("#who", |t| t.contains("ada"));
    let table = b.wait_text("#devices", |t| ids.iter().all(|d| t.contains(d.as_str())));
    assert!(table.contains("digits 2.1.0"), "the canary's model shows: {table}");
    assert!(table.contains("vibration 1.1.0"), "each device's second model shows: {table}");
    b.wait_text(".card[data-status=online] .status-count", |t| t == "4");
    b.screenshot("fleet");

    b.click("a[data-page=rollouts]");
    // If a gate stopped it meanwhile, say which (the page would only show "paused").
    let status = f.cli(&["rollout", "status", rollout]);
    assert!(status.lines().any(|l| l.starts_with("phase") && l.contains("Progressing")), "{status}");
    let row = format!("tr[data-rollout=\"{rollout}\"] .phase");
    b.wait_text(&row, |t| t == "progressing");
    b.screenshot("rollouts");
    b.click(&format!("tr[data-rollout=\"{rollout}\"] a"));
    b.wait_text("#phase", |t| t == "progressing");
    b.wait_text("#gates", |t| t.contains("quorum"));
    b.click("button[data-verb=pause]");
    b.wait_text("#confirm-text", |t| t.contains("Pause rollout"));
    b.screenshot("rollout-confirm");
    b.click("#confirm-yes");
    b.wait_text("#phase", |t| t == "paused");
    // The controller, asked through the CLI, says so, and the audit log names the operator.
    let status = f.cli(&["rollout", "status", rollout]);
    assert!(status.lines().any(|l| l.starts_with("phase") && l.contains("Paused")), "{status}");
    let (_, record) = f.get(&format!("/api/v1/rollouts/{rollout}"));
    let last = record["state"]["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!((last["decision"].clone(), last["by"].clone()), (json!("Paused"), json!({"Operator": "ada"})));
    b.wait_text("#trail", |t| t.contains("paused") && t.contains("ada"));

    b.click("button[data-verb=resume]");
    b.click("#confirm-yes");
    b.wait_text("#phase", |t| t == "progressing");
    let status = f.cli(&["rollout", "status", rollout]);
    assert!(status.lines().any(|l| l.starts_with("phase") && l.contains("Progressing")), "{status}");
    // Live: another operator pauses and resumes it from the CLI; the open page follows without a reload.
    // A mark on the page's window: a reload would wipe it.
    b.eval("window.__outpostTestMark = 'still here'; return null");
    f.cli(&["rollout", "pause", rollout]);
    b.wait_text("#phase", |t| t == "paused");
    f.cli(&["rollout", "resume", rollout]);
    b.wait_text("#phase", |t| t == "progressing");
    let mark = b.eval("return window.__outpostTestMark || null");
    assert_eq!(mark, json!("still here"), "the page followed the rollout without reloading");
    b.screenshot("rollout");

    // The canary's page: models, events and telemetry charts with data in them.
    let (_, devices) = f.get("/api/v1/devices");
    let canary = devices.as_array().unwrap().iter().find(|d| runs(d, "digits", "2.1.0")).unwrap()["id"].as_str();
    let canary = canary.unwrap().to_owned();
    // The demo's applications keep asking every device, so the canary's windows carry requests.
    f.until("windows with requests from the canary", |f| {
        let (_, w) = f.get(&format!("/api/v1/devices/{canary}/windows"));
        w.as_array().is_some_and(|w| w.iter().filter(|x| x["requests"].as_u64() > Some(0)).count() >= 2)
    });
    b.goto(&format!("{}/console/#/devices/{canary}", f.url));
    b.wait_text("#models", |t| t.contains("digits") && t.contains("2.1.0"));
    b.wait_text("#events", |t| t.contains("Committed"));
    // Each event with when the controller received it (the API's `at`), newest first.
    let received =
        b.eval("return [...document.querySelectorAll('#events tbody tr')].map((r) => r.cells[0].textContent)");
    let received: Vec<&str> = received.as_array().unwrap().iter().filter_map(|c| c.as_str()).collect();
    // `07:12:40 · 3s ago`: a clock time (the browser's zone) and how long ago.
    let timed = |c: &str| c.as_bytes().get(..8).is_some_and(|t| t[2] == b':' && t[5] == b':') && c.ends_with(" ago");
    assert!(!received.is_empty() && received.iter().all(|c| timed(c)), "{received:?}");
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
}

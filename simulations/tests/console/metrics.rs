//! `/metrics` of the controller and of an agent, read by Prometheus's own parser, against the API.

use super::*;

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

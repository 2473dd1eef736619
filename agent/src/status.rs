//! `outpost-agent status`: the slot table from disk, plus live figures from the running agent's
//! `/outpost/v1/status` when it answers on the configured address.

use crate::cli::Failure;
use crate::config::Config;
use crate::store::Store;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

pub fn print(cfg: &Config, json: bool) -> Result<(), Failure> {
    let store = Store::open(&cfg.data_dir).map_err(|e| Failure::Error(format!("error: {e}")))?;
    let slots = store.slots().map_err(|e| Failure::Error(format!("error: {e}")))?;
    let describe = |digest: &Option<String>, name: &str| -> serde_json::Value {
        let Some(hex) = digest else { return serde_json::Value::Null };
        match hex.parse().ok().and_then(|d| store.read_manifest(&d, name).ok()) {
            Some(m) => serde_json::json!({
                "name": m.name.as_str(), "version": m.version.to_string(), "sequence": m.sequence, "digest": hex,
            }),
            None => serde_json::json!({ "digest": hex, "error": "missing or corrupt in the store" }),
        }
    };
    let live = fetch_live(cfg);
    let updates = crate::fleet::driver::update_summaries(&store);
    let models: serde_json::Map<String, serde_json::Value> = slots
        .models
        .iter()
        .map(|(name, m)| {
            let state = if m.installed() {
                match live.as_ref().map(|l| !l["models"][name]["active"].is_null()) {
                    Some(true) => "serving",
                    Some(false) => "loading",
                    None => "installed",
                }
            } else if m.candidate.is_some() {
                "candidate only"
            } else {
                "removed"
            };
            let v = serde_json::json!({
                "state": state,
                "active": describe(&m.active, name),
                "candidate": describe(&m.candidate, name),
                "previous": describe(&m.previous, name),
                "retired": describe(&m.retired, name),
                "floor": m.floor,
                "shadow_percent": m.shadow_percent,
                "update": updates.get(name).cloned().unwrap_or(serde_json::Value::Null),
                "live": live.as_ref().map(|l| l["models"][name].clone()).unwrap_or(serde_json::Value::Null),
            });
            (name.clone(), v)
        })
        .collect();
    // The root and policy the device holds (the image's, or newer ones taken over the air).
    let trust = match crate::trust::TrustStore::peek(cfg) {
        Ok((root, policy)) => serde_json::json!({ "root_version": root, "policy_version": policy }),
        Err(e) => serde_json::json!({ "error": e.to_string() }),
    };
    let report = serde_json::json!({
        "data_dir": cfg.data_dir,
        "models": models,
        "trust": trust,
        "policy_floor": slots.policy_floor,
        "running": live.is_some(),
        "live": live,
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&report).expect("json"));
        return Ok(());
    }
    let line = |v: &serde_json::Value| match v {
        serde_json::Value::Null => "-".to_string(),
        v => {
            let digest = v["digest"].as_str().unwrap_or("");
            format!(
                "{} (sequence {}) {}",
                v["version"].as_str().unwrap_or("?"),
                v["sequence"],
                &digest[..12.min(digest.len())]
            )
        }
    };
    if models.is_empty() {
        println!("no model installed");
    }
    for (name, m) in &models {
        println!("model {name}: {} (floor {})", m["state"].as_str().unwrap_or("?"), m["floor"]);
        println!("  active      {}", line(&m["active"]));
        println!("  candidate   {}", line(&m["candidate"]));
        println!("  previous    {}", line(&m["previous"]));
        if let Some(stage) = m["update"]["stage"].as_str() {
            let outcome = match &m["update"]["outcome"] {
                serde_json::Value::Array(o) => {
                    format!(" ({}: {})", o[0].as_str().unwrap_or("?"), o[1].as_str().unwrap_or(""))
                }
                _ => String::new(),
            };
            println!("  update      {}: {stage}{outcome}", m["update"]["version"].as_str().unwrap_or("?"));
        }
        let l = &m["live"];
        if !l.is_null() {
            println!(
                "  requests    {} (p50 {} µs, p95 {} µs)",
                l["requests"], l["latency_p50_us"], l["latency_p95_us"]
            );
            if !l["shadow_agreement"].is_null() {
                println!("  shadow      agreement {} over {} request(s)", l["shadow_agreement"], l["shadow_compared"]);
            }
        }
    }
    match (&trust["root_version"], &trust["policy_version"]) {
        (serde_json::Value::Number(r), serde_json::Value::Number(p)) if p.as_u64() == Some(0) => {
            println!("trust       root v{r}, no policy yet (updates wait for the fleet's)")
        }
        (serde_json::Value::Number(r), serde_json::Value::Number(p)) => {
            println!("trust       root v{r}, policy v{p} (policy floor {})", slots.policy_floor)
        }
        _ => println!("trust       {}", trust["error"].as_str().unwrap_or("?")),
    }
    match &report["live"] {
        serde_json::Value::Null => println!("agent       not answering on {}", cfg.listen),
        l => {
            println!("agent       running on {} (agent {})", cfg.listen, l["agent_version"].as_str().unwrap_or("?"));
            println!("memory      {} MiB resident", l["rss_bytes"].as_u64().unwrap_or(0) / (1 << 20));
        }
    }
    Ok(())
}

/// A minimal HTTP/1.1 GET to our own loopback server: no HTTP client dependency for one request.
fn fetch_live(cfg: &Config) -> Option<serde_json::Value> {
    let mut s = TcpStream::connect_timeout(&cfg.listen, Duration::from_millis(300)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET /outpost/v1/status HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", cfg.listen).ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let body = text.split_once("\r\n\r\n")?.1;
    serde_json::from_str(body).ok()
}

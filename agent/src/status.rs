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
    let describe = |digest: &Option<String>| -> serde_json::Value {
        let Some(hex) = digest else { return serde_json::Value::Null };
        match hex.parse().ok().and_then(|d| store.read_model(&d).ok()) {
            Some((_, m)) => serde_json::json!({
                "name": m.name.as_str(), "version": m.version.to_string(), "sequence": m.sequence, "digest": hex,
            }),
            None => serde_json::json!({ "digest": hex, "error": "missing or corrupt in the store" }),
        }
    };
    let live = fetch_live(cfg);
    let update: serde_json::Value = std::fs::read(cfg.data_dir.join("update.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| {
            let job = v.get("job")?.clone();
            Some(serde_json::json!({
                "version": job["desired"]["version"],
                "stage": job["stage"],
                "outcome": job["outcome"],
                "rollout": job["desired"]["rollout"],
            }))
        })
        .unwrap_or(serde_json::Value::Null);
    let report = serde_json::json!({
        "data_dir": cfg.data_dir,
        "active": describe(&slots.active),
        "candidate": describe(&slots.candidate),
        "previous": describe(&slots.previous),
        "floors": slots.floors,
        "policy_floor": slots.policy_floor,
        "update": update,
        "running": live.is_some(),
        "live": live,
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&report).expect("json"));
        return Ok(());
    }
    let line = |v: &serde_json::Value| match v {
        serde_json::Value::Null => "-".to_string(),
        v => format!(
            "{} {} (sequence {}) {}",
            v["name"].as_str().unwrap_or("?"),
            v["version"].as_str().unwrap_or("?"),
            v["sequence"],
            &v["digest"].as_str().unwrap_or("")[..12.min(v["digest"].as_str().unwrap_or("").len())]
        ),
    };
    println!("active      {}", line(&report["active"]));
    println!("candidate   {}", line(&report["candidate"]));
    println!("previous    {}", line(&report["previous"]));
    println!("floors      {}", serde_json::to_string(&slots.floors).expect("json"));
    if let Some(stage) = report["update"]["stage"].as_str() {
        let v = &report["update"]["version"];
        let version = format!("{}.{}.{}", v["major"], v["minor"], v["patch"]);
        let outcome = match &report["update"]["outcome"] {
            serde_json::Value::Array(o) => {
                format!(" ({}: {})", o[0].as_str().unwrap_or("?"), o[1].as_str().unwrap_or(""))
            }
            _ => String::new(),
        };
        println!("update      {version}: {stage}{outcome}");
    }
    match &report["live"] {
        serde_json::Value::Null => println!("agent       not answering on {}", cfg.listen),
        l => {
            println!("agent       running on {} (agent {})", cfg.listen, l["agent_version"].as_str().unwrap_or("?"));
            println!("requests    {} (p50 {} µs, p95 {} µs)", l["requests"], l["latency_p50_us"], l["latency_p95_us"]);
            if !l["shadow_agreement"].is_null() {
                println!("shadow      agreement {} over {} request(s)", l["shadow_agreement"], l["shadow_compared"]);
            }
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

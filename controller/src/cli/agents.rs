//! `outpost skew --agents [--bundle DIGEST]`: agent versions across the fleet (claimed and attested), the
//! root and policy versions devices attest to, and devices too old for a release's `min_agent`.

use super::client::Remote;
use super::{Failure, Output};

pub fn run(remote: &Remote, bundle: Option<&str>, output: Output) -> Result<(), Failure> {
    let path = match bundle {
        Some(b) => format!("/api/v1/skew/agents?bundle={b}"),
        None => "/api/v1/skew/agents".into(),
    };
    let s = remote.get(&path)?;
    if output == Output::Json {
        let typed: crate::agent_skew::AgentSkew =
            serde_json::from_value(s).map_err(|e| Failure::Error(format!("the controller's agent skew: {e}")))?;
        super::json::print(&typed);
        return Ok(());
    }
    let version = |v: &serde_json::Value| {
        if v.is_null() { "unknown".to_owned() } else { format!("{}.{}.{}", v["major"], v["minor"], v["patch"]) }
    };
    // A JSON value's Display ignores width and alignment: numbers are turned into strings first.
    let n = |v: &serde_json::Value| v.to_string();
    println!("{:<10} {:>8} {:>9} {:>7}", "AGENT", "DEVICES", "ATTESTED", "ONLINE");
    for a in s["agents"].as_array().into_iter().flatten() {
        println!(
            "{:<10} {:>8} {:>9} {:>7}",
            version(&a["version"]),
            n(&a["devices"]),
            n(&a["attested"]),
            n(&a["online"])
        );
    }
    println!();
    println!("{:<6} {:<7} {:>8}", "ROOT", "POLICY", "DEVICES");
    for t in s["trust"].as_array().into_iter().flatten() {
        let (r, p) = (format!("v{}", t["root_version"]), format!("v{}", t["policy_version"]));
        println!("{r:<6} {p:<7} {:>8}", n(&t["devices"]));
    }
    println!("no signed report: {}", s["unattested"]);
    for r in s["too_old"].as_array().into_iter().flatten() {
        let devices: Vec<&str> = r["devices"].as_array().into_iter().flatten().filter_map(|d| d.as_str()).collect();
        let rollout = r["rollout"].as_str().map(|id| format!(" (rollout {id})")).unwrap_or_default();
        let list = if devices.is_empty() { "none".to_owned() } else { devices.join(", ") };
        println!(
            "too old for {} {} (needs agent {}){rollout}: {} device(s): {list}",
            r["model"].as_str().unwrap_or("?"),
            version(&r["version"]),
            version(&r["min_agent"]),
            devices.len()
        );
    }
    Ok(())
}

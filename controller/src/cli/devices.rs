//! `outpost devices list [-l k=v,...] [-o json] | show ID [-o json] | approve ID | revoke ID`.

use super::client::Remote;
use super::{Failure, Output};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    remote: Remote,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Devices with their running model, health and telemetry.
    List {
        /// Label selector, e.g. arch=aarch64,region=eu.
        #[arg(short = 'l', long = "selector")]
        selector: Option<String>,
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: Output,
    },
    /// One device in detail, with its telemetry stream and recent update events.
    Show {
        id: String,
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: Output,
    },
    /// Approve a device that enrolled with a token without --auto-approve: it gets its certificate.
    Approve { id: String },
    /// Refuse a device for good: its messages are ignored, its certificates go on the CRL, it cannot
    /// enroll again under this id.
    Revoke { id: String },
}

fn status(d: &serde_json::Value) -> &str {
    match &d["enrollment"]["status"] {
        serde_json::Value::String(s) => match s.as_str() {
            "Unenrolled" => "-",
            "Pending" => "pending",
            "Approved" => "approved",
            "Enrolled" => "enrolled",
            _ => "?",
        },
        serde_json::Value::Object(o) if o.contains_key("Revoked") => "revoked",
        _ => "-",
    }
}

fn version(v: &serde_json::Value) -> String {
    if v.is_null() {
        return "-".into();
    }
    format!("{}.{}.{}", v["major"], v["minor"], v["patch"])
}

/// Every model the device serves: `digits 2.0.0, kws 1.1.0`, or `-`.
fn running(d: &serde_json::Value) -> String {
    let models: Vec<String> = d["running"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| format!("{} {}", r["name"].as_str().unwrap_or("?"), version(&r["version"])))
        .collect();
    if models.is_empty() { "-".into() } else { models.join(", ") }
}

pub fn run(a: Args) -> Result<(), Failure> {
    match a.command {
        Command::List { selector, output } => {
            if let Some(s) = &selector {
                crate::daemon::api::parse_selector(s).map_err(Failure::Error)?;
            }
            let path = match &selector {
                Some(s) => format!(
                    "/api/v1/devices?selector={}",
                    s.replace('&', "%26").replace('=', "%3D").replace(',', "%2C")
                ),
                None => "/api/v1/devices".into(),
            };
            let list = a.remote.get(&path)?;
            if output == Output::Json {
                println!("{}", serde_json::to_string_pretty(&list).expect("json"));
                return Ok(());
            }
            println!(
                "{:<20} {:<8} {:<8} {:<9} {:<16} {:<8} LABELS",
                "DEVICE", "ARCH", "ONLINE", "IDENTITY", "RUNNING", "AGENT"
            );
            for d in list.as_array().into_iter().flatten() {
                let labels: Vec<String> = d["labels"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                    .collect();
                println!(
                    "{:<20} {:<8} {:<8} {:<9} {:<16} {:<8} {}",
                    d["id"].as_str().unwrap_or("?"),
                    d["arch"].as_str().unwrap_or("-"),
                    if d["online"].as_bool() == Some(true) { "yes" } else { "no" },
                    status(d),
                    running(d),
                    version(&d["agent_version"]),
                    labels.join(",")
                );
            }
            Ok(())
        }
        Command::Show { id, output } => {
            let d = a.remote.get(&format!("/api/v1/devices/{id}"))?;
            if output == Output::Json {
                println!("{}", serde_json::to_string_pretty(&d).expect("json"));
                return Ok(());
            }
            let t = &d["telemetry"];
            println!("device      {}", d["id"].as_str().unwrap_or("?"));
            println!("online      {} (last seen {})", d["online"], d["last_seen"]);
            println!("identity    {}", status(&d));
            println!("running     {}", running(&d));
            println!(
                "telemetry   {} record(s) received, contiguous up to {}, {} missing, {} duplicate(s)",
                t["received"], t["up_to"], t["missing"], t["duplicates"]
            );
            if let Some(w) = d["last_window"].as_object() {
                println!(
                    "last window {} request(s), {} error(s), p95 {} µs",
                    w["requests"], w["errors"], w["latency_p95_us"]
                );
            }
            for e in d["events"].as_array().into_iter().flatten().rev().take(10) {
                println!(
                    "event       {} {:?} → {:?} {} {}",
                    version(&e["version"]),
                    e["from"],
                    e["to"],
                    e["reason"],
                    e["detail"].as_str().unwrap_or("")
                );
            }
            Ok(())
        }
        Command::Approve { id } => {
            a.remote.post_json(&format!("/api/v1/devices/{id}/approve"), &serde_json::json!({}))?;
            println!("approved {id}: it gets its certificate on its next enrollment request");
            Ok(())
        }
        Command::Revoke { id } => {
            a.remote.post_json(&format!("/api/v1/devices/{id}/revoke"), &serde_json::json!({}))?;
            println!("revoked {id}: its messages are ignored and its certificates are on the CRL");
            Ok(())
        }
    }
}

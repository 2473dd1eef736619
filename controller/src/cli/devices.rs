//! `outpost devices list [-l k=v,...] [-o json] | show ID [-o json] | approve ID | revoke ID | delete ID`.

use super::audit::utc;
use super::client::{Remote, url_escape};
use super::{Failure, Output};
use crate::daemon::attestation;
use crate::daemon::enroll::Status;
use crate::daemon::registry::{DeviceRecord, LoggedEvent, ModelSummary};
use outpost_protocol::messages::Mode;
use outpost_protocol::telemetry::{UpdateEvent, UpdateStage};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    remote: Remote,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Devices with every model they run (and what the controller asks of them when it differs), when
    /// each was last heard from.
    ///
    /// Example: outpost devices list -l region=eu,arch=aarch64
    List {
        /// Label selector: key=value pairs that must all hold, e.g. arch=aarch64,region=eu (equality only).
        #[arg(short = 'l', long = "selector")]
        selector: Option<String>,
        /// table for people, json for scripts (documented shapes: docs/cli-json.md).
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: Output,
        /// Devices per request: the list is read in pages of this many (as kubectl's --chunk-size), so
        /// no single answer grows with the fleet.
        #[arg(long = "chunk-size", default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=crate::daemon::device_list::MAX_PAGE as u64))]
        chunk_size: u64,
    },
    /// One device in detail: every model on it (running, desired, latest update and window), its
    /// telemetry stream and recent update events.
    ///
    /// Example: outpost devices show edge-eu-01
    Show {
        /// The device id.
        id: String,
        /// table for people, json for scripts (documented shapes: docs/cli-json.md).
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: Output,
    },
    /// Approve a device that enrolled with a token without --auto-approve: it gets its certificate.
    ///
    /// Example: outpost devices approve edge-eu-02
    Approve {
        /// The device id.
        id: String,
        /// table for people, json for scripts (documented shapes: docs/cli-json.md).
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: Output,
    },
    /// Refuse a device for good: its messages are ignored, its certificates go on the CRL, it cannot
    /// enroll again under this id. It stays listed (as revoked); `devices delete` also takes it off.
    ///
    /// Example: outpost devices revoke edge-eu-02
    Revoke {
        /// The device id.
        id: String,
        /// table for people, json for scripts (documented shapes: docs/cli-json.md).
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: Output,
    },
    /// Decommission a device: it leaves `devices list`, rollouts, skew and metrics; the broker's retained
    /// desired states for it are cleared; its identity is revoked (certificates on the CRL, messages
    /// ignored, no enrollment under the id again). Audited with who did it.
    ///
    /// Example: outpost devices delete edge-eu-17
    Delete {
        /// The device id.
        id: String,
        /// table for people, json for scripts (documented shapes: docs/cli-json.md).
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: Output,
    },
}

fn status(d: &DeviceRecord) -> &'static str {
    match d.enrollment.status {
        Status::Unenrolled => "-",
        Status::Pending => "pending",
        Status::Approved => "approved",
        Status::Enrolled => "enrolled",
        Status::Revoked { .. } => "revoked",
    }
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

pub(crate) fn stage(s: UpdateStage) -> &'static str {
    match s {
        UpdateStage::Idle => "idle",
        UpdateStage::Fetching => "fetching",
        UpdateStage::Verifying => "verifying",
        UpdateStage::Staged => "staged",
        UpdateStage::SelfTest => "self-test",
        UpdateStage::Shadow => "shadow",
        UpdateStage::Activating => "activating",
        UpdateStage::Watching => "watching",
        UpdateStage::Committed => "committed",
        UpdateStage::RolledBack => "rolled back",
        UpdateStage::Rejected => "rejected",
    }
}

fn mode(m: &Mode) -> String {
    match m {
        Mode::Activate => "activate".into(),
        Mode::Shadow { secs, sample_percent } => format!("shadow {secs} s on {sample_percent}% then activate"),
        Mode::Revert => "revert to the previous model".into(),
        Mode::Remove => "remove".into(),
    }
}

/// One model in `devices list`: `digits 2.0.0`, with the desired state when it differs from what runs
/// (`digits 1.0.0 (-> 2.0.0)`, `kws - (-> 1.0.0)`, `kws 1.0.0 (-> remove)`).
fn compact(m: &ModelSummary) -> String {
    let running = m.running.as_ref().map(|r| r.version.to_string()).unwrap_or_else(|| "-".into());
    let wanted = m.desired.as_ref().and_then(|d| match d.mode {
        Mode::Remove => m.running.is_some().then(|| "remove".to_string()),
        // Pending while the device still runs the release the revert leaves.
        Mode::Revert => m.running.as_ref().is_some_and(|r| r.sequence >= d.sequence).then(|| "revert".into()),
        _ => m.running.as_ref().is_none_or(|r| r.sequence != d.sequence).then(|| d.version.to_string()),
    });
    match wanted {
        Some(w) => format!("{} {running} (-> {w})", m.name),
        None if m.running.is_none() => String::new(),
        None => format!("{} {running}", m.name),
    }
}

fn models_line(d: &DeviceRecord) -> String {
    let parts: Vec<String> = d.model_summaries().iter().map(compact).filter(|s| !s.is_empty()).collect();
    if parts.is_empty() { "-".into() } else { parts.join(", ") }
}

fn labels(d: &DeviceRecord) -> String {
    d.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// `devices list` as a table: one line per device, every model on it, and when it was last heard from
/// (last, so scripts that read the columns before it keep working).
pub fn list_table(devices: &[DeviceRecord], now: u64) -> String {
    let rows = devices.iter().map(|d| {
        vec![
            d.id.to_string(),
            opt(d.arch),
            if d.online { "yes" } else { "no" }.into(),
            status(d).into(),
            opt(d.agent_version),
            models_line(d),
            labels(d),
            super::table::ago(d.last_seen, now),
        ]
    });
    let head =
        ["DEVICE", "ARCH", "ONLINE", "IDENTITY", "AGENT", "MODELS", "LABELS", "LAST SEEN"].map(String::from).to_vec();
    super::table::render(std::iter::once(head).chain(rows).collect(), &[])
}

/// The device record the controller answered with (-o json), or `text`.
fn record_or(output: Output, record: serde_json::Value, text: &str) -> Result<(), Failure> {
    match output {
        Output::Json => {
            let d: DeviceRecord = serde_json::from_value(record)
                .map_err(|e| Failure::Error(format!("the controller's device record: {e}")))?;
            super::json::print(&d);
        }
        Output::Table => println!("{text}"),
    }
    Ok(())
}

/// What `devices delete` did, for people.
pub fn deleted_text(d: &crate::daemon::decommission::Decommissioned) -> String {
    let cleared = if d.cleared.is_empty() {
        "no desired state to clear".to_owned()
    } else {
        let names: Vec<String> = d.cleared.iter().map(ToString::to_string).collect();
        format!("desired states cleared ({})", names.join(", "))
    };
    let identity = match &d.crl {
        Some(_) => "its certificates are on the CRL and its messages are ignored",
        None => "its messages are ignored (no device CA: it has no certificate to revoke)",
    };
    format!(
        "deleted {} at {} UTC by {}: {cleared}; {identity}; its id cannot enroll again\n",
        d.device,
        utc(d.at),
        d.by
    )
}

/// `devices show ID`: the device, then every model on it (what runs, what the controller asks for, the
/// latest update event and inference window), then the latest update events of all models with when the
/// controller received them. `now` is for "3m ago".
pub fn show_text(d: &DeviceRecord, now: u64) -> String {
    let mut o = String::new();
    let mut line = |s: String| {
        o.push_str(&s);
        o.push('\n');
    };
    let t = &d.telemetry;
    line(format!("device      {}", d.id));
    line(format!("online      {} (last seen {} UTC)", if d.online { "yes" } else { "no" }, utc(d.last_seen)));
    line(format!("identity    {}", status(d)));
    let agent_mark =
        if attestation::attested_agent(&d.attestation, d.agent_version.as_ref()) { "" } else { " (claimed)" };
    line(format!("arch        {}, agent {}{agent_mark}", opt(d.arch), opt(d.agent_version)));
    line(format!("report      {}", report(d)));
    line(format!("trust       {}", trust(d)));
    line(format!("labels      {}", labels(d)));
    line(format!(
        "telemetry   {} record(s) received, contiguous up to {}, {} missing, {} duplicate(s)",
        t.received, t.up_to, t.missing, t.duplicates
    ));
    let models = d.model_summaries();
    line(format!("models      {}", models.len()));
    for m in &models {
        line(format!("  {}", m.name));
        match &m.running {
            Some(r) => {
                // Attested: the device's last verified signed report says the same; claimed: only its hello.
                let mark = if attestation::attested_model(&d.attestation, r) { "attested" } else { "claimed" };
                line(format!(
                    "    running   {} (sequence {}, model {}) {mark}",
                    r.version,
                    r.sequence,
                    r.digest.short()
                ))
            }
            None => line("    running   -".into()),
        }
        match &m.desired {
            Some(x) => line(format!(
                "    desired   {} (sequence {}): {}, rollout {}, issued {} UTC",
                x.version,
                x.sequence,
                mode(&x.mode),
                x.rollout.as_deref().unwrap_or("-"),
                utc(x.issued_at)
            )),
            None => line("    desired   -".into()),
        }
        if let Some(e) = &m.last_event {
            line(format!("    update    {} (received {})", event(&e.event), received(e.at, now)));
        }
        if let Some(w) = &m.last_window {
            line(format!(
                "    window    {} {}: {} request(s), {} error(s), {} timeout(s), p95 {} µs",
                w.version,
                w.digest.short(),
                w.requests,
                w.errors,
                w.timeouts,
                w.latency_p95_us
            ));
        }
    }
    let events = timeline(d, 10);
    if !events.is_empty() {
        line("events      (every model, oldest first; received, UTC)".into());
        let rows = events.iter().map(|e| {
            let (at, ago) = match e.at {
                Some(at) => (utc(at), super::table::ago(at, now)),
                None => ("-".into(), "-".into()),
            };
            vec![at, ago, e.event.model.to_string(), event(&e.event)]
        });
        for l in super::table::render(rows.collect(), &[]).lines() {
            line(format!("  {l}"));
        }
    }
    o
}

/// `2026-12-06 07:12:40 UTC, 3m ago`; `time unknown` for an event stored before the controller kept times.
fn received(at: Option<u64>, now: u64) -> String {
    match at {
        Some(at) => format!("{} UTC, {}", utc(at), super::table::ago(at, now)),
        None => "time unknown".into(),
    }
}

/// The last `per_model` update events of each model, merged into one list in the order the controller
/// received them. A model's own events stay in their order whatever the times say (a controller clock
/// stepped back, an event stored without a time): each sorts by the latest time of its model up to it.
fn timeline(d: &DeviceRecord, per_model: usize) -> Vec<&LoggedEvent> {
    let mut all: Vec<(u64, &LoggedEvent)> = Vec::new();
    for m in d.models.values() {
        let mut latest = 0;
        for e in m.events.iter().skip(m.events.len().saturating_sub(per_model)) {
            latest = latest.max(e.at.unwrap_or(0));
            all.push((latest, e));
        }
    }
    // Stable: events of the same second keep their model-by-model order.
    all.sort_by_key(|(key, _)| *key);
    all.into_iter().map(|(_, e)| e).collect()
}

/// The device's last verified version report, and the reports refused.
fn report(d: &DeviceRecord) -> String {
    let a = &d.attestation;
    let mut s = match &a.last {
        Some(l) => format!(
            "verified #{} at {} UTC (key bound by {}): policy v{}, root v{}, agent {}",
            l.report.counter,
            utc(l.received),
            l.binding.replace('_', " "),
            l.report.policy_version,
            l.report.root_version,
            l.report.agent_version
        ),
        None => "none verified: what the device runs is only claimed".into(),
    };
    if let Some(f) = &a.last_fault {
        s.push_str(&format!("; {} refused, last at {} UTC: {}", a.faults, utc(f.at), f.detail));
    }
    s
}

/// What the device last did with the fleet's trust update.
fn trust(d: &DeviceRecord) -> String {
    match &d.attestation.trust {
        None => "no trust update heard of".into(),
        Some(t) => {
            let e = &t.event;
            let held = format!("holds root v{} policy v{}", e.root_version, e.policy_version);
            match e.reason {
                None => format!("took the fleet's trust at {} UTC; {held}", utc(t.at)),
                Some(r) => {
                    format!("refused the fleet's trust at {} UTC [{}]: {}; {held}", utc(t.at), r.code(), e.detail)
                }
            }
        }
    }
}

/// The whole device list, `chunk` devices a request, each page starting after the last id of the one
/// before (`device_list.rs`); a page shorter than asked is the last.
fn all_pages(remote: &Remote, selector: Option<&str>, chunk: u64, brief: bool) -> Result<Vec<DeviceRecord>, Failure> {
    let mut query = format!("limit={chunk}");
    if let Some(s) = selector {
        query.push_str(&format!("&selector={}", url_escape(s)));
    }
    if brief {
        query.push_str("&view=brief");
    }
    let mut list: Vec<DeviceRecord> = Vec::new();
    loop {
        let after = list.last().map(|d| format!("&after={}", url_escape(d.id.as_str()))).unwrap_or_default();
        let page = remote.get(&format!("/api/v1/devices?{query}{after}"))?;
        let page: Vec<DeviceRecord> =
            serde_json::from_value(page).map_err(|e| Failure::Error(format!("the controller's device list: {e}")))?;
        let last = (page.len() as u64) < chunk;
        list.extend(page);
        if last {
            return Ok(list);
        }
    }
}

/// `2.0.0 watching -> committed` with the reason code and detail when there are any.
fn event(e: &UpdateEvent) -> String {
    let mut s = format!("{} {} -> {}", e.version, stage(e.from), stage(e.to));
    if let Some(r) = e.reason {
        s.push_str(&format!(" [{}]", r.code()));
    }
    if !e.detail.is_empty() {
        s.push_str(&format!(": {}", e.detail));
    }
    s
}

pub fn run(a: Args) -> Result<(), Failure> {
    match a.command {
        Command::List { selector, output, chunk_size } => {
            if let Some(s) = &selector {
                crate::daemon::api::parse_selector(s).map_err(Failure::Error)?;
            }
            // The table needs each model's latest event only: the brief view is a quarter of the record.
            let list = all_pages(&a.remote, selector.as_deref(), chunk_size, output == Output::Table)?;
            match output {
                Output::Json => super::json::print(&list),
                Output::Table => print!("{}", list_table(&list, super::now())),
            }
            Ok(())
        }
        Command::Show { id, output } => {
            let d = a.remote.get(&format!("/api/v1/devices/{}", url_escape(&id)))?;
            let d: DeviceRecord = serde_json::from_value(d)
                .map_err(|e| Failure::Error(format!("the controller's device record: {e}")))?;
            match output {
                Output::Json => super::json::print(&d),
                Output::Table => print!("{}", show_text(&d, super::now())),
            }
            Ok(())
        }
        Command::Approve { id, output } => {
            let d =
                a.remote.post_json(&format!("/api/v1/devices/{}/approve", url_escape(&id)), &serde_json::json!({}))?;
            record_or(output, d, &format!("approved {id}: it gets its certificate on its next enrollment request"))
        }
        Command::Delete { id, output } => {
            let done = a.remote.delete(&format!("/api/v1/devices/{}", url_escape(&id)))?;
            let done: crate::daemon::decommission::Decommissioned = serde_json::from_value(done)
                .map_err(|e| Failure::Error(format!("the controller's answer to the delete: {e}")))?;
            match output {
                Output::Json => super::json::print(&done),
                Output::Table => print!("{}", deleted_text(&done)),
            }
            Ok(())
        }
        Command::Revoke { id, output } => {
            let d =
                a.remote.post_json(&format!("/api/v1/devices/{}/revoke", url_escape(&id)), &serde_json::json!({}))?;
            record_or(output, d, &format!("revoked {id}: its messages are ignored and its certificates are on the CRL"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_protocol::messages::{BundleRef, DesiredState, RunningModel, Watch};
    use outpost_protocol::{Arch, DeviceId, Digest, ModelName, Version};

    fn name(s: &str) -> ModelName {
        ModelName::new(s).unwrap()
    }

    fn device() -> DeviceRecord {
        let mut d = DeviceRecord::new(DeviceId::new("edge-eu-01").unwrap(), 1_760_000_000);
        d.arch = Some(Arch::Aarch64);
        d.agent_version = Some(Version::new(0, 1, 0));
        d.online = true;
        d.labels.insert("region".into(), "eu".into());
        d.running = vec![
            RunningModel { name: name("digits"), version: Version::new(2, 0, 0), digest: Digest([2; 32]), sequence: 2 },
            RunningModel {
                name: name("vibration"),
                version: Version::new(1, 0, 0),
                digest: Digest([5; 32]),
                sequence: 1,
            },
        ];
        let desired = |model: &str, minor: u32, mode: Mode| DesiredState {
            model: name(model),
            version: Version::new(1, minor, 0),
            sequence: u64::from(minor) + 1,
            bundle: BundleRef { digest: Digest([9; 32]), size: 1, chunk_size: 1, chunks: vec![Digest([8; 32])] },
            rollout: Some(format!("{model}-rollout")),
            mode,
            issued_at: 1_760_000_100,
            watch: Watch::default(),
        };
        d.desired.insert(name("vibration"), desired("vibration", 1, Mode::Activate));
        d.desired.insert(name("kws"), desired("kws", 0, Mode::Activate));
        d.event(
            UpdateEvent {
                rollout: Some("vibration-rollout".into()),
                model: name("vibration"),
                version: Version::new(1, 1, 0),
                bundle: Digest([9; 32]),
                from: UpdateStage::Fetching,
                to: UpdateStage::Verifying,
                reason: None,
                detail: "3 chunk(s)".into(),
                seq: 0,
            },
            crate::daemon::registry::EventPath::Live,
            1_760_000_101,
        );
        d
    }

    #[test]
    fn the_device_list_shows_every_model_and_what_the_controller_asks_when_it_differs() {
        let d = device();
        let text = list_table(std::slice::from_ref(&d), d.last_seen + 190);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("DEVICE") && lines[0].contains("MODELS"), "{text}");
        assert!(
            lines[1].contains("digits 2.0.0, kws - (-> 1.0.0), vibration 1.0.0 (-> 1.1.0)"),
            "one line per device, every model: {text}"
        );
        assert!(lines[0].ends_with("LAST SEEN"), "{text}");
        assert!(
            lines[1].contains("aarch64") && lines[1].contains("region=eu") && lines[1].ends_with("3m ago"),
            "{text}"
        );
    }

    /// 190 s after the device's update event arrived.
    const NOW: u64 = 1_760_000_101 + 190;

    #[test]
    fn device_show_lists_each_model_with_running_desired_and_latest_update() {
        let text = show_text(&device(), NOW);
        assert!(text.contains("models      3\n"), "{text}");
        for want in [
            "  digits\n    running   2.0.0 (sequence 2, model 020202020202) claimed\n    desired   -\n",
            "  kws\n    running   -\n    desired   1.0.0 (sequence 1): activate, rollout kws-rollout",
            "  vibration\n    running   1.0.0 (sequence 1, model",
            "    update    1.1.0 fetching -> verifying: 3 chunk(s) (received 2025-10-09 08:55:01 UTC, 3m ago)\n",
            "events      (every model, oldest first; received, UTC)\n",
            "  2025-10-09 08:55:01  3m ago  vibration  1.1.0 fetching -> verifying: 3 chunk(s)\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
        assert!(!text.contains("Some(") && !text.contains("Watching"), "no Debug forms: {text}");
    }

    #[test]
    fn device_show_marks_what_a_verified_report_attests_and_what_is_only_claimed() {
        use crate::daemon::attestation::{Attested, Fault};
        use outpost_protocol::messages::VersionReport;
        let mut d = device();
        assert!(show_text(&d, NOW).contains("report      none verified"), "{}", show_text(&d, NOW));
        assert!(show_text(&d, NOW).contains("agent 0.1.0 (claimed)"));
        d.attestation.last = Some(Attested {
            received: 1_760_000_200,
            binding: "enrollment".into(),
            report_sha256: String::new(),
            report: VersionReport {
                device: d.id.clone(),
                counter: 12,
                at: 1_760_000_199,
                running: vec![d.running[0].clone()],
                previous: vec![],
                floors: vec![],
                agent_version: Version::new(0, 1, 0),
                policy_version: 3,
                root_version: 2,
            },
        });
        d.attestation.faults = 2;
        d.attestation.last_fault =
            Some(Fault { at: 1_760_000_300, code: "replay".into(), detail: "replay: old".into() });
        let text = show_text(&d, NOW);
        for want in [
            "agent 0.1.0\n",
            "report      verified #12 at 2025-10-09 08:56:40 UTC (key bound by enrollment): policy v3, root v2, agent 0.1.0; 2 refused, last at",
            "  digits\n    running   2.0.0 (sequence 2, model 020202020202) attested\n",
            "  vibration\n    running   1.0.0 (sequence 1, model 050505050505) claimed\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
    }

    /// `devices show -o json`: each event has `at` beside its own fields, written as the rest of the record.
    #[test]
    fn device_show_json_gives_each_event_the_time_it_was_received() {
        let v = crate::cli::json::readable(&device());
        let e = &v["models"]["vibration"]["events"][0];
        assert_eq!(e["at"], 1_760_000_101, "{e}");
        assert_eq!((e["version"].as_str(), e["to"].as_str()), (Some("1.1.0"), Some("Verifying")), "{e}");
        assert_eq!(e["bundle"], "09".repeat(32));
    }

    /// The events of all models in one list, in the order the controller received them, each with its
    /// time; a model's own order holds even where its times do not (a controller clock stepped back, an
    /// event stored by a controller that kept no times).
    #[test]
    fn device_show_lists_every_models_events_in_the_order_received_with_their_times() {
        let mut d = device();
        let e = |model: &str, to: UpdateStage| UpdateEvent {
            rollout: None,
            model: name(model),
            version: Version::new(2, 0, 0),
            bundle: Digest([3; 32]),
            from: UpdateStage::Idle,
            to,
            reason: None,
            detail: String::new(),
            seq: 0,
        };
        use crate::daemon::registry::EventPath::Live;
        d.event(e("digits", UpdateStage::Fetching), Live, 1_760_000_050);
        d.event(e("digits", UpdateStage::Committed), Live, 1_760_000_150);
        // The controller's clock stepped back a minute: still after digits' fetching.
        d.event(e("digits", UpdateStage::RolledBack), Live, 1_760_000_090);
        let kws = name("kws");
        d.event(e("kws", UpdateStage::Fetching), Live, 1_760_000_060);
        d.models.get_mut(&kws).unwrap().events[0].at = None;
        d.event(e("kws", UpdateStage::Rejected), Live, 1_760_000_120);
        let text = show_text(&d, NOW);
        let at = text.find("events      ").expect("an events section");
        let listed: Vec<&str> = text[at..].lines().skip(1).collect();
        assert_eq!(
            listed,
            [
                "  -                    -       kws        2.0.0 idle -> fetching",
                "  2025-10-09 08:54:10  4m ago  digits     2.0.0 idle -> fetching",
                "  2025-10-09 08:55:01  3m ago  vibration  1.1.0 fetching -> verifying: 3 chunk(s)",
                "  2025-10-09 08:55:20  2m ago  kws        2.0.0 idle -> rejected",
                "  2025-10-09 08:55:50  2m ago  digits     2.0.0 idle -> committed",
                "  2025-10-09 08:54:50  3m ago  digits     2.0.0 idle -> rolled back",
            ],
            "{text}"
        );
    }
}

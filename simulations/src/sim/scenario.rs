//! Scenario files: TOML → [`Scenario`], every table with `deny_unknown_fields` so a misspelt key is an
//! error naming it (with its line), never a silently ignored setting. Defaults describe a healthy fleet
//! on a healthy network; a scenario file states only what it changes, and what outcome it expects.

use serde::Deserialize;
use std::path::Path;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The rollout phase the run must end in (the first model's rollout).
    pub expect: Expect,
    /// The first model's name; `baseline`, `release` and `rollout` describe it.
    #[serde(default = "defaults::model")]
    pub model: String,
    #[serde(default = "defaults::devices")]
    pub devices: u32,
    #[serde(default = "defaults::seed")]
    pub seed: u64,
    /// The run fails if the fleet has not converged by then (virtual time).
    #[serde(default = "defaults::max_hours")]
    pub max_hours: f64,
    #[serde(default)]
    pub fleet: Fleet,
    #[serde(default)]
    pub fabric: Fabric,
    #[serde(default)]
    pub baseline: Model,
    #[serde(default)]
    pub release: Release,
    #[serde(default)]
    pub rollout: RolloutCfg,
    #[serde(default)]
    pub controller: Controller,
    #[serde(default)]
    pub faults: Faults,
    /// Further models every device runs beside the first (`[[models]]`), each with its own release and
    /// rollout, in flight at the same time as the first model's.
    #[serde(default, rename = "models")]
    pub extra: Vec<ExtraModel>,
}

/// A further model: what it is, how its release behaves, its rollout and how that must end.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraModel {
    pub name: String,
    pub expect: Expect,
    #[serde(default)]
    pub baseline: Model,
    #[serde(default)]
    pub release: Release,
    #[serde(default)]
    pub rollout: RolloutCfg,
    /// The devices that run the model's baseline at the start, as a selector of labels (`region=eu`; the
    /// syntax of `rollout.selector`); empty: every device. The others do not have the model at all, so a
    /// rollout that selects them adds it, and a rollback takes it off them again.
    #[serde(default)]
    pub installed_on: String,
}

/// One model of the run with everything about it, the first model's taken from the top-level tables.
#[derive(Debug, Clone)]
pub struct ModelCfg {
    pub name: String,
    pub expect: Expect,
    pub baseline: Model,
    pub release: Release,
    pub rollout: RolloutCfg,
    /// Label pairs a device needs to run the baseline at the start (none: every device).
    pub installed_on: Vec<(String, String)>,
}

impl ModelCfg {
    /// Whether a device with these labels runs the model's baseline when the run starts.
    pub fn installed_at_start(&self, labels: &[(String, String)]) -> bool {
        self.installed_on.iter().all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
    }
}

/// Most models in a run: release indices are bits of a `u32` (two releases per model).
pub const MAX_MODELS: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    Completed,
    RolledBack,
    Paused,
}

impl Expect {
    pub fn name(self) -> &'static str {
        match self {
            Expect::Completed => "completed",
            Expect::RolledBack => "rolled back",
            Expect::Paused => "paused",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Fleet {
    /// Label `region`, assigned round-robin.
    pub regions: Vec<String>,
    /// Architectures, assigned round-robin (offset from regions so every pair occurs).
    pub archs: Vec<String>,
    /// Inference requests per second per device (local applications).
    pub requests_per_sec: f64,
    pub telemetry_window_secs: u64,
    /// Each device's clock is off by up to this much, either way; a power loss re-draws it.
    pub clock_skew_secs: u64,
    /// How often a device's update machine gets a tick (and its health check) while an update runs.
    pub tick_secs: u64,
    /// Devices connect at a random moment in the first this-many seconds.
    pub connect_spread_secs: u64,
    /// Telemetry records a device keeps unacknowledged before dropping the oldest (the agent's default is
    /// 100,000; a smaller cap keeps 100,000 simulated devices in memory and is never reached by the
    /// shipped scenarios, whose longest outage is 180 windows).
    pub queue_records: usize,
    /// Records per telemetry batch; a backlog drains batch by batch, the next one sent on each ack.
    pub batch_records: usize,
}

impl Default for Fleet {
    fn default() -> Self {
        Fleet {
            regions: vec!["eu".into(), "us".into(), "ap".into()],
            archs: vec!["x86_64".into(), "aarch64".into(), "armv7".into()],
            requests_per_sec: 1.0,
            telemetry_window_secs: 60,
            clock_skew_secs: 120,
            tick_secs: 5,
            connect_spread_secs: 30,
            queue_records: 256,
            batch_records: 32,
        }
    }
}

/// The simulated network between devices and the broker (which sits beside the controller).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Fabric {
    pub delay_min_ms: u64,
    /// Mean of the exponential part added to the minimum.
    pub delay_mean_ms: u64,
    /// Share of messages lost for good (nothing retransmits them).
    pub drop: f64,
    /// Connections that die on their own, per connected device and hour; the device notices at the
    /// keepalive and reconnects (presence, hello, retained desired state).
    pub link_failures_per_hour: f64,
    pub duplicate: f64,
    /// Share of messages held back by up to `reorder_ms`, so later ones overtake them.
    pub reorder: f64,
    pub reorder_ms: u64,
    /// Share of chunks corrupted in transit (they fail their digest and are asked for again).
    pub corrupt_chunks: f64,
    pub keepalive_secs: u64,
    pub reconnect_min_secs: u64,
    pub reconnect_max_secs: u64,
}

impl Default for Fabric {
    fn default() -> Self {
        Fabric {
            delay_min_ms: 20,
            delay_mean_ms: 80,
            drop: 0.0,
            link_failures_per_hour: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_ms: 3_000,
            corrupt_chunks: 0.0,
            keepalive_secs: 30,
            reconnect_min_secs: 1,
            reconnect_max_secs: 30,
        }
    }
}

/// How a model behaves in the field.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Model {
    pub error_rate: f64,
    pub p95_us: u32,
}

impl Default for Model {
    fn default() -> Self {
        Model { error_rate: 0.002, p95_us: 2_000 }
    }
}

/// The release being rolled out and how it behaves.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Release {
    pub error_rate: f64,
    pub p95_us: u32,
    /// Share of devices on which the model is broken (its error rate is `failing_error_rate` there): the
    /// device's own watch should roll it back.
    pub failing_devices: f64,
    pub failing_error_rate: f64,
    /// Share of devices on which the self-test vectors fail before activation.
    pub selftest_failures: f64,
    /// Top-1 agreement with the running model on shadowed requests.
    pub shadow_agreement: f64,
    /// Signed by the release key the devices trust. `false` models a bundle from anyone else.
    pub signed: bool,
    pub chunks: u32,
    pub chunk_size: u32,
}

impl Default for Release {
    fn default() -> Self {
        Release {
            error_rate: 0.002,
            p95_us: 2_100,
            failing_devices: 0.0,
            failing_error_rate: 0.3,
            selftest_failures: 0.0,
            shadow_agreement: 0.99,
            signed: true,
            chunks: 4,
            chunk_size: 1024,
        }
    }
}

/// The rollout the operator starts, in the terms of `outpost rollout start`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RolloutCfg {
    pub start_secs: u64,
    pub selector: String,
    pub waves: Vec<String>,
    pub bake_secs: u64,
    pub hold_secs: Option<u64>,
    pub on_failure: String,
    pub shadow_secs: Option<u32>,
    pub shadow_percent: u8,
    pub watch_secs: u32,
    /// The device's own budget during the watch (errors per million requests).
    pub watch_max_error_ppm: u32,
    pub watch_min_requests: u32,
    pub max_failure_rate: Option<f64>,
    pub min_finished: u32,
    pub max_error_increase: Option<f64>,
    pub max_p95_regression: Option<f64>,
    pub min_shadow_agreement: Option<f64>,
    pub min_shadow_compared: u64,
    pub quorum: f64,
    pub max_evidence_age_secs: u64,
}

impl Default for RolloutCfg {
    fn default() -> Self {
        RolloutCfg {
            start_secs: 120,
            selector: String::new(),
            waves: vec!["1%".into(), "10%".into(), "50%".into(), "100%".into()],
            bake_secs: 600,
            hold_secs: None,
            on_failure: "rollback".into(),
            shadow_secs: None,
            shadow_percent: 50,
            watch_secs: 300,
            watch_max_error_ppm: 50_000,
            watch_min_requests: 100,
            max_failure_rate: Some(0.05),
            min_finished: 5,
            max_error_increase: Some(0.02),
            max_p95_regression: Some(0.5),
            min_shadow_agreement: None,
            min_shadow_compared: 100,
            quorum: 0.8,
            max_evidence_age_secs: 600,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Controller {
    /// The planner runs on this virtual timer (the daemon: every second; the planner is idempotent, so
    /// a coarser timer only delays decisions).
    pub evaluate_every_secs: u64,
    /// Crash the controller at this time (after it persisted a step, before it performed the actions).
    pub restart_at_secs: Option<u64>,
    pub down_secs: u64,
    /// The embedded broker dies with the controller: retained desired states and every connection go.
    pub embedded_broker: bool,
    /// Do what `daemon/rollouts.rs` does today: neither evaluate nor republish a rolled-back or aborted
    /// rollout. The planner's contract (rollout/mod.rs) wants both, so that a device that commits after
    /// the rollback is still reverted; off by default.
    pub skip_terminal_rollouts: bool,
}

impl Default for Controller {
    fn default() -> Self {
        Controller {
            evaluate_every_secs: 10,
            restart_at_secs: None,
            down_secs: 60,
            embedded_broker: true,
            skip_terminal_rollouts: false,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// Share of devices without network from the start until they return.
    pub offline_fraction: f64,
    /// They come back at a uniform time in `[return_min_secs, return_max_secs]`.
    pub return_min_secs: u64,
    pub return_max_secs: u64,
    /// Share of devices that lose power once while an update runs.
    pub power_loss: f64,
    pub power_off_secs: u64,
    pub partitions: Vec<Partition>,
    /// Test knob: one device is sent the release outside its wave (a forged desired state). The
    /// wave invariant must catch it.
    pub activate_outside_wave: bool,
    /// Test knob: devices skip the signature check. With an unsigned release, the verification invariant
    /// must catch it.
    pub skip_signature_check: bool,
    /// Test knob: a device applies a withdrawn desired state to every model it runs (a shell that lost
    /// the model's name). The isolation invariant must catch it.
    pub withdraw_all_models: bool,
    /// Test knob: devices ignore a revert. The aborted-release invariant must catch those left on it.
    pub ignore_revert: bool,
    /// Test knob: a power loss resets every model's floor (a slot table written without it). The floor
    /// invariant must catch it.
    pub floor_lost_on_power_loss: bool,
}

/// Devices with `label` = `value` cannot reach the broker between `from_secs` and `until_secs`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Partition {
    pub label: String,
    pub value: String,
    pub from_secs: u64,
    pub until_secs: u64,
}

/// A selector's label pairs, parsed as `outpost rollout start --selector` parses them.
fn selector(text: &str) -> Result<Vec<(String, String)>, String> {
    outpost_controller::rollout::Selector::parse(text).map(|s| s.0).map_err(|e| e.to_string())
}

mod defaults {
    pub fn model() -> String {
        "digits".into()
    }
    pub fn devices() -> u32 {
        1_000
    }
    pub fn seed() -> u64 {
        1
    }
    pub fn max_hours() -> f64 {
        12.0
    }
}

#[derive(Debug)]
pub enum ScenarioError {
    Read { path: String, source: std::io::Error },
    Parse { path: String, message: String },
    Invalid { path: String, field: String, why: String },
}

impl std::fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScenarioError::Read { path, source } => write!(f, "{path}: {source}"),
            ScenarioError::Parse { path, message } => write!(f, "{path}: {message}"),
            ScenarioError::Invalid { path, field, why } => write!(f, "{path}: {field}: {why}"),
        }
    }
}

impl std::error::Error for ScenarioError {}

impl Scenario {
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read { path: p.clone(), source })?;
        Scenario::parse(&text, &p)
    }

    /// Parses and validates; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Scenario, ScenarioError> {
        let s: Scenario =
            toml::from_str(text).map_err(|e| ScenarioError::Parse { path: origin.into(), message: e.to_string() })?;
        s.validate().map_err(|(field, why)| ScenarioError::Invalid { path: origin.into(), field, why })?;
        Ok(s)
    }

    /// Every model of the run, the first one first.
    pub fn models(&self) -> Vec<ModelCfg> {
        let first = ModelCfg {
            name: self.model.clone(),
            expect: self.expect,
            baseline: self.baseline.clone(),
            release: self.release.clone(),
            rollout: self.rollout.clone(),
            installed_on: Vec::new(),
        };
        std::iter::once(first)
            .chain(self.extra.iter().map(|m| ModelCfg {
                name: m.name.clone(),
                expect: m.expect,
                baseline: m.baseline.clone(),
                release: m.release.clone(),
                rollout: m.rollout.clone(),
                installed_on: selector(&m.installed_on).unwrap_or_default(),
            }))
            .collect()
    }

    fn validate(&self) -> Result<(), (String, String)> {
        let unit = |field: &str, v: f64| {
            if (0.0..=1.0).contains(&v) { Ok(()) } else { Err((field.to_owned(), format!("{v} is not in 0..=1"))) }
        };
        unit("fabric.drop", self.fabric.drop)?;
        unit("fabric.duplicate", self.fabric.duplicate)?;
        unit("fabric.reorder", self.fabric.reorder)?;
        unit("fabric.corrupt_chunks", self.fabric.corrupt_chunks)?;
        unit("faults.offline_fraction", self.faults.offline_fraction)?;
        unit("faults.power_loss", self.faults.power_loss)?;
        let models = self.models();
        if models.len() > MAX_MODELS {
            return Err(("models".into(), format!("{} models; at most {MAX_MODELS}", models.len())));
        }
        for (i, m) in models.iter().enumerate() {
            // The first model's tables are top-level; the others' are named by the model.
            let at = |field: &str| if i == 0 { field.to_owned() } else { format!("models.{}.{field}", m.name) };
            outpost_protocol::ModelName::new(&m.name).map_err(|e| (at("name"), e.to_string()))?;
            if models[..i].iter().any(|o| o.name == m.name) {
                return Err((at("name"), "two models of the run have this name".into()));
            }
            unit(&at("release.failing_devices"), m.release.failing_devices)?;
            unit(&at("release.failing_error_rate"), m.release.failing_error_rate)?;
            unit(&at("release.selftest_failures"), m.release.selftest_failures)?;
            unit(&at("release.shadow_agreement"), m.release.shadow_agreement)?;
            unit(&at("release.error_rate"), m.release.error_rate)?;
            unit(&at("baseline.error_rate"), m.baseline.error_rate)?;
            if let Some(extra) = i.checked_sub(1).map(|e| &self.extra[e]) {
                selector(&extra.installed_on).map_err(|e| (at("installed_on"), e))?;
            }
            if m.release.chunks == 0 {
                return Err((at("release.chunks"), "must be > 0".into()));
            }
            if m.release.chunk_size == 0 {
                return Err((at("release.chunk_size"), "must be > 0".into()));
            }
        }
        if !(self.fabric.link_failures_per_hour >= 0.0 && self.fabric.link_failures_per_hour.is_finite()) {
            return Err(("fabric.link_failures_per_hour".into(), "must be a number >= 0".into()));
        }
        if self.fabric.drop >= 0.9 {
            return Err(("fabric.drop".into(), "at 90 % loss or more nothing converges; use less".into()));
        }
        let positive = |field: &str, v: u64| if v > 0 { Ok(()) } else { Err((field.to_owned(), "must be > 0".into())) };
        positive("devices", u64::from(self.devices))?;
        positive("fleet.telemetry_window_secs", self.fleet.telemetry_window_secs)?;
        positive("fleet.tick_secs", self.fleet.tick_secs)?;
        positive("fleet.queue_records", self.fleet.queue_records as u64)?;
        positive("fleet.batch_records", self.fleet.batch_records as u64)?;
        positive("controller.evaluate_every_secs", self.controller.evaluate_every_secs)?;
        positive("fabric.keepalive_secs", self.fabric.keepalive_secs)?;
        if self.fleet.regions.is_empty() || self.fleet.archs.is_empty() {
            return Err(("fleet".into(), "regions and archs must not be empty".into()));
        }
        for a in &self.fleet.archs {
            a.parse::<outpost_protocol::Arch>()
                .map_err(|_| ("fleet.archs".to_owned(), format!("unknown architecture {a:?}")))?;
        }
        if self.fabric.reconnect_max_secs < self.fabric.reconnect_min_secs {
            return Err(("fabric.reconnect_max_secs".into(), "is below reconnect_min_secs".into()));
        }
        if self.faults.return_max_secs < self.faults.return_min_secs {
            return Err(("faults.return_max_secs".into(), "is below return_min_secs".into()));
        }
        for p in &self.faults.partitions {
            if p.until_secs <= p.from_secs {
                return Err((
                    "faults.partitions".into(),
                    format!("{}={}: until_secs must be after from_secs", p.label, p.value),
                ));
            }
        }
        if !(self.max_hours > 0.0 && self.max_hours.is_finite()) {
            return Err(("max_hours".into(), "must be a positive number".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_scenario_takes_the_defaults() {
        let s = Scenario::parse("name = \"x\"\nexpect = \"completed\"\n", "x.toml").unwrap();
        assert_eq!(s.expect, Expect::Completed);
        assert_eq!(s.rollout.waves.len(), 4);
        assert_eq!(s.fabric.drop, 0.0);
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_key() {
        let e = Scenario::parse("name = \"x\"\nexpect = \"completed\"\n[fabric]\ndorp = 0.2\n", "x.toml").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("x.toml") && msg.contains("dorp"), "{msg}");
        let e = Scenario::parse("name = \"x\"\nexpect = \"finished\"\n", "x.toml").unwrap_err();
        assert!(e.to_string().contains("finished"), "{e}");
    }

    #[test]
    fn out_of_range_values_name_the_field() {
        let e = Scenario::parse("name = \"x\"\nexpect = \"completed\"\n[fabric]\ndrop = 1.5\n", "x.toml").unwrap_err();
        assert!(e.to_string().contains("fabric.drop"), "{e}");
        let e = Scenario::parse("name = \"x\"\nexpect = \"completed\"\n[fleet]\narchs = [\"sparc\"]\n", "x.toml")
            .unwrap_err();
        assert!(e.to_string().contains("sparc"), "{e}");
    }
}

//! What an operator asks for when starting a rollout, and its validation. A spec is immutable once the
//! rollout exists: everything that changes lives in [`super::RolloutState`].

use super::gates::GateKind;
use super::view::DeviceView;
use outpost_protocol::manifest::Targets;
use outpost_protocol::messages::{BundleRef, Watch};
use outpost_protocol::{ModelName, Version};
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutSpec {
    /// Also the hash salt of wave membership: two rollouts pick different canaries.
    pub id: String,
    pub release: Release,
    pub selector: Selector,
    /// Cumulative sizes: `1%, 10%, 100%` means the second wave brings the total to 10 %.
    pub waves: Vec<Wave>,
    pub gates: Gates,
    pub on_failure: FailurePolicy,
    /// Run the candidate beside the active model this long before activating it.
    pub shadow: Option<ShadowPeriod>,
    /// Goes verbatim into every desired state: the device's own post-activation health budget.
    pub watch: Watch,
    /// How long a wave may wait for conclusive evidence after its bake before pausing; `None` = one more
    /// bake time (so "no data" pauses after twice the bake).
    pub hold_secs: Option<u64>,
    /// Install the release, or take the model off the selected devices.
    #[serde(default)]
    pub kind: Kind,
}

/// What a rollout does to each device it reaches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// Install the release (adding the model where the device does not run it yet).
    #[default]
    Install,
    /// Stop serving the model and drop its slots (`Mode::Remove`). The release names what the
    /// controller last pushed of the model; devices remove the model whatever version they run. The
    /// selection is the selector's devices that run the model. A removal cannot be reverted (the slots
    /// are gone): to bring the model back, roll it out again.
    Remove,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Install => "install",
            Kind::Remove => "remove",
        }
    }
}

/// The release being rolled out. The daemon fills it from the bundle store when the rollout starts; the
/// chunk list is part of it so the planner emits complete, publishable desired states.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub model: ModelName,
    pub version: Version,
    pub sequence: u64,
    pub bundle: BundleRef,
    /// SHA-256 of the model inside the bundle: what devices report running and measure windows and
    /// shadow comparisons against (the bundle digest names the file, the model digest what serves).
    pub model_digest: outpost_protocol::Digest,
    /// From the manifest: devices it cannot run on are not selected, rather than counted as failures.
    pub targets: Targets,
}

/// Label equality pairs, all of which must hold. The key `arch` also matches the device's architecture.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selector(pub Vec<(String, String)>);

impl Selector {
    /// `arch=aarch64,region=eu`; the empty string selects every device.
    pub fn parse(s: &str) -> Result<Self, SpecError> {
        let mut pairs = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| SpecError::BadSelector { part: part.to_owned() })?;
            let (k, v) = (k.trim(), v.trim());
            // Only equality is supported. `region!=eu` would otherwise read as the key `region!` (no device
            // has it: the rollout selects nothing, or `devices list` shows nothing), `region==eu` as the
            // value `=eu`: refused by name rather than misread.
            let label =
                |s: &str| s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':'));
            if !label(k) || !label(v) {
                return Err(SpecError::UnsupportedSelector { part: part.to_owned() });
            }
            pairs.push((k.to_owned(), v.to_owned()));
        }
        let sel = Selector(pairs);
        sel.validate()?;
        Ok(sel)
    }

    pub fn validate(&self) -> Result<(), SpecError> {
        for (i, (k, _)) in self.0.iter().enumerate() {
            if k.is_empty() {
                return Err(SpecError::BadSelector { part: format!("={}", self.0[i].1) });
            }
            if self.0[..i].iter().any(|(earlier, _)| earlier == k) {
                return Err(SpecError::DuplicateSelectorKey { key: k.clone() });
            }
        }
        Ok(())
    }

    pub fn matches(&self, device: &DeviceView) -> bool {
        self.0.iter().all(|(k, v)| device.label(k) == Some(v.as_str()))
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pairs: Vec<String> = self.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
        f.write_str(&pairs.join(","))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wave {
    pub size: WaveSize,
    pub bake_secs: u64,
}

/// A wave's cumulative size. Percentages round up, so `1%` of 50 devices is one device, not none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WaveSize {
    Percent(Percent),
    /// The lowest-ranked `n` selected devices.
    Count(u32),
}

/// A percentage in hundredths (1 % = 100, 100 % = 10 000): integer arithmetic keeps wave sizes exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Percent(pub u32);

impl Percent {
    pub const ALL: Percent = Percent(10_000);

    /// `ceil(self × n)`: a non-zero percentage of a non-empty fleet is at least one device.
    pub fn of(self, n: usize) -> usize {
        ((self.0 as u128 * n as u128).div_ceil(10_000)) as usize
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 % 100 {
            0 => write!(f, "{}%", self.0 / 100),
            r => write!(f, "{}.{:02}%", self.0 / 100, r),
        }
    }
}

impl fmt::Display for WaveSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaveSize::Percent(p) => p.fmt(f),
            WaveSize::Count(n) => write!(f, "{n} device(s)"),
        }
    }
}

impl std::str::FromStr for WaveSize {
    type Err = SpecError;
    /// `10%`, `0.5%` (at most two decimals) or a device count `5`.
    fn from_str(s: &str) -> Result<Self, SpecError> {
        let bad = || SpecError::BadWave { input: s.to_owned() };
        let Some(pct) = s.trim().strip_suffix('%') else {
            return s.trim().parse().map(WaveSize::Count).map_err(|_| bad());
        };
        let (whole, frac) = pct.split_once('.').unwrap_or((pct, ""));
        if whole.is_empty() || frac.len() > 2 || !(whole.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())) {
            return Err(bad());
        }
        let whole: u32 = whole.parse().map_err(|_| bad())?;
        let frac: u32 = if frac.is_empty() { 0 } else { format!("{frac:0<2}").parse().map_err(|_| bad())? };
        Ok(WaveSize::Percent(Percent(whole.saturating_mul(100).saturating_add(frac))))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailurePolicy {
    Pause,
    /// Revert every device of the rollout to its previous model.
    Rollback,
}

impl std::str::FromStr for FailurePolicy {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, SpecError> {
        match s {
            "pause" => Ok(FailurePolicy::Pause),
            "rollback" => Ok(FailurePolicy::Rollback),
            other => Err(SpecError::BadPolicy { input: other.to_owned() }),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowPeriod {
    pub secs: u32,
    pub sample_percent: u8,
}

/// Each gate is optional except the quorum. Rates and fractions are in `0.0..=1.0`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Gates {
    pub install: Option<InstallGate>,
    pub error_rate: Option<ErrorRateGate>,
    pub latency: Option<LatencyGate>,
    pub shadow: Option<ShadowGate>,
    pub drift: Option<DriftGate>,
    pub quorum: Quorum,
    /// The gates that hold their documented default because the operator did not name them (see
    /// [`Gates::with_defaults`]). A default gate fails a wave on evidence like any other, but never holds
    /// one for lack of it: the quorum does that.
    #[serde(default)]
    pub defaulted: Vec<GateKind>,
}

/// The gates every install rollout gets unless the operator sets them or turns them off
/// (`--no-default-gates`): documented in docs/operating.md, "Default gates".
pub mod defaults {
    /// At most 10 % of a wave's finished installs may fail (one failed canary of one fails the wave).
    pub const MAX_FAILURE_RATE: f64 = 0.10;
    /// The wave's error rate may exceed the old release's by at most 2 percentage points.
    pub const MAX_ERROR_INCREASE: f64 = 0.02;
    /// The wave's median p95 may be at most twice the old release's (+100 %): wide enough that the
    /// latency noise of a busy device does not stop a healthy release, narrow enough to catch a model
    /// that does twice the work.
    pub const MAX_P95_REGRESSION: f64 = 1.0;
    /// ... and at least this much slower (µs): where devices share cores (a test rig, a gateway running
    /// several models), contention alone multiplies a sub-millisecond model's p95 (×13 measured with 20
    /// agents on one machine), which says nothing about the release.
    pub const P95_SLACK_US: u32 = 10_000;
    /// With a shadow period and a classifier (its manifest has an output-class profile): the candidate
    /// agrees with the serving model on at least 90 % of sampled requests (top-1).
    pub const MIN_SHADOW_AGREEMENT: f64 = 0.90;
    /// Requests (error rate) and comparisons (shadow) a wave needs before those gates judge.
    pub const MIN_SAMPLES: u64 = 20;
}

impl Gates {
    /// Fills every gate the operator left out with its default and records which ones. A removal gets
    /// only the install gate (there is no new release to measure); the shadow gate only when the
    /// rollout shadows a classifier (agreement of top-1 classes means nothing for a regressor).
    pub fn with_defaults(mut self, kind: Kind, shadows: bool, classifier: bool) -> Gates {
        if self.install.is_none() {
            self.install = Some(InstallGate { max_failure_rate: defaults::MAX_FAILURE_RATE, min_finished: 1 });
            self.defaulted.push(GateKind::InstallFailure);
        }
        if kind == Kind::Remove {
            return self;
        }
        if self.error_rate.is_none() {
            let g = ErrorRateGate { max_increase: defaults::MAX_ERROR_INCREASE, min_requests: defaults::MIN_SAMPLES };
            self.error_rate = Some(g);
            self.defaulted.push(GateKind::ErrorRate);
        }
        if self.latency.is_none() {
            self.latency = Some(LatencyGate { max_p95_regression: defaults::MAX_P95_REGRESSION });
            self.defaulted.push(GateKind::LatencyP95);
        }
        if self.shadow.is_none() && shadows && classifier {
            let g = ShadowGate { min_agreement: defaults::MIN_SHADOW_AGREEMENT, min_compared: defaults::MIN_SAMPLES };
            self.shadow = Some(g);
            self.defaulted.push(GateKind::ShadowAgreement);
        }
        self
    }

    /// One line per gate for people: what it checks, its threshold and units, and `(default)` for the
    /// gates the operator did not set.
    pub fn describe(&self) -> Vec<(GateKind, String)> {
        let pct = |v: f64| format!("{}%", (v * 1000.0).round() / 10.0);
        let mut out = vec![(
            GateKind::Quorum,
            format!(
                "at least {} of the wave's devices (and {} or more) send fresh evidence, none older than {}",
                pct(self.quorum.min_fraction),
                self.quorum.min_devices,
                crate::duration::format(self.quorum.max_evidence_age_secs)
            ),
        )];
        if let Some(g) = self.install {
            out.push((
                GateKind::InstallFailure,
                format!("at most {} of finished installs fail", pct(g.max_failure_rate)),
            ));
        }
        if let Some(g) = self.error_rate {
            out.push((
                GateKind::ErrorRate,
                format!(
                    "error rate at most the old release's + {} (absolute; requests since told, judged from {} requests)",
                    pct(g.max_increase),
                    g.min_requests
                ),
            ));
        }
        if let Some(g) = self.latency {
            let slack = if self.defaulted.contains(&GateKind::LatencyP95) {
                format!(" or at most {} ms more", defaults::P95_SLACK_US / 1000)
            } else {
                String::new()
            };
            out.push((
                GateKind::LatencyP95,
                format!("median p95 at most {} slower than the old release's{slack}", pct(g.max_p95_regression)),
            ));
        }
        if let Some(g) = self.shadow {
            out.push((
                GateKind::ShadowAgreement,
                format!(
                    "top-1 agreement with the serving model at least {} (judged from {} comparisons)",
                    pct(g.min_agreement),
                    g.min_compared
                ),
            ));
        }
        if let Some(g) = self.drift {
            out.push((GateKind::Drift, format!("median device PSI at most {}", g.max_psi)));
        }
        out.into_iter()
            .map(|(k, text)| if self.defaulted.contains(&k) { (k, format!("{text} (default)")) } else { (k, text) })
            .collect()
    }
}

/// Failed installs (rejected or rolled back with a reason) ÷ installs that finished.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct InstallGate {
    pub max_failure_rate: f64,
    /// Judge only once this many installs finished (or the whole wave did): AWS IoT's "minimum number of
    /// executed devices", so one early failure among thousands does not stop a rollout on its own.
    pub min_finished: u32,
}

/// Fails when the wave's error rate exceeds the baseline's by more than `max_increase` (absolute, so
/// 0.01 = one percentage point). Relative to the baseline because field conditions (bad inputs, a flaky
/// sensor) raise both; with no baseline at all the baseline rate counts as zero.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ErrorRateGate {
    pub max_increase: f64,
    /// Inconclusive below this many requests in the wave: a handful of requests proves nothing.
    pub min_requests: u64,
}

/// Fails when the median device p95 of the wave exceeds the baseline's by more than this ratio
/// (0.25 = 25 % slower).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatencyGate {
    pub max_p95_regression: f64,
}

/// Top-1 agreement of the candidate with the active model during the shadow period, pooled over the wave
/// with each device weighing at most the median device ([`super::per_device`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ShadowGate {
    pub min_agreement: f64,
    pub min_compared: u64,
}

/// Fails when the wave's median device PSI (inputs and output classes against the reference profile)
/// exceeds this.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DriftGate {
    pub max_psi: f64,
}

/// How much evidence a wave needs before it may advance. Missing evidence never fails a wave: it holds,
/// then pauses.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Quorum {
    /// Share of the wave's devices (failed installs aside) that must have reported fresh evidence.
    pub min_fraction: f64,
    pub min_devices: u32,
    pub max_evidence_age_secs: u64,
}

impl Default for Quorum {
    fn default() -> Self {
        Quorum { min_fraction: 0.8, min_devices: 1, max_evidence_age_secs: 600 }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpecError {
    #[error("rollout id {id:?} {why}")]
    BadId { id: String, why: &'static str },
    #[error("waves: at least one wave is needed")]
    NoWaves,
    #[error("waves[{wave}]: a wave of {size} selects no device")]
    EmptyWave { wave: usize, size: WaveSize },
    #[error("waves[{wave}]: {percent} is over 100%")]
    PercentOutOfRange { wave: usize, percent: Percent },
    #[error("waves[{wave}]: {size} does not grow on the previous wave's {previous} (sizes are cumulative)")]
    WavesNotIncreasing { wave: usize, size: WaveSize, previous: WaveSize },
    #[error("wave {input:?} is not a percentage (10%, 0.5%) or a device count (5)")]
    BadWave { input: String },
    #[error("{field} = {value} is out of range (expected {range})")]
    OutOfRange { field: &'static str, value: f64, range: &'static str },
    #[error("selector part {part:?} is not key=value (only equality is supported)")]
    BadSelector { part: String },
    #[error(
        "selector part {part:?}: only key=value is supported (labels are letters, digits and . _ - / :); \
         no !=, ==, in or globs: select the devices you want by a label they share"
    )]
    UnsupportedSelector { part: String },
    #[error("selector key {key:?} appears twice")]
    DuplicateSelectorKey { key: String },
    #[error("failure policy {input:?} is neither pause nor rollback")]
    BadPolicy { input: String },
    #[error("a removal rollout {what}")]
    NotForRemoval { what: &'static str },
}

impl RolloutSpec {
    /// Checks everything that can be checked without the fleet. A selector that matches no device is
    /// fine: devices may enroll later.
    pub fn validate(&self) -> Result<(), SpecError> {
        let bad_id = |why| Err(SpecError::BadId { id: self.id.clone(), why });
        if self.id.is_empty() {
            return bad_id("is empty");
        }
        if self.id.len() > 64 || self.id.chars().any(|c| c.is_control() || c == '/' || c == '+' || c == '#') {
            return bad_id("must be at most 64 bytes without control characters, '/', '+' or '#'");
        }
        self.selector.validate()?;
        self.validate_waves()?;
        if self.kind == Kind::Remove {
            self.validate_removal()?;
        }
        let g = &self.gates;
        let unit = |field, v: f64| in_range(field, v, 0.0, 1.0, "0..=1");
        let positive = |field, v: f64| in_range(field, v, 0.0, f64::MAX, ">= 0");
        unit("gates.quorum.min_fraction", g.quorum.min_fraction)?;
        if let Some(i) = g.install {
            unit("gates.install.max_failure_rate", i.max_failure_rate)?;
        }
        if let Some(e) = g.error_rate {
            unit("gates.error_rate.max_increase", e.max_increase)?;
        }
        if let Some(l) = g.latency {
            positive("gates.latency.max_p95_regression", l.max_p95_regression)?;
        }
        if let Some(s) = g.shadow {
            unit("gates.shadow.min_agreement", s.min_agreement)?;
        }
        if let Some(d) = g.drift {
            positive("gates.drift.max_psi", d.max_psi)?;
        }
        if let Some(s) = self.shadow
            && !(1..=100).contains(&s.sample_percent)
        {
            return Err(SpecError::OutOfRange {
                field: "shadow.sample_percent",
                value: f64::from(s.sample_percent),
                range: "1..=100",
            });
        }
        Ok(())
    }

    /// A removal has no new release to measure or shadow, and no way back.
    fn validate_removal(&self) -> Result<(), SpecError> {
        let g = &self.gates;
        let refuse = |what| Err(SpecError::NotForRemoval { what });
        if self.on_failure == FailurePolicy::Rollback {
            return refuse(
                "cannot roll back: devices that removed the model have nothing to switch back to (use --on-failure pause)",
            );
        }
        if self.shadow.is_some() {
            return refuse("has no candidate to shadow");
        }
        if g.error_rate.is_some() || g.latency.is_some() || g.shadow.is_some() || g.drift.is_some() {
            return refuse("has no new release to measure: only the install-failure gate and the quorum apply");
        }
        Ok(())
    }

    /// Sizes must grow wave on wave. A count next to a percentage cannot be compared without the fleet
    /// size; the planner then takes the larger of the two, so such a wave may add no device.
    fn validate_waves(&self) -> Result<(), SpecError> {
        if self.waves.is_empty() {
            return Err(SpecError::NoWaves);
        }
        for (i, w) in self.waves.iter().enumerate() {
            match w.size {
                WaveSize::Percent(Percent(0)) | WaveSize::Count(0) => {
                    return Err(SpecError::EmptyWave { wave: i, size: w.size });
                }
                WaveSize::Percent(p) if p > Percent::ALL => {
                    return Err(SpecError::PercentOutOfRange { wave: i, percent: p });
                }
                _ => {}
            }
            let Some(prev) = i.checked_sub(1).map(|j| self.waves[j].size) else { continue };
            let grows = match (prev, w.size) {
                (WaveSize::Percent(a), WaveSize::Percent(b)) => b > a,
                (WaveSize::Count(a), WaveSize::Count(b)) => b > a,
                (WaveSize::Percent(a), WaveSize::Count(_)) => a < Percent::ALL,
                (WaveSize::Count(_), WaveSize::Percent(_)) => true,
            };
            if !grows {
                return Err(SpecError::WavesNotIncreasing { wave: i, size: w.size, previous: prev });
            }
        }
        Ok(())
    }
}

fn in_range(field: &'static str, value: f64, lo: f64, hi: f64, range: &'static str) -> Result<(), SpecError> {
    // `contains` is false for NaN, so a NaN threshold is refused too.
    if (lo..=hi).contains(&value) { Ok(()) } else { Err(SpecError::OutOfRange { field, value, range }) }
}

//! Gates: the wave's devices against the devices still on the old release. Each gate gives pass, fail or
//! inconclusive with the numbers it judged, so every decision can be explained later.

use super::confidence::{self, Side};
use super::per_device::{self, Worse};
use super::spec::{Gates, Release};
use super::view::{DeviceView, InstallStatus, WindowView};
use outpost_protocol::{ModelName, UnixTime};
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    Pass,
    Fail,
    /// Not enough evidence: holds the bake, then pauses. Never fails a wave on its own.
    Inconclusive,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Inconclusive => "inconclusive",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GateKind {
    Quorum,
    InstallFailure,
    ErrorRate,
    LatencyP95,
    ShadowAgreement,
    Drift,
}

impl GateKind {
    /// The gate as people read it in status, audit reasons and docs.
    pub fn name(self) -> &'static str {
        match self {
            GateKind::Quorum => "quorum",
            GateKind::InstallFailure => "install-failures",
            GateKind::ErrorRate => "error-rate",
            GateKind::LatencyP95 => "p95-latency",
            GateKind::ShadowAgreement => "shadow-agreement",
            GateKind::Drift => "drift",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateResult {
    pub gate: GateKind,
    pub verdict: Verdict,
    /// The wave's figure (a rate, a ratio, a PSI) when there was one.
    pub value: Option<f64>,
    /// The baseline's figure the wave was compared with.
    pub baseline: Option<f64>,
    pub threshold: f64,
    /// Devices (quorum, installs, latency, drift), requests (error rate) or comparisons (shadow) counted.
    pub samples: u64,
    pub note: String,
    /// A shadow agreement under its floor without certainty ([`super::confidence`]): inconclusive during
    /// the bake, a pass once it is over (the planner).
    #[serde(default)]
    pub undecided: bool,
}

impl GateResult {
    /// An undecided gate whose bake is over passes: always for a shadow agreement (its comparisons ended
    /// with the shadow period), for an error rate when its figure is within the limit.
    pub fn passes_after_the_bake(&self) -> bool {
        match self.gate {
            GateKind::ErrorRate => self.value.is_some_and(|v| v <= self.baseline.unwrap_or(0.0) + self.threshold),
            _ => true,
        }
    }
}

impl fmt::Display for GateResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.gate.name(), self.verdict.name(), self.note)
    }
}

/// The judgement of one wave at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub at: UnixTime,
    pub wave: usize,
    /// Devices the selector and the release's targets allow.
    pub selected: u32,
    /// Devices told to install (all waves so far), by where they stand.
    pub cohort: u32,
    pub installed: u32,
    pub in_progress: u32,
    pub failed: u32,
    pub finished: u32,
    pub reporting: u32,
    pub baseline_devices: u32,
    pub baseline_reporting: u32,
    /// When the baseline figures were taken, if not now (the snapshot of an earlier evaluation).
    pub baseline_from: Option<UnixTime>,
    pub gates: Vec<GateResult>,
}

impl Evidence {
    pub fn verdict(&self) -> Verdict {
        let any = |v| self.gates.iter().any(|g| g.verdict == v);
        if any(Verdict::Fail) {
            Verdict::Fail
        } else if any(Verdict::Inconclusive) {
            Verdict::Inconclusive
        } else {
            Verdict::Pass
        }
    }

    /// The gates with this verdict, one per clause: the reason recorded with a decision.
    pub fn summary(&self, verdict: Verdict) -> String {
        let parts: Vec<String> = self.gates.iter().filter(|g| g.verdict == verdict).map(|g| g.to_string()).collect();
        parts.join("; ")
    }
}

/// The baseline's figures from the last evaluation that had any.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineSnapshot {
    pub at: UnixTime,
    pub devices: u32,
    /// Totals as reported (each window clamped), shown beside the figures; the gates judge the medians.
    pub requests: u64,
    pub errors: u64,
    /// The baseline devices' error rate, each device weighing at most the median device
    /// ([`per_device::ratio`]). `None` in snapshots stored before: then errors ÷ requests.
    #[serde(default)]
    pub error_rate: Option<f64>,
    pub p95_median_us: Option<u32>,
    /// The median baseline device's PSI (stored as a mean before gates judged per device).
    #[serde(alias = "psi_mean")]
    pub psi: Option<f64>,
}

impl BaselineSnapshot {
    fn error_rate(&self) -> f64 {
        self.error_rate.unwrap_or_else(|| ratio(self.errors, self.requests))
    }
}

/// A group of devices (the wave, or the baseline), built in one pass over the fleet: device counts, and
/// each device's own figures for the gates to judge one device, one vote ([`per_device`]).
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub devices: u32,
    pub installed: u32,
    pub in_progress: u32,
    pub failed: u32,
    pub finished: u32,
    pub reporting: u32,
    /// Totals as reported (each window clamped): for notes, never judged.
    pub requests: u64,
    pub errors: u64,
    /// `(errors, requests, stopped)` of each device with a window: a wave device's sum since it was told
    /// (`stopped`: its install failed, so the sum stopped growing), a baseline device's latest window.
    error_counts: Vec<(u64, u64, bool)>,
    p95s: Vec<u32>,
    psis: Vec<f64>,
    /// Devices whose window carried PSIs over too few samples to count.
    psi_unscored: u32,
    /// `(agreed, compared)` of each device with shadow comparisons.
    shadow_counts: Vec<(u64, u64)>,
    /// Devices whose figures were clamped or left out as impossible.
    implausible: u32,
}

impl Tally {
    /// A device told to install `release`: its install outcome, new-release window and shadow stats.
    pub fn add_wave_device(&mut self, d: &DeviceView, release: &Release, fresh_since: UnixTime) {
        let digest = release.bundle.digest;
        self.devices += 1;
        let status = d.install_status(&release.model, &digest, &release.model_digest, release.sequence);
        match status {
            InstallStatus::Installed { committed } => {
                self.installed += 1;
                self.finished += u32::from(committed);
            }
            InstallStatus::InProgress(_) => self.in_progress += 1,
            InstallStatus::Failed(_) => {
                self.failed += 1;
                self.finished += 1;
            }
            InstallStatus::NotInstalled | InstallStatus::Reverted | InstallStatus::Ahead => {}
        }
        // Shadow comparisons count whatever their age: they are bound to this exact candidate and stop
        // by design once it goes live.
        let shadow = d.shadow_for(&release.model_digest);
        if let Some(s) = shadow {
            self.shadow_counts.push((s.agreed, s.compared));
        }
        let failed = matches!(status, InstallStatus::Failed(_));
        let latest = d.window_for(&release.model_digest);
        let window = latest.filter(|w| w.received_at >= fresh_since);
        if !failed && (window.is_some() || shadow.is_some_and(|s| s.received_at >= fresh_since)) {
            self.reporting += 1;
        }
        // Requests and errors count from every window since the device was told, however old (like shadow
        // comparisons, they are bound to this release): the evidence grows while the wave bakes. A failed
        // install's count too: it holds the errors that made the device roll back.
        if let Some(c) = latest.map(WindowView::counted) {
            self.add_counts(c.errors, c.requests, failed);
        }
        if let Some(w) = window {
            self.add_measures(w.requests, w.p95_us, w.psi);
            self.psi_unscored += u32::from(w.psi_unscored);
        }
        self.implausible += u32::from(window.is_some_and(|w| w.implausible) || shadow.is_some_and(|s| s.implausible));
    }

    /// A selected device still running another release of the model: its window for what it runs.
    pub fn add_baseline_device(&mut self, d: &DeviceView, model: &ModelName, fresh_since: UnixTime) {
        self.devices += 1;
        let Some(running) = d.runs(model) else { return };
        if let Some(w) = d.window_for(&running.digest).filter(|w| w.received_at >= fresh_since) {
            self.reporting += 1;
            self.add_counts(w.errors, w.requests, false);
            self.add_measures(w.requests, w.p95_us, w.psi);
            self.implausible += u32::from(w.implausible);
        }
    }

    fn add_counts(&mut self, errors: u64, requests: u64, stopped: bool) {
        self.requests = self.requests.saturating_add(requests);
        self.errors = self.errors.saturating_add(errors);
        self.error_counts.push((errors, requests, stopped));
    }

    fn add_measures(&mut self, requests: u64, p95_us: u32, psi: Option<f32>) {
        // p95 0: the model computed nothing in the window (every answer came from the device's cache).
        if requests > 0 && p95_us > 0 {
            self.p95s.push(p95_us);
        }
        // Views clamp PSIs on arrival; a stored view from before may still hold an impossible one.
        if let Some(p) = psi.filter(|p| p.is_finite() && *p >= 0.0) {
            self.psis.push(f64::from(p));
        }
    }

    /// The median of device p95s (the slower middle one): robust to one slow or lying device, and
    /// device p95s cannot be pooled exactly.
    fn p95_median(&self) -> Option<u32> {
        let mut v: Vec<f64> = self.p95s.iter().map(|&p| f64::from(p)).collect();
        per_device::median(&mut v, Worse::High).map(|p| p as u32)
    }

    fn psi_median(&self) -> Option<f64> {
        per_device::median(&mut self.psis.clone(), Worse::High)
    }

    pub fn snapshot(self, at: UnixTime) -> Option<BaselineSnapshot> {
        let error_rate = per_device::ratio_with_stopped(&self.error_counts).map(|r| r.value);
        (self.reporting > 0).then(|| BaselineSnapshot {
            at,
            devices: self.reporting,
            requests: self.requests,
            errors: self.errors,
            error_rate,
            p95_median_us: self.p95_median(),
            psi: self.psi_median(),
        })
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

fn result(gate: GateKind, ok: Option<bool>, value: Option<f64>, threshold: f64, samples: u64) -> GateResult {
    let verdict = match ok {
        Some(true) => Verdict::Pass,
        Some(false) => Verdict::Fail,
        None => Verdict::Inconclusive,
    };
    GateResult { gate, verdict, value, baseline: None, threshold, samples, note: String::new(), undecided: false }
}

/// Judges the wave `w` against `baseline` (the current one, or the last snapshot). The install gate counts
/// devices; the error-rate and shadow gates pool counts with each device weighing at most the median
/// device, latency and drift take the median device; each of those four judges only once enough devices
/// have a figure ([`per_device`]).
pub fn judge(gates: &Gates, w: &mut Tally, baseline: Option<&BaselineSnapshot>) -> Vec<GateResult> {
    let mut out = Vec::new();
    let q = gates.quorum;
    // Devices whose install failed cannot report on the new release; the install gate judges them.
    let can_report = w.devices - w.failed;
    let need = ((q.min_fraction * f64::from(can_report)).ceil() as u32).max(q.min_devices.min(can_report));
    // Pass or inconclusive, never fail: missing evidence pauses a rollout, it does not fail it.
    let ok = (can_report > 0 && w.reporting >= need).then_some(true);
    let mut r = result(GateKind::Quorum, ok, Some(ratio(w.reporting.into(), can_report.into())), q.min_fraction, 0);
    r.samples = w.reporting.into();
    let age = crate::duration::format(q.max_evidence_age_secs);
    r.note = if ok.is_some() {
        format!(
            "{} of {} device(s) reported since they were told (within {age}), {} needed",
            w.reporting, can_report, need
        )
    } else if w.devices == 0 {
        "no device of the wave was told yet".to_owned()
    } else if can_report == 0 {
        format!("all {} device(s) of the wave failed to install: the install gate judges them", w.devices)
    } else {
        // Say what was missing and what to do: the usual cause is a wave without traffic.
        format!(
            "{} of {} device(s) sent an inference window since they were told (within {age}), {} needed; devices \
             only report windows while they serve requests: send traffic to the wave's devices, lower --quorum, \
             or promote to skip the gates",
            w.reporting, can_report, need
        )
    };
    // A device still installing cannot report yet: more traffic would not help, a longer bake would (a
    // wave of many devices on slow links or small CPUs installs for longer than the default bake).
    if ok.is_none() && w.in_progress > 0 {
        r.note += &format!(
            "; {} device(s) of the wave are still installing: if installs take longer than the bake and its \
             hold, give the rollout a longer --bake",
            w.in_progress
        );
    }
    if w.implausible > 0 {
        r.note += &format!(
            "; {} device(s) reported impossible figures (clamped; each device counts as one device)",
            w.implausible
        );
    }
    out.push(r);
    // The devices a median gate needs a figure from (per_device.rs): three, or all of a smaller wave.
    let need = per_device::MIN_DEVICES.min(can_report).max(1);
    // The clause every median gate adds when too few devices have its figure.
    let few = |have: u32| {
        (have < need)
            .then(|| format!("; {have} device(s) with a figure, {need} needed (one device never judges alone)"))
    };

    if let Some(g) = gates.install {
        let need = g.min_finished.clamp(1, w.devices.max(1));
        let rate = ratio(w.failed.into(), w.finished.into());
        // Certain before `need` finished when the failures alone exceed the rate over the whole wave.
        let certain = w.failed > 0 && ratio(w.failed.into(), w.devices.into()) > g.max_failure_rate;
        let ok = if certain { Some(false) } else { (w.finished >= need).then_some(rate <= g.max_failure_rate) };
        let mut r = result(GateKind::InstallFailure, ok, Some(rate), g.max_failure_rate, w.finished.into());
        r.note = format!(
            "{} of {} finished install(s) failed ({} of {} in progress)",
            w.failed, w.finished, w.in_progress, w.devices
        );
        out.push(r);
    }

    if let Some(g) = gates.error_rate {
        let by_device = per_device::ratio_with_stopped(&w.error_counts);
        let (devices, counted) = by_device.map_or((0, 0), |d| (d.devices, d.counted));
        let rate = by_device.map(|d| d.value);
        let base = baseline.map(BaselineSnapshot::error_rate);
        let limit = base.unwrap_or(0.0) + g.max_increase;
        let enough = devices >= need && counted >= g.min_requests.max(1);
        // Fails only when sure the rate is over the limit, passes when sure it is under: 1 error in a
        // canary's first 39 requests is neither (confidence.rs).
        let side = rate.filter(|_| enough).map(|rate| confidence::at_most(rate, counted, limit));
        let mut r = result(GateKind::ErrorRate, decided(side), rate, g.max_increase, counted);
        r.baseline = base;
        r.note = format!(
            "error rate {} over {devices} device(s) since they were told, limit {:.3}% ({}); {} error(s) in {} \
             request(s) reported, {counted} counted (each device weighs at most the median device's {} requests, \
             a device whose install failed that much)",
            rate.map_or_else(|| "n/a".to_owned(), |r| format!("{:.3}%", r * 100.0)),
            limit * 100.0,
            match base {
                Some(b) => format!("baseline {:.3}% + {:.3}%", b * 100.0, g.max_increase * 100.0),
                None => "no baseline: absolute".into(),
            },
            w.errors,
            w.requests,
            by_device.map_or(0, |d| d.cap),
        );
        r.note += &few(devices).unwrap_or_default();
        if side == Some(Side::Undecided) {
            r.note += &undecided_note(rate, counted, limit, Worse::High);
            r.undecided = true;
        }
        out.push(r);
    }

    if let Some(g) = gates.latency {
        let wave = w.p95_median().filter(|_| w.p95s.len() as u32 >= need);
        let base = baseline.and_then(|b| b.p95_median_us);
        let value = wave.zip(base).map(|(a, b)| f64::from(a) / f64::from(b.max(1)));
        // The default gate leaves regressions under a few milliseconds alone: where devices share cores
        // (a test rig, a gateway running several models) contention alone doubles a fast model's p95.
        let slack =
            if gates.defaulted.contains(&GateKind::LatencyP95) { super::spec::defaults::P95_SLACK_US } else { 0 };
        let small = wave.zip(base).is_some_and(|(a, b)| a.saturating_sub(b) <= slack);
        let ok = value.map(|v| v <= 1.0 + g.max_p95_regression || small);
        let mut r = result(GateKind::LatencyP95, ok, value, g.max_p95_regression, w.p95s.len() as u64);
        r.baseline = base.map(f64::from);
        r.note = format!(
            "median device p95 {} µs vs baseline {} µs, at most +{:.0}%",
            opt(w.p95_median()),
            opt(base),
            g.max_p95_regression * 100.0
        );
        r.note += &few(w.p95s.len() as u32).unwrap_or_default();
        out.push(r);
    }

    if let Some(g) = gates.shadow {
        let by_device = per_device::ratio(&w.shadow_counts);
        let (devices, counted) = by_device.map_or((0, 0), |d| (d.devices, d.counted));
        let agreement = by_device.map(|d| d.value);
        let enough = devices >= need && counted >= g.min_compared.max(1);
        // Fails only when sure the agreement is under the floor: 18 of a canary's first 21 comparisons is not.
        let side = agreement.filter(|_| enough).map(|a| confidence::at_least(a, counted, g.min_agreement));
        let mut r = result(GateKind::ShadowAgreement, decided(side), agreement, g.min_agreement, counted);
        let (agreed, compared) =
            w.shadow_counts.iter().fold((0u64, 0u64), |(a, c), &(da, dc)| (a.saturating_add(da), c.saturating_add(dc)));
        r.note = format!(
            "agreement {} over {devices} device(s), at least {:.1}% needed; {agreed} of {compared} comparison(s) \
             agreed as reported, {counted} counted (each device weighs at most the median device's {} comparisons)",
            agreement.map_or_else(|| "n/a".to_owned(), |a| format!("{:.1}%", a * 100.0)),
            g.min_agreement * 100.0,
            by_device.map_or(0, |d| d.cap),
        );
        r.note += &few(devices).unwrap_or_default();
        if side == Some(Side::Undecided) {
            r.note += &undecided_note(agreement, counted, g.min_agreement, Worse::Low);
            r.undecided = true;
        }
        out.push(r);
    }

    if let Some(g) = gates.drift {
        let have = w.psis.len() as u32;
        let psi = w.psi_median();
        let ok = psi.filter(|_| have >= need).map(|p| p <= g.max_psi);
        let mut r = result(GateKind::Drift, ok, psi, g.max_psi, have.into());
        r.baseline = baseline.and_then(|b| b.psi);
        r.note = format!(
            "median device PSI {} over {} device(s) (baseline {}), at most {}",
            opt_f(psi),
            have,
            opt_f(r.baseline),
            g.max_psi
        );
        if w.psi_unscored > 0 {
            r.note += &format!(
                "; {} device(s) sent windows too small to score (PSI counts from {} samples per bin)",
                w.psi_unscored,
                super::view::MIN_PSI_SAMPLES_PER_BIN
            );
        }
        r.note += &few(have).unwrap_or_default();
        out.push(r);
    }
    // A default gate the operator did not ask for fails on evidence but never holds a wave for lack of
    // it: a quiet fleet is the quorum's to judge, and a single-wave rollout has no baseline to compare.
    // An undecided figure is evidence, not a lack of it: it is judged like any gate's.
    for r in out
        .iter_mut()
        .filter(|r| r.verdict == Verdict::Inconclusive && !r.undecided && gates.defaulted.contains(&r.gate))
    {
        r.verdict = Verdict::Pass;
        r.note.push_str(" (default gate: not judged without enough evidence)");
    }
    out
}

/// A counted gate's verdict from where its figure stands: undecided waits (inconclusive).
fn decided(side: Option<Side>) -> Option<bool> {
    match side? {
        Side::Clears => Some(true),
        Side::Worse => Some(false),
        Side::Undecided => None,
    }
}

/// `; under 90.0% but not surely: from 21 counted the true figure is 65.4% to 95.0% (95% confidence);
/// waiting for more`. `worse`: the side of the threshold that fails.
fn undecided_note(figure: Option<f64>, counted: u64, threshold: f64, worse: Worse) -> String {
    let (low, high) = figure.and_then(|f| confidence::wilson(f, counted)).unwrap_or((0.0, 1.0));
    let wrong_side = figure.is_some_and(|f| match worse {
        Worse::High => f > threshold,
        Worse::Low => f < threshold,
    });
    format!(
        "; {} {:.1}% but not surely: from {counted} counted the true figure is {:.1}% to {:.1}% (95% \
         confidence); waiting for more",
        if wrong_side == (worse == Worse::Low) { "under" } else { "over" },
        threshold * 100.0,
        low * 100.0,
        high * 100.0
    )
}

fn opt(v: Option<u32>) -> String {
    v.map_or_else(|| "n/a".into(), |v| v.to_string())
}

fn opt_f(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".into(), |v| format!("{v:.3}"))
}

//! What the planner and the skew tracker know about a device: a plain snapshot the daemon fills from its
//! registry. Nothing here reads a clock or a store.

use outpost_protocol::messages::RunningModel;
use outpost_protocol::telemetry::{InferenceWindow, UpdateEvent, UpdateStage};
use outpost_protocol::{Arch, DeviceId, Digest, ModelName, RejectReason, UnixTime, Version};
use serde::{Deserialize, Serialize};

/// How many entries `record_*` keeps per list, across the device's models: the current release, the
/// previous one and a spare or two of each of up to four models. Entries are per bundle or model digest,
/// so a model that sees no new release keeps its entries whatever the others do, until 16 newer
/// releases of other models arrived.
pub const KEPT_PER_DEVICE: usize = 16;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceView {
    pub id: DeviceId,
    pub arch: Option<Arch>,
    pub agent_version: Option<Version>,
    pub labels: Vec<(String, String)>,
    pub online: bool,
    pub last_seen: UnixTime,
    /// Every model the device serves, from the latest hello or signed version report.
    pub running: Vec<RunningModel>,
    /// The latest update event per bundle.
    pub updates: Vec<UpdateView>,
    /// The latest inference window (or the daemon's merge of recent windows) per model digest.
    pub windows: Vec<WindowView>,
    /// Shadow comparisons per candidate digest, summed over windows. Kept apart from `windows` because
    /// it outlives the shadow period: it is the evidence a shadow gate judges after the candidate went live.
    pub shadows: Vec<ShadowView>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateView {
    pub bundle: Digest,
    pub stage: UpdateStage,
    pub reason: Option<RejectReason>,
    pub at: UnixTime,
    /// The event's place in the device's order of this model's events (`UpdateEvent::seq`).
    #[serde(default)]
    pub seq: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowView {
    pub model: ModelName,
    pub version: Version,
    pub digest: Digest,
    pub received_at: UnixTime,
    pub requests: u64,
    /// Errors and timeouts: both are answers the application did not get.
    pub errors: u64,
    pub p95_us: u32,
    /// The largest PSI over input tensors and output classes that had enough samples to score
    /// ([`window_psi`]), when the manifest had a reference profile.
    pub psi: Option<f32>,
    /// The window carried PSIs, but none over enough samples to count.
    #[serde(default)]
    pub psi_unscored: bool,
    /// The device reported figures no window can hold (more errors than requests, more agreements than
    /// comparisons, counts beyond [`MAX_PER_SEC`], a negative or non-finite PSI): they were clamped or
    /// left out, and the gates say so.
    #[serde(default)]
    pub implausible: bool,
    /// Requests and errors of every window of this digest so far, this one included: the error-rate
    /// gate's evidence, which grows while a wave bakes.
    #[serde(default)]
    pub counted: Counted,
}

/// Requests and errors summed over a device's windows of one model digest, each window clamped first.
/// One window of a quiet device holds a few dozen requests, where one error is already over a 2 % gate;
/// the sum grows as long as the device serves the release, so the gate can wait for certainty
/// ([`super::confidence`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counted {
    /// When the first window of the sum was received: a sum with another start is another sum (the
    /// digest's entry was dropped and started again). 0 in windows stored before sums were kept.
    pub since: UnixTime,
    pub requests: u64,
    pub errors: u64,
}

impl Counted {
    /// What was added since `before` (the same sum at an earlier moment); the whole sum when `before`
    /// was another one or there was none.
    pub fn after(self, before: Option<Counted>) -> Counted {
        match before {
            Some(b) if b.since == self.since => Counted {
                since: self.since,
                requests: self.requests.saturating_sub(b.requests),
                errors: self.errors.saturating_sub(b.errors),
            },
            _ => self,
        }
    }
}

impl WindowView {
    /// The sum of this digest's windows; for a window stored before sums were kept, the window alone.
    pub fn counted(&self) -> Counted {
        if self.counted.since == 0 {
            Counted { since: self.received_at, requests: self.requests, errors: self.errors }
        } else {
            self.counted
        }
    }
}

/// Most requests (or compared rows) a model can count per second of a window: far beyond what a device
/// serves, low enough that a device reporting 10^12 of them is clamped. Device reports are unsigned.
pub const MAX_PER_SEC: u64 = 1_000_000;

/// Longest window a count is allowed for (a day); the agent's default is a minute.
pub const MAX_WINDOW_SECS: u64 = 86_400;

/// Sane figures of one unsigned window: counts clamped to what its length can hold, errors to requests,
/// agreements to comparisons. The second value says whether anything had to change.
fn clamp_counts(w: &InferenceWindow) -> (u64, u64, Option<(u64, u64)>, bool) {
    let most = u64::from(w.window_secs).clamp(1, MAX_WINDOW_SECS) * MAX_PER_SEC;
    let requests = w.requests.min(most);
    // The agent counts a timeout as an error too (runtime/metrics.rs): `errors` already holds them.
    let errors = w.errors.max(w.timeouts).min(requests);
    let shadow = w.shadow.as_ref().map(|s| {
        let compared = s.compared.min(most);
        (compared, s.agreed_top1.min(compared))
    });
    let changed = requests != w.requests
        || errors != w.errors
        || w.shadow.as_ref().zip(shadow).is_some_and(|(s, (c, a))| c != s.compared || a != s.agreed_top1);
    (requests, errors, shadow, changed)
}

/// A PSI a device may report: finite and not negative (PSI is a sum of non-negative terms).
fn sane_psi(p: f32) -> bool {
    p.is_finite() && p >= 0.0
}

/// The PSI a device's claim counts as: clamped into `0..=f32::MAX` (a device claiming infinite drift
/// claims the worst, one claiming a negative PSI the best: either way one figure of one device). NaN has
/// no rank and counts as none.
fn clamped_psi(p: f32) -> Option<f32> {
    (!p.is_nan()).then(|| p.clamp(0.0, f32::MAX))
}

/// A histogram's PSI counts for drift only over at least this many samples per bin. Fewer, and sampling
/// noise alone scores like drift: PSI over `n` samples of `k` bins drawn from the reference itself is
/// about (k − 1) / n, and every bin a small window happens not to see adds ≈ 0.7 through the empty-bin
/// floor. 24 requests over 10 output classes scored 1.7–2.7 on a healthy release (issue 16); from 10 per
/// bin (100 requests for 10 classes, 120 for an input's 10 bins plus under- and overflow) the noise is
/// ≈ 0.09, well under the usual 0.25 limit.
pub const MIN_PSI_SAMPLES_PER_BIN: u64 = 10;

/// The largest PSI of a window over the histograms with enough samples, and whether some PSI was left
/// out for having too few.
pub fn window_psi(w: &InferenceWindow) -> (Option<f32>, bool) {
    let enough = |samples: u64, bins: usize| samples >= MIN_PSI_SAMPLES_PER_BIN.saturating_mul(bins as u64);
    // An impossible PSI (negative, infinite) is clamped; NaN is no figure at all.
    let features =
        w.features.iter().filter_map(|f| f.psi.and_then(clamped_psi).map(|p| (p, enough(f.count, f.bins.len()))));
    let class_samples = w.output_classes.iter().fold(0u64, |sum, &c| sum.saturating_add(c));
    let classes = w.class_psi.and_then(clamped_psi).map(|p| (p, enough(class_samples, w.output_classes.len())));
    let all: Vec<(f32, bool)> = features.chain(classes).collect();
    let psi = all.iter().filter(|(_, ok)| *ok).map(|(p, _)| *p).reduce(f32::max);
    (psi, psi.is_none() && !all.is_empty())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowView {
    pub candidate: Digest,
    pub compared: u64,
    pub agreed: u64,
    pub received_at: UnixTime,
    /// Some window's comparisons were clamped ([`WindowView::implausible`]).
    #[serde(default)]
    pub implausible: bool,
}

/// Where a device stands with one release, from its update events and what it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstallStatus {
    /// No sign of it (never told, superseded, or an event we have not received yet).
    NotInstalled,
    /// Fetching, verifying, self-testing or shadowing: the old model still serves.
    InProgress(UpdateStage),
    /// Activated; `committed` once the device's watch window passed.
    Installed { committed: bool },
    /// Rejected, or rolled back by its own watch, with the reason the device gave.
    Failed(Option<RejectReason>),
    /// Switched back to its previous model on the controller's request.
    Reverted,
    /// Runs a later release of the model (a newer rollout reached it): never reverted by this one.
    Ahead,
}

impl DeviceView {
    pub fn new(id: DeviceId) -> Self {
        DeviceView {
            id,
            arch: None,
            agent_version: None,
            labels: Vec::new(),
            online: false,
            last_seen: 0,
            running: Vec::new(),
            updates: Vec::new(),
            windows: Vec::new(),
            shadows: Vec::new(),
        }
    }

    /// A label's value; `arch` falls back to the device's architecture, which hello reports apart.
    pub fn label(&self, key: &str) -> Option<&str> {
        match self.labels.iter().find(|(k, _)| k == key) {
            Some((_, v)) => Some(v),
            None if key == "arch" => self.arch.map(Arch::as_str),
            None => None,
        }
    }

    /// What the device runs of `model`, if it serves it.
    pub fn runs(&self, model: &ModelName) -> Option<&RunningModel> {
        self.running.iter().find(|r| &r.name == model)
    }

    pub fn update_for(&self, bundle: &Digest) -> Option<&UpdateView> {
        self.updates.iter().find(|u| &u.bundle == bundle)
    }

    pub fn window_for(&self, digest: &Digest) -> Option<&WindowView> {
        self.windows.iter().find(|w| &w.digest == digest)
    }

    pub fn shadow_for(&self, candidate: &Digest) -> Option<&ShadowView> {
        self.shadows.iter().find(|s| &s.candidate == candidate)
    }

    /// Where this device stands with the release `(model, digest, sequence)`. The latest event for the
    /// bundle wins over `running`, which may lag behind it (a report not yet received); `running` decides
    /// when there is no event (a device that already ran the release produces none).
    pub fn install_status(
        &self,
        model: &ModelName,
        digest: &Digest,
        model_digest: &Digest,
        sequence: u64,
    ) -> InstallStatus {
        if let Some(r) = self.runs(model)
            && r.sequence > sequence
        {
            return InstallStatus::Ahead;
        }
        let Some(u) = self.update_for(digest) else {
            let runs = self.runs(model).is_some_and(|r| &r.digest == model_digest);
            return if runs { InstallStatus::Installed { committed: true } } else { InstallStatus::NotInstalled };
        };
        match (u.stage, u.reason) {
            // Committed, yet the device no longer lists the model: it was removed since. A removal's
            // desired state names the model's newest bundle, so its event (committed: "removed") carries
            // that bundle's digest; a later rollout of the same release must reach the device again.
            // (Not a report lag: the agent announces its models as soon as one activates, long before it
            // commits.)
            (UpdateStage::Committed, _) if self.runs(model).is_none() => InstallStatus::NotInstalled,
            (UpdateStage::Committed, _) => InstallStatus::Installed { committed: true },
            (UpdateStage::Activating | UpdateStage::Watching, _) => InstallStatus::Installed { committed: false },
            // A revert on request carries no reason; being superseded is not the release's fault.
            (UpdateStage::RolledBack, None) => InstallStatus::Reverted,
            (UpdateStage::RolledBack | UpdateStage::Rejected, Some(RejectReason::Superseded)) => {
                InstallStatus::NotInstalled
            }
            (UpdateStage::RolledBack | UpdateStage::Rejected, reason) => InstallStatus::Failed(reason),
            (stage, _) => InstallStatus::InProgress(stage),
        }
    }

    /// Folds an update event into `updates` (the daemon's registry calls this as events arrive).
    pub fn record_event(&mut self, event: &UpdateEvent, at: UnixTime) {
        // The device's order, not the arrival's: a late copy of an earlier event of this bundle (its
        // telemetry copy after the live one, or a copy whose twin a restarted controller never stored)
        // must not move the device's evidence backwards.
        if self.updates.iter().any(|u| u.bundle == event.bundle && u.seq > event.seq) {
            return;
        }
        let view = UpdateView { bundle: event.bundle, stage: event.to, reason: event.reason, at, seq: event.seq };
        self.updates.retain(|u| u.bundle != event.bundle);
        self.updates.insert(0, view);
        self.updates.truncate(KEPT_PER_DEVICE);
    }

    /// Makes `view` the digest's latest window and adds its counts to the digest's sum.
    pub fn fold_window(&mut self, mut view: WindowView) {
        let before = self.windows.iter().position(|x| x.digest == view.digest).map(|i| self.windows.remove(i));
        let sum = before.map_or(Counted { since: view.received_at, requests: 0, errors: 0 }, |b| b.counted());
        view.counted = Counted {
            since: sum.since,
            requests: sum.requests.saturating_add(view.requests),
            errors: sum.errors.saturating_add(view.errors),
        };
        self.windows.insert(0, view);
        self.windows.truncate(KEPT_PER_DEVICE);
    }

    /// Folds an inference window into `windows` and, when it carried shadow statistics, `shadows`. The
    /// window is unsigned: its counts are clamped to what it can hold first ([`WindowView::implausible`]).
    pub fn record_window(&mut self, w: &InferenceWindow, received_at: UnixTime) {
        let (psi, psi_unscored) = window_psi(w);
        let (requests, errors, shadow, clamped) = clamp_counts(w);
        let bad_psi = w.features.iter().filter_map(|f| f.psi).chain(w.class_psi).any(|p| !sane_psi(p));
        let view = WindowView {
            model: w.model.clone(),
            version: w.version,
            digest: w.digest,
            received_at,
            requests,
            errors,
            p95_us: w.latency_p95_us,
            psi,
            psi_unscored,
            implausible: clamped || bad_psi,
            counted: Counted::default(),
        };
        self.fold_window(view);
        if let Some(s) = &w.shadow {
            // Summed: one window of a quiet device compares a handful of requests; the whole period counts.
            let mut view =
                ShadowView { candidate: s.candidate_digest, compared: 0, agreed: 0, received_at, implausible: clamped };
            if let Some(i) = self.shadows.iter().position(|x| x.candidate == s.candidate_digest) {
                let old = self.shadows.remove(i);
                (view.compared, view.agreed) = (old.compared, old.agreed);
                view.implausible |= old.implausible;
            }
            let (compared, agreed) = shadow.unwrap_or_default();
            view.compared = view.compared.saturating_add(compared);
            view.agreed = view.agreed.saturating_add(agreed);
            self.shadows.insert(0, view);
            self.shadows.truncate(KEPT_PER_DEVICE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::testkit::{NEW, OLD, T0, id, window};

    #[test]
    fn windows_of_a_digest_add_up_and_a_window_stored_before_sums_counts_as_itself() {
        let mut d = DeviceView::new(id(0));
        d.fold_window(window(NEW, T0, 39, 1, 2_000));
        d.fold_window(window(OLD, T0 + 30, 500, 0, 2_000));
        d.fold_window(window(NEW, T0 + 60, 40, 0, 2_000));
        let w = d.window_for(&NEW).unwrap();
        assert_eq!((w.requests, w.errors), (40, 0), "the latest window, for latency, drift and freshness");
        assert_eq!(w.counted(), Counted { since: T0, requests: 79, errors: 1 });
        assert_eq!(d.window_for(&OLD).unwrap().counted(), Counted { since: T0 + 30, requests: 500, errors: 0 });
        // The registry stores the view as JSON: the sum survives a controller restart.
        let json = serde_json::to_value(&d).unwrap();
        let back: DeviceView = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, d);
        // A view stored before sums were kept reads, its latest window standing for the sum.
        let mut old = json;
        for w in old["windows"].as_array_mut().unwrap() {
            w.as_object_mut().unwrap().remove("counted");
        }
        let mut old: DeviceView = serde_json::from_value(old).unwrap();
        assert_eq!(old.window_for(&NEW).unwrap().counted(), Counted { since: T0 + 60, requests: 40, errors: 0 });
        old.fold_window(window(NEW, T0 + 120, 40, 2, 2_000));
        assert_eq!(old.window_for(&NEW).unwrap().counted(), Counted { since: T0 + 60, requests: 80, errors: 2 });
    }

    #[test]
    fn what_was_added_since_an_earlier_look_at_the_same_sum() {
        let now = Counted { since: T0, requests: 2_000, errors: 901 };
        let then = Counted { since: T0, requests: 1_000, errors: 900 };
        assert_eq!(now.after(Some(then)), Counted { since: T0, requests: 1_000, errors: 1 });
        assert_eq!(now.after(None), now);
        // Another sum (the entry was dropped and began again after the look): all of it is newer.
        assert_eq!(now.after(Some(Counted { since: T0 - 60, ..then })), now);
    }
}

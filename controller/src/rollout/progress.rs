//! Where a rollout's devices stand, for people ([`Progress`]), and which of a device's evidence belongs to
//! this rollout: a device's events and shadow comparisons from before it was told (an earlier rollout of
//! the same bytes) say nothing about this one.

use super::planner::Rollout;
use super::spec::Kind;
use super::state::{Intent, Member, Progress};
use super::view::{Counted, DeviceView, InstallStatus, WindowView};
use outpost_protocol::DeviceId;
use std::borrow::Cow;
use std::collections::HashMap;

impl Rollout {
    /// Counts every member by where it stands now (all waves), and the devices selected.
    pub(super) fn refresh_progress(&mut self, devices: &[DeviceView]) {
        let r = &self.spec.release;
        let views: HashMap<&DeviceId, &DeviceView> = devices.iter().map(|d| (&d.id, d)).collect();
        let mut p = Progress { selected: self.survey_count(devices), ..Progress::default() };
        for (id, m) in &self.state.members {
            let Some(d) = views.get(id) else {
                p.told += u32::from(m.intent != Intent::Withdraw);
                continue;
            };
            match m.intent {
                Intent::Withdraw => {
                    p.withdrawn += 1;
                    continue;
                }
                Intent::Revert => {
                    p.reverted += 1;
                    continue;
                }
                Intent::Remove if self.spec.kind == Kind::Install => {
                    p.reverted += 1;
                    continue;
                }
                Intent::Install | Intent::Remove => p.told += 1,
            }
            if self.spec.kind == Kind::Remove {
                if d.runs(&r.model).is_none() {
                    p.installed += 1;
                    p.committed += 1;
                }
                continue;
            }
            let d = since_told(d, m, &r.bundle.digest, &r.model_digest);
            match d.install_status(&r.model, &r.bundle.digest, &r.model_digest, r.sequence) {
                InstallStatus::Installed { committed } => {
                    p.installed += 1;
                    p.committed += u32::from(committed);
                }
                InstallStatus::InProgress(_) => p.in_progress += 1,
                InstallStatus::Failed(_) => p.failed += 1,
                InstallStatus::Reverted => p.reverted += 1,
                InstallStatus::NotInstalled | InstallStatus::Ahead => {}
            }
        }
        self.state.progress = p;
    }
}

/// `d` without the evidence about this release that predates `m`'s current instruction: update events
/// for the bundle received before the device was told, shadow comparisons of the candidate received no
/// later than that second, and the requests and errors it had summed on the release by then (the planner
/// leaves out the latest window the same way). Borrowed unchanged in the usual case (nothing stale).
pub(super) fn since_told<'a>(
    d: &'a DeviceView,
    m: &Member,
    bundle: &outpost_protocol::Digest,
    candidate: &outpost_protocol::Digest,
) -> Cow<'a, DeviceView> {
    let stale_event = d.update_for(bundle).is_some_and(|u| u.at < m.issued_at);
    // Comparisons received in the second the device was told were made before it could act on it.
    let stale_shadow = d.shadow_for(candidate).is_some_and(|s| s.received_at <= m.issued_at);
    // A window of the release received by then came before; a sum begun before holds what came before.
    let stale_window =
        d.window_for(candidate).is_some_and(|w| w.received_at <= m.issued_at || m.counted_before.is_some());
    if !stale_event && !stale_shadow && !stale_window {
        return Cow::Borrowed(d);
    }
    let mut fresh = d.clone();
    fresh.updates.retain(|u| !(&u.bundle == bundle && u.at < m.issued_at));
    fresh.shadows.retain(|s| !(&s.candidate == candidate && s.received_at <= m.issued_at));
    fresh.windows.retain(|w| !(&w.digest == candidate && w.received_at <= m.issued_at));
    if let Some(w) = fresh.windows.iter_mut().find(|w| &w.digest == candidate) {
        w.counted = w.counted().after(m.counted_before);
    }
    Cow::Owned(fresh)
}

/// What `d` has summed on `digest` now: kept in a member when it is told, so that [`since_told`] counts only
/// what came after.
pub(super) fn counted_now(d: &DeviceView, digest: &outpost_protocol::Digest) -> Option<Counted> {
    d.window_for(digest).map(WindowView::counted)
}

impl Rollout {
    /// Why the rollout selects no device, with the counts: for refusing a start that would tell no one.
    pub fn why_none_selected(&self, devices: &[DeviceView]) -> String {
        let r = &self.spec.release;
        let matching: Vec<&DeviceView> = devices.iter().filter(|d| self.spec.selector.matches(d)).collect();
        let arch = matching
            .iter()
            .filter(|d| !r.targets.archs.is_empty() && d.arch.is_some_and(|a| !r.targets.archs.contains(&a)))
            .count();
        let old_agent = matching.iter().filter(|d| d.agent_version.is_some_and(|v| v < r.targets.min_agent)).count();
        let later = matching.iter().filter(|d| d.runs(&r.model).is_some_and(|m| m.sequence > r.sequence)).count();
        let selector = self.spec.selector.to_string();
        let selector = if selector.is_empty() { "every device".to_owned() } else { format!("selector {selector:?}") };
        format!(
            "no device would install {} {}: {} of {} known device(s) match {selector}; of those {arch} have \
             another architecture, {old_agent} run an agent older than {}, {later} already run a later release \
             (sequence above {})",
            r.model,
            r.version,
            matching.len(),
            devices.len(),
            r.targets.min_agent,
            r.sequence
        )
    }
}

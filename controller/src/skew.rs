//! Version skew (`outpost skew`): per model, how many devices run each version (online and offline), how
//! the fleet stands against a target release (on target, behind, ahead, in progress, failed, unknown),
//! which agent versions run it and the oldest version still serving. A pure function of device views.

use crate::rollout::{DeviceView, InstallStatus};
use outpost_protocol::telemetry::UpdateStage;
use outpost_protocol::{Digest, ModelName, Version};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The release a model's devices should run: the active rollout's, or else the newest committed one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub version: Version,
    /// The bundle's digest (update events name it); the model digest when only the running model is known.
    pub digest: Digest,
    /// The model's digest (running models and windows name it).
    pub model_digest: Digest,
    pub sequence: u64,
    pub rollout: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelSkew {
    pub model: ModelName,
    pub target: Option<Target>,
    /// Newest first.
    pub versions: Vec<VersionCount>,
    pub compliance: Compliance,
    /// Agent versions of the devices counted, newest first, unknown last.
    pub agents: Vec<AgentCount>,
    /// The lowest version an online device serves.
    pub oldest_serving: Option<Version>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionCount {
    pub version: Version,
    pub online: u32,
    pub offline: u32,
    /// Of those, devices whose last verified version report says they run it (the rest only claim it;
    /// filled in by the daemon, which holds the reports: `daemon::attestation`).
    #[serde(default)]
    pub attested: u32,
}

/// Azure Device Update's buckets, plus `ahead` for devices a later release already reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compliance {
    pub on_target: u32,
    pub behind: u32,
    pub ahead: u32,
    /// Fetching through watching: the target may still roll back.
    pub in_progress: u32,
    /// The device refused the target or rolled it back, with a reason code.
    pub failed: u32,
    /// No target, or nothing known of what the device runs.
    pub unknown: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentCount {
    pub version: Option<Version>,
    pub devices: u32,
}

/// Skew of every model that a device runs or that has a target, by model name.
pub fn fleet_skew(devices: &[DeviceView], targets: &[(ModelName, Target)]) -> Vec<ModelSkew> {
    let mut models: BTreeSet<&ModelName> = devices.iter().flat_map(|d| d.running.iter().map(|r| &r.name)).collect();
    models.extend(targets.iter().map(|(m, _)| m));
    models.into_iter().map(|m| model_skew(m, targets.iter().find(|(t, _)| t == m).map(|(_, t)| t), devices)).collect()
}

/// Skew of one model. The devices counted are those running it, and those with an update event for the
/// target (a device whose first install of the model is under way or failed), except a committed one: a
/// device that committed the target and runs no release of the model had it removed.
pub fn model_skew(model: &ModelName, target: Option<&Target>, devices: &[DeviceView]) -> ModelSkew {
    let target = target.cloned().or_else(|| newest_committed(model, devices));
    let mut versions: BTreeMap<Version, VersionCount> = BTreeMap::new();
    let mut agents: BTreeMap<Option<Version>, u32> = BTreeMap::new();
    let mut compliance = Compliance::default();
    let mut oldest_serving: Option<Version> = None;
    for d in devices {
        let runs = d.runs(model);
        let targeted =
            target.as_ref().is_some_and(|t| d.update_for(&t.digest).is_some_and(|u| u.stage != UpdateStage::Committed));
        if runs.is_none() && !targeted {
            continue;
        }
        if let Some(r) = runs {
            let c = versions.entry(r.version).or_insert(VersionCount {
                version: r.version,
                online: 0,
                offline: 0,
                attested: 0,
            });
            if d.online {
                c.online += 1;
                oldest_serving = Some(oldest_serving.map_or(r.version, |v| v.min(r.version)));
            } else {
                c.offline += 1;
            }
        }
        *agents.entry(d.agent_version).or_insert(0) += 1;
        let bucket = match &target {
            None => &mut compliance.unknown,
            Some(t) => match d.install_status(model, &t.digest, &t.model_digest, t.sequence) {
                InstallStatus::Installed { committed: true } => &mut compliance.on_target,
                InstallStatus::Installed { committed: false } | InstallStatus::InProgress(_) => {
                    &mut compliance.in_progress
                }
                InstallStatus::Failed(_) => &mut compliance.failed,
                InstallStatus::Ahead => &mut compliance.ahead,
                InstallStatus::NotInstalled | InstallStatus::Reverted => match runs.map(|r| r.sequence) {
                    Some(s) if s < t.sequence => &mut compliance.behind,
                    Some(s) if s > t.sequence => &mut compliance.ahead,
                    Some(_) => &mut compliance.on_target,
                    None => &mut compliance.unknown,
                },
            },
        };
        *bucket += 1;
    }
    let mut agents: Vec<AgentCount> =
        agents.into_iter().map(|(version, devices)| AgentCount { version, devices }).collect();
    // Newest first, unknown (None sorts first in a BTreeMap) last.
    agents.reverse();
    ModelSkew {
        model: model.clone(),
        target,
        versions: versions.into_values().rev().collect(),
        compliance,
        agents,
        oldest_serving,
    }
}

/// The highest release of `model` some device runs and committed (or runs with no event known, as a
/// factory-installed model does). A release still in its watch window does not count.
pub fn newest_committed(model: &ModelName, devices: &[DeviceView]) -> Option<Target> {
    devices
        .iter()
        .filter_map(|d| d.runs(model).map(|r| (d, r)))
        .filter(|(d, r)| d.update_for(&r.digest).is_none_or(|u| u.stage == UpdateStage::Committed))
        .max_by_key(|(_, r)| r.sequence)
        .map(|(_, r)| Target {
            version: r.version,
            digest: r.digest,
            model_digest: r.digest,
            sequence: r.sequence,
            rollout: None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::UpdateView;
    use outpost_protocol::messages::RunningModel;
    use outpost_protocol::{DeviceId, RejectReason};

    fn digits() -> ModelName {
        ModelName::new("digits").unwrap()
    }

    fn release(minor: u32) -> RunningModel {
        RunningModel {
            name: digits(),
            version: Version::new(1, minor, 0),
            digest: Digest([minor as u8; 32]),
            sequence: 10 + u64::from(minor),
        }
    }

    fn target(minor: u32) -> Target {
        let r = release(minor);
        Target {
            version: r.version,
            digest: r.digest,
            model_digest: r.digest,
            sequence: r.sequence,
            rollout: Some("r1".into()),
        }
    }

    /// A device running `1.{minor}.0` (or nothing), online or not, with an event for `1.{event.0}.0`.
    fn dev(i: usize, minor: Option<u32>, online: bool, event: Option<(u32, UpdateStage)>) -> DeviceView {
        let mut d = DeviceView::new(DeviceId::new(format!("dev-{i}")).unwrap());
        d.running = minor.map(release).into_iter().collect();
        d.online = online;
        d.agent_version = Some(Version::new(0, 1 + (i % 2) as u32, 0));
        if let Some((m, stage)) = event {
            let reason = matches!(stage, UpdateStage::Rejected).then_some(RejectReason::WrongArch);
            d.updates = vec![UpdateView { bundle: release(m).digest, stage, reason, at: 0, seq: 0 }];
        }
        d
    }

    #[test]
    fn each_device_lands_in_one_compliance_bucket_against_the_target() {
        use UpdateStage::*;
        let cases: &[(&str, DeviceView, &str)] = &[
            ("runs the target", dev(0, Some(1), true, None), "on_target"),
            ("committed the target", dev(0, Some(1), true, Some((1, Committed))), "on_target"),
            ("runs an older release", dev(0, Some(0), false, None), "behind"),
            ("runs a newer release", dev(0, Some(2), true, None), "ahead"),
            ("is fetching the target", dev(0, Some(0), true, Some((1, Fetching))), "in_progress"),
            ("watches the target", dev(0, Some(1), true, Some((1, Watching))), "in_progress"),
            ("refused the target", dev(0, Some(0), true, Some((1, Rejected))), "failed"),
            ("reverted from the target", dev(0, Some(0), true, Some((1, RolledBack))), "behind"),
            ("installs its first model", dev(0, None, true, Some((1, Verifying))), "in_progress"),
            ("runs nothing it told us of", dev(0, None, true, Some((1, Rejected))), "failed"),
        ];
        // A device that had the model removed (the removal's event names the newest bundle) is not counted.
        let removed = dev(0, None, true, Some((1, Committed)));
        let s = model_skew(&digits(), Some(&target(1)), std::slice::from_ref(&removed));
        assert_eq!((s.compliance, s.versions.len(), s.agents.len()), (Compliance::default(), 0, 0), "a removed model");
        for (what, d, want) in cases {
            let c = model_skew(&digits(), Some(&target(1)), std::slice::from_ref(d)).compliance;
            let got = [
                ("on_target", c.on_target),
                ("behind", c.behind),
                ("ahead", c.ahead),
                ("in_progress", c.in_progress),
                ("failed", c.failed),
                ("unknown", c.unknown),
            ];
            assert_eq!(
                got.iter().filter(|(_, n)| *n == 1).map(|(b, _)| *b).collect::<Vec<_>>(),
                vec![*want],
                "a device that {what}"
            );
        }
    }

    #[test]
    fn versions_are_counted_online_and_offline_with_agents_and_the_oldest_serving() {
        let devices = vec![
            dev(0, Some(1), true, None),
            dev(1, Some(1), false, None),
            dev(2, Some(0), false, None),
            dev(3, Some(2), true, None),
            dev(4, None, true, None),
        ];
        let s = model_skew(&digits(), Some(&target(2)), &devices);
        let v =
            |minor, online, offline| VersionCount { version: Version::new(1, minor, 0), online, offline, attested: 0 };
        assert_eq!(s.versions, vec![v(2, 1, 0), v(1, 1, 1), v(0, 0, 1)]);
        assert_eq!(s.oldest_serving, Some(Version::new(1, 1, 0)), "the offline 1.0.0 device serves nothing");
        let agents: Vec<(Option<Version>, u32)> = s.agents.iter().map(|a| (a.version, a.devices)).collect();
        assert_eq!(agents, vec![(Some(Version::new(0, 2, 0)), 2), (Some(Version::new(0, 1, 0)), 2)]);
        assert_eq!((s.compliance.on_target, s.compliance.behind), (1, 3));
    }

    #[test]
    fn without_a_target_the_newest_committed_release_is_the_target() {
        let devices = vec![
            dev(0, Some(0), true, None),
            dev(1, Some(1), true, Some((1, UpdateStage::Committed))),
            dev(2, Some(2), true, Some((2, UpdateStage::Watching))),
        ];
        let s = model_skew(&digits(), None, &devices);
        assert_eq!(s.target.map(|t| t.version), Some(Version::new(1, 1, 0)), "1.2.0 is still being watched");
        assert_eq!((s.compliance.behind, s.compliance.on_target, s.compliance.ahead), (1, 1, 1));
        let none = model_skew(&ModelName::new("faces").unwrap(), None, &devices);
        assert_eq!((none.target, none.versions.len(), none.compliance), (None, 0, Compliance::default()));
    }

    #[test]
    fn the_fleet_view_covers_every_model_run_or_targeted() {
        let mut other = dev(9, None, true, None);
        other.running = vec![RunningModel { name: ModelName::new("faces").unwrap(), ..release(0) }];
        let devices = vec![dev(0, Some(0), true, None), other];
        let targets = [(ModelName::new("speech").unwrap(), target(3))];
        let names: Vec<String> = fleet_skew(&devices, &targets).iter().map(|s| s.model.to_string()).collect();
        assert_eq!(names, ["digits", "faces", "speech"]);
    }
}

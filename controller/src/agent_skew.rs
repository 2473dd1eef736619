//! Agent and trust skew across the fleet (`outpost skew --agents`), pure: how many devices run each agent
//! version (and how many of them attest it in a signed report), which root and policy versions devices
//! attest to, and which devices are too old for a release's `min_agent` (a rollout leaves them out
//! rather than counting them as failures, so they stay behind silently unless shown here).

use outpost_protocol::{DeviceId, ModelName, Version};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What the view needs of one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentFacts {
    pub id: DeviceId,
    /// From its hello (claimed).
    pub agent_version: Option<Version>,
    /// Its last verified report names the same agent version.
    pub attested: bool,
    /// `(root, policy)` versions from its last verified report.
    pub trust: Option<(u64, u64)>,
    pub online: bool,
}

/// A release devices may be asked to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseNeed {
    pub model: ModelName,
    pub version: Version,
    pub min_agent: Version,
    /// The rollout that ships it, if any.
    pub rollout: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentCount {
    /// `None`: devices that never said hello.
    pub version: Option<Version>,
    pub devices: usize,
    pub attested: usize,
    pub online: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustCount {
    pub root_version: u64,
    pub policy_version: u64,
    pub devices: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TooOld {
    pub model: ModelName,
    pub version: Version,
    pub min_agent: Version,
    pub rollout: Option<String>,
    /// Devices whose agent is older than `min_agent`, by id.
    pub devices: Vec<DeviceId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentSkew {
    /// Newest agent version first; devices without a hello last.
    pub agents: Vec<AgentCount>,
    pub trust: Vec<TrustCount>,
    /// Devices with no verified report.
    pub unattested: usize,
    pub too_old: Vec<TooOld>,
}

pub fn agent_skew(devices: &[AgentFacts], releases: &[ReleaseNeed]) -> AgentSkew {
    let mut agents: BTreeMap<Option<Version>, AgentCount> = BTreeMap::new();
    let mut trust: BTreeMap<(u64, u64), usize> = BTreeMap::new();
    let mut unattested = 0;
    for d in devices {
        let c = agents.entry(d.agent_version).or_insert(AgentCount {
            version: d.agent_version,
            devices: 0,
            attested: 0,
            online: 0,
        });
        c.devices += 1;
        c.attested += usize::from(d.attested);
        c.online += usize::from(d.online);
        match d.trust {
            Some(t) => *trust.entry(t).or_default() += 1,
            None => unattested += 1,
        }
    }
    let mut agents: Vec<AgentCount> = agents.into_values().collect();
    agents.sort_by(|a, b| match (a.version, b.version) {
        (Some(x), Some(y)) => y.cmp(&x),
        (x, y) => y.is_some().cmp(&x.is_some()),
    });
    let too_old = releases
        .iter()
        .map(|r| TooOld {
            model: r.model.clone(),
            version: r.version,
            min_agent: r.min_agent,
            rollout: r.rollout.clone(),
            devices: devices
                .iter()
                .filter(|d| d.agent_version.is_some_and(|v| v < r.min_agent))
                .map(|d| d.id.clone())
                .collect(),
        })
        .collect();
    let trust = trust
        .into_iter()
        .rev()
        .map(|((root_version, policy_version), devices)| TrustCount { root_version, policy_version, devices })
        .collect();
    AgentSkew { agents, trust, unattested, too_old }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(id: &str, v: Option<(u32, u32)>, attested: bool, trust: Option<(u64, u64)>) -> AgentFacts {
        AgentFacts {
            id: DeviceId::new(id).unwrap(),
            agent_version: v.map(|(a, b)| Version::new(a, b, 0)),
            attested,
            trust,
            online: true,
        }
    }

    #[test]
    fn versions_are_counted_newest_first_and_devices_below_min_agent_are_named() {
        let devices = vec![
            dev("a", Some((0, 1)), true, Some((1, 2))),
            dev("b", Some((0, 2)), true, Some((2, 3))),
            dev("c", Some((0, 1)), false, None),
            dev("d", None, false, None),
        ];
        let need = ReleaseNeed {
            model: ModelName::new("digits").unwrap(),
            version: Version::new(2, 0, 0),
            min_agent: Version::new(0, 2, 0),
            rollout: Some("r-1".into()),
        };
        let s = agent_skew(&devices, &[need]);
        let rows: Vec<_> = s.agents.iter().map(|a| (a.version.map(|v| v.minor), a.devices, a.attested)).collect();
        assert_eq!(rows, vec![(Some(2), 1, 1), (Some(1), 2, 1), (None, 1, 0)]);
        let trust: Vec<_> = s.trust.iter().map(|t| (t.root_version, t.policy_version, t.devices)).collect();
        assert_eq!(trust, vec![(2, 3, 1), (1, 2, 1)]);
        assert_eq!(s.unattested, 2);
        let too_old: Vec<&str> = s.too_old[0].devices.iter().map(|d| d.as_str()).collect();
        assert_eq!(too_old, vec!["a", "c"], "a device that never said hello is unknown, not too old");
    }
}

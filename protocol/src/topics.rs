//! The MQTT topic scheme, owned here alone. Device ids are validated newtypes, so a topic built from one
//! never gains levels or wildcards.
//!
//! ```text
//! outpost/v1/devices/{id}/up/{hello|telemetry|events|report|fetch|presence}   device → controller
//! outpost/v1/devices/{id}/down/desired/{model}                                   controller → device
//! outpost/v1/devices/{id}/down/{ack|chunk}                                       controller → device
//! ```
//! A device runs a set of models, each updated on its own, so each has its own desired state:
//! `down/desired/{model}` is retained, so a device that reconnects learns every target at once, and an empty
//! retained payload withdraws one model's target without touching the others. Everything a device may
//! receive stays under `.../{id}/down/#`, which is what broker ACLs grant. `fetch` (chunk requests) and
//! `presence` (retained; the last will marks a device offline) are additions to DESIGN.md's list.
//!
//! One topic is the whole fleet's: `outpost/v1/fleet/trust` ([`TRUST`], retained) carries the root chain
//! and trust policy, the same signed bytes for every device.

use crate::names::{DeviceId, ModelName};

pub const PREFIX: &str = "outpost/v1/devices";
/// The fleet's trust (root chain and current policy), retained, one message for every device: it is
/// signed and public, so it needs no per-device copy (`messages::TrustUpdate`). Broker ACLs let every
/// device read it and only the controller write it.
pub const TRUST: &str = "outpost/v1/fleet/trust";
/// The shared-subscription group through which controller replicas split the device ingest.
pub const SHARE_GROUP: &str = "outpost";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Up {
    Hello,
    Telemetry,
    Events,
    Report,
    Fetch,
    Presence,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Down {
    /// One model's desired state (retained).
    Desired(ModelName),
    Ack,
    Chunk,
}

impl Up {
    pub const ALL: [Up; 6] = [Up::Hello, Up::Telemetry, Up::Events, Up::Report, Up::Fetch, Up::Presence];
    pub fn as_str(self) -> &'static str {
        match self {
            Up::Hello => "hello",
            Up::Telemetry => "telemetry",
            Up::Events => "events",
            Up::Report => "report",
            Up::Fetch => "fetch",
            Up::Presence => "presence",
        }
    }
    /// Presence is retained so a controller that starts later still sees who is offline.
    pub fn retained(self) -> bool {
        matches!(self, Up::Presence)
    }
}

impl Down {
    /// The topic levels after `down/`. Model names are validated newtypes: they add no level or wildcard.
    pub fn path(&self) -> String {
        match self {
            Down::Desired(model) => format!("desired/{model}"),
            Down::Ack => "ack".into(),
            Down::Chunk => "chunk".into(),
        }
    }
    /// Whether the broker keeps the last message for devices that connect later.
    pub fn retained(&self) -> bool {
        matches!(self, Down::Desired(_))
    }
}

pub fn up(device: &DeviceId, kind: Up) -> String {
    format!("{PREFIX}/{device}/up/{}", kind.as_str())
}

pub fn down(device: &DeviceId, kind: &Down) -> String {
    format!("{PREFIX}/{device}/down/{}", kind.path())
}

/// What a device subscribes to: its own down topics only (the broker ACL enforces the same).
pub fn device_subscription(device: &DeviceId) -> String {
    format!("{PREFIX}/{device}/down/#")
}

/// What the controller subscribes to: every device's up topics, as a shared subscription.
pub fn controller_subscription() -> String {
    format!("$share/{SHARE_GROUP}/{PREFIX}/+/up/+")
}

/// A topic parsed back into its parts. Foreign or malformed topics give `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Up(DeviceId, Up),
    Down(DeviceId, Down),
}

pub fn parse(topic: &str) -> Option<Parsed> {
    let rest = topic.strip_prefix(PREFIX)?.strip_prefix('/')?;
    let mut parts = rest.split('/');
    let device = DeviceId::new(parts.next()?).ok()?;
    let dir = parts.next()?;
    let kind = parts.next()?;
    let model = match (dir, kind) {
        ("down", "desired") => Some(ModelName::new(parts.next()?).ok()?),
        _ => None,
    };
    if parts.next().is_some() {
        return None;
    }
    match (dir, kind, model) {
        ("up", _, _) => Up::ALL.into_iter().find(|k| k.as_str() == kind).map(|k| Parsed::Up(device, k)),
        ("down", _, Some(model)) => Some(Parsed::Down(device, Down::Desired(model))),
        ("down", "ack", None) => Some(Parsed::Down(device, Down::Ack)),
        ("down", "chunk", None) => Some(Parsed::Down(device, Down::Chunk)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_round_trip_through_parse() {
        let id = DeviceId::new("dev-7").unwrap();
        for k in Up::ALL {
            assert_eq!(parse(&up(&id, k)), Some(Parsed::Up(id.clone(), k)));
        }
        let digits = ModelName::new("digits").unwrap();
        for k in [Down::Desired(digits), Down::Ack, Down::Chunk] {
            assert_eq!(parse(&down(&id, &k)), Some(Parsed::Down(id.clone(), k)));
        }
        assert_eq!(up(&id, Up::Hello), "outpost/v1/devices/dev-7/up/hello");
        let kws = Down::Desired(ModelName::new("kws").unwrap());
        assert_eq!(down(&id, &kws), "outpost/v1/devices/dev-7/down/desired/kws");
        // The device's one subscription covers every model's desired state.
        assert_eq!(device_subscription(&id), "outpost/v1/devices/dev-7/down/#");
    }

    #[test]
    fn foreign_and_malformed_topics_do_not_parse() {
        for t in [
            "outpost/v1/devices/dev-7/up/hello/extra",
            "outpost/v1/devices/../up/hello",
            "outpost/v2/devices/dev-7/up/hello",
            "outpost/v1/devices/dev-7/sideways/hello",
            "outpost/v1/devices/dev-7/up/nonsense",
            "outpost/v1/devices/dev-7/down/desired",
            "outpost/v1/devices/dev-7/down/desired/../x",
            "outpost/v1/devices/dev-7/down/desired/a/b",
            "outpost/v1/devices/dev-7/down/ack/x",
            "other/topic",
        ] {
            assert_eq!(parse(t), None, "{t}");
        }
    }
}

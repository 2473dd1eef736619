//! `outpost devices delete ID`: decommission a device. It leaves every list, rollout and count; the
//! broker no longer holds a desired state for it; its identity is revoked (certificates on the CRL, its
//! messages ignored, no enrollment under the id again), and a tombstone keeps that so: a deleted record
//! would let the id enroll afresh with any key, and a device still holding its certificate would come
//! back into the fleet with its next hello.

use super::enroll::Status;
use super::fleet::{Fleet, now};
use outpost_protocol::topics::{self, Down};
use outpost_protocol::{DeviceId, ModelName};
use rumqttc::QoS;
use std::collections::BTreeSet;

/// What a decommission did, as the API answers it and the audit log records it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Decommissioned {
    pub device: DeviceId,
    pub at: u64,
    pub by: String,
    /// The models whose retained desired state was cleared on the broker.
    pub cleared: Vec<ModelName>,
    /// Where the CRL was written (`None` without a device CA: the quick start's devices have no
    /// certificates, and the registry's refusal is what keeps them out).
    pub crl: Option<String>,
}

/// Why a decommission was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    NotFound(String),
    Failed(String),
}

impl Fleet {
    pub async fn decommission(&self, id: &DeviceId, by: &str) -> Result<Decommissioned, Refused> {
        let t = now();
        let record = match self.device(id) {
            None => return Err(Refused::NotFound(format!("no device {id}"))),
            Some(d) if d.decommissioned.is_some() => {
                return Err(Refused::NotFound(format!("device {id} was already deleted")));
            }
            Some(d) => d,
        };
        // Every model the controller may have left a retained desired state for: those it asks for now,
        // those the device runs or reported on (an older desired state may have been withdrawn since, and
        // clearing a topic that holds nothing costs one empty publish).
        let models: BTreeSet<ModelName> = record
            .desired
            .keys()
            .chain(record.models.keys())
            .chain(record.running.iter().map(|m| &m.name))
            .cloned()
            .collect();
        // The tombstone first: from here on the device's messages are ignored and no rollout tells it
        // anything (`Fleet::desire`), so nothing republishes what is cleared below.
        self.update(id, |d| *d = record.tombstone(t));
        let mut failures = Vec::new();
        for model in &models {
            let topic = topics::down(id, &Down::Desired(model.clone()));
            if let Err(e) = self.client.publish(topic, QoS::AtLeastOnce, true, Vec::<u8>::new()).await {
                failures.push(format!("clearing {model}'s desired state: {e}"));
            }
        }
        let crl = match self.identity.ca {
            Some(_) => match self.write_crl(t) {
                Ok(p) => Some(p.display().to_string()),
                Err(e) => {
                    failures.push(format!("writing the CRL: {e}"));
                    None
                }
            },
            None => None,
        };
        let done =
            Decommissioned { device: id.clone(), at: t, by: by.to_owned(), cleared: models.into_iter().collect(), crl };
        self.audit(serde_json::json!({
            "at": t, "what": "device deleted", "device": id, "operator": by,
            "cleared": done.cleared, "crl": done.crl,
            "was": Status::label(&record.enrollment.status),
        }));
        if done.crl.is_some()
            && let Err(e) = self.run_revoke_hook().await
        {
            failures.push(e);
        }
        if failures.is_empty() {
            Ok(done)
        } else {
            Err(Refused::Failed(format!("device {id} is deleted from the registry, but: {}", failures.join("; "))))
        }
    }
}

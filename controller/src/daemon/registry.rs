//! The fleet registry: what the controller knows of each device, updated from the device's messages by
//! pure functions (the daemon persists the records and publishes the replies). A device runs a set of
//! models: what is per model (update events, the latest inference window, the desired state) is kept
//! per model name, so a busy model never pushes another's history out.

use crate::rollout::DeviceView;
use outpost_protocol::messages::{DesiredState, Hello, Presence, RunningModel, TelemetryBatch};
use outpost_protocol::telemetry::{DeviceHealth, InferenceWindow, RecordBody, UpdateEvent};
use outpost_protocol::{Arch, DeviceId, ModelName, UnixTime, Version};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Update events kept per model of a device, for `devices show`.
pub const EVENTS_KEPT: usize = 16;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub id: DeviceId,
    pub arch: Option<Arch>,
    pub agent_version: Option<Version>,
    pub labels: BTreeMap<String, String>,
    /// Every model the device serves (its latest hello).
    pub running: Vec<RunningModel>,
    pub online: bool,
    pub boot_id: u64,
    pub first_seen: UnixTime,
    pub last_seen: UnixTime,
    pub telemetry: TelemetryCursor,
    pub last_health: Option<DeviceHealth>,
    /// Per model the device runs or ran, was told about or reported on: its recent update events and its
    /// latest inference window.
    #[serde(default)]
    pub models: BTreeMap<ModelName, ModelLog>,
    /// The desired state last published for each of the device's models (republished when the
    /// controller starts, because the embedded broker keeps retained messages in memory only).
    #[serde(default)]
    pub desired: BTreeMap<ModelName, DesiredState>,
    /// Per-release evidence for the rollout planner: latest update per bundle, windows per model digest,
    /// shadow comparisons per candidate.
    #[serde(default)]
    pub evidence: Option<DeviceView>,
    /// Its identity: enrollment status, bound key, certificates issued.
    #[serde(default)]
    pub enrollment: super::enroll::Enrollment,
    /// Its last verified version report and the reports refused (`attestation.rs`).
    #[serde(default)]
    pub attestation: super::attestation::Attestation,
    /// When an operator decommissioned the device (`outpost devices delete`). The record stays as a
    /// tombstone that keeps the id revoked (its certificates on the CRL, its messages ignored, no
    /// enrollment under the id); lists, rollouts, skew and metrics leave it out.
    #[serde(default)]
    pub decommissioned: Option<UnixTime>,
}

/// What the registry keeps of one model on one device.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelLog {
    /// The latest [`EVENTS_KEPT`] update events of this model, oldest first, each with when it came.
    pub events: VecDeque<LoggedEvent>,
    pub last_window: Option<InferenceWindow>,
    /// When the device closed that window (its clock).
    pub last_window_at: UnixTime,
    /// The device sends each update event twice: live on `up/events` when online, and in its durable
    /// telemetry. Events that came by one path and not yet by the other wait here, oldest first, so the
    /// second copy is recognised (and a repeated but genuine event is not; see [`DeviceRecord::event`]).
    #[serde(default, skip_serializing_if = "VecDeque::is_empty")]
    pub unmatched_live: VecDeque<UpdateEvent>,
    #[serde(default, skip_serializing_if = "VecDeque::is_empty")]
    pub unmatched_recorded: VecDeque<UpdateEvent>,
    /// The newest `issued_at` of a desired state published for this model to this device (kept across a
    /// withdrawal too). The device refuses a director statement issued before the newest it took for the
    /// model, so the next one is stamped no earlier than this (see [`DeviceRecord::desire`]).
    #[serde(default)]
    pub issued_at: UnixTime,
}

/// An update event as the registry lists it: the device's event and when the controller received it.
/// The event's fields stay at the top level beside `at` (flattened), so the stored record and the API keep
/// the shape they had before `at` was added, and records stored then still read (`at` is `None`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoggedEvent {
    /// When the controller received the event's first copy (the controller's clock, Unix seconds): a
    /// device's own clock may be unset or wrong, and the device sends no time with a live event.
    #[serde(default)]
    pub at: Option<UnixTime>,
    #[serde(flatten)]
    pub event: UpdateEvent,
}

/// Which path an update event came by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventPath {
    /// `up/events`, sent as it happens (lost if the device is offline then).
    Live,
    /// A telemetry record, sent from the device's durable queue (late, never lost).
    Recorded,
}

/// One model on one device as `devices show` lists it: what runs, what the controller asks for, and
/// the latest update event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSummary {
    pub name: ModelName,
    pub running: Option<RunningModel>,
    pub desired: Option<DesiredState>,
    pub last_event: Option<LoggedEvent>,
    pub last_window: Option<InferenceWindow>,
}

/// Where the device's telemetry stream stands. Batches arrive in sequence order from the device's last
/// acknowledged record, so a gap at the start of a batch means the device dropped those records itself
/// (its queue was full); they are counted, not waited for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TelemetryCursor {
    /// Every record up to here was received or is known to be lost.
    pub up_to: u64,
    pub received: u64,
    /// Records received twice (resent after a lost ack) and ignored.
    pub duplicates: u64,
    /// Records the device dropped before sending them.
    pub missing: u64,
}

impl DeviceRecord {
    pub fn new(id: DeviceId, now: UnixTime) -> Self {
        DeviceRecord {
            id,
            arch: None,
            agent_version: None,
            labels: BTreeMap::new(),
            running: Vec::new(),
            online: false,
            boot_id: 0,
            first_seen: now,
            last_seen: now,
            telemetry: TelemetryCursor::default(),
            last_health: None,
            models: BTreeMap::new(),
            desired: BTreeMap::new(),
            evidence: None,
            enrollment: super::enroll::Enrollment::default(),
            attestation: super::attestation::Attestation::default(),
            decommissioned: None,
        }
    }

    /// What is left of a device once decommissioned: its id, when it was first seen and its identity
    /// (revoked, with the certificates issued to it, so the CRL keeps listing them).
    pub fn tombstone(&self, at: UnixTime) -> DeviceRecord {
        let mut t = DeviceRecord::new(self.id.clone(), self.first_seen);
        t.last_seen = self.last_seen;
        t.enrollment = self.enrollment.clone();
        if !matches!(t.enrollment.status, super::enroll::Status::Revoked { .. }) {
            t.enrollment.status = super::enroll::Status::Revoked { at };
        }
        t.decommissioned = Some(at);
        t
    }

    pub fn hello(&mut self, h: Hello, now: UnixTime) {
        self.arch = Some(h.arch);
        self.agent_version = Some(h.agent_version);
        self.labels = h.labels.into_iter().collect();
        self.running = h.running;
        self.boot_id = h.boot_id;
        self.online = true;
        self.last_seen = now;
    }

    pub fn presence(&mut self, p: Presence, now: UnixTime) {
        // A last will from an older boot must not mark a device that already came back offline.
        if p.online || p.boot_id == self.boot_id || self.boot_id == 0 {
            self.online = p.online;
        }
        self.last_seen = now;
    }

    fn evidence(&mut self) -> &mut DeviceView {
        let id = self.id.clone();
        self.evidence.get_or_insert_with(|| DeviceView::new(id))
    }

    /// `bundle`'s reference if one of the device's desired states (one per model) names it to install: the
    /// only bundles it may fetch (`chunks.rs`). A revert or a removal needs no chunks.
    pub fn assigned(&self, bundle: &outpost_protocol::Digest) -> Option<&outpost_protocol::messages::BundleRef> {
        use outpost_protocol::messages::Mode;
        self.desired
            .values()
            .find(|d| d.bundle.digest == *bundle && !matches!(d.mode, Mode::Revert | Mode::Remove))
            .map(|d| &d.bundle)
    }

    /// Records `desired` as the device's desired state of its model and returns it as it is to be
    /// published: its `issued_at` raised to the newest this controller issued for the model on this device.
    /// The planner stamps statements with the controller's clock; after that clock steps back (an NTP
    /// correction, a replica with a slower clock), a revert stamped with it would be refused by the device
    /// as stale (`stale_request`) until the clock caught up. Raised instead, it orders after every statement
    /// the device may have taken, and re-deliveries of one statement keep their stamp.
    pub fn desire(&mut self, mut desired: DesiredState) -> DesiredState {
        let log = self.models.entry(desired.model.clone()).or_default();
        desired.issued_at = desired.issued_at.max(log.issued_at);
        log.issued_at = desired.issued_at;
        self.desired.insert(desired.model.clone(), desired.clone());
        desired
    }

    /// What the planner and the skew tracker see of this device now.
    pub fn view(&self) -> DeviceView {
        let mut v = self.evidence.clone().unwrap_or_else(|| DeviceView::new(self.id.clone()));
        v.arch = self.arch;
        v.agent_version = self.agent_version;
        v.labels = self.labels.iter().map(|(k, val)| (k.clone(), val.clone())).collect();
        v.online = self.online;
        v.last_seen = self.last_seen;
        v.running.clone_from(&self.running);
        v
    }

    /// An update event, by either path. Both paths carry the device's events in the order they happened,
    /// so the copy of an event is the oldest equal one waiting on the other path: it is matched and
    /// dropped, with the older ones waiting there (their copies were lost: an event published while
    /// offline, a record the device's full queue dropped). A genuine repeat of an equal event (the same
    /// desired state issued again) comes by both paths too, and each copy is matched once.
    pub fn event(&mut self, e: UpdateEvent, path: EventPath, now: UnixTime) {
        self.last_seen = now;
        let log = self.models.entry(e.model.clone()).or_default();
        let (mine, other) = match path {
            EventPath::Live => (&mut log.unmatched_live, &mut log.unmatched_recorded),
            EventPath::Recorded => (&mut log.unmatched_recorded, &mut log.unmatched_live),
        };
        if let Some(i) = other.iter().position(|x| *x == e) {
            other.drain(..=i);
            // Not listed again, but the gates' evidence takes every copy, in arrival order: a copy whose twin
            // was lost (a controller killed after handling it live, before storing it) arrives after newer
            // events, and only the copies of those newer events that follow bring the evidence forward again.
            self.evidence().record_event(&e, now);
            return;
        }
        mine.push_back(e.clone());
        if mine.len() > EVENTS_KEPT {
            mine.pop_front();
        }
        log.events.push_back(LoggedEvent { at: Some(now), event: e.clone() });
        while log.events.len() > EVENTS_KEPT {
            log.events.pop_front();
        }
        self.evidence().record_event(&e, now);
    }

    /// The latest update event of `model`.
    pub fn last_event(&self, model: &ModelName) -> Option<&UpdateEvent> {
        self.models.get(model).and_then(|m| m.events.back()).map(|l| &l.event)
    }

    /// The latest update event of every model (one per model, in model order).
    pub fn last_events(&self) -> impl Iterator<Item = &UpdateEvent> {
        self.models.values().filter_map(|m| m.events.back()).map(|l| &l.event)
    }

    /// What the device runs of `model`.
    pub fn runs(&self, model: &ModelName) -> Option<&RunningModel> {
        self.running.iter().find(|r| &r.name == model)
    }

    /// Every model the device runs, is told about or reported on, in name order.
    pub fn model_summaries(&self) -> Vec<ModelSummary> {
        let mut names: BTreeSet<&ModelName> = self.running.iter().map(|r| &r.name).collect();
        names.extend(self.desired.keys());
        names.extend(self.models.keys());
        names
            .into_iter()
            .map(|name| ModelSummary {
                name: name.clone(),
                running: self.runs(name).cloned(),
                desired: self.desired.get(name).cloned(),
                last_event: self.models.get(name).and_then(|m| m.events.back()).cloned(),
                last_window: self.models.get(name).and_then(|m| m.last_window.clone()),
            })
            .collect()
    }

    /// Takes in a batch; returns the sequence number to acknowledge. Records at or below the cursor are
    /// duplicates; the rest are applied in order. The batch is unsigned: its sequence numbers may be
    /// anything (a `first_seq` far above `last_seq`, again and again), so the counters saturate.
    pub fn telemetry(&mut self, batch: TelemetryBatch, now: UnixTime) -> u64 {
        self.last_seen = now;
        self.online = true;
        let c = &mut self.telemetry;
        if batch.last_seq <= c.up_to {
            c.duplicates = c.duplicates.saturating_add(batch.records.len() as u64);
            return c.up_to;
        }
        if batch.first_seq > c.up_to.saturating_add(1) {
            c.missing = c.missing.saturating_add(batch.first_seq - c.up_to - 1);
        }
        let mut fresh = Vec::new();
        for r in batch.records {
            if r.seq <= c.up_to {
                c.duplicates = c.duplicates.saturating_add(1);
            } else {
                c.received = c.received.saturating_add(1);
                fresh.push(r);
            }
        }
        c.up_to = batch.last_seq;
        for r in fresh {
            match r.body {
                RecordBody::Inference(w) => {
                    self.evidence().record_window(&w, now);
                    let log = self.models.entry(w.model.clone()).or_default();
                    log.last_window_at = r.at;
                    log.last_window = Some(w);
                }
                RecordBody::Health(h) => self.last_health = Some(h),
                RecordBody::Update(e) => self.event(e, EventPath::Recorded, now),
                RecordBody::Dropped { count } => tracing::warn!(device = %self.id, count, "device dropped telemetry"),
                RecordBody::Trust(t) => self.attestation.trust_event(t, now),
            }
        }
        self.telemetry.up_to
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_protocol::telemetry::{Record, UpdateStage};

    fn batch(first: u64, last: u64) -> TelemetryBatch {
        let records =
            (first..=last).map(|seq| Record { seq, at: seq, body: RecordBody::Dropped { count: 0 } }).collect();
        TelemetryBatch { first_seq: first, last_seq: last, records }
    }

    #[test]
    fn telemetry_is_acked_up_to_the_batch_and_resent_batches_count_as_duplicates() {
        let mut d = DeviceRecord::new(DeviceId::new("d").unwrap(), 0);
        assert_eq!(d.telemetry(batch(1, 10), 1), 10);
        assert_eq!(d.telemetry(batch(1, 10), 2), 10, "a resend after a lost ack");
        assert_eq!(d.telemetry(batch(8, 15), 3), 15, "overlapping resend");
        let c = &d.telemetry;
        assert_eq!((c.received, c.duplicates, c.missing), (15, 13, 0));
    }

    /// Before, a device repeating a batch that claims records 2^64 − 2 down to 1 overflowed `missing`,
    /// which panicked the controller's ingest (debug builds) and poisoned the registry's lock.
    #[test]
    fn forged_sequence_numbers_saturate_the_counters_and_panic_nothing() {
        let mut d = DeviceRecord::new(DeviceId::new("d").unwrap(), 0);
        let forged = |n: u64| TelemetryBatch { first_seq: u64::MAX - 1, last_seq: n, records: Vec::new() };
        for n in 1..=3 {
            d.telemetry(forged(n), n);
        }
        assert_eq!(d.telemetry.missing, u64::MAX);
        assert_eq!(d.telemetry(batch(u64::MAX, u64::MAX), 4), u64::MAX);
        assert_eq!(d.telemetry(batch(1, 2), 5), u64::MAX, "all below the cursor now: duplicates");
    }

    #[test]
    fn records_the_device_dropped_are_counted_as_missing() {
        let mut d = DeviceRecord::new(DeviceId::new("d").unwrap(), 0);
        d.telemetry(batch(1, 5), 1);
        d.telemetry(batch(9, 12), 2);
        assert_eq!((d.telemetry.up_to, d.telemetry.missing), (12, 3));
    }

    fn event(model: &str, version: u32, to: UpdateStage) -> UpdateEvent {
        UpdateEvent {
            rollout: None,
            model: ModelName::new(model).unwrap(),
            version: Version::new(version, 0, 0),
            bundle: outpost_protocol::Digest([version as u8; 32]),
            from: UpdateStage::Idle,
            to,
            reason: None,
            detail: String::new(),
            seq: 0,
        }
    }

    /// The gates' evidence follows the device's order of a model's events, not their arrival: the live
    /// copy of "committed" came first, then the late telemetry copy of "fetching" (its live twin lost with a
    /// controller restart). Before, the evidence went back to fetching and nothing brought it forward.
    #[test]
    fn a_late_copy_of_an_earlier_event_never_moves_the_evidence_backwards() {
        use EventPath::*;
        let mut d = DeviceRecord::new(DeviceId::new("d").unwrap(), 0);
        let at = |e: UpdateEvent, seq: u64| UpdateEvent { seq, ..e };
        let fetching = at(event("digits", 2, UpdateStage::Fetching), 10);
        let committed = at(event("digits", 2, UpdateStage::Committed), 14);
        d.event(committed.clone(), Live, 100);
        d.event(fetching.clone(), Recorded, 101);
        let stage = |d: &mut DeviceRecord| d.evidence().update_for(&committed.bundle).map(|u| u.stage);
        assert_eq!(stage(&mut d), Some(UpdateStage::Committed));
        // A later event of the same bundle (a revert, say) still moves it on.
        d.event(at(event("digits", 2, UpdateStage::RolledBack), 15), Live, 102);
        assert_eq!(stage(&mut d), Some(UpdateStage::RolledBack));
    }

    /// Each event comes live and again in telemetry, in either order, interleaved with the other path's:
    /// listed once. A genuine repeat is listed again; an event that came by one path only is listed.
    #[test]
    fn an_event_that_comes_live_and_again_in_telemetry_is_listed_once() {
        use EventPath::*;
        let mut d = DeviceRecord::new(DeviceId::new("d").unwrap(), 0);
        let fetching = event("digits", 2, UpdateStage::Fetching);
        let committed = event("digits", 2, UpdateStage::Committed);
        let lost_live = event("digits", 2, UpdateStage::Watching);
        for (e, path) in [
            (&fetching, Live),
            (&committed, Live),
            (&fetching, Recorded),
            (&lost_live, Recorded),
            (&committed, Recorded),
            // The same desired state again, later: a genuine repeat, telemetry first this time.
            (&fetching, Recorded),
            (&fetching, Live),
        ] {
            d.event(e.clone(), path, 1);
        }
        let listed: Vec<UpdateStage> =
            d.models[&ModelName::new("digits").unwrap()].events.iter().map(|e| e.event.to).collect();
        use UpdateStage::*;
        assert_eq!(listed, vec![Fetching, Committed, Watching, Fetching]);
        let log = &d.models[&ModelName::new("digits").unwrap()];
        assert!(log.unmatched_live.is_empty() && log.unmatched_recorded.is_empty(), "{log:?}");
        // The planner's evidence ends where the device is: the latest for the bundle is the repeat's fetching.
        assert_eq!(d.view().update_for(&fetching.bundle).map(|u| u.stage), Some(Fetching));
    }

    /// `devices show` lists each event with when the controller received it: its first copy's time (the
    /// telemetry copy that comes minutes later changes nothing). The time is stored in the record beside
    /// the event's fields, and a record stored before events had one still reads, its events without it.
    #[test]
    fn events_keep_when_their_first_copy_arrived_and_records_stored_before_still_read() {
        let mut d = DeviceRecord::new(DeviceId::new("d").unwrap(), 0);
        let fetching = event("digits", 2, UpdateStage::Fetching);
        d.event(fetching.clone(), EventPath::Live, 1_000);
        d.event(fetching.clone(), EventPath::Recorded, 1_300);
        d.event(event("digits", 2, UpdateStage::Committed), EventPath::Recorded, 1_400);
        let digits = ModelName::new("digits").unwrap();
        let ats: Vec<Option<u64>> = d.models[&digits].events.iter().map(|e| e.at).collect();
        assert_eq!(ats, [Some(1_000), Some(1_400)]);
        assert_eq!(d.model_summaries()[0].last_event.as_ref().and_then(|e| e.at), Some(1_400));

        let stored = serde_json::to_value(&d).unwrap();
        let first = &stored["models"]["digits"]["events"][0];
        assert_eq!((first["at"].as_u64(), first["to"].as_str()), (Some(1_000), Some("Fetching")), "{first}");
        let back: DeviceRecord = serde_json::from_value(stored.clone()).unwrap();
        assert_eq!(back.models[&digits], d.models[&digits]);

        // As a controller stored it before events had a time.
        let mut old = stored;
        for e in old["models"]["digits"]["events"].as_array_mut().unwrap() {
            e.as_object_mut().unwrap().remove("at");
        }
        let back: DeviceRecord = serde_json::from_value(old).unwrap();
        let events = &back.models[&digits].events;
        assert_eq!(events.iter().map(|e| e.at).collect::<Vec<_>>(), [None, None]);
        assert_eq!(events[0].event, fetching);
    }

    #[test]
    fn update_events_are_kept_per_model_so_a_busy_model_never_pushes_another_out() {
        let mut d = DeviceRecord::new(DeviceId::new("d").unwrap(), 0);
        d.event(event("kws", 1, UpdateStage::Committed), EventPath::Live, 1);
        for i in 0..(EVENTS_KEPT as u32 * 3) {
            d.event(event("digits", 2 + i % 2, UpdateStage::Fetching), EventPath::Live, 2);
        }
        assert_eq!(d.models[&ModelName::new("digits").unwrap()].events.len(), EVENTS_KEPT);
        let kws = d.last_event(&ModelName::new("kws").unwrap()).unwrap();
        assert_eq!((kws.version, kws.to), (Version::new(1, 0, 0), UpdateStage::Committed));
        assert_eq!(d.last_events().count(), 2);
    }

    #[test]
    fn every_model_running_desired_or_reported_on_is_summarised_in_name_order() {
        use outpost_protocol::messages::{BundleRef, Mode, Watch};
        let mut d = DeviceRecord::new(DeviceId::new("d").unwrap(), 0);
        let name = |s: &str| ModelName::new(s).unwrap();
        d.running = vec![RunningModel {
            name: name("digits"),
            version: Version::new(2, 0, 0),
            digest: outpost_protocol::Digest([2; 32]),
            sequence: 2,
        }];
        let bundle = BundleRef { digest: outpost_protocol::Digest([7; 32]), size: 1, chunk_size: 1, chunks: vec![] };
        d.desired.insert(
            name("kws"),
            DesiredState {
                model: name("kws"),
                version: Version::new(1, 0, 0),
                sequence: 1,
                bundle,
                rollout: Some("k1".into()),
                mode: Mode::Activate,
                issued_at: 5,
                watch: Watch::default(),
            },
        );
        d.event(event("anomaly", 1, UpdateStage::Rejected), EventPath::Live, 3);
        let s = d.model_summaries();
        let names: Vec<&str> = s.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["anomaly", "digits", "kws"]);
        assert!(s[0].running.is_none() && s[0].last_event.is_some());
        assert_eq!(s[1].running.as_ref().map(|r| r.sequence), Some(2));
        assert_eq!(s[2].desired.as_ref().map(|x| x.sequence), Some(1));
    }

    /// Before, the controller stamped each statement with its clock: after the clock stepped back, a
    /// revert was issued before the install the device had taken, and the device refused it as stale.
    #[test]
    fn a_statement_after_the_clock_stepped_back_is_issued_no_earlier_than_the_last_one() {
        use outpost_protocol::messages::{BundleRef, Mode, Watch};
        let mut d = DeviceRecord::new(DeviceId::new("d").unwrap(), 0);
        let model = |m: &str| ModelName::new(m).unwrap();
        let desired = |m: &str, mode: Mode, issued_at: UnixTime| DesiredState {
            model: model(m),
            version: Version::new(2, 0, 0),
            sequence: 2,
            bundle: BundleRef { digest: outpost_protocol::Digest([7; 32]), size: 1, chunk_size: 1, chunks: vec![] },
            rollout: Some("r".into()),
            mode,
            issued_at,
            watch: Watch::default(),
        };
        assert_eq!(d.desire(desired("digits", Mode::Activate, 10_000)).issued_at, 10_000);
        // The clock stepped back an hour; the revert orders after the install the device took.
        let revert = d.desire(desired("digits", Mode::Revert, 10_000 - 3_600));
        assert_eq!((revert.issued_at, &revert.mode), (10_000, &Mode::Revert));
        assert_eq!(d.desired[&model("digits")], revert, "recorded as published, for the republish");
        // A withdrawal forgets the desired state, not the stamp.
        d.desired.remove(&model("digits"));
        assert_eq!(d.desire(desired("digits", Mode::Remove, 10)).issued_at, 10_000);
        // Once the clock is ahead again, its time is used; another model has its own stamp.
        assert_eq!(d.desire(desired("digits", Mode::Activate, 50_000)).issued_at, 50_000);
        assert_eq!(d.desire(desired("kws", Mode::Activate, 10)).issued_at, 10);
        // A record written before the stamp existed reads as never stamped.
        let json = serde_json::to_string(&d.models[&model("digits")]).unwrap().replace(",\"issued_at\":50000", "");
        let old: ModelLog = serde_json::from_str(&json).unwrap();
        assert_eq!(old.issued_at, 0);
    }

    #[test]
    fn a_stale_last_will_does_not_mark_a_returned_device_offline() {
        let id = DeviceId::new("d").unwrap();
        let mut d = DeviceRecord::new(id.clone(), 0);
        d.presence(Presence { device: id.clone(), online: true, boot_id: 2 }, 1);
        d.boot_id = 2;
        d.presence(Presence { device: id.clone(), online: false, boot_id: 1 }, 2);
        assert!(d.online);
        d.presence(Presence { device: id, online: false, boot_id: 2 }, 3);
        assert!(!d.online);
    }
}

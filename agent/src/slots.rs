//! The slot table, per model, and its transitions: pure functions over the table, no I/O, so `install`,
//! the update driver and the simulator switch slots by the same rules and their tests walk each rule
//! directly. `store.rs` reads and writes the table; this module decides what a switch does.
//!
//! Per model name: `active` serves; `candidate` is verified and stored, shadowed or about to be activated;
//! `previous` is the verified model kept for one step back (rollback, fleet `abort --revert`); `retired`
//! is the `previous` of before an activation still under watch, restored if that activation rolls back;
//! `floor` is the highest release sequence committed (anti-rollback, never lowered, kept after removal).

use outpost_protocol::Digest;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One model's slots. Digests are stored as hex (the table is JSON for people reading it on a device).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSlots {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired: Option<String>,
    /// The highest release sequence committed for this model: the anti-rollback floor. Never lowered.
    #[serde(default)]
    pub floor: u64,
    /// When set, the candidate runs in shadow on this share of live requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow_percent: Option<u8>,
    /// Memory the active model took when it was last loaded for verification (bytes): what the budget
    /// counts for it.
    #[serde(default)]
    pub mem_bytes: u64,
}

fn parse(slot: &Option<String>) -> Option<Digest> {
    slot.as_deref().and_then(|s| s.parse().ok())
}

impl ModelSlots {
    pub fn active_digest(&self) -> Option<Digest> {
        parse(&self.active)
    }
    pub fn candidate_digest(&self) -> Option<Digest> {
        parse(&self.candidate)
    }
    pub fn previous_digest(&self) -> Option<Digest> {
        parse(&self.previous)
    }

    /// Whether the model is installed (it has a model to serve).
    pub fn installed(&self) -> bool {
        self.active.is_some()
    }

    /// Every digest this model's slots name (the store keeps these files).
    pub fn digests(&self) -> impl Iterator<Item = &str> {
        [&self.active, &self.candidate, &self.previous, &self.retired].into_iter().flatten().map(String::as_str)
    }

    /// A verified, stored model becomes the candidate (`shadow`: sampled on that share of requests).
    pub fn stage(&mut self, digest: Digest, shadow: Option<u8>) {
        self.candidate = Some(digest.to_hex());
        self.shadow_percent = shadow;
    }

    /// Stops shadowing; the candidate stays staged.
    pub fn stop_shadow(&mut self) {
        self.shadow_percent = None;
    }

    /// Drops the candidate (its file is collected once no slot names it).
    pub fn discard_candidate(&mut self) {
        self.candidate = None;
        self.shadow_percent = None;
    }

    /// `digest` serves; the model it replaces is kept as `previous`, and the `previous` of before as
    /// `retired` until the activation is committed or rolled back. Activating what already serves only
    /// clears the candidate.
    pub fn activate(&mut self, digest: Digest, mem_bytes: u64) {
        let hex = digest.to_hex();
        if self.active.as_deref() != Some(hex.as_str()) {
            self.retired = self.previous.take();
            self.previous = self.active.replace(hex);
            self.mem_bytes = mem_bytes;
        }
        self.candidate = None;
        self.shadow_percent = None;
    }

    /// The activation is final: the floor rises to the verified release's `sequence` (never lowers) and
    /// the model retired two steps back is let go.
    pub fn commit(&mut self, sequence: u64) {
        self.floor = self.floor.max(sequence);
        self.retired = None;
    }

    /// Undoes an uncommitted activation: `previous` serves again and the `retired` one is `previous`
    /// again, so a rollback never costs the device its one step back. Without a `previous` the activation
    /// was the model's first install: undone, the model is not installed (a model that failed its watch
    /// or never loaded does not stay behind). Returns what serves now.
    pub fn roll_back(&mut self) -> Option<Digest> {
        match self.previous.take() {
            Some(prev) => {
                self.active = Some(prev);
                self.previous = self.retired.take();
            }
            None => {
                self.active = None;
                self.mem_bytes = 0;
            }
        }
        self.candidate = None;
        self.shadow_percent = None;
        self.active_digest()
    }

    /// One step back to the verified `previous` (fleet `abort --revert`). The model left is not kept:
    /// a second revert has nowhere to go rather than returning to the model the first one left, which
    /// was judged bad. Returns the model that serves now, or `None` (nothing changed) without a previous.
    pub fn revert(&mut self) -> Option<Digest> {
        let prev = self.previous.take()?;
        self.active = Some(prev);
        self.retired = None;
        self.candidate = None;
        self.shadow_percent = None;
        self.mem_bytes = 0;
        self.active_digest()
    }

    /// Stops serving the model: every slot is emptied; the floor stays, so a removed release can never
    /// come back below it.
    pub fn remove(&mut self) {
        *self = ModelSlots { floor: self.floor, ..ModelSlots::default() };
    }
}

/// The whole table: slots per model name, and the trust-policy floor.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slots {
    #[serde(default)]
    pub models: BTreeMap<String, ModelSlots>,
    /// The highest trust policy version accepted. Never lowered.
    #[serde(default)]
    pub policy_floor: u64,
}

impl Slots {
    pub fn model(&self, name: &str) -> Option<&ModelSlots> {
        self.models.get(name)
    }

    /// The slots of `name`, created empty when the model is new to this device.
    pub fn model_mut(&mut self, name: &str) -> &mut ModelSlots {
        self.models.entry(name.to_owned()).or_default()
    }

    pub fn floor(&self, name: &str) -> u64 {
        self.model(name).map(|m| m.floor).unwrap_or(0)
    }

    pub fn active_digest(&self, name: &str) -> Option<Digest> {
        self.model(name)?.active_digest()
    }

    /// Installed models (with an active slot), by name.
    pub fn installed(&self) -> impl Iterator<Item = (&String, &ModelSlots)> {
        self.models.iter().filter(|(_, m)| m.installed())
    }

    /// Every stored digest some slot names.
    pub fn digests(&self) -> Vec<&str> {
        self.models.values().flat_map(ModelSlots::digests).collect()
    }

    /// Memory the installed models take by the budget's count, leaving out `except`.
    pub fn mem_bytes_except(&self, except: &str) -> u64 {
        self.installed().filter(|(n, _)| n.as_str() != except).map(|(_, m)| m.mem_bytes).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> Digest {
        Digest::of(&[n])
    }

    fn hex(n: u8) -> Option<String> {
        Some(d(n).to_hex())
    }

    #[test]
    fn activation_keeps_one_step_back_and_a_commit_raises_the_floor_only() {
        let mut m = ModelSlots::default();
        m.activate(d(1), 10);
        m.commit(1);
        assert_eq!((m.active.clone(), m.previous.clone(), m.floor), (hex(1), None, 1));
        m.stage(d(2), Some(20));
        m.activate(d(2), 12);
        assert_eq!((m.active.clone(), m.previous.clone(), m.candidate.clone()), (hex(2), hex(1), None));
        m.commit(5);
        m.commit(3);
        assert_eq!(m.floor, 5, "a floor never goes down");
        m.activate(d(2), 99);
        assert_eq!((m.previous.clone(), m.mem_bytes), (hex(1), 12), "re-activating what serves changes nothing");
    }

    #[test]
    fn a_rollback_restores_the_active_and_previous_of_before_the_activation() {
        let mut m = ModelSlots::default();
        m.activate(d(1), 0);
        m.commit(1);
        m.activate(d(2), 0);
        m.commit(2);
        m.activate(d(3), 0);
        assert_eq!((m.previous.clone(), m.retired.clone()), (hex(2), hex(1)));
        assert_eq!(m.roll_back(), Some(d(2)));
        assert_eq!((m.active.clone(), m.previous.clone(), m.retired.clone()), (hex(2), hex(1), None));
        assert_eq!(m.floor, 2);
    }

    #[test]
    fn rolling_back_a_first_install_leaves_the_model_uninstalled_with_its_floor() {
        let mut m = ModelSlots { floor: 4, ..ModelSlots::default() };
        m.activate(d(1), 10);
        assert_eq!(m.roll_back(), None);
        assert_eq!((m.installed(), m.floor, m.mem_bytes), (false, 4, 0));
    }

    #[test]
    fn a_second_revert_never_returns_to_the_model_the_first_one_left() {
        let mut m = ModelSlots::default();
        m.activate(d(1), 0);
        m.commit(1);
        m.activate(d(2), 0);
        m.commit(2);
        assert_eq!(m.revert(), Some(d(1)));
        assert_eq!((m.active.clone(), m.previous.clone()), (hex(1), None));
        assert_eq!(m.revert(), None, "nowhere to go: the bad model is not kept");
        assert_eq!(m.active, hex(1));
        assert_eq!(m.floor, 2, "a revert is a local switch; the floor stays");
    }

    #[test]
    fn removal_empties_the_slots_and_keeps_the_floor() {
        let mut t = Slots::default();
        t.model_mut("a").activate(d(1), 5);
        t.model_mut("a").commit(7);
        t.model_mut("b").activate(d(2), 3);
        assert_eq!(t.mem_bytes_except("b"), 5);
        t.model_mut("a").remove();
        assert!(!t.model("a").unwrap().installed());
        assert_eq!(t.floor("a"), 7);
        assert_eq!(t.installed().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), vec!["b"]);
        assert_eq!(t.digests(), vec![d(2).to_hex().as_str()]);
    }

    #[test]
    fn the_table_reads_back_what_it_wrote() {
        let mut t = Slots { policy_floor: 3, ..Slots::default() };
        t.model_mut("digits").activate(d(1), 1 << 20);
        t.model_mut("digits").stage(d(2), Some(10));
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(serde_json::from_str::<Slots>(&json).unwrap(), t);
    }
}

//! The update shell: one pure update machine per model (`update/machine.rs`) and what is done with their
//! effects, over a [`Platform`] (`platform.rs`). The agent runs it over MQTT, files and tract
//! (`driver.rs`); the fleet simulator runs the same code over its simulated fabric, clock and disk, so
//! the simulator's invariants are the device's.
//!
//! Each step: the model's machine takes the input, every machine's state is persisted (a step that cannot
//! be persisted is undone and nothing is performed), the transition events go to the durable queue and
//! the controller, then the effects are performed: staging files, chunk requests, slot switches through
//! `slots.rs`'s transitions, and slow work (verify, self-test, loading) whose answers come back later
//! through [`Shell::complete`]. An answer for a job that moved on (superseded, withdrawn, restarted) is
//! dropped.

use super::platform::Platform;
use crate::update::machine::{Authority, Effect, Health, Input, Machine, Release, UpdateState};
use outpost_protocol::director::SignedDesired;
use outpost_protocol::messages::{BundleRef, ChunkRequest, DesiredState, Message};
use outpost_protocol::telemetry::{UpdateEvent, UpdateStage};
use outpost_protocol::topics::Up;
use outpost_protocol::{Digest, Limits, ModelName, RejectReason};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Every model's update machine state, as `update.json` holds it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DriverState {
    #[serde(default)]
    pub models: BTreeMap<String, UpdateState>,
}

/// The answer to a slow step the platform performed.
#[derive(Debug, Clone, PartialEq)]
pub enum Done {
    Verified {
        bundle: Digest,
        result: Result<Release, (RejectReason, String)>,
    },
    SelfTested {
        bundle: Digest,
        result: Result<(), (RejectReason, String)>,
    },
    /// The runtime serves model `digest` (or could not load it).
    Activated {
        digest: Digest,
        result: Result<(), String>,
    },
}

/// How often the serving model's self-test vectors run again during a watch.
pub const WATCH_SELFTEST_EVERY_MS: u64 = 60_000;

#[derive(Debug, Clone, Default)]
pub struct Shell {
    machines: BTreeMap<String, Machine>,
    accept: Option<Vec<ModelName>>,
    last_selftest_ms: BTreeMap<String, u64>,
}

impl Shell {
    /// The shell as persisted; `accept`: the model names this device runs (`models.accept`).
    pub fn new(state: DriverState, accept: Option<Vec<ModelName>>) -> Shell {
        let machines =
            state.models.into_iter().map(|(name, s)| (name, Machine::new(s).with_accept(accept.clone()))).collect();
        Shell { machines, accept, last_selftest_ms: BTreeMap::new() }
    }

    /// Every machine's state, as persisted.
    pub fn state(&self) -> DriverState {
        DriverState { models: self.machines.iter().map(|(n, m)| (n.clone(), m.state.clone())).collect() }
    }

    pub fn machine(&self, model: &str) -> Option<&Machine> {
        self.machines.get(model)
    }

    pub fn machines(&self) -> impl Iterator<Item = (&str, &Machine)> {
        self.machines.iter().map(|(n, m)| (n.as_str(), m))
    }

    /// The update stage of `model`.
    pub fn stage(&self, model: &str) -> UpdateStage {
        self.machines.get(model).map(Machine::stage).unwrap_or(UpdateStage::Idle)
    }

    /// Some model's update is under way (its machine needs ticks).
    pub fn updating(&self) -> bool {
        self.machines.values().any(|m| {
            !matches!(
                m.stage(),
                UpdateStage::Idle | UpdateStage::Committed | UpdateStage::RolledBack | UpdateStage::Rejected
            )
        })
    }

    /// The agent started: every persisted job resumes, its staging file re-checked against the chunk
    /// digests. Nothing is allocated by a bundle reference over the limits: the machine refuses such a job.
    pub fn restarted(&mut self, p: &mut impl Platform) {
        let names: Vec<String> = self.machines.keys().cloned().collect();
        for name in names {
            let valid_chunks = match self.machines[&name].state.job.as_ref() {
                Some(j) if j.desired.bundle.check(&Limits::default()).is_ok() => {
                    p.check_staging(&name, &j.desired.bundle)
                }
                _ => vec![],
            };
            self.step(p, &name, Input::Restarted { valid_chunks });
            // A desired state that waited for a watch which ended just before the crash starts now.
            self.start_queued(p, &name);
        }
    }

    /// Starts the desired state that waited for `model`'s watch, once that watch has ended. Its
    /// `already_active` is decided now: the watch may have committed it or rolled back to it.
    fn start_queued(&mut self, p: &mut impl Platform, model: &str) {
        // Only an install waits for a watch, and an install needs no director's word (it was checked,
        // and the floor raised, when it arrived).
        if let Some(d) = self.machines.get(model).and_then(|m| m.ready_queued()).cloned() {
            self.told(p, d, Authority::Unsigned);
        }
    }

    /// The retained desired state of one model arrived unsigned: it may ask for an install only.
    pub fn desired(&mut self, p: &mut impl Platform, desired: DesiredState) {
        self.told(p, desired, Authority::Unsigned);
    }

    /// The retained desired state of one model arrived as a director statement: the director's word
    /// when it names this device and a director key of the policy held now signed it. Under a policy
    /// without director keys it is an unsigned request; one that fails its check is refused if it asks
    /// for more than an install (the machine decides, `Machine::authorize`).
    pub fn directed(&mut self, p: &mut impl Platform, signed: &SignedDesired) {
        let desired = match signed.request() {
            Ok(s) => s.desired,
            Err(e) => {
                tracing::warn!(error = %e, "dropping a malformed director statement");
                return;
            }
        };
        let keys = p.director_keys();
        let authority = match p.device() {
            _ if keys.is_empty() => Authority::Unsigned,
            None => Authority::Unsigned,
            Some(device) => match signed.verify(device, &keys) {
                Ok(_) => Authority::Director,
                Err(r) => Authority::Refused(r.reason, r.detail),
            },
        };
        self.told(p, desired, authority);
    }

    fn told(&mut self, p: &mut impl Platform, desired: DesiredState, authority: Authority) {
        let already_active = p
            .active_release(desired.model.as_str())
            .is_some_and(|(n, seq)| n == desired.model && seq == desired.sequence);
        let name = desired.model.as_str().to_owned();
        self.step(p, &name, Input::Desired { desired, already_active, authority });
    }

    /// The retained desired state of `model` was cleared.
    pub fn withdrawn(&mut self, p: &mut impl Platform, model: &ModelName) {
        if self.machines.contains_key(model.as_str()) {
            self.step(p, model.as_str(), Input::Withdrawn);
        }
    }

    /// A chunk arrived: it belongs to every model whose fetch names its bundle (chunks travel by bundle),
    /// each writing it into its own staging file after checking it against its own chunk digest list.
    pub fn chunk(&mut self, p: &mut impl Platform, bundle: Digest, index: u32, data: &[u8]) {
        let owners: Vec<String> =
            self.machines.iter().filter(|(_, m)| fetching(m, bundle).is_some()).map(|(name, _)| name.clone()).collect();
        for name in owners {
            let Some(b) = self.machines.get(&name).and_then(|m| fetching(m, bundle)).map(|j| &j.desired.bundle) else {
                continue;
            };
            let i = index as usize;
            let valid = i < b.chunks.len()
                && data.len() == chunk_len(b.size, b.chunk_size, i)
                && Digest::of(data) == b.chunks[i]
                && p.write_chunk(&name, b, index, data).is_ok();
            if !valid {
                tracing::warn!(model = %name, index, "chunk failed its digest check; asking again");
            }
            self.step(p, &name, Input::Chunk { bundle, index, valid });
        }
    }

    /// The timer: every machine's tick, and the health of each model under watch.
    pub fn tick(&mut self, p: &mut impl Platform) {
        let names: Vec<String> = self.machines.keys().cloned().collect();
        for name in names {
            self.step(p, &name, Input::Tick);
            if self.stage(&name) == UpdateStage::Watching {
                let health = self.health(p, &name);
                self.step(p, &name, Input::Health(health));
            }
        }
    }

    /// The answer to a slow step of `model`; dropped when its job has moved on.
    pub fn complete(&mut self, p: &mut impl Platform, model: &str, done: Done) {
        let Some(job) = self.machines.get(model).and_then(|m| m.state.job.as_ref()) else { return };
        let input = match done {
            Done::Verified { bundle, result } if job.stage == UpdateStage::Verifying && job.bundle() == bundle => {
                Input::Verified(result)
            }
            Done::SelfTested { bundle, result } if job.stage == UpdateStage::SelfTest && job.bundle() == bundle => {
                Input::SelfTested(result)
            }
            Done::Activated { digest, result }
                if job.stage == UpdateStage::Activating && job.verified.as_ref().map(|r| r.model) == Some(digest) =>
            {
                self.last_selftest_ms.remove(model);
                p.announce();
                Input::Activated(result)
            }
            _ => return,
        };
        self.step(p, model, input);
    }

    /// Steps `model`'s machine, persists every machine, reports the transitions and performs the effects.
    fn step(&mut self, p: &mut impl Platform, model: &str, input: Input) {
        let accept = &self.accept;
        let existed = self.machines.contains_key(model);
        let machine =
            self.machines.entry(model.to_owned()).or_insert_with(|| Machine::default().with_accept(accept.clone()));
        let saved = machine.state.clone();
        let before = machine.stage();
        let previous_job = machine.state.job.as_ref().map(|j| j.desired.clone());
        let previous_queued = machine.state.queued.clone();
        // A rollback undoes the activation of the job in progress before this step (superseded or not).
        let undoing = machine.state.job.as_ref().and_then(|j| j.verified.as_ref()).map(|r| r.model);
        let effects = machine.step(input, p.now_ms());
        let after = machine.stage();
        let current_job = machine.state.job.as_ref().map(|j| j.desired.clone());
        let queued = machine.state.queued.clone();
        // A step with no effects (a chunk arriving mid-window) need not be persisted: on restart the
        // staging file itself says which chunks are there. A director statement that raised the floor is.
        if effects.is_empty() && machine.state.director_floor == saved.director_floor {
            return;
        }
        // Each event's place in this model's order, persisted with the step: a step that is undone
        // reports nothing, so no number is ever used twice.
        let reported = effects.iter().filter(|e| matches!(e, Effect::Event { .. } | Effect::Refused { .. })).count();
        let mut seq = machine.state.event_seq.max(p.now_ms());
        machine.state.event_seq = seq + reported as u64;
        if let Err(e) = p.save_state(self.state()) {
            // Undone: the same input comes again (the retained desired state on reconnect, chunks on the
            // retry timer, ticks), and nothing was performed that the persisted state does not know of.
            tracing::error!(model, error = %e, "cannot persist the update state; the step is undone");
            if !existed {
                self.machines.remove(model);
            } else if let Some(m) = self.machines.get_mut(model) {
                m.state = saved;
            }
            return;
        }
        // Events first (they are the record of the transition), then the stage's work.
        let (events, work): (Vec<Effect>, Vec<Effect>) =
            effects.into_iter().partition(|e| matches!(e, Effect::Event { .. } | Effect::Refused { .. }));
        for effect in events {
            if let Effect::Refused { desired, reason, detail } = effect {
                // No rollout and no bundle: a forged request must not write itself into any rollout's
                // evidence, nor over the record of the bundle it names.
                let named = DesiredState {
                    rollout: None,
                    bundle: BundleRef { digest: Digest([0; 32]), ..desired.bundle },
                    ..desired
                };
                tracing::warn!(model, reason = reason.code(), %detail, "desired state refused");
                seq += 1;
                report(p, &named, UpdateStage::Idle, UpdateStage::Idle, Some(reason), detail, seq);
            } else if let Effect::Event { bundle, from, to, reason, detail } = effect {
                // A superseded job's last event comes after the new job replaced it: name its release
                // (and the same for a desired state that waited for a watch, or was replaced waiting).
                let desired = [&current_job, &previous_job, &queued, &previous_queued]
                    .into_iter()
                    .flatten()
                    .find(|d| d.bundle.digest == bundle);
                seq += 1;
                if let Some(d) = desired {
                    report(p, d, from, to, reason, detail, seq);
                }
            }
        }
        if after != before {
            p.entered(after);
        }
        for effect in work {
            self.perform(p, model, effect, undoing);
        }
        // Only after a persisted step: one that was undone leaves the queue as it was, and starts nothing.
        self.start_queued(p, model);
    }

    fn perform(&mut self, p: &mut impl Platform, model: &str, effect: Effect, undoing: Option<Digest>) {
        let job = self.machines.get(model).and_then(|m| m.state.job.as_ref());
        match effect {
            Effect::Event { .. } | Effect::Refused { .. } => {}
            Effect::PrepareStaging { bundle, .. } => {
                // The size passed `BundleRef::check` in the machine before this effect was emitted.
                if let Some(j) = job.filter(|j| j.bundle() == bundle)
                    && let Err(e) = p.prepare_staging(model, &j.desired.bundle)
                {
                    tracing::error!(model, error = %e, "cannot create the staging file");
                }
            }
            // Offline: the machine's retry timer asks again.
            Effect::RequestChunks { bundle, first, count } => {
                p.publish(Up::Fetch, Message::ChunkRequest(ChunkRequest { bundle, first, count }))
            }
            Effect::Verify { bundle } => match job.filter(|j| j.bundle() == bundle) {
                Some(j) => p.verify(model, &j.desired.bundle),
                None => tracing::error!(model, "verify asked for a bundle that is not the current job's"),
            },
            Effect::Stage { model: digest } => edit(p, |s| s.model_mut(model).stage(digest, None)),
            Effect::SelfTest { model: digest } => {
                if let Some(bundle) = job.map(|j| j.bundle()) {
                    p.self_test(model, bundle, digest);
                }
            }
            Effect::StartShadow { sample_percent } => {
                edit(p, |s| s.model_mut(model).shadow_percent = Some(sample_percent))
            }
            Effect::StopShadow => edit(p, |s| s.model_mut(model).stop_shadow()),
            Effect::Activate { model: digest, mem_bytes } => {
                edit(p, |s| s.model_mut(model).activate(digest, mem_bytes));
                p.await_active(model, digest);
            }
            Effect::RollBack => {
                edit(p, |s| {
                    let m = s.model_mut(model);
                    // Only an activation that happened is undone: a crash between entering `Activating`
                    // and the switch left the model of before serving, and it stays.
                    if undoing.is_some() && m.active_digest() == undoing {
                        m.roll_back();
                    } else {
                        m.discard_candidate();
                    }
                });
                p.announce();
            }
            Effect::Revert => {
                let mut back = None;
                edit(p, |s| back = s.model_mut(model).revert());
                if back.is_none() {
                    tracing::warn!(model, "revert asked, but no previous model is kept");
                }
                p.announce();
            }
            Effect::Commit { sequence } => {
                let bundle = job.map(|j| j.bundle());
                edit(p, |s| s.model_mut(model).commit(sequence));
                if let Some(b) = bundle {
                    p.discard_staging(model, &b);
                }
                p.announce();
            }
            Effect::Remove => {
                edit(p, |s| s.model_mut(model).remove());
                p.announce();
            }
            Effect::DiscardStaging { bundle } => {
                p.discard_staging(model, &bundle);
                edit(p, |s| {
                    if let Some(m) = s.models.get_mut(model) {
                        m.discard_candidate();
                    }
                });
            }
        }
    }

    /// What the watch judges: the model's figures since activation, and its self-test re-run at the start
    /// of the watch and every minute.
    fn health(&mut self, p: &mut impl Platform, model: &str) -> Health {
        let w = p.watch(model);
        let now = p.now_ms();
        let last = self.last_selftest_ms.entry(model.to_owned()).or_insert(0);
        let mut selftest_ok = true;
        if now >= last.saturating_add(WATCH_SELFTEST_EVERY_MS) {
            *last = now;
            selftest_ok = p.self_test_active(model);
        }
        Health { requests: w.requests, errors: w.errors, p95_us: w.p95_us, selftest_ok }
    }
}

/// `m`'s job when it is fetching `bundle`.
fn fetching(m: &Machine, bundle: Digest) -> Option<&crate::update::machine::Job> {
    m.state.job.as_ref().filter(|j| j.stage == UpdateStage::Fetching && j.bundle() == bundle)
}

fn edit(p: &mut impl Platform, mut change: impl FnMut(&mut crate::slots::Slots)) {
    if let Err(e) = p.edit_slots(&mut change) {
        tracing::error!(error = %e, "cannot update the slots");
    }
}

/// Every transition goes into the durable telemetry queue, and to `up/events` when online.
fn report(
    p: &mut impl Platform,
    d: &DesiredState,
    from: UpdateStage,
    to: UpdateStage,
    reason: Option<RejectReason>,
    detail: String,
    seq: u64,
) {
    let event = UpdateEvent {
        rollout: d.rollout.clone(),
        model: d.model.clone(),
        version: d.version,
        bundle: d.bundle.digest,
        from,
        to,
        reason,
        detail,
        seq,
    };
    p.record(&event);
    p.publish(Up::Events, Message::Event(event));
}

/// Bytes in chunk `i` of a bundle of `size` bytes cut into `chunk_size` pieces.
pub fn chunk_len(size: u64, chunk_size: u32, i: usize) -> usize {
    let start = i as u64 * u64::from(chunk_size);
    size.saturating_sub(start).min(u64::from(chunk_size)) as usize
}

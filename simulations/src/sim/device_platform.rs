//! The seams of the agent's update shell (`outpost_agent::fleet::platform`) over the simulated world:
//! publishing goes onto the simulated fabric, the disk is in memory (and survives a power loss exactly as
//! far as the agent's files do: the persisted shell state, the slot table, the written chunks), the clock
//! is the device's skewed virtual clock, and slow work (verify, self-test, loading a model) is an event
//! answered after a simulated duration. The shell decides everything; this file only carries it out.
//!
//! The platform borrows the device's disk for one call of the shell and collects what must touch the rest
//! of the world (messages, telemetry records, scheduled work) in order; [`World::with_shell`] applies them
//! when the shell returns.

use super::super::catalog::{Catalog, base, target};
use super::super::telemetry::Body;
use super::super::world::{Ev, Work, World};
use super::{DeviceModel, Slots};
use outpost_agent::fleet::platform::{Clock, Directors, Disk, Fabric, Serving, Sink, Watched, Work as WorkSeam};
use outpost_agent::fleet::shell::{Done, DriverState, Shell};
use outpost_agent::update::machine::Release;
use outpost_protocol::keys::{PrivateKey, PublicKey, private_key_from_seed};
use outpost_protocol::messages::{BundleRef, Message};
use outpost_protocol::telemetry::UpdateEvent;
use outpost_protocol::topics::Up;
use outpost_protocol::{DeviceId, Digest, ModelName, RejectReason};
use std::collections::BTreeMap;
use std::sync::LazyLock;

/// The simulated controller's director key: it signs each desired state for its device, as
/// `outpost serve` does, and the devices' trust policy names it, so reverts and removals are taken
/// through the shell's real signature check.
pub(in crate::sim) static DIRECTOR: LazyLock<PrivateKey> = LazyLock::new(|| private_key_from_seed([0xd1; 32]));

const VERIFY_MS: u64 = 200;
const SELFTEST_MS: u64 = 500;
const ACTIVATE_MS: u64 = 300;

/// What the agent keeps on its disk.
#[derive(Debug, Clone)]
pub struct SimDisk {
    /// `update.json`: the shell's state as last persisted (what a power loss comes back to).
    pub persisted: DriverState,
    /// `slots.json`: written through the agent's own slot transitions.
    pub slots: outpost_agent::slots::Slots,
    /// The staging files, one per model: which chunks of which bundle are written (each checked against
    /// its digest).
    staging: BTreeMap<String, (Digest, Vec<bool>)>,
    /// The chunk written last (model, index): a power loss may tear it.
    last_chunk: Option<(String, u32)>,
}

impl SimDisk {
    /// A device from the factory: the baseline of every model it was `installed` with verified, active
    /// and committed; the other models absent.
    pub fn factory(catalog: &Catalog, installed: &[bool]) -> SimDisk {
        let mut slots = outpost_agent::slots::Slots::default();
        for m in (0..catalog.models.len() as u8).filter(|m| installed.get(*m as usize) == Some(&true)) {
            let base = &catalog.get(base(m)).running;
            let s = slots.model_mut(base.name.as_str());
            s.activate(base.digest, 0);
            s.commit(base.sequence);
        }
        SimDisk { persisted: DriverState::default(), slots, staging: BTreeMap::new(), last_chunk: None }
    }

    /// The slot table of `model` as release indices.
    pub fn view(&self, catalog: &Catalog, model: &str) -> Slots {
        let Some(m) = self.slots.model(model) else { return Slots::default() };
        Slots {
            active: m.active_digest().and_then(|d| catalog.by_model(&d)),
            candidate: m.candidate_digest().and_then(|d| catalog.by_model(&d)),
            shadow_percent: m.shadow_percent,
        }
    }

    /// The power went while a chunk was being written: it no longer matches its digest.
    pub fn tear_last_chunk(&mut self) {
        if let Some((model, k)) = &self.last_chunk
            && let Some((_, have)) = self.staging.get_mut(model)
        {
            have[*k as usize] = false;
        }
    }
}

/// What the shell asked of the world during one call, applied in order when it returns.
#[derive(Debug)]
enum Out {
    Send(Message),
    Announce,
    Record(UpdateEvent),
    Work(u64, Work),
}

/// The platform for one call of the shell.
pub(in crate::sim) struct SimPlatform<'a> {
    device: DeviceId,
    now_ms: u64,
    disk: &'a mut SimDisk,
    catalog: &'a Catalog,
    /// Each model's traffic and behaviour on this device (the watch's figures, the self-test's answer).
    models: &'a [DeviceModel],
    out: Vec<Out>,
}

impl Clock for SimPlatform<'_> {
    fn now_ms(&self) -> u64 {
        self.now_ms
    }
}

impl Directors for SimPlatform<'_> {
    fn device(&self) -> Option<&DeviceId> {
        Some(&self.device)
    }
    fn director_keys(&self) -> Vec<PublicKey> {
        vec![DIRECTOR.verifying_key()]
    }
}

impl Fabric for SimPlatform<'_> {
    fn publish(&mut self, _kind: Up, msg: Message) {
        self.out.push(Out::Send(msg));
    }
    fn announce(&mut self) {
        self.out.push(Out::Announce);
    }
}

impl Disk for SimPlatform<'_> {
    fn save_state(&mut self, state: DriverState) -> Result<(), String> {
        self.disk.persisted = state;
        Ok(())
    }

    fn edit_slots(&mut self, change: &mut dyn FnMut(&mut outpost_agent::slots::Slots)) -> Result<(), String> {
        change(&mut self.disk.slots);
        Ok(())
    }

    fn active_release(&self, model: &str) -> Option<(ModelName, u64)> {
        let digest = self.disk.slots.active_digest(model)?;
        let running = &self.catalog.get(self.catalog.by_model(&digest)?).running;
        Some((running.name.clone(), running.sequence))
    }

    fn prepare_staging(&mut self, model: &str, bundle: &BundleRef) -> Result<(), String> {
        self.disk.staging.insert(model.to_owned(), (bundle.digest, vec![false; bundle.chunks.len()]));
        self.disk.last_chunk = None;
        Ok(())
    }

    fn write_chunk(&mut self, model: &str, bundle: &BundleRef, index: u32, _data: &[u8]) -> Result<(), String> {
        match self.disk.staging.get_mut(model) {
            Some((b, have)) if *b == bundle.digest => {
                have[index as usize] = true;
                self.disk.last_chunk = Some((model.to_owned(), index));
                Ok(())
            }
            _ => Err("no staging file for this bundle".into()),
        }
    }

    fn check_staging(&mut self, model: &str, bundle: &BundleRef) -> Vec<bool> {
        match self.disk.staging.get(model) {
            Some((b, have)) if *b == bundle.digest => have.clone(),
            _ => vec![],
        }
    }

    fn discard_staging(&mut self, model: &str, bundle: &Digest) {
        if self.disk.staging.get(model).is_some_and(|(b, _)| b == bundle) {
            self.disk.staging.remove(model);
        }
    }
}

impl WorkSeam for SimPlatform<'_> {
    fn verify(&mut self, model: &str, bundle: &BundleRef) {
        self.out.push(Out::Work(VERIFY_MS, Work::Verify { model: model.to_owned(), bundle: bundle.digest }));
    }
    fn self_test(&mut self, model: &str, bundle: Digest, digest: Digest) {
        self.out.push(Out::Work(SELFTEST_MS, Work::SelfTest { model: model.to_owned(), bundle, digest }));
    }
}

impl Serving for SimPlatform<'_> {
    fn await_active(&mut self, model: &str, digest: Digest) {
        self.out.push(Out::Work(ACTIVATE_MS, Work::Activate { model: model.to_owned(), digest }));
    }
    fn watch(&mut self, model: &str) -> Watched {
        self.catalog.index(model).map_or(Watched::default(), |m| watched(&self.models[m as usize], self.catalog))
    }
    /// The serving model passes its self-test vectors unless it is the release and fails them here.
    fn self_test_active(&mut self, model: &str) -> bool {
        self.catalog.index(model).is_none_or(|m| {
            let dm = &self.models[m as usize];
            !(dm.selftest_fails && dm.slots.active == Some(target(m)))
        })
    }
}

impl Sink for SimPlatform<'_> {
    fn record(&mut self, event: &UpdateEvent) {
        self.out.push(Out::Record(event.clone()));
    }
}

impl World {
    /// Runs one call of the device's shell over the simulated platform, then applies what it asked for:
    /// slot bookkeeping, messages, telemetry records and the slow work, in the order the shell asked.
    pub(in crate::sim) fn with_shell(&mut self, dev: u32, call: impl FnOnce(&mut Shell, &mut SimPlatform<'_>)) {
        // Traffic so far was served by the slots as they were.
        self.serve(dev);
        let now = self.now_ms();
        let d = &mut self.devices[dev as usize];
        let mut p = SimPlatform {
            device: d.id.clone(),
            now_ms: d.clock_ms(now),
            disk: &mut d.disk,
            catalog: &self.catalog,
            models: &d.models,
            out: Vec::new(),
        };
        call(&mut d.shell, &mut p);
        let out = std::mem::take(&mut p.out);
        for m in 0..self.catalog.models.len() as u8 {
            let view = self.devices[dev as usize].disk.view(&self.catalog, self.catalog.models[m as usize].as_str());
            self.set_slots(dev, m, view);
        }
        let boot = self.devices[dev as usize].boot;
        for o in out {
            match o {
                Out::Send(m) => self.dev_send(dev, m),
                Out::Announce => self.announce(dev),
                Out::Record(e) => self.append(dev, Body::Update(Box::new(e))),
                Out::Work(after, work) => self.q.after(after, Ev::Work { dev, boot, work }),
            }
        }
        self.ensure_tick(dev);
    }

    /// Slow work finished: its answer goes to the shell (which drops it if the job moved on).
    pub(in crate::sim) fn device_work_done(&mut self, dev: u32, boot: u32, work: Work) {
        let d = &self.devices[dev as usize];
        if d.boot != boot || !d.powered {
            return; // The power went while this was under way; the restart redoes it.
        }
        let (model, done) = match work {
            Work::Verify { model, bundle } => {
                let result = self.verify(dev, &model, &bundle);
                (model, Done::Verified { bundle, result })
            }
            Work::SelfTest { model, bundle, digest } => {
                let fails = self.catalog.index(&model).is_some_and(|m| {
                    digest == self.catalog.get(target(m)).running.digest && d.models[m as usize].selftest_fails
                });
                let result = if fails {
                    Err((
                        RejectReason::SelfTestFailed,
                        "self-test vector 1: output differs beyond the tolerance".into(),
                    ))
                } else {
                    Ok(())
                };
                (model, Done::SelfTested { bundle, result })
            }
            Work::Activate { model, digest } => (model, Done::Activated { digest, result: Ok(()) }),
        };
        let m = self.catalog.index(&model);
        self.for_model(dev, m, |w| w.with_shell(dev, |s, p| s.complete(p, &model, done)));
    }

    /// The checks of `protocol::verify` that the simulated bundles can fail: completeness and digest,
    /// the release-key signature, and anti-rollback against the floor. Success stores the model and
    /// records the release as verified on this device.
    fn verify(&mut self, dev: u32, model: &str, bundle: &Digest) -> Result<Release, (RejectReason, String)> {
        let skip_signature = self.scenario.faults.skip_signature_check;
        let d = &self.devices[dev as usize];
        let complete = d.disk.staging.get(model).is_some_and(|(b, have)| b == bundle && have.iter().all(|h| *h));
        if !complete {
            return Err((RejectReason::PayloadDigestMismatch, "the fetched bundle does not match its digest".into()));
        }
        let r = self.catalog.by_bundle(bundle).ok_or((RejectReason::Malformed, "unknown bundle".into()))?;
        let info = self.catalog.get(r);
        if !info.signed && !skip_signature {
            return Err((
                RejectReason::UnknownKey,
                "the manifest is signed by no release key of the trust policy".into(),
            ));
        }
        let floor = d.disk.slots.floor(model);
        if info.running.sequence <= floor {
            return Err((
                RejectReason::Rollback,
                format!("sequence {} is at or below the floor {floor}", info.running.sequence),
            ));
        }
        let (running, signed) = (info.running.clone(), info.signed);
        if signed {
            self.dev(dev).verified |= 1 << r;
        }
        Ok(Release {
            name: running.name,
            version: running.version,
            sequence: running.sequence,
            model: running.digest,
            mem_bytes: 0,
        })
    }
}

/// The watch's figures: the traffic the model's active release served since its activation.
fn watched(dm: &DeviceModel, catalog: &Catalog) -> Watched {
    let p95_us = dm.slots.active.map_or(0, |r| catalog.get(r).p95_us);
    Watched { requests: dm.watch.requests, errors: dm.watch.errors, p95_us }
}

//! Property test of the agent's update shell (`fleet/shell.rs`: one update machine per model, its
//! effects performed through the platform seams) against a simple model of the slots. Random sequences
//! of what a device can meet, honest or hostile: desired states (lying about the sequence, naming another
//! model's bundle, reverts, removals), withdrawals, good and corrupt chunks, verifications that pass or
//! fail, self-tests, loads that succeed or fail, health, time, restarts from the persisted state, and
//! writes of the state that fail. After every event:
//! - a model's floor never drops, and never exceeds the highest sequence verified for that model;
//! - the active model of every name passed verification as that name;
//! - a switch that is not an activation goes back to the `previous` of just before, and the model it left
//!   never serves again without a fresh activation (a revert never bounces back);
//! - an event about one model changes nothing of the other's (slots or update machine);
//! - a desired state asking for an install (activate or shadow) never takes a model off or switches it:
//!   one arriving while an activated model is watched waits for the watch to end;
//! - a step whose state cannot be persisted is undone and performs nothing;
//! - a revert or removal that is not the director's (unsigned, or signed by another key) changes nothing:
//!   neither the slots nor the update machine of its model.

use outpost_agent::fleet::platform::{Clock, Directors, Disk, Fabric, Serving, Sink, Watched, Work};
use outpost_agent::fleet::shell::{Done, DriverState, Shell};
use outpost_agent::slots::Slots;
use outpost_agent::update::machine::{Release, UpdateState};
use outpost_protocol::director::SignedDesired;
use outpost_protocol::keys::{PrivateKey, PublicKey, private_key_from_seed};
use outpost_protocol::messages::{BundleRef, DesiredState, Message, Mode, Watch};
use outpost_protocol::telemetry::{UpdateEvent, UpdateStage};
use outpost_protocol::topics::Up;
use outpost_protocol::{DeviceId, Digest, ModelName, RejectReason, Version};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

const MODELS: [&str; 2] = ["detector", "classifier"];
const RELEASES: u64 = 3;

#[derive(Debug, Clone)]
struct Rel {
    name: ModelName,
    seq: u64,
    model: Digest,
    bundle: BundleRef,
    chunks: Vec<Vec<u8>>,
}

fn catalog() -> Vec<Rel> {
    let mut out = Vec::new();
    for name in MODELS {
        for seq in 1..=RELEASES {
            let chunks: Vec<Vec<u8>> = (0..2).map(|i| format!("{name}-{seq}-chunk-{i:02}").into_bytes()).collect();
            let all = chunks.concat();
            out.push(Rel {
                name: ModelName::new(name).unwrap(),
                seq,
                model: Digest::of(format!("model {name} {seq}").as_bytes()),
                bundle: BundleRef {
                    digest: Digest::of(&all),
                    size: all.len() as u64,
                    chunk_size: chunks[0].len() as u32,
                    chunks: chunks.iter().map(|c| Digest::of(c)).collect(),
                },
                chunks,
            });
        }
    }
    out
}

/// An in-memory device: the disk, the pending slow work, and the record of what the shell did.
#[derive(Default)]
struct Plat {
    now: u64,
    slots: Slots,
    persisted: DriverState,
    fail_saves: bool,
    save_failed: bool,
    /// Staging files by (model, bundle).
    staging: BTreeMap<(String, Digest), Vec<bool>>,
    verify: BTreeMap<String, Digest>,
    self_test: BTreeMap<String, (Digest, Digest)>,
    loading: BTreeMap<String, Digest>,
    /// `await_active` calls during the current event: the activations.
    activated: Vec<(String, Digest)>,
    health: BTreeMap<String, bool>,
}

fn director() -> PrivateKey {
    private_key_from_seed([3; 32])
}

fn device() -> DeviceId {
    DeviceId::new("dev-1").unwrap()
}

impl Directors for Plat {
    fn device(&self) -> Option<&DeviceId> {
        static DEVICE: std::sync::LazyLock<DeviceId> = std::sync::LazyLock::new(device);
        Some(&DEVICE)
    }
    fn director_keys(&self) -> Vec<PublicKey> {
        vec![director().verifying_key()]
    }
}

impl Clock for Plat {
    fn now_ms(&self) -> u64 {
        self.now
    }
}
impl Fabric for Plat {
    fn publish(&mut self, _: Up, _: Message) {}
    fn announce(&mut self) {}
}
impl Disk for Plat {
    fn save_state(&mut self, state: DriverState) -> Result<(), String> {
        if self.fail_saves {
            self.save_failed = true;
            return Err("disk full".into());
        }
        self.persisted = state;
        Ok(())
    }
    fn edit_slots(&mut self, change: &mut dyn FnMut(&mut Slots)) -> Result<(), String> {
        change(&mut self.slots);
        Ok(())
    }
    fn active_release(&self, model: &str) -> Option<(ModelName, u64)> {
        let d = self.slots.active_digest(model)?;
        catalog().into_iter().find(|r| r.model == d).map(|r| (r.name, r.seq))
    }
    fn prepare_staging(&mut self, model: &str, b: &BundleRef) -> Result<(), String> {
        self.staging.insert((model.into(), b.digest), vec![false; b.chunks.len()]);
        Ok(())
    }
    fn write_chunk(&mut self, model: &str, b: &BundleRef, index: u32, _: &[u8]) -> Result<(), String> {
        let have = self.staging.get_mut(&(model.into(), b.digest)).ok_or("no staging file")?;
        have[index as usize] = true;
        Ok(())
    }
    fn check_staging(&mut self, model: &str, b: &BundleRef) -> Vec<bool> {
        self.staging.get(&(model.into(), b.digest)).cloned().unwrap_or_default()
    }
    fn discard_staging(&mut self, model: &str, b: &Digest) {
        self.staging.remove(&(model.into(), *b));
    }
}
impl Work for Plat {
    fn verify(&mut self, model: &str, b: &BundleRef) {
        self.verify.insert(model.into(), b.digest);
    }
    fn self_test(&mut self, model: &str, bundle: Digest, digest: Digest) {
        self.self_test.insert(model.into(), (bundle, digest));
    }
}
impl Serving for Plat {
    fn await_active(&mut self, model: &str, digest: Digest) {
        self.activated.push((model.into(), digest));
        self.loading.insert(model.into(), digest);
    }
    fn watch(&mut self, model: &str) -> Watched {
        let bad = self.health.get(model).copied().unwrap_or(false);
        Watched { requests: 1_000, errors: if bad { 500 } else { 0 }, p95_us: 100 }
    }
    fn self_test_active(&mut self, _: &str) -> bool {
        true
    }
}
impl Sink for Plat {
    fn record(&mut self, _: &UpdateEvent) {}
}

/// `None`: the director's statement, signed for the device. Every lie comes from an attacker, who has no
/// director key: unsigned, or signed with a key of its own.
#[derive(Debug, Clone, PartialEq)]
enum Lie {
    None,
    SequenceMax,
    /// The bundle of the other model's release of the same number.
    ForeignBundle,
    /// The director's request, without its signature.
    Unsigned,
    /// Signed by a key the trust policy does not name.
    ForgedKey,
}

#[derive(Debug, Clone)]
enum Ev {
    Desired { m: usize, rel: u64, lie: Lie, mode: u8 },
    Withdraw { m: usize },
    Chunks { m: usize, corrupt: bool },
    Verified { m: usize, honest: bool },
    SelfTested { m: usize, ok: bool },
    Loaded { m: usize, ok: bool },
    Health { m: usize, bad: bool },
    Tick { ms: u64 },
    Restart,
    FailSaves(bool),
}

impl Ev {
    /// The model an event is about (none: it concerns every model).
    fn model(&self) -> Option<usize> {
        match self {
            Ev::Desired { m, .. }
            | Ev::Withdraw { m }
            | Ev::Chunks { m, .. }
            | Ev::Verified { m, .. }
            | Ev::SelfTested { m, .. }
            | Ev::Loaded { m, .. } => Some(*m),
            _ => None,
        }
    }
}

fn event() -> impl Strategy<Value = Ev> {
    let m = 0..MODELS.len();
    let lie = prop_oneof![
        6 => Just(Lie::None),
        1 => Just(Lie::SequenceMax),
        1 => Just(Lie::ForeignBundle),
        1 => Just(Lie::Unsigned),
        1 => Just(Lie::ForgedKey),
    ];
    prop_oneof![
        4 => (m.clone(), 1..=RELEASES, lie, 0u8..8).prop_map(|(m, rel, lie, mode)| Ev::Desired { m, rel, lie, mode }),
        1 => m.clone().prop_map(|m| Ev::Withdraw { m }),
        4 => (m.clone(), prop::bool::weighted(0.15)).prop_map(|(m, corrupt)| Ev::Chunks { m, corrupt }),
        4 => (m.clone(), prop::bool::weighted(0.8)).prop_map(|(m, honest)| Ev::Verified { m, honest }),
        3 => (m.clone(), prop::bool::weighted(0.8)).prop_map(|(m, ok)| Ev::SelfTested { m, ok }),
        3 => (m.clone(), prop::bool::weighted(0.85)).prop_map(|(m, ok)| Ev::Loaded { m, ok }),
        1 => (m, any::<bool>()).prop_map(|(m, bad)| Ev::Health { m, bad }),
        4 => prop_oneof![Just(1_000u64), Just(6_000), Just(61_000), Just(400_000)].prop_map(|ms| Ev::Tick { ms }),
        1 => Just(Ev::Restart),
        1 => any::<bool>().prop_map(Ev::FailSaves),
    ]
}

struct World {
    cat: Vec<Rel>,
    shell: Shell,
    p: Plat,
    /// (name, model digest) of every release that passed verification.
    verified: BTreeSet<(String, Digest)>,
    /// Per model: the model a rollback or revert left, which may serve again only through an activation.
    left: BTreeMap<String, Digest>,
}

impl World {
    fn new() -> World {
        World {
            cat: catalog(),
            shell: Shell::new(DriverState::default(), None),
            p: Plat { now: 1_000_000, ..Plat::default() },
            verified: BTreeSet::new(),
            left: BTreeMap::new(),
        }
    }

    fn rel(&self, m: usize, seq: u64) -> &Rel {
        self.cat.iter().find(|r| r.name.as_str() == MODELS[m] && r.seq == seq).unwrap()
    }

    fn apply(&mut self, ev: &Ev) {
        let (shell, p) = (&mut self.shell, &mut self.p);
        let name = |m: usize| MODELS[m].to_owned();
        match ev.clone() {
            Ev::Desired { m, rel, lie, mode } => {
                let r = self.cat.iter().find(|r| r.name.as_str() == MODELS[m] && r.seq == rel).unwrap();
                let mut d = DesiredState {
                    model: r.name.clone(),
                    version: Version::new(1, rel as u32, 0),
                    sequence: r.seq,
                    bundle: r.bundle.clone(),
                    rollout: Some(format!("r-{m}-{rel}")),
                    mode: match mode {
                        0..=4 => Mode::Activate,
                        5 => Mode::Shadow { secs: 30, sample_percent: 10 },
                        6 => Mode::Revert,
                        _ => Mode::Remove,
                    },
                    issued_at: p.now / 1000,
                    watch: Watch { secs: 120, max_error_ppm: 10_000, max_p95_us: 0, min_requests: 10, max_restarts: 2 },
                };
                match lie {
                    Lie::None => return shell.directed(p, &SignedDesired::sign(&device(), &d, &director())),
                    Lie::ForgedKey => {
                        let forger = private_key_from_seed([66; 32]);
                        return shell.directed(p, &SignedDesired::sign(&device(), &d, &forger));
                    }
                    Lie::Unsigned => {}
                    Lie::SequenceMax => d.sequence = u64::MAX,
                    Lie::ForeignBundle => {
                        let other = self.cat.iter().find(|o| o.name != r.name && o.seq == rel).unwrap();
                        d.bundle = other.bundle.clone();
                    }
                }
                shell.desired(p, d);
            }
            Ev::Withdraw { m } => shell.withdrawn(p, &ModelName::new(MODELS[m]).unwrap()),
            Ev::Chunks { m, corrupt } => {
                let job = shell.machine(MODELS[m]).and_then(|x| x.state.job.clone());
                let Some(job) = job.filter(|j| j.stage == UpdateStage::Fetching) else { return };
                let Some(r) = self.cat.iter().find(|r| r.bundle.digest == job.bundle()) else { return };
                for (i, c) in r.chunks.iter().enumerate() {
                    let mut data = c.clone();
                    if corrupt && i == 0 {
                        data[0] ^= 0xff;
                    }
                    shell.chunk(p, r.bundle.digest, i as u32, &data);
                }
            }
            Ev::Verified { m, honest } => {
                let Some(bundle) = p.verify.remove(&name(m)) else { return };
                let r = self.cat.iter().find(|r| r.bundle.digest == bundle).unwrap();
                // What `protocol::verify` decides: the manifest's own name and sequence, anti-rollback
                // against the floor of the name the manifest carries.
                let result = if !honest {
                    Err((RejectReason::BadSignature, "forged".into()))
                } else if r.seq <= p.slots.floor(r.name.as_str()) {
                    Err((RejectReason::Rollback, "at or below the floor".into()))
                } else {
                    self.verified.insert((r.name.to_string(), r.model));
                    Ok(Release {
                        name: r.name.clone(),
                        version: Version::new(1, r.seq as u32, 0),
                        sequence: r.seq,
                        model: r.model,
                        mem_bytes: 0,
                    })
                };
                shell.complete(p, MODELS[m], Done::Verified { bundle, result });
            }
            Ev::SelfTested { m, ok } => {
                let Some((bundle, _)) = p.self_test.remove(&name(m)) else { return };
                let result = if ok { Ok(()) } else { Err((RejectReason::SelfTestFailed, "vector 0".into())) };
                shell.complete(p, MODELS[m], Done::SelfTested { bundle, result });
            }
            Ev::Loaded { m, ok } => {
                let Some(digest) = p.loading.remove(&name(m)) else { return };
                let result = if ok { Ok(()) } else { Err("cannot load".into()) };
                shell.complete(p, MODELS[m], Done::Activated { digest, result });
            }
            Ev::Health { m, bad } => {
                p.health.insert(name(m), bad);
            }
            Ev::Tick { ms } => {
                p.now += ms;
                shell.tick(p);
            }
            Ev::Restart => {
                // `kill -9`: what was not persisted is gone, and so is the work under way.
                p.verify.clear();
                p.self_test.clear();
                p.loading.clear();
                *shell = Shell::new(p.persisted.clone(), None);
                shell.restarted(p);
            }
            Ev::FailSaves(on) => p.fail_saves = on,
        }
    }

    fn step(&mut self, ev: &Ev) -> Result<(), TestCaseError> {
        let slots_before = self.p.slots.clone();
        let state_before = self.shell.state();
        let stages_before: Vec<UpdateStage> = MODELS.iter().map(|m| self.shell.stage(m)).collect();
        let work_before =
            (self.p.staging.clone(), self.p.verify.clone(), self.p.self_test.clone(), self.p.loading.clone());
        self.p.activated.clear();
        self.p.save_failed = false;
        self.apply(ev);
        let slots = self.p.slots.clone();

        if self.p.save_failed && !matches!(ev, Ev::Restart) {
            // Undone: no machine moved to another stage (a step without effects, like a chunk mid-window,
            // is not persisted by design: the staging file itself says which chunks are there).
            let stages: Vec<UpdateStage> = MODELS.iter().map(|m| self.shell.stage(m)).collect();
            prop_assert_eq!(&stages, &stages_before, "a step that was not persisted is undone");
            // And performed nothing: no slot switch, no staging file, no work started.
            prop_assert_eq!(&slots, &slots_before, "no slot switch without a persisted state");
            let (staging, verify, self_test, loading) = &work_before;
            // (A checked chunk is written before its step: the restart's staging check finds it either way.)
            let files = |m: &BTreeMap<(String, Digest), Vec<bool>>| m.keys().cloned().collect::<Vec<_>>();
            prop_assert_eq!(files(&self.p.staging), files(staging), "no staging file made or discarded");
            prop_assert!(self.p.verify.iter().all(|(k, v)| verify.get(k) == Some(v)), "no verification started");
            prop_assert!(self.p.self_test.iter().all(|(k, v)| self_test.get(k) == Some(v)), "no self-test started");
            prop_assert!(self.p.loading.iter().all(|(k, v)| loading.get(k) == Some(v)), "no activation started");
        }
        for name in MODELS {
            let (before, after) = (slots_before.model(name), slots.model(name));
            let floor = |s: Option<&outpost_agent::slots::ModelSlots>| s.map_or(0, |m| m.floor);
            prop_assert!(floor(after) >= floor(before), "{name}: floor dropped {} -> {}", floor(before), floor(after));
            let best =
                self.cat.iter().filter(|r| r.name.as_str() == name && self.verified.contains(&(name.into(), r.model)));
            let best = best.map(|r| r.seq).max().unwrap_or(0);
            prop_assert!(floor(after) <= best, "{name}: floor {} above every verified sequence ({best})", floor(after));

            let active = after.and_then(|m| m.active_digest());
            if let Some(a) = active {
                prop_assert!(self.verified.contains(&(name.into(), a)), "{name}: serves {} unverified", a.short());
            }
            let was = before.and_then(|m| m.active_digest());
            let activation = self.p.activated.iter().any(|(n, d)| n == name && Some(*d) == active);
            if active != was {
                if activation {
                    self.left.remove(name);
                } else if let Some(a) = active {
                    prop_assert_eq!(
                        Some(a),
                        before.and_then(|m| m.previous_digest()),
                        "{}: a switch back goes to the previous",
                        name
                    );
                    prop_assert!(self.left.get(name) != Some(&a), "{name}: bounced back to {}", a.short());
                    if let Some(w) = was {
                        self.left.insert(name.into(), w);
                    }
                }
            }
        }
        // Unsigned input may ask, never decide: an install request switches nothing by itself (only a
        // verified activation, the watch's verdict, a revert or a removal do).
        if let Ev::Desired { mode: 0..=5, .. } = ev {
            for name in MODELS {
                let active = |s: &Slots| s.model(name).and_then(|m| m.active_digest());
                prop_assert_eq!(active(&slots_before), active(&slots), "{}: switched by an install request", name);
            }
        }
        // Only the director reverts or removes: an attacker's revert or removal changes nothing of its model.
        if let Ev::Desired { m, lie, mode: 6.., .. } = ev
            && *lie != Lie::None
        {
            let name = MODELS[*m];
            prop_assert_eq!(
                slots_before.model(name),
                slots.model(name),
                "{}: a forged revert or removal switched",
                name
            );
            let state = self.shell.state();
            // (Its refusal is reported, so only the event counter moves.)
            let of = |st: &DriverState| {
                let s = st.models.get(name).cloned().unwrap_or_default();
                UpdateState { event_seq: 0, ..s }
            };
            prop_assert_eq!(of(&state_before), of(&state), "{}: a forged revert or removal moved the machine", name);
        }
        // Independence: an event of one model leaves the other's slots, update machine and staging files as
        // they were. Chunks travel by bundle: when a forged desired state made both models fetch the same
        // bundle, its chunks are for both (each writes its own staging file; the forged job is refused as
        // `desired_mismatch` once verified).
        let bundle_of = |st: &DriverState, m: &str| st.models.get(m).and_then(|s| s.job.as_ref()).map(|j| j.bundle());
        let shared = bundle_of(&state_before, MODELS[0]).is_some()
            && bundle_of(&state_before, MODELS[0]) == bundle_of(&state_before, MODELS[1]);
        if let Some(m) = ev.model().filter(|_| !(shared && matches!(ev, Ev::Chunks { .. }))) {
            let other = MODELS[1 - m];
            prop_assert_eq!(
                slots_before.model(other),
                slots.model(other),
                "{} touched by an event of {}",
                other,
                MODELS[m]
            );
            let state = self.shell.state();
            prop_assert_eq!(state_before.models.get(other), state.models.get(other));
            let theirs = |s: &BTreeMap<(String, Digest), Vec<bool>>| {
                s.iter().filter(|((n, _), _)| n == other).map(|(k, v)| (k.clone(), v.clone())).collect::<Vec<_>>()
            };
            prop_assert_eq!(theirs(&work_before.0), theirs(&self.p.staging), "{}'s staging touched", other);
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, max_shrink_iters: 4_096, ..ProptestConfig::default() })]

    #[test]
    fn the_update_shell_keeps_its_promises_under_any_sequence_of_events(events in prop::collection::vec(event(), 1..120)) {
        let mut w = World::new();
        for ev in &events {
            w.step(ev)?;
        }
    }
}

/// The generator reaches the states the properties are about (a property never exercised proves nothing).
#[test]
fn the_events_reach_commits_reverts_and_both_models() {
    let mut w = World::new();
    let run = |w: &mut World, evs: &[Ev]| {
        for e in evs {
            w.step(e).unwrap();
        }
    };
    let install = |m: usize, rel: u64| {
        vec![
            Ev::Desired { m, rel, lie: Lie::None, mode: 0 },
            Ev::Chunks { m, corrupt: false },
            Ev::Verified { m, honest: true },
            Ev::SelfTested { m, ok: true },
            Ev::Loaded { m, ok: true },
            Ev::Tick { ms: 1_000 },
            Ev::Tick { ms: 400_000 },
        ]
    };
    run(&mut w, &install(0, 1));
    run(&mut w, &install(1, 1));
    run(&mut w, &install(0, 2));
    assert_eq!(w.p.slots.floor("detector"), 2);
    assert_eq!(w.p.slots.floor("classifier"), 1);
    assert_eq!(w.p.slots.active_digest("detector"), Some(w.rel(0, 2).model));
    run(&mut w, &[Ev::Desired { m: 0, rel: 2, lie: Lie::None, mode: 6 }]);
    assert_eq!(w.p.slots.active_digest("detector"), Some(w.rel(0, 1).model), "reverted");
    assert_eq!(w.left.get("detector"), Some(&w.rel(0, 2).model));
    run(&mut w, &[Ev::Desired { m: 0, rel: 3, lie: Lie::None, mode: 6 }]);
    assert_eq!(w.p.slots.active_digest("detector"), Some(w.rel(0, 1).model), "no bounce");
    // A lie about the sequence raises nothing: the verified manifest says 3.
    run(&mut w, &[Ev::Desired { m: 1, rel: 3, lie: Lie::SequenceMax, mode: 0 }, Ev::Chunks { m: 1, corrupt: false }]);
    run(&mut w, &[Ev::Verified { m: 1, honest: true }, Ev::Tick { ms: 400_000 }]);
    assert_eq!(w.p.slots.floor("classifier"), 1);
    assert_eq!(
        w.shell.machine("classifier").unwrap().state.job.as_ref().unwrap().outcome.as_ref().unwrap().0,
        RejectReason::DesiredMismatch
    );
}

/// A first install under watch meets a forged desired state (a genuine bundle of the other model under
/// this model's name): the install finishes its watch and keeps serving; the forged one starts after it
/// and is refused once verified. Before the fix the watched model was rolled back to nothing.
#[test]
fn a_forged_desired_state_during_a_first_install_watch_leaves_the_model_serving() {
    let mut w = World::new();
    let run = |w: &mut World, evs: &[Ev]| {
        for e in evs {
            w.step(e).unwrap();
        }
    };
    run(
        &mut w,
        &[
            Ev::Desired { m: 0, rel: 1, lie: Lie::None, mode: 0 },
            Ev::Chunks { m: 0, corrupt: false },
            Ev::Verified { m: 0, honest: true },
            Ev::SelfTested { m: 0, ok: true },
            Ev::Loaded { m: 0, ok: true },
            Ev::Tick { ms: 1_000 },
        ],
    );
    let first = w.rel(0, 1).model;
    assert_eq!(w.shell.stage("detector"), UpdateStage::Watching);
    let previous = w.p.slots.model("detector").and_then(|m| m.previous_digest());
    assert_eq!(previous, None, "a first install: nothing to roll back to");
    run(&mut w, &[Ev::Desired { m: 0, rel: 2, lie: Lie::ForeignBundle, mode: 0 }]);
    assert_eq!(w.shell.stage("detector"), UpdateStage::Watching, "the watch goes on");
    assert_eq!(w.p.slots.active_digest("detector"), Some(first));
    // A restart while it waits loses neither the watch nor what waits.
    run(&mut w, &[Ev::Restart, Ev::Tick { ms: 400_000 }]);
    assert_eq!(w.p.slots.floor("detector"), 1, "committed by its own watch");
    assert_eq!(w.shell.stage("detector"), UpdateStage::Fetching, "the waiting desired state started");
    run(&mut w, &[Ev::Chunks { m: 0, corrupt: false }, Ev::Verified { m: 0, honest: true }]);
    let job = w.shell.machine("detector").unwrap().state.job.clone().unwrap();
    assert_eq!(job.outcome.unwrap().0, RejectReason::DesiredMismatch);
    assert_eq!(w.p.slots.active_digest("detector"), Some(first), "still serving");
}

/// A forged desired state tells the classifier to fetch the detector's bundle while the detector fetches
/// it: each model stages into its own file, so the forged job's end (refused, withdrawn) never discards
/// the detector's staging, and the detector's install completes. Before per-model staging files the
/// classifier's discard deleted the shared file and the detector's fetch could never finish.
#[test]
fn a_forged_fetch_of_another_models_bundle_never_disturbs_that_models_staging() {
    let mut w = World::new();
    let run = |w: &mut World, evs: &[Ev]| {
        for e in evs {
            w.step(e).unwrap();
        }
    };
    // The classifier's release 1 under a lie: the detector's bundle of release 1.
    run(&mut w, &[Ev::Desired { m: 0, rel: 1, lie: Lie::None, mode: 0 }]);
    run(&mut w, &[Ev::Desired { m: 1, rel: 1, lie: Lie::ForeignBundle, mode: 0 }]);
    let bundle = w.rel(0, 1).bundle.digest;
    assert!(w.p.staging.contains_key(&("detector".into(), bundle)));
    assert!(w.p.staging.contains_key(&("classifier".into(), bundle)));
    // The classifier's job is withdrawn: only its own staging file goes.
    run(&mut w, &[Ev::Withdraw { m: 1 }]);
    assert!(!w.p.staging.contains_key(&("classifier".into(), bundle)));
    assert!(w.p.staging.contains_key(&("detector".into(), bundle)), "the detector's staging stays");
    run(
        &mut w,
        &[
            Ev::Chunks { m: 0, corrupt: false },
            Ev::Verified { m: 0, honest: true },
            Ev::SelfTested { m: 0, ok: true },
            Ev::Loaded { m: 0, ok: true },
            Ev::Tick { ms: 1_000 },
            Ev::Tick { ms: 400_000 },
        ],
    );
    assert_eq!(w.p.slots.active_digest("detector"), Some(w.rel(0, 1).model));
    assert_eq!(w.p.slots.floor("detector"), 1);
}

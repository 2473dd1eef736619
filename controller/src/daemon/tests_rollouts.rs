//! The rollout shell under concurrency, with a real store (redb in a temporary folder) and a real fleet
//! client on the embedded broker: operator verbs and evaluation ticks take turns, so no verb is lost, and
//! an evaluation that only refreshed its evidence is not written to disk.

use super::enrollment::Identity;
use super::fleet::{Fleet, now};
use super::rollouts::Rollouts;
use super::store::{Store, Table};
use crate::rollout::testkit::{OLD, id, running, spec};
use crate::rollout::{Decision, Phase, Rollout, Verb};
use outpost_protocol::messages::Hello;
use outpost_protocol::{Arch, Version};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

const DEVICES: usize = 40;

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("outpost-daemon-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn director() -> outpost_protocol::keys::PrivateKey {
    outpost_protocol::keys::private_key_from_seed([3; 32])
}

fn hello(i: usize, agent: Version) -> Hello {
    Hello {
        device: id(i),
        arch: Arch::X86_64,
        agent_version: agent,
        labels: vec![],
        running: vec![running(OLD)],
        boot_id: 1,
        max_packet: 1 << 20,
    }
}

/// A daemon's rollout shell over `DEVICES` devices on the old release, with rollout `r1` (a one-device
/// canary, then everyone; an hour's bake) stored before it loads, as after a restart.
fn daemon(name: &str) -> (Arc<Rollouts>, Arc<Fleet>, Arc<Store>) {
    let store = Arc::new(Store::open(&tempdir(name)).unwrap());
    let controller = super::broker::Controller { client_id: format!("ctl-{name}"), password: "test".into() };
    let broker = super::broker::start("127.0.0.1:0".parse().unwrap(), 1 << 20, controller.clone()).unwrap();
    let mut options = rumqttc::MqttOptions::new(&controller.client_id, broker.ip().to_string(), broker.port());
    options.set_credentials(&controller.client_id, &controller.password);
    let fleet = Fleet::start(options, store.clone(), Identity::new(None, vec![]), director()).unwrap();
    for i in 0..DEVICES {
        fleet.update(&id(i), |d| d.hello(hello(i, Version::new(1, 0, 0)), now()));
    }
    let rollout = Rollout::new(spec(&["1", "100%"], 3_600)).unwrap();
    store.put(Table::Rollouts, "r1", &rollout).unwrap();
    let rollouts = Rollouts::load(store.clone(), fleet.clone()).unwrap();
    (rollouts, fleet, store)
}

fn stored(store: &Store) -> Rollout {
    store.get(Table::Rollouts, "r1").unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_resume_hammered_during_ticks_are_never_lost() {
    let (rollouts, fleet, store) = daemon("hammer");
    rollouts.tick().await;
    assert_eq!(rollouts.get("r1").unwrap().state.phase, Phase::Progressing);
    let stop = Arc::new(AtomicBool::new(false));
    // A busy fleet: one device's agent version flips below and above the release's minimum, so the
    // selection (and with it the evidence) changes between evaluations and every tick has news to store.
    let busy = {
        let (fleet, stop) = (fleet.clone(), stop.clone());
        tokio::spawn(async move {
            let mut flip = false;
            while !stop.load(Ordering::Relaxed) {
                flip = !flip;
                let agent = if flip { Version::new(0, 0, 1) } else { Version::new(1, 0, 0) };
                fleet.update(&id(DEVICES - 1), |d| d.hello(hello(DEVICES - 1, agent), now()));
                tokio::task::yield_now().await;
            }
        })
    };
    let ticker = {
        let (rollouts, stop) = (rollouts.clone(), stop.clone());
        tokio::spawn(async move {
            let mut ticks = 0u64;
            while !stop.load(Ordering::Relaxed) {
                rollouts.tick().await;
                ticks += 1;
                tokio::task::yield_now().await;
            }
            ticks
        })
    };
    const ROUNDS: usize = 150;
    for i in 0..ROUNDS {
        for verb in [Verb::Pause, Verb::Resume] {
            if let Err(e) = rollouts.command("r1", verb, "alice").await {
                stop.store(true, Ordering::Relaxed);
                panic!("round {i}: {} was refused, so an earlier verb was lost: {e}", verb.name());
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let ticks = ticker.await.unwrap();
    busy.await.unwrap();
    assert!(ticks > 0, "the ticker ran");
    let r = rollouts.get("r1").unwrap();
    let count = |want: Decision| r.state.history.iter().filter(|e| e.decision == want).count();
    assert_eq!((count(Decision::Paused), count(Decision::Resumed)), (ROUNDS, ROUNDS), "every verb is in the history");
    assert_eq!(r.state.phase, Phase::Progressing);
    assert_eq!(stored(&store).state.history, r.state.history, "the stored rollout has every verb too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evaluations_that_only_refresh_evidence_are_not_stored_and_decisions_are_stored_at_once() {
    let (rollouts, _fleet, store) = daemon("quiet");
    rollouts.tick().await;
    let first = stored(&store);
    let first_at = first.state.last_evidence.as_ref().unwrap().at;
    // The next second: the evidence is judged again (and stamped), nothing else changed.
    while now() == first_at {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    rollouts.tick().await;
    let live = rollouts.get("r1").unwrap();
    assert!(live.state.last_evidence.as_ref().unwrap().at > first_at, "status shows the fresh evidence");
    assert_eq!(stored(&store), first, "an evaluation that decided nothing rewrote the stored rollout");
    rollouts.command("r1", Verb::Pause, "alice").await.unwrap();
    assert!(matches!(stored(&store).state.phase, Phase::Paused { .. }), "a verb is stored at once");
}

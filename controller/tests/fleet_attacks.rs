//! Issue 14's attacks on what devices report and fetch, played by plain MQTT clients speaking the protocol
//! against a real `outpost serve` with bundles made by the `outpost` CLI: a device fetching bundles it was
//! not assigned.

#[path = "support/serve.rs"]
mod serve;

use outpost_protocol::messages::{ChunkRequest, Hello, Message, RunningModel};
use outpost_protocol::topics::{self, Down, Up};
use outpost_protocol::{Arch, DeviceId, Digest, ModelName, Version};
use serve::*;
use std::path::Path;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_outpost"))
}

fn id(s: &str) -> DeviceId {
    DeviceId::new(s).unwrap()
}

/// The bundle's digest and the model's (what a device reports running and measures windows for).
fn digests(bundle: &Path) -> (Digest, Digest) {
    let bytes = std::fs::read(bundle).unwrap();
    let inspected = outpost_protocol::bundle::inspect(&bytes, &Default::default()).unwrap();
    (Digest::of(&bytes), inspected.manifest.payload.model_sha256)
}

fn hello(device: &str, running: Option<RunningModel>, boot_id: u64) -> Message {
    let running = running.into_iter().collect();
    Message::Hello(Hello {
        device: id(device),
        arch: Arch::X86_64,
        agent_version: Version::new(0, 1, 0),
        labels: vec![],
        running,
        boot_id,
        max_packet: 1 << 20,
    })
}

/// Says hello with `boot_id` and waits until the registry has it: every message the device sent before
/// has been handled (one handler, in order).
async fn sync(ctl: &Serve, dev: &Plain, name: &str, running: Option<RunningModel>, boot_id: u64) {
    greet(ctl, dev, name, &hello(name, running, boot_id), boot_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_gets_chunks_only_of_the_bundle_its_desired_state_names() {
    let dir = tempdir("fetch");
    let rel = release(bin(), &dir, &[("1.0.0", 1, "v1"), ("2.0.0", 2, "v2")]);
    let trust = [rel.policy.display().to_string(), rel.root_pub.display().to_string()];
    let ctl = Serve::start(bin(), &dir, &["--trust", &trust[0], "--root-pub", &trust[1]]);
    for b in &rel.bundles {
        ctl.run(&["bundle", "push", &b.display().to_string()]);
    }
    let ((v1, _), (v2, _)) = (digests(&rel.bundles[0]), digests(&rel.bundles[1]));
    let mut dev = Plain::device(ctl.mqtt, "dev-f");
    assert!(dev.outcome().await);
    dev.subscribe("outpost/v1/devices/dev-f/down/#").await;
    sync(&ctl, &dev, "dev-f", None, 1).await;
    let fetch = topics::up(&id("dev-f"), Up::Fetch);
    let ask = |bundle| Message::ChunkRequest(ChunkRequest { bundle, first: 0, count: 64 });

    // Nothing assigned yet: the request is refused (before: the whole bundle came back).
    dev.publish(&fetch, &ask(v1)).await;
    sync(&ctl, &dev, "dev-f", None, 2).await;
    ctl.run(&["rollout", "start", "--bundle", "digits@1.0.0", "--waves", "100%", "--bake", "1h", "--id", "r1"]);
    let desired = topics::down(&id("dev-f"), &Down::Desired(ModelName::new("digits").unwrap()));
    let (d, early) = dev.until_on(&desired, 20).await;
    let Message::SignedDesired(d) = d else { panic!("not a signed desired state") };
    let d = d.request().unwrap().desired;
    assert_eq!(d.bundle.digest, v1);
    let early: Vec<&String> = early.iter().map(|(t, _)| t).collect();
    assert!(early.is_empty(), "chunks of an unassigned bundle were served: {early:?}");

    // Assigned v1: another pushed bundle is still refused, v1 is served, each chunk once.
    dev.publish(&fetch, &ask(v2)).await;
    dev.publish(&fetch, &ask(v1)).await;
    let chunk = topics::down(&id("dev-f"), &Down::Chunk);
    let total = d.bundle.chunks.len();
    for i in 0..total {
        let Message::Chunk(c) = dev.next_on(&chunk, 20).await else { panic!("not a chunk") };
        assert_eq!((c.bundle, c.index as usize), (v1, i), "only the assigned bundle, in order");
        assert_eq!(Digest::of(&c.data), d.bundle.chunks[i]);
    }
    sync(&ctl, &dev, "dev-f", None, 3).await;
    assert!(dev.drain().is_empty(), "nothing else was served");
    let audit = serde_json::to_string(&ctl.audit()).unwrap();
    assert!(audit.contains("bundle not assigned"), "{audit}");
}

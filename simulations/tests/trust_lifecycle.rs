//! The trust lifecycle end to end, with real parts: mosquitto (or the quick start's embedded broker), the
//! `outpost` binary (`serve` and the operator's CLI) and real agents. A release key is rotated and revoked
//! across a fleet (a bundle signed only by the revoked key is refused by every device after the push); the
//! root rotates twice while a device is offline for both; a device whose policy expired while it was
//! offline recovers and updates again; forged trust updates and forged or replayed version reports are
//! refused, each with its reason code, and an unsigned claim stays "claimed".

mod support;

use outpost_protocol::keys::{self, PrivateKey, private_key_from_seed};
use outpost_protocol::messages::{Hello, Message, RunningModel, SignedVersionReport, TrustUpdate, VersionReport};
use outpost_protocol::root::{ROOT_FORMAT, RootDocument, create_root};
use outpost_protocol::trust::{POLICY_FORMAT, TrustPolicy, create_policy};
use outpost_protocol::{Arch, DeviceId, Digest, Limits, ModelName, Version, codec, topics};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use support::*;

fn d(p: &Path) -> String {
    p.display().to_string()
}

/// `DIR/NAME.key` and `DIR/NAME.pub` for a fixed seed (what `outpost keys gen` writes, made repeatable).
fn key_files(dir: &Path, name: &str, seed: u8) -> (String, String) {
    let key = private_key_from_seed([seed; 32]);
    let (k, p) = (dir.join(format!("{name}.key")), dir.join(format!("{name}.pub")));
    std::fs::write(&k, keys::private_key_to_pem(&key)).unwrap();
    std::fs::write(&p, keys::public_key_to_pem(&key.verifying_key())).unwrap();
    (d(&k), d(&p))
}

/// A release-engineer command (no controller involved) that must succeed.
fn offline(args: &[&str]) -> String {
    let out = outpost(args);
    assert!(out.status.success(), "outpost {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait_until(what: &str, secs: u64, mut ok: impl FnMut() -> bool, context: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(Instant::now() < deadline, "{what} within {secs} s:\n{}", context());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `outpost serve` and the operator's CLI pointed at it.
struct Ctl {
    _proc: Proc,
    url: String,
    data: PathBuf,
    log: PathBuf,
}

impl Ctl {
    fn start(dir: &Path, args: &[&str]) -> Ctl {
        let (api, data, log) = (free_port(), dir.join("controller-data"), dir.join("controller.log"));
        let child = Command::new(outpost_bin())
            .args(["serve", "--data-dir", &d(&data), "--api", &format!("127.0.0.1:{api}")])
            .args(args)
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        wait_port(api);
        Ctl { _proc: Proc(child), url: format!("http://127.0.0.1:{api}"), data, log }
    }

    fn cli(&self, args: &[&str]) -> Output {
        let remote = ["--controller", self.url.as_str(), "--data-dir", &d(&self.data)];
        outpost(&[args, &remote[..]].concat())
    }

    fn run(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(out.status.success(), "outpost {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        serde_json::from_str(&self.run(&[args, &["-o", "json"][..]].concat())).unwrap()
    }

    /// The device's record (`null` while the controller does not know it yet).
    fn device(&self, id: &str) -> serde_json::Value {
        serde_json::from_slice(&self.cli(&["devices", "show", id, "-o", "json"]).stdout).unwrap_or_default()
    }

    /// `(root, policy)` versions the device attests in its last verified report.
    fn attests(&self, id: &str) -> Option<(u64, u64)> {
        let r = &self.device(id)["attestation"]["last"]["report"];
        Some((r["root_version"].as_u64()?, r["policy_version"].as_u64()?))
    }

    fn context(&self, ids: &[&str]) -> String {
        let shown: Vec<String> = ids.iter().map(|id| self.run(&["devices", "show", id])).collect();
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        format!("{}\n--- controller log (tail)\n{}", shown.join("\n"), &log[log.len().saturating_sub(3000)..])
    }

    fn push_bundle(&self, dir: &Path, name: &str, bytes: Vec<u8>) -> Output {
        let path = dir.join(format!("{name}.obundle"));
        std::fs::write(&path, bytes).unwrap();
        self.cli(&["bundle", "push", &d(&path)])
    }

    /// Ends a rollout whose devices all run its release (its gates want inference traffic these tests
    /// do not make; aborting without --revert leaves every device as it is).
    fn done(&self, id: &str) {
        self.run(&["rollout", "abort", id]);
    }

    fn rollout(&self, bundle: &str, id: &str) {
        self.run(&[
            "rollout", "start", "--bundle", bundle, "--waves", "100%", "--bake", "2s", "--watch", "1s", "--id", id,
        ]);
    }
}

/// Publishes as a plain MQTT client would (what anyone with the broker's ear could send).
fn publish(port: u16, topic: &str, payload: Vec<u8>, retain: bool) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let o = rumqttc::MqttOptions::new(format!("attacker-{}", free_port()), "127.0.0.1", port);
        let (client, mut events) = rumqttc::AsyncClient::new(o, 8);
        client.publish(topic, rumqttc::QoS::AtLeastOnce, retain, payload).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::time::timeout_at(deadline, events.poll()).await.expect("publish acknowledged") {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => break,
                Ok(_) => {}
                Err(e) => panic!("attacker's connection: {e}"),
            }
        }
        let _ = client.disconnect().await;
    });
}

fn policy_file(dir: &Path, name: &str, version: u64, expires: u64, release: &[u8], root: &PrivateKey) -> PathBuf {
    let p = TrustPolicy {
        format: POLICY_FORMAT,
        version,
        created: now() - 60,
        expires,
        threshold: 1,
        release_keys: release.iter().map(|s| private_key_from_seed([*s; 32]).verifying_key().to_bytes()).collect(),
    };
    let path = dir.join(name);
    std::fs::write(&path, create_policy(&p, std::slice::from_ref(root))).unwrap();
    path
}

/// `text` has a row of exactly `cells`, each number right-aligned under its column's header (the line of
/// headers above it), as an operator reads the table.
fn assert_row(text: &str, cells: &[&str]) {
    let lines: Vec<&str> = text.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.split_whitespace().eq(cells.iter().copied()))
        .unwrap_or_else(|| panic!("no row {cells:?} in:\n{text}"));
    let header = lines[..at].iter().rev().find(|l| l.chars().next().is_some_and(|c| c.is_ascii_uppercase())).unwrap();
    let ends = |l: &str| -> Vec<usize> {
        l.char_indices()
            .filter(|&(i, c)| c != ' ' && l[i + c.len_utf8()..].chars().next().is_none_or(|n| n == ' '))
            .map(|(i, _)| i)
            .collect()
    };
    let (head, row) = (ends(header), ends(lines[at]));
    for (col, cell) in cells.iter().enumerate().skip(1) {
        if cell.parse::<u64>().is_ok() {
            assert_eq!(row[col], head[col], "column {col} of {cells:?} is not under its header:\n{text}");
        }
    }
}

fn serving_all(ports: &[u16], version: &str) -> bool {
    ports.iter().all(|p| serving(*p).as_deref() == Some(version))
}

#[test]
fn a_release_key_is_rotated_and_revoked_across_the_fleet() {
    let dir = tempdir("trust-release");
    let (_broker, port) = mosquitto(&dir);
    let (policy, root_pub) = trust_files(&dir); // root: seed 1; release A: seed 2
    let (root_key, _) = key_files(&dir, "root", 1);
    let (_, release_b_pub) = key_files(&dir, "release-b", 3);
    let ctl = Ctl::start(
        &dir,
        &["--broker", &format!("mqtt://127.0.0.1:{port}"), "--trust", &d(&policy), "--root-pub", &d(&root_pub)],
    );
    let ids = ["dev-0", "dev-1", "dev-2"];
    let ports: Vec<u16> = ids
        .iter()
        .map(|id| stoppable_agent(&dir, id, port, "site = \"lab\"", 0))
        .map(|(a, p)| {
            std::mem::forget(a.stop);
            p
        })
        .collect();
    let (a, b) = (private_key_from_seed([2; 32]), private_key_from_seed([3; 32]));
    assert!(ctl.push_bundle(&dir, "v1", bundle_signed("v1", "1.0.0", 1, std::slice::from_ref(&a))).status.success());
    // Signed by A while A is trusted; rolled out only after A is revoked.
    assert!(ctl.push_bundle(&dir, "by-a", bundle_signed("v2", "1.1.0", 2, std::slice::from_ref(&a))).status.success());
    wait_until(
        "devices registered",
        30,
        || ids.iter().all(|id| ctl.device(id)["online"] == true),
        || ctl.context(&ids),
    );
    ctl.rollout("digits@1.0.0", "first");
    wait_until("1.0.0 everywhere", 90, || serving_all(&ports, "1.0.0"), || ctl.context(&ids));
    ctl.done("first");
    // Each device finishes its watch of 1.0.0 before the next rollout. (A desired state that arrives while a
    // first install is still watching rolls it back and leaves the model unserved: a known agent bug, noted
    // on issue 12, not what this test is about.)
    wait_until(
        "1.0.0 committed everywhere",
        30,
        || ids.iter().all(|id| ctl.run(&["devices", "show", id]).contains("1.0.0 watching -> committed")),
        || ctl.context(&ids),
    );

    // Rotate: B replaces A. The operator signs policy v2 with the root and pushes it.
    let v2 = d(&dir.join("trust-2.policy"));
    let init = ["trust", "init", "--root-key", &root_key, "--release-pub", &release_b_pub, "--policy-version", "2"];
    offline(&[&init[..], &["--out", &v2]].concat());
    let pushed = ctl.run(&["trust", "push", "--policy", &v2]);
    assert!(pushed.contains("policy      v2"), "{pushed}");
    wait_until(
        "every device attests policy v2",
        30,
        || ids.iter().all(|id| ctl.attests(id) == Some((1, 2))),
        || ctl.context(&ids),
    );
    let status = ctl.run(&["trust", "status"]);
    assert!(status.contains("root v1 policy v2: 3"), "{status}");
    let skew = ctl.run(&["skew", "--agents"]);
    let agent = outpost_agent::version().to_string();
    assert_row(&skew, &[&agent, "3", "3", "3"]);
    assert_row(&skew, &["v1", "v2", "3"]);
    // The controller itself refuses a new bundle signed only by the revoked key...
    let out = ctl.push_bundle(&dir, "late-a", bundle_signed("v1", "1.2.0", 3, std::slice::from_ref(&a)));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown_key"), "{}", String::from_utf8_lossy(&out.stderr));
    // ...and every device refuses the one signed before the revocation: it keeps serving 1.0.0.
    ctl.rollout("digits@1.1.0", "revoked");
    wait_until(
        "every device refuses the bundle of the revoked key with unknown_key",
        60,
        || ids.iter().all(|id| ctl.run(&["devices", "show", id]).contains("1.1.0 verifying -> rejected [unknown_key]")),
        || ctl.context(&ids),
    );
    // Each agent is asked until it answers (a busy agent may drop one connection); whatever it answers
    // must be 1.0.0.
    let serving_now: Vec<_> = ports
        .iter()
        .map(|p| {
            (0..20).find_map(|_| {
                let v = serving(*p);
                if v.is_none() {
                    std::thread::sleep(Duration::from_millis(250));
                }
                v
            })
        })
        .collect();
    assert!(
        serving_now.iter().all(|v| v.as_deref() == Some("1.0.0")),
        "the running model keeps serving: {serving_now:?}\n{}",
        ctl.context(&ids)
    );
    ctl.run(&["rollout", "abort", "revoked"]);
    // Bundles of the new key install everywhere (other weights than 1.0.0: the agent keys a loaded model by
    // its digest, so the same weights under a new version would still answer as 1.0.0).
    assert!(ctl.push_bundle(&dir, "by-b", bundle_signed("v2", "1.3.0", 4, &[b])).status.success());
    ctl.rollout("digits@1.3.0", "rotated");
    wait_until(
        "1.3.0 everywhere",
        90,
        || serving_all(&ports, "1.3.0"),
        || {
            let served: Vec<_> = ports.iter().map(|p| serving(*p)).collect();
            format!("serving {served:?}\n{}", ctl.context(&ids))
        },
    );
    wait_until(
        "skew attests 1.3.0 on every device",
        30,
        || ctl.run(&["skew"]).contains("1.3.0  3 online, 0 offline; 3 attested, 0 only claimed"),
        || ctl.run(&["skew"]),
    );
}

#[test]
fn the_root_rotates_twice_and_a_device_offline_for_both_walks_the_chain() {
    let dir = tempdir("trust-root");
    let (_broker, port) = mosquitto(&dir);
    let (policy, root_pub) = trust_files(&dir);
    let (root_key, _) = key_files(&dir, "root", 1);
    let (root_b_key, _) = key_files(&dir, "root-b", 11);
    let (root_c_key, _) = key_files(&dir, "root-c", 12);
    let (_, release_pub) = key_files(&dir, "release-a", 2);
    let ctl = Ctl::start(
        &dir,
        &["--broker", &format!("mqtt://127.0.0.1:{port}"), "--trust", &d(&policy), "--root-pub", &d(&root_pub)],
    );
    let ids = ["dev-0", "dev-1", "dev-2"];
    let mut agents: Vec<(Option<Running>, u16)> =
        ids.iter().map(|id| stoppable_agent(&dir, id, port, "site = \"lab\"", 0)).map(|(a, p)| (Some(a), p)).collect();
    wait_until("all attest root v1", 30, || ids.iter().all(|id| ctl.attests(id) == Some((1, 1))), || ctl.context(&ids));
    // dev-2 goes offline for both rotations.
    agents[2].0.take().unwrap().halt();

    let chain = d(&dir.join("roots"));
    let rotate = |signer: &str, new: &str| {
        offline(&[
            "trust",
            "rotate-root",
            "--image-root-pub",
            &d(&root_pub),
            "--chain",
            &chain,
            "--root-key",
            signer,
            "--new-key",
            new,
        ]);
    };
    rotate(&root_key, &root_b_key);
    rotate(&root_b_key, &root_c_key);
    let v2 = d(&dir.join("trust-2.policy"));
    offline(&[
        "trust",
        "init",
        "--root-key",
        &root_c_key,
        "--release-pub",
        &release_pub,
        "--policy-version",
        "2",
        "--out",
        &v2,
    ]);
    let pushed = ctl.run(&["trust", "push", "--policy", &v2, "--chain", &chain]);
    assert!(pushed.contains("root v3"), "{pushed}");
    let online = ["dev-0", "dev-1"];
    wait_until(
        "online devices pin root v3",
        30,
        || online.iter().all(|id| ctl.attests(id) == Some((3, 2))),
        || ctl.context(&ids),
    );
    // Bundles verify under the new root's policy; the offline device joins its wave when it returns.
    assert!(ctl.push_bundle(&dir, "v1", bundle_of("v1", "1.0.0", 1)).status.success());
    ctl.rollout("digits@1.0.0", "first");
    let ports: Vec<u16> = agents.iter().map(|(_, p)| *p).collect();
    wait_until("1.0.0 on the online devices", 90, || serving_all(&ports[..2], "1.0.0"), || ctl.context(&ids));
    let (back, _) = stoppable_agent(&dir, "dev-2", port, "site = \"lab\"", ports[2]);
    agents[2].0 = Some(back);
    wait_until("dev-2 walks both rotations", 30, || ctl.attests("dev-2") == Some((3, 2)), || ctl.context(&ids));
    wait_until("dev-2 installs under the new root", 90, || serving_all(&ports, "1.0.0"), || ctl.context(&ids));
    assert!(ctl.run(&["devices", "show", "dev-2"]).contains("took the fleet's trust"));

    // Someone with the broker's ear replaces the retained trust update: each forgery is refused.
    let (root, b, c, e) = (
        private_key_from_seed([1; 32]),
        private_key_from_seed([11; 32]),
        private_key_from_seed([12; 32]),
        private_key_from_seed([13; 32]),
    );
    let chain_bytes: Vec<Vec<u8>> =
        (2..=3).map(|v| std::fs::read(dir.join(format!("roots/root-{v}.root"))).unwrap()).collect();
    let doc = |version: u64, key: &PrivateKey| RootDocument {
        format: ROOT_FORMAT,
        version,
        created: now(),
        expires: now() + 86_400,
        threshold: 1,
        keys: vec![key.verifying_key().to_bytes()],
    };
    let policy_by = |version: u64, root: &PrivateKey| {
        std::fs::read(policy_file(&dir, "forged.policy", version, now() + 86_400, &[9], root)).unwrap()
    };
    let forgeries = [
        // The old root's keys are dead after the rotation.
        (
            "policy_not_signed_by_root",
            TrustUpdate { first_root: 2, roots: chain_bytes.clone(), policy: policy_by(3, &root) },
        ),
        // Root v5 in v4's place: a step the devices never saw signed.
        (
            "root_version_gap",
            TrustUpdate {
                first_root: 2,
                roots: [chain_bytes.clone(), vec![create_root(&doc(5, &e), &[c.clone(), e.clone()])]].concat(),
                policy: policy_by(3, &e),
            },
        ),
        // A chain that ends before the devices' root.
        ("root_rollback", TrustUpdate { first_root: 2, roots: chain_bytes[..1].to_vec(), policy: policy_by(3, &b) }),
    ];
    for (code, forged) in forgeries {
        publish(port, topics::TRUST, codec::encode(&Message::Trust(forged)), true);
        wait_until(
            &format!("every device refuses the forged trust with {code}"),
            30,
            || {
                let s = ctl.json(&["trust", "status"]);
                let refused = s["refused"].as_array().cloned().unwrap_or_default();
                ids.iter().all(|id| refused.iter().any(|r| r["device"] == *id && r["reason"] == code))
            },
            || ctl.run(&["trust", "status"]),
        );
    }
    assert!(ids.iter().all(|id| ctl.attests(id) == Some((3, 2))), "nothing changed: {}", ctl.run(&["trust", "status"]));
    assert!(ctl.run(&["trust", "status"]).contains("refused     dev-1: root_rollback: the root chain ends at v2"));
    // A device that restarts while the forgery is retained keeps what it stored, and says so itself.
    let counter = |id: &str| ctl.device(id)["attestation"]["last"]["report"]["counter"].as_u64();
    let before = counter("dev-0");
    agents[0].0.take().unwrap().halt();
    let (back, _) = stoppable_agent(&dir, "dev-0", port, "site = \"lab\"", ports[0]);
    agents[0].0 = Some(back);
    wait_until(
        "dev-0 reports again after its restart, still on root v3 and policy v2",
        30,
        || counter("dev-0") > before && ctl.attests("dev-0") == Some((3, 2)),
        || ctl.context(&ids),
    );
    assert!(serving_all(&ports, "1.0.0"), "every device still serves");
    let status = agent_cli(&[
        "status",
        "--data-dir",
        &d(&dir.join("dev-0")),
        "--trust",
        &d(&policy),
        "--root-pub",
        &d(&root_pub),
    ]);
    assert!(status.contains("trust       root v3, policy v2 (policy floor 2)"), "{status}");
}

/// `outpost-agent ARGS` (the device installer's command), its standard output.
fn agent_cli(args: &[&str]) -> String {
    let bin = outpost_bin().with_file_name("outpost-agent");
    let out = Command::new(&bin).args(args).output().unwrap();
    assert!(out.status.success(), "outpost-agent {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_device_whose_policy_expired_while_offline_takes_the_new_one_and_updates_again() {
    let dir = tempdir("trust-freeze");
    let (_broker, port) = mosquitto(&dir);
    let (_, root_pub) = trust_files(&dir);
    let (root_key, _) = key_files(&dir, "root", 1);
    let (_, release_pub) = key_files(&dir, "release-a", 2);
    // The image's policy (and the controller's) expires in 25 s; devices give no grace.
    let expires = now() + 25;
    let policy = policy_file(&dir, "trust.policy", 1, expires, &[2], &private_key_from_seed([1; 32]));
    let ctl = Ctl::start(
        &dir,
        &["--broker", &format!("mqtt://127.0.0.1:{port}"), "--trust", &d(&policy), "--root-pub", &d(&root_pub)],
    );
    let config = "[link]\nlabels = { site = \"lab\" }\n[telemetry]\nwindow = \"1s\"\n[trust]\nexpiry_grace = \"0s\"\n";
    let (agent, api) = stoppable_agent_config(&dir, "dev-0", port, 0, config);
    assert!(ctl.push_bundle(&dir, "v1", bundle_of("v1", "1.0.0", 1)).status.success());
    wait_until("dev-0 registered", 30, || ctl.device("dev-0")["online"] == true, || ctl.context(&["dev-0"]));
    ctl.rollout("digits@1.0.0", "first");
    wait_until(
        "1.0.0 installed before the expiry",
        20,
        || serving(api).as_deref() == Some("1.0.0"),
        || ctl.context(&["dev-0"]),
    );
    agent.halt();
    // The device is away while its policy expires; the fleet is frozen until the operator acts.
    while now() <= expires {
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = ctl.push_bundle(&dir, "v2", bundle_of("v2", "1.1.0", 2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("policy_expired"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v2 = d(&dir.join("trust-2.policy"));
    offline(&[
        "trust",
        "init",
        "--root-key",
        &root_key,
        "--release-pub",
        &release_pub,
        "--policy-version",
        "2",
        "--out",
        &v2,
    ]);
    ctl.run(&["trust", "push", "--policy", &v2]);
    assert!(ctl.push_bundle(&dir, "v2", bundle_of("v2", "1.1.0", 2)).status.success());
    ctl.run(&["rollout", "abort", "first"]);
    ctl.rollout("digits@1.1.0", "second");
    // Back online: it takes the newer root-signed policy first, then the update verifies and installs.
    let (_agent, api) = stoppable_agent_config(&dir, "dev-0", port, api, config);
    wait_until("dev-0 updates again", 60, || serving(api).as_deref() == Some("1.1.0"), || ctl.context(&["dev-0"]));
    wait_until("dev-0 attests policy v2", 20, || ctl.attests("dev-0") == Some((1, 2)), || ctl.context(&["dev-0"]));
}

/// What a device sends on `up/report`, as a plain subscriber on the broker sees it.
fn reports(port: u16, device: &str) -> std::sync::mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let topic = topics::up(&DeviceId::new(device).unwrap(), topics::Up::Report);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let o = rumqttc::MqttOptions::new(format!("listener-{}", free_port()), "127.0.0.1", port);
            let (client, mut events) = rumqttc::AsyncClient::new(o, 8);
            client.subscribe(topic, rumqttc::QoS::AtLeastOnce).await.unwrap();
            while let Ok(e) = events.poll().await {
                if let rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) = e
                    && tx.send(p.payload.to_vec()).is_err()
                {
                    return;
                }
            }
        });
    });
    rx
}

fn signed(bytes: &[u8]) -> SignedVersionReport {
    let Ok(Message::Report(r)) = codec::decode(bytes, &Limits::default()) else { panic!("not a report") };
    r
}

#[test]
fn forged_and_replayed_version_reports_are_caught_and_claims_stay_claimed() {
    let dir = tempdir("trust-reports");
    let mqtt = free_port();
    let (_, root_pub) = trust_files(&dir);
    let ctl = Ctl::start(
        &dir,
        &[
            "--mqtt-listen",
            &format!("127.0.0.1:{mqtt}"),
            "--trust",
            &d(&dir.join("trust.policy")),
            "--root-pub",
            &d(&root_pub),
        ],
    );
    wait_port(mqtt);
    let token = ctl.run(&["enroll-token", "create", "--auto-approve"]).trim().to_owned();
    std::fs::write(dir.join("token"), format!("{token}\n")).unwrap();
    let config = format!(
        "[link]\nenroll_token = {:?}\nlabels = {{ site = \"lab\" }}\n[telemetry]\nwindow = \"1s\"\n",
        d(&dir.join("token"))
    );
    let heard = reports(mqtt, "dev-0");
    let (_agent, api) = stoppable_agent_config(&dir, "dev-0", mqtt, 0, &config);
    let ids = ["dev-0"];
    wait_until(
        "dev-0 enrolled and attested by its enrolled key",
        60,
        || ctl.device("dev-0")["attestation"]["last"]["binding"] == "enrollment",
        || ctl.context(&ids),
    );
    assert!(ctl.push_bundle(&dir, "v1", bundle_of("v1", "1.0.0", 1)).status.success());
    assert!(ctl.push_bundle(&dir, "v2", bundle_of("v2", "1.0.1", 2)).status.success());
    ctl.rollout("digits@1.0.0", "first");
    wait_until("1.0.0", 60, || serving(api).as_deref() == Some("1.0.0"), || ctl.context(&ids));
    let attested = |version: &str| {
        ctl.run(&["devices", "show", "dev-0"]).contains(&format!("running   {version} (sequence"))
            && ctl.run(&["devices", "show", "dev-0"]).contains(") attested")
    };
    wait_until("1.0.0 attested", 30, || attested("1.0.0"), || ctl.context(&ids));
    ctl.run(&["rollout", "abort", "first"]);
    ctl.rollout("digits@1.0.1", "second");
    wait_until(
        "1.0.1 attested",
        60,
        || serving(api).as_deref() == Some("1.0.1") && attested("1.0.1"),
        || ctl.context(&ids),
    );
    // A report that said 1.0.0, heard on the way.
    let old = heard
        .try_iter()
        .map(|b| signed(&b))
        .find(|r| {
            postcard::from_bytes::<VersionReport>(&r.report)
                .unwrap()
                .running
                .iter()
                .any(|m| m.version == Version::new(1, 0, 0))
        })
        .expect("a report of 1.0.0 was heard");
    let report_topic = topics::up(&DeviceId::new("dev-0").unwrap(), topics::Up::Report);
    let fault = |code: &str| {
        wait_until(
            &format!("the controller refuses it with {code}"),
            20,
            || ctl.device("dev-0")["attestation"]["last_fault"]["code"] == code,
            || ctl.context(&ids),
        );
    };
    // 1. Replayed: the device's own, correctly signed, older report.
    publish(mqtt, &report_topic, codec::encode(&Message::Report(old.clone())), false);
    fault("replay");
    // 2. Tampered on the way.
    let mut tampered = old.clone();
    let n = tampered.report.len();
    tampered.report[n - 1] ^= 1;
    publish(mqtt, &report_topic, codec::encode(&Message::Report(tampered)), false);
    fault("bad_signature");
    // 3. Forged: a report claiming 9.9.9, signed by a key that is not the device's.
    let rng = ring::rand::SystemRandom::new();
    let alg = &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING;
    let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
    let forger = ring::signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
    let nine = RunningModel {
        name: ModelName::new("digits").unwrap(),
        version: Version::new(9, 9, 9),
        digest: Digest([9; 32]),
        sequence: 99,
    };
    let mut claim: VersionReport = postcard::from_bytes(&old.report).unwrap();
    claim.counter = u64::MAX / 2;
    claim.running = vec![nine.clone()];
    use ring::signature::KeyPair as _;
    let forged = SignedVersionReport::new(&claim, forger.public_key().as_ref().to_vec(), |m| {
        forger.sign(&rng, m).unwrap().as_ref().try_into().unwrap()
    });
    publish(mqtt, &report_topic, codec::encode(&Message::Report(forged)), false);
    fault("wrong_key");
    let audit = ctl.run(&["audit"]);
    for code in ["replay", "bad_signature", "wrong_key"] {
        assert!(audit.contains(code), "refused reports are audited ({code}):\n{audit}");
    }
    assert!(attested("1.0.1"), "what the device runs stays attested: {}", ctl.context(&ids));
    // 4. An unsigned hello claiming 9.9.9 changes what is claimed, never what is attested.
    let hello = Hello {
        device: DeviceId::new("dev-0").unwrap(),
        arch: Arch::current().unwrap_or(Arch::X86_64),
        agent_version: outpost_agent::version(),
        labels: vec![],
        running: vec![nine],
        boot_id: 1,
        max_packet: 1 << 20,
    };
    publish(mqtt, &topics::up(&hello.device.clone(), topics::Up::Hello), codec::encode(&Message::Hello(hello)), false);
    wait_until(
        "the forged claim is shown as claimed only",
        20,
        || ctl.run(&["devices", "show", "dev-0"]).contains("running   9.9.9 (sequence 99, model 090909090909) claimed"),
        || ctl.context(&ids),
    );
    assert!(
        ctl.run(&["skew"]).contains("9.9.9  1 online, 0 offline; 0 attested, 1 only claimed"),
        "{}",
        ctl.run(&["skew"])
    );
}

//! The root rotated twice while a device was offline for both, and forged trust updates.

use super::*;

#[test]
fn the_root_rotates_twice_and_a_device_offline_for_both_walks_the_chain() {
    let dir = tempdir("trust-root");
    let (_broker, port) = mosquitto(&dir);
    let (policy, root_pub) = trust_files(&dir);
    let (root_key, _) = key_files(&dir, "root", 1);
    let (root_b_key, _) = key_files(&dir, "root-b", 11);
    let (root_c_key, _) = key_files(&dir, "root-c", 12);
    let (_, release_pub) = key_files(&dir, "release-a", 2);
    let ctl = Controller::with_broker(&dir, port);
    let ids = ["dev-0", "dev-1", "dev-2"];
    let mut agents: Vec<(Option<Running>, u16)> =
        ids.iter().map(|id| stoppable_agent(&dir, id, port, "site = \"lab\"", 0)).map(|(a, p)| (Some(a), p)).collect();
    wait_until("all attest root v1", 30, || ids.iter().all(|id| ctl.attests(id) == Some((1, 1))), || ctl.context(&ids));
    // dev-2 goes offline for both rotations.
    agents[2].0.take().unwrap().halt();

    let chain = path(&dir.join("roots"));
    let rotate = |signer: &str, new: &str| {
        offline(&[
            "trust",
            "rotate-root",
            "--image-root-pub",
            &path(&root_pub),
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
    let v2 = path(&dir.join("trust-2.policy"));
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
        &path(&dir.join("dev-0")),
        "--trust",
        &path(&policy),
        "--root-pub",
        &path(&root_pub),
    ]);
    assert!(status.contains("trust       root v3, policy v2 (policy floor 2)"), "{status}");
}

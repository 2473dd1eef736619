//! A device whose trust policy expired while it was offline.

use super::*;

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
    let broker = format!("mqtt://127.0.0.1:{port}");
    let ctl =
        Controller::start(&dir, &["--broker", &broker, "--trust", &path(&policy), "--root-pub", &path(&root_pub)]);
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
    let v2 = path(&dir.join("trust-2.policy"));
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

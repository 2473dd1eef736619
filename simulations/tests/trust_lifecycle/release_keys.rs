//! A release key rotated and revoked across a fleet.

use super::*;

#[test]
fn a_release_key_is_rotated_and_revoked_across_the_fleet() {
    let dir = tempdir("trust-release");
    let (_broker, port) = mosquitto(&dir);
    // The controller and devices trust root seed 1 and release key A, seed 2 (`trust_files`).
    let (root_key, _) = key_files(&dir, "root", 1);
    let (_, release_b_pub) = key_files(&dir, "release-b", 3);
    let ctl = Controller::with_broker(&dir, port);
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
    // Each device finishes its watch of 1.0.0 before the next rollout: what follows is about trust.
    wait_until(
        "1.0.0 committed everywhere",
        30,
        || ids.iter().all(|id| ctl.run(&["devices", "show", id]).contains("1.0.0 watching -> committed")),
        || ctl.context(&ids),
    );

    // Rotate: B replaces A. The operator signs policy v2 with the root and pushes it.
    let v2 = path(&dir.join("trust-2.policy"));
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
    assert!(ctl.push_bundle(&dir, "by-b", bundle_signed("v2", "1.3.0", 4, std::slice::from_ref(&b))).status.success());
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
    // A release for agents newer than these: the operator sees, before rolling it out, who is too old.
    let needs_9 = model_bundle_for_agent("digits", "v2", "1.4.0", 5, &[b], Version::new(9, 0, 0));
    assert!(ctl.push_bundle(&dir, "needs-9", needs_9).status.success());
    let agents = ctl.run(&["skew", "--agents", "--bundle", "digits@1.4.0"]);
    assert!(
        agents.contains("too old for digits 1.4.0 (needs agent 9.0.0): 3 device(s): dev-0, dev-1, dev-2"),
        "{agents}"
    );
    wait_until(
        "skew attests 1.3.0 on every device",
        30,
        || ctl.run(&["skew"]).contains("1.3.0  3 online, 0 offline; 3 attested, 0 only claimed"),
        || ctl.run(&["skew"]),
    );
}

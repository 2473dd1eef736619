//! `outpost devices delete` and the operator named in every audit entry.

use super::retained;
use super::support::*;
use std::process::Command;

/// `outpost ARGS` against `ctl` with an operator's token instead of the API token.
fn as_operator(ctl: &Controller, token: &str, args: &[&str]) -> String {
    let out = Command::new(outpost_bin()).args(args).args(ctl.remote()).env("OUTPOST_TOKEN", token).output().unwrap();
    assert!(out.status.success(), "outpost {args:?} as ada: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn runs_digits(d: &serde_json::Value) -> bool {
    d["running"].as_array().is_some_and(|l| l.iter().any(|m| m["name"] == "digits"))
}

#[test]
fn a_deleted_device_leaves_the_fleet_its_desired_states_and_its_id_and_every_verb_names_its_operator() {
    let dir = tempdir("operator-delete");
    let (_broker, mqtt) = mosquitto(&dir);
    let ctl = Controller::with_broker(&dir, mqtt);
    let (_keep, _) = stoppable_agent(&dir, "dev-keep", mqtt, "site = \"lab\"", 0);
    let (gone, _) = stoppable_agent(&dir, "dev-gone", mqtt, "site = \"lab\"", 0);
    ctl.wait_devices("both devices' hellos", 60, |l| l.len() == 2 && l.iter().all(|d| d["labels"]["site"] == "lab"));

    // An operator of their own: what ada does is audited as ada's.
    let ada = ctl.run(&["operators", "add", "ada"]).trim().to_owned();
    assert_eq!(ada.len(), 48, "the token alone on standard output: {ada}");
    assert!(ctl.run(&["operators", "list"]).lines().any(|l| l.starts_with("ada ")));
    let refused = Command::new(outpost_bin())
        .args(["operators", "add", "eve"])
        .args(ctl.remote())
        .env("OUTPOST_TOKEN", &ada)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && err.contains("only the API token (admin) manages operators"), "{err}");
    let bundle = dir.join("digits-1.0.0.obundle");
    std::fs::write(&bundle, digits_bundle("1.0.0", 1)).unwrap();
    as_operator(&ctl, &ada, &["bundle", "push", &path(&bundle)]);
    as_operator(&ctl, &ada, &["enroll-token", "create"]);
    let start = ["rollout", "start", "--bundle", "digits@1.0.0", "--waves", "100%", "--bake", "1s", "--id", "first"];
    as_operator(&ctl, &ada, &[&start[..], &["--no-default-gates", "--watch", "1s"]].concat());
    ctl.wait_devices("both devices run digits", 120, |l| l.iter().all(runs_digits));
    // No traffic, so no quorum: ada promotes it to completion.
    as_operator(&ctl, &ada, &["rollout", "promote", "first", "--full"]);
    ctl.wait_phase("first", "Completed", 60);
    let desired = retained(mqtt, "outpost/v1/devices/+/down/desired/+");
    for id in ["dev-keep", "dev-gone"] {
        let topic = format!("outpost/v1/devices/{id}/down/desired/digits");
        assert!(desired.iter().any(|(t, len)| *t == topic && *len > 0), "{id}'s desired state retained: {desired:?}");
    }

    // The decommission, as ada.
    let said = as_operator(&ctl, &ada, &["devices", "delete", "dev-gone"]);
    assert!(
        said.starts_with("deleted dev-gone at ") && said.contains(" UTC by ada: desired states cleared (digits)"),
        "{said}"
    );
    let list = ctl.run(&["devices", "list"]);
    assert!(!list.contains("dev-gone") && list.contains("dev-keep"), "gone from the list, the other stays:\n{list}");
    assert_eq!(ctl.json(&["devices", "list"]).as_array().map(Vec::len), Some(1));
    let shown = ctl.cli(&["devices", "show", "dev-gone"]);
    let err = String::from_utf8_lossy(&shown.stderr);
    assert_eq!(shown.status.code(), Some(2), "{err}");
    assert!(err.contains("no device dev-gone: it was deleted"), "{err}");
    let again = ctl.cli(&["devices", "delete", "dev-gone"]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("already deleted"), "{again:?}");
    let desired = retained(mqtt, "outpost/v1/devices/+/down/desired/+");
    assert!(!desired.iter().any(|(t, _)| t.contains("/dev-gone/")), "dev-gone's desired states cleared: {desired:?}");
    assert!(desired.iter().any(|(t, _)| t.contains("/dev-keep/")), "dev-keep's kept: {desired:?}");
    let skew = ctl.run(&["skew"]);
    assert!(skew.contains("1.0.0  1 online, 0 offline"), "skew counts the device left:\n{skew}");

    // The device itself still runs and still talks: what it says is ignored, also after it restarts (a new
    // boot, a new hello), and it never comes back into the fleet.
    gone.halt();
    let (_gone, _) = stoppable_agent(&dir, "dev-gone", mqtt, "site = \"lab\"", 0);
    wait_until(
        "the restarted device's hello ignored",
        60,
        || ctl.log_tail().contains("ignoring a message from a revoked device device=dev-gone kind=\"hello\""),
        || ctl.log_tail(),
    );
    assert!(!ctl.run(&["devices", "list"]).contains("dev-gone"));
    assert_eq!(ctl.cli(&["devices", "show", "dev-gone"]).status.code(), Some(2));
    // A new rollout selects only the fleet that is left.
    ctl.run(&["rollout", "remove", "digits", "--id", "off", "--waves", "100%", "--bake", "1s"]);
    let next = ctl.run(&["rollout", "status", "off"]);
    assert!(next.contains("1 device(s) selected"), "{next}");

    // Every operator verb names its operator: ada's by her token, the API token's as admin.
    ctl.run(&["devices", "revoke", "dev-never-seen"]);
    let audit = ctl.run(&["audit"]);
    let line =
        |what: &str, who: &str| audit.lines().any(|l| l.contains(what) && l.split_whitespace().any(|w| w == who));
    for (what, who) in [
        ("bundle pushed", "ada"),
        ("enrollment token created", "ada"),
        ("device deleted", "ada"),
        ("device revoked", "admin"),
        ("added operator ada", "admin"),
    ] {
        assert!(line(what, who), "{what} by {who}:\n{audit}");
    }
    for decision in ["started", "promoted --full"] {
        let line = audit.lines().find(|l| l.contains(" first ") && l.contains(decision)).unwrap_or_default();
        assert!(line.split_whitespace().any(|w| w == "ada"), "first's {decision} names ada:\n{audit}");
    }
    let deleted = audit.lines().find(|l| l.contains("device deleted")).unwrap();
    assert!(deleted.contains("device=dev-gone") && deleted.contains("cleared=[\"digits\"]"), "{deleted}");
    let json = ctl.json(&["audit"]);
    let entry = json.as_array().unwrap().iter().find(|e| e["entry"]["what"] == "device deleted").unwrap();
    assert_eq!((&entry["entry"]["operator"], &entry["entry"]["device"]), (&"ada".into(), &"dev-gone".into()));
}

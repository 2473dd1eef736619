//! Rollouts per model with every part real: `outpost serve`, mosquitto, in-process agents serving digits
//! and the vibration anomaly model, applications asking both. Two rollouts of the two models run at the
//! same time on the same devices; `abort --revert` of one leaves the other model as it is; a removal
//! rollout takes one model off a region's devices while the other keeps serving; a paused rollout of one
//! model and a failing gate of the other's newer rollout stay with their model; `outpost skew` shows each.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use support::*;

/// What the device's own API says it serves of `model` (`None`: it does not serve it).
fn serves(port: u16, model: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(s, "GET /v2/models/{model} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let v: serde_json::Value = serde_json::from_str(buf.split_once("\r\n\r\n")?.1).ok()?;
    v["versions"][0].as_str().map(str::to_owned)
}

/// One vibration request (16 band energies).
fn infer_vibration(port: u16) {
    infer_model(port, "vibration", "features", &[1, 16], &[0.3; 16]);
}

#[test]
fn real_agents_take_two_models_in_concurrent_rollouts_and_each_model_keeps_its_own_verbs_gates_and_skew() {
    let dir = tempdir("model-rollouts-agents");
    let (_broker, port) = mosquitto(&dir);
    let ctl = Controller::with_broker(&dir, port);
    let run = |args: &[&str]| ctl.run(args);
    for (model, file, version, seq) in [
        ("digits", "v1", "1.0.0", 1),
        ("digits", "v2", "2.0.0", 2),
        ("vibration", "v1", "1.0.0", 1),
        ("vibration", "v2", "1.1.0", 2),
        ("vibration", "v2", "1.2.0", 3),
        // Scrambled weights: loads and answers, but disagrees with 2.0.0.
        ("digits", "bad", "3.0.0", 3),
    ] {
        let out = ctl.push_bundle(&dir, &format!("{model}-{version}"), model_bundle(model, file, version, seq));
        assert!(out.status.success(), "push {model} {version}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let regions = ["eu", "us", "eu", "us"];
    let _agents: Vec<_> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| agent_on(&dir, &format!("dev-{i}"), port, &format!("region = \"{}\"", regions[i]), *p))
        .collect();
    for p in &ports {
        wait_port(*p);
    }
    // The applications ask both models the whole time (404 for a model a device does not serve yet).
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (stop, ports) = (stop.clone(), ports.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for p in &ports {
                    infer(*p);
                    infer_vibration(*p);
                }
            }
        })
    };
    let describe = || format!("{}\n{}", run(&["devices", "list"]), run(&["rollout", "history"]));
    wait_until("the four devices registered", 30, || run(&["devices", "list"]).matches("dev-").count() == 4, describe);
    // A first install bakes longer: a device reports a window of a model only once it serves it and an
    // application asked it, which takes a debug-built agent a few seconds.
    let start = |bundle: &str, waves: &str, bake: &str, id: &str| {
        run(&["rollout", "start", "--bundle", bundle, "--waves", waves, "--bake", bake, "--watch", "2s", "--id", id]);
    };
    let phase = |id: &str| -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_str(&run(&["rollout", "status", id, "-o", "json"])).unwrap();
        v["state"]["phase"].clone()
    };
    let all = |model: &str, version: &str| ports.iter().all(|p| serves(*p, model).as_deref() == Some(version));

    // Both models arrive at the same time: digits installed, vibration added beside it.
    start("digits@1.0.0", "100%", "15s", "d1");
    start("vibration@1.0.0", "100%", "15s", "v1");
    wait_until(
        "digits 1.0.0 and vibration 1.0.0 on every device",
        120,
        || {
            phase("d1") == "Completed"
                && phase("v1") == "Completed"
                && all("digits", "1.0.0")
                && all("vibration", "1.0.0")
        },
        describe,
    );

    // Two new releases at once, each in its own waves.
    start("digits@2.0.0", "1,100%", "4s", "d2");
    start("vibration@1.1.0", "2,100%", "4s", "v11");
    wait_until(
        "digits 2.0.0 and vibration 1.1.0 on every device",
        180,
        || {
            phase("d2") == "Completed"
                && phase("v11") == "Completed"
                && all("digits", "2.0.0")
                && all("vibration", "1.1.0")
        },
        describe,
    );

    // abort --revert of vibration: every device back on vibration 1.0.0, digits stays 2.0.0.
    run(&["rollout", "abort", "v11", "--revert"]);
    // Back on 1.0.0 as the devices' APIs and the controller's view say (the next verb on vibration waits
    // for the revert to end).
    let reverted = || all("vibration", "1.0.0") && !run(&["devices", "list"]).contains("vibration 1.1.0");
    wait_until("vibration back on 1.0.0", 60, reverted, describe);
    assert!(all("digits", "2.0.0"), "the vibration revert left digits alone");
    assert_eq!(phase("d2"), "Completed");

    // vibration off the eu devices; digits serves on.
    // What an operator sees is printed (`-- --nocapture`): docs/operating.md shows it.
    let out = run(&["rollout", "remove", "vibration", "-l", "region=eu", "--bake", "1s", "--id", "rm-eu"]);
    println!("$ outpost rollout remove vibration -l region=eu --bake 1s --id rm-eu\n{out}");
    assert!(out.contains("rm-eu"), "{out}");
    wait_until("the removal completed", 60, || phase("rm-eu") == "Completed", describe);
    println!("$ outpost rollout status rm-eu\n{}", run(&["rollout", "status", "rm-eu"]));
    for (i, p) in ports.iter().enumerate() {
        let want = if regions[i] == "eu" { None } else { Some("1.0.0".to_owned()) };
        assert_eq!(serves(*p, "vibration"), want, "dev-{i} ({})", regions[i]);
        assert_eq!(serves(*p, "digits").as_deref(), Some("2.0.0"), "dev-{i} keeps digits");
    }
    let list = run(&["devices", "list"]);
    println!("$ outpost devices list\n{list}");
    for line in list.lines().skip(1) {
        if line.contains("region=eu") {
            assert!(line.contains("digits 2.0.0") && !line.contains("vibration"), "{list}");
        } else {
            assert!(line.contains("digits 2.0.0, vibration 1.0.0  "), "reverted, nothing pending: {list}");
        }
    }

    // vibration 1.2.0 to the us devices, paused after its canary; digits 3.0.0 starts after it (so it is
    // the newest rollout), fails its shadow gate at its canary and is rolled back while vibration waits;
    // resumed, vibration completes: neither the pause nor the failing gate nor the newer rollout of
    // another model held or took the other's devices.
    let us = |model: &str, version: &str| {
        ports.iter().zip(regions).filter(|(p, r)| *r == "us" && serves(**p, model).as_deref() == Some(version)).count()
    };
    let v12 = ["--bundle", "vibration@1.2.0", "-l", "region=us", "--waves", "1,100%", "--bake", "2s", "--watch", "2s"];
    run(&[&["rollout", "start"][..], &v12, &["--id", "v12"]].concat());
    run(&["rollout", "pause", "v12"]);
    assert!(phase("v12").get("Paused").is_some(), "{}", phase("v12"));
    let gated =
        ["--watch", "2s", "--shadow", "4s", "--min-shadow-agreement", "90%", "--on-failure", "rollback", "--id", "d3"];
    run(&[&["rollout", "start", "--bundle", "digits@3.0.0", "--waves", "1,100%", "--bake", "6s"][..], &gated].concat());
    let mut saw_bad = std::collections::BTreeSet::new();
    wait_until(
        "digits 3.0.0 rolled back, digits 2.0.0 everywhere",
        120,
        || {
            saw_bad.extend(ports.iter().filter(|p| serves(**p, "digits").as_deref() == Some("3.0.0")).copied());
            phase("d3").get("RolledBack").is_some() && all("digits", "2.0.0")
        },
        describe,
    );
    assert!(saw_bad.len() <= 1, "only the canary ever served the scrambled digits: {saw_bad:?}");
    assert!(phase("v12").get("Paused").is_some(), "the digits rollback left vibration paused: {}", phase("v12"));
    assert!(us("vibration", "1.2.0") <= 1, "nothing beyond vibration's canary while paused");
    run(&["rollout", "resume", "v12"]);
    wait_until(
        "vibration 1.2.0 on the us devices",
        120,
        || phase("v12") == "Completed" && us("vibration", "1.2.0") == 2,
        describe,
    );
    for (i, p) in ports.iter().enumerate() {
        assert_eq!(serves(*p, "digits").as_deref(), Some("2.0.0"), "dev-{i} keeps digits 2.0.0");
        if regions[i] == "eu" {
            assert_eq!(serves(*p, "vibration"), None, "dev-{i}: the removal still holds in eu");
        }
    }

    // What an operator sees of every model at once, and of one. The eu devices, which had vibration
    // removed (the removal named vibration's newest bundle, 1.2.0), are not counted for it.
    let section = |skew: &str, model: &str| {
        let from = skew.find(&format!("model {model}\n")).unwrap_or_else(|| panic!("no {model} in:\n{skew}"));
        let rest = &skew[from + 1..];
        rest[..rest.find("\nmodel ").map_or(rest.len(), |e| e + 1)].to_owned()
    };
    let settled = "on target 2, behind 0, ahead 0, in progress 0, failed 0, unknown 0";
    wait_until(
        "the us devices commit vibration 1.2.0",
        60,
        || section(&run(&["skew"]), "vibration").contains(settled),
        || run(&["skew"]),
    );
    let skew = run(&["skew"]);
    println!("$ outpost skew\n{skew}");
    let (digits, vibration) = (section(&skew, "digits"), section(&skew, "vibration"));
    assert!(digits.contains("  2.0.0  4 online, 0 offline") && !digits.contains("3.0.0  "), "{digits}");
    assert!(digits.contains("on target 4, behind 0"), "{digits}");
    assert!(vibration.contains("  1.2.0  2 online, 0 offline") && !vibration.contains("1.0.0  "), "{vibration}");
    let one = run(&["skew", "--model", "vibration"]);
    assert!(one.starts_with("model vibration\n") && !one.contains("model digits"), "{one}");
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
}

//! The trust lifecycle on the operator's side, as an operator runs it: `trust rotate-root` twice, `trust
//! init` under each root, `trust push` to a running `outpost serve`, `trust status`; the pushed trust is the
//! retained message a plain MQTT subscriber gets on `outpost/v1/fleet/trust`, also after the daemon (and
//! its embedded broker, which forgets retained messages) restarts; wrong pushes are refused with their code.

#[path = "support/cli.rs"]
mod cli;

use cli::*;
use outpost_protocol::messages::{Message, TrustUpdate};
use outpost_protocol::{Limits, codec, topics};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Serve(Child);
impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(data: &Path, root_pub: &str, mqtt: u16, api: u16) -> Serve {
    let child = Command::new(env!("CARGO_BIN_EXE_outpost"))
        .args(["serve", "--data-dir", &data.display().to_string(), "--api", &format!("127.0.0.1:{api}")])
        .args(["--mqtt-listen", &format!("127.0.0.1:{mqtt}"), "--root-pub", root_pub])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_port(api);
    wait_port(mqtt);
    Serve(child)
}

/// What a device would get on the fleet-wide trust topic right after subscribing (the retained message).
fn retained_trust(mqtt: u16) -> TrustUpdate {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let id = format!("probe-{}", free_port());
        let mut o = MqttOptions::new(id.clone(), "127.0.0.1", mqtt);
        // The embedded broker wants a login (any, but the controller's name needs its password).
        o.set_credentials(id, "");
        let (client, mut events) = AsyncClient::new(o, 16);
        client.subscribe(topics::TRUST, QoS::AtLeastOnce).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let e = tokio::time::timeout_at(deadline, events.poll()).await.expect("no retained trust arrived");
            if let Ok(Event::Incoming(Packet::Publish(p))) = e
                && p.topic == topics::TRUST
            {
                let Ok(Message::Trust(u)) = codec::decode(&p.payload, &Limits::default()) else { panic!("not trust") };
                return u;
            }
        }
    })
}

#[test]
fn an_operator_rotates_the_root_twice_pushes_and_the_fleet_topic_carries_it_across_restarts() {
    let d = tempdir("trustcli-rotate");
    let p = |f: &str| d.join(f).display().to_string();
    for name in ["root", "root-b", "root-c", "root-d", "release-1", "release-2", "stranger"] {
        ok(&["keys", "gen", "--out", &p("keys"), "--name", name]);
    }
    let k = |n: &str| p(&format!("keys/{n}.key"));
    let pubk = |n: &str| p(&format!("keys/{n}.pub"));
    let chain = p("roots");
    let image_root = pubk("root");
    let rotate = |root_keys: &[&str], new_keys: &[&str], threshold: &str| {
        let mut args = vec!["trust", "rotate-root", "--image-root-pub", &image_root, "--chain", &chain];
        for r in root_keys {
            args.extend(["--root-key", r]);
        }
        for n in new_keys {
            args.extend(["--new-key", n]);
        }
        args.extend(["--threshold", threshold]);
        outpost(&args)
    };
    // A new root the old root did not sign is refused and nothing is written.
    let out = rotate(&[&k("stranger")], &[&k("root-b")], "1");
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("root_below_threshold"));
    assert!(!d.join("roots/root-2.root").exists());
    let out = rotate(&[&k("root")], &[&k("root-b"), &k("root-c")], "2");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("root v2") && text.contains(" UTC; "), "expiry as a UTC time: {text}");
    // v3 needs 2 of v2's keys: one is not enough.
    let out = rotate(&[&k("root-b")], &[&k("root-d")], "1");
    assert!(String::from_utf8_lossy(&out.stderr).contains("root_below_threshold"), "{out:?}");
    // -o json: the document written, as `trust inspect` reads it, with its file. A refused rotation prints
    // no JSON, only its one-line reason.
    let rotate_json = |root_keys: &[&str], new_key: &str| {
        let mut args = vec!["trust", "rotate-root", "--image-root-pub", &image_root, "--chain", &chain, "-o", "json"];
        for r in root_keys {
            args.extend(["--root-key", r]);
        }
        outpost(&[&args[..], &["--new-key", new_key]].concat())
    };
    let refused = rotate_json(&[&k("stranger")], &k("root-d"));
    assert!(refused.status.code() == Some(1) && refused.stdout.is_empty(), "{refused:?}");
    let out = rotate_json(&[&k("root-b"), &k("root-c")], &k("root-d"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let written: serde_json::Value = serde_json::from_slice(&out.stdout).expect("rotate-root -o json prints JSON");
    let v3 = p("roots/root-3.root");
    assert_eq!(written["file"].as_str(), Some(v3.as_str()), "{written}");
    let mut shown: serde_json::Value = serde_json::from_str(&ok(&["trust", "inspect", &v3, "-o", "json"])).unwrap();
    assert_eq!(
        (shown["kind"].as_str(), shown["version"].as_u64(), shown["signed_by"].as_array().map(|a| a.len())),
        (Some("root"), Some(3), Some(3))
    );
    shown["file"] = v3.clone().into();
    assert_eq!(written, shown);
    assert!(written["expires"].as_u64() > written["created"].as_u64(), "{written}");

    let (mqtt, api) = (free_port(), free_port());
    let data = d.join("data");
    let controller = serve(&data, &pubk("root"), mqtt, api);
    let remote = ["--controller", &format!("http://127.0.0.1:{api}"), "--data-dir", &data.display().to_string()];
    let remote: Vec<&str> = remote.iter().map(|s| s.as_ref()).collect();
    let init = |root: &str, release: &[&str], version: &str, out: &str| {
        let mut args = vec!["trust", "init", "--root-key", root, "--policy-version", version, "--out", out];
        for r in release {
            args.extend(["--release-pub", r]);
        }
        ok(&args);
    };
    init(&k("root"), &[&pubk("release-1"), &pubk("release-2")], "1", &p("trust-1.policy"));
    let written: serde_json::Value = serde_json::from_str(&ok(&[
        "trust",
        "init",
        "--root-key",
        &k("root-d"),
        "--release-pub",
        &pubk("release-2"),
        "--policy-version",
        "2",
        "--out",
        &p("trust-2.policy"),
        "-o",
        "json",
    ]))
    .expect("trust init -o json prints JSON");
    assert_eq!(
        (written["kind"].as_str(), written["version"].as_u64(), written["file"].as_str()),
        (Some("policy"), Some(2), Some(p("trust-2.policy").as_str())),
        "{written}"
    );
    let mut shown: serde_json::Value =
        serde_json::from_str(&ok(&["trust", "inspect", &p("trust-2.policy"), "-o", "json"])).unwrap();
    shown["file"] = p("trust-2.policy").into();
    assert_eq!(written, shown, "what was written, as `trust inspect` reads it");
    let v1: serde_json::Value =
        serde_json::from_str(&ok(&["trust", "inspect", &p("trust-1.policy"), "-o", "json"])).unwrap();
    let v1_keys = v1["release_keys"].as_array().unwrap();
    let keys = written["release_keys"].as_array().unwrap();
    assert!(keys.len() == 1 && v1_keys.len() == 2 && v1_keys.contains(&keys[0]), "{written} {v1}");
    let push = |policy: &str, chain: Option<&str>| {
        let mut args = vec!["trust", "push", "--policy", policy];
        if let Some(c) = chain {
            args.extend(["--chain", c]);
        }
        outpost(&[&args[..], &remote].concat())
    };
    let out = push(&p("trust-1.policy"), None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("root v1"), "{}", String::from_utf8_lossy(&out.stdout));
    // A policy of the newest root without the chain that leads to it: devices could not check it.
    let (code, err) = {
        let out = push(&p("trust-2.policy"), None);
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    assert_eq!(code, Some(1));
    assert!(err.contains("policy_not_signed_by_root"), "{err}");
    let out = push(&p("trust-2.policy"), Some(&chain));
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success() && shown.contains("root v3") && shown.contains("policy      v2"), "{shown}");
    // Going back is refused: the chain may only grow, the policy version only rise.
    let (code, err) = fails(&[&["trust", "push", "--policy", &p("trust-1.policy")][..], &remote].concat());
    assert!(code == 1 && err.contains("root_rollback"), "{err}");

    let got = retained_trust(mqtt);
    assert_eq!((got.first_root, got.roots.len()), (2, 2));
    assert_eq!(got.policy, std::fs::read(d.join("trust-2.policy")).unwrap());
    let status: serde_json::Value =
        serde_json::from_str(&ok(&[&["trust", "status", "-o", "json"][..], &remote].concat())).unwrap();
    assert_eq!((status["root"]["version"].as_u64(), status["policy"]["version"].as_u64()), (Some(3), Some(2)));
    let audit = ok(&[&["audit", "-o", "json"][..], &remote].concat());
    assert_eq!(audit.matches("trust pushed").count(), 2, "{audit}");

    // The embedded broker keeps retained messages in memory only: the daemon publishes the trust again.
    drop(controller);
    let (mqtt, api2) = (free_port(), free_port());
    let _controller = serve(&data, &pubk("root"), mqtt, api2);
    assert_eq!(retained_trust(mqtt), got, "after a restart");
}

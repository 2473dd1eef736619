//! The trust lifecycle end to end, with real parts: mosquitto (or the quick start's embedded broker), the
//! `outpost` binary (`serve` and the operator's CLI) and real agents. A release key is rotated and revoked
//! across a fleet (a bundle signed only by the revoked key is refused by every device after the push); the
//! root rotates twice while a device is offline for both; a device whose policy expired while it was
//! offline recovers and updates again; forged trust updates and forged or replayed version reports are
//! refused, each with its reason code, and an unsigned claim stays "claimed".

#[path = "../support/mod.rs"]
mod support;

mod expiry;
mod release_keys;
mod reports;
mod roots;

use outpost_protocol::keys::{self, PrivateKey, private_key_from_seed};
use outpost_protocol::messages::{Hello, Message, RunningModel, SignedVersionReport, TrustUpdate, VersionReport};
use outpost_protocol::root::{ROOT_FORMAT, RootDocument, create_root};
use outpost_protocol::trust::{POLICY_FORMAT, TrustPolicy, create_policy};
use outpost_protocol::{Arch, DeviceId, Digest, Limits, ModelName, Version, codec, topics};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::*;

/// `DIR/NAME.key` and `DIR/NAME.pub` for a fixed seed (what `outpost keys gen` writes, made repeatable).
fn key_files(dir: &Path, name: &str, seed: u8) -> (String, String) {
    let key = private_key_from_seed([seed; 32]);
    let (k, p) = (dir.join(format!("{name}.key")), dir.join(format!("{name}.pub")));
    std::fs::write(&k, keys::private_key_to_pem(&key)).unwrap();
    std::fs::write(&p, keys::public_key_to_pem(&key.verifying_key())).unwrap();
    (path(&k), path(&p))
}

/// A release-engineer command (no controller involved) that must succeed.
fn offline(args: &[&str]) -> String {
    let out = outpost(args);
    assert!(out.status.success(), "outpost {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}
/// What these tests ask of the controller beyond the shared CLI helpers.
trait TrustCtl {
    /// `(root, policy)` versions the device attests in its last verified report.
    fn attests(&self, id: &str) -> Option<(u64, u64)>;
    /// Ends a rollout whose devices all run its release (its gates want inference traffic these tests
    /// do not make; aborting without --revert leaves every device as it is).
    fn done(&self, id: &str);
    fn rollout(&self, bundle: &str, id: &str);
}

impl TrustCtl for Controller {
    fn attests(&self, id: &str) -> Option<(u64, u64)> {
        let r = &self.device(id)["attestation"]["last"]["report"];
        Some((r["root_version"].as_u64()?, r["policy_version"].as_u64()?))
    }

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
        let id = format!("attacker-{}", free_port());
        let mut o = rumqttc::MqttOptions::new(id.clone(), "127.0.0.1", port);
        // Any login name passes the embedded broker (it checks only the controller's); mosquitto ignores it.
        o.set_credentials(id, "");
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
        // A rotation keeps naming the controller's director key.
        director_keys: vec![director().verifying_key().to_bytes()],
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

/// `outpost-agent ARGS` (the device installer's command), its standard output.
fn agent_cli(args: &[&str]) -> String {
    let bin = outpost_bin().with_file_name("outpost-agent");
    let out = Command::new(&bin).args(args).output().unwrap();
    assert!(out.status.success(), "outpost-agent {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

//! How long `verify` takes on the real digits bundles (full v1, delta v2), against the cheapest thing a
//! device must do anyway: hash the model bytes once. Prints figures; asserts nothing about time.
//! Run: `cargo bench -p outpost-protocol --bench verify`.

use outpost_protocol::bundle;
use outpost_protocol::keys::private_key_from_seed;
use outpost_protocol::manifest::*;
use outpost_protocol::trust::{self, POLICY_FORMAT, RootKeys, TrustPolicy};
use outpost_protocol::verify::{DeviceFacts, VerifyRequest, verify};
use outpost_protocol::{Arch, Digest, Limits, ModelName, Version};
use std::hint::black_box;
use std::time::Instant;

const NOW: u64 = 1_800_000_000;

fn model(name: &str) -> Vec<u8> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../simulations/models/");
    std::fs::read(format!("{path}{name}")).unwrap()
}

fn time<T>(label: &str, iters: u32, baseline: Option<f64>, mut f: impl FnMut() -> T) -> f64 {
    for _ in 0..iters / 10 + 1 {
        black_box(f());
    }
    let start = Instant::now();
    for _ in 0..iters {
        black_box(f());
    }
    let us = start.elapsed().as_secs_f64() * 1e6 / iters as f64;
    match baseline {
        Some(b) => println!("{label:<44} {us:>10.1} µs   {:>6.1}× baseline", us / b),
        None => println!("{label:<44} {us:>10.1} µs   (baseline)"),
    }
    us
}

fn main() {
    let root = private_key_from_seed([1; 32]);
    let release = private_key_from_seed([2; 32]);
    let policy = trust::create_policy(
        &TrustPolicy {
            format: POLICY_FORMAT,
            version: 1,
            created: NOW,
            expires: NOW + 86_400,
            threshold: 1,
            release_keys: vec![release.verifying_key().to_bytes()],
            director_keys: vec![],
        },
        std::slice::from_ref(&root),
    );
    let (v1, v2) = (model("digits-v1.onnx"), model("digits-v2.onnx"));
    let make = |m: &[u8], base: Option<&[u8]>, seq| {
        let (payload, bytes) = bundle::prepare_payload(m, base, ModelFormat::Onnx);
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            name: ModelName::new("digits").unwrap(),
            version: Version::new(seq as u32, 0, 0),
            sequence: seq,
            payload,
            targets: Targets { archs: vec![], min_agent: Version::new(0, 1, 0) },
            interface: ModelInterface { inputs: vec![], outputs: vec![] },
            selftest: SelfTestSection::default(),
            created: NOW,
            expires: NOW + 86_400,
            reference: None,
        };
        bundle::create(&manifest, std::slice::from_ref(&release), &bytes, &[])
    };
    let full = make(&v1, None, 1);
    let delta = make(&v2, Some(&v1), 2);
    let roots = RootKeys::new(vec![root.verifying_key()]);
    let device = DeviceFacts { arch: Arch::X86_64, agent_version: Version::new(0, 1, 0) };
    let limits = Limits::default();
    let req = |b: &[u8], base: Option<&[u8]>| {
        verify(&VerifyRequest {
            policy: &policy,
            roots: &roots,
            bundle: b,
            now: NOW,
            expiry_grace: 0,
            floor: 0,
            policy_floor: 0,
            device: &device,
            base,
            limits: &limits,
        })
        .unwrap()
        .model
        .len()
    };
    println!("digits model {} bytes; full bundle {} bytes; delta bundle {} bytes", v1.len(), full.len(), delta.len());
    let base = time("baseline: sha256 of the model", 2000, None, || Digest::of(&v1));
    time("verify v1 (full bundle)", 500, Some(base), || req(&full, None));
    time("verify v2 (delta against v1)", 500, Some(base), || req(&delta, Some(&v1)));
    time("verify trust policy only", 2000, Some(base), || {
        trust::verify_policy(&policy, &roots, NOW, 0, 0, &limits).unwrap().policy.version
    });
}

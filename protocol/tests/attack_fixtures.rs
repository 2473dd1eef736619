//! One named fixture per attack under `tests/data/attacks/`, each refused by `verify` with its own reason
//! code. The fixtures are files, so other implementations and fuzzers can use them; they are made
//! deterministically below (fixed keys, fixed clock) and the test also fails if the committed bytes drift
//! from what this code makes (the bundle format changed). Re-record with `OUTPOST_BLESS=1`. Trust updates
//! over the air (root chains, policies) have their own fixtures in `attack_fixtures/trust_updates.rs`.

use outpost_protocol::bundle;
use outpost_protocol::keys::{self, PrivateKey, private_key_from_seed};
use outpost_protocol::manifest::*;
use outpost_protocol::trust::{self, POLICY_FORMAT, RootKeys, TrustPolicy};
use outpost_protocol::verify::{DeviceFacts, VerifyRequest, verify};
use outpost_protocol::{Arch, Digest, Limits, ModelName, RejectReason, Version, compress};
use std::path::PathBuf;

#[path = "attack_fixtures/trust_updates.rs"]
mod trust_updates;

const NOW: u64 = 1_800_000_000;
const DAY: u64 = 86_400;
const FLOOR: u64 = 5;
/// The trust policy version the device already accepted.
const POLICY_FLOOR: u64 = 1;

fn root() -> PrivateKey {
    private_key_from_seed([1; 32])
}
fn release(i: u8) -> PrivateKey {
    private_key_from_seed([10 + i; 32])
}
fn stranger() -> PrivateKey {
    private_key_from_seed([99; 32])
}

/// A stand-in model: the verifier treats the payload as opaque bytes, so these tests need no ONNX file.
fn model(seed: u8) -> Vec<u8> {
    (0..20_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 ^ seed).collect()
}

fn policy(threshold: u8, expires: u64, signer: &PrivateKey) -> Vec<u8> {
    policy_v(1, threshold, expires, signer)
}

fn policy_v(version: u64, threshold: u8, expires: u64, signer: &PrivateKey) -> Vec<u8> {
    let p = TrustPolicy {
        format: POLICY_FORMAT,
        version,
        created: NOW - DAY,
        expires,
        threshold,
        release_keys: (0..3).map(|i| release(i).verifying_key().to_bytes()).collect(),
        director_keys: vec![],
    };
    trust::create_policy(&p, std::slice::from_ref(signer))
}

fn manifest(payload: Payload) -> Manifest {
    Manifest {
        format: MANIFEST_FORMAT,
        name: ModelName::new("digits").unwrap(),
        version: Version::new(2, 0, 0),
        sequence: 10,
        payload,
        targets: Targets { archs: vec![Arch::X86_64, Arch::Aarch64], min_agent: Version::new(0, 1, 0) },
        interface: ModelInterface {
            inputs: vec![TensorSpec {
                name: "input".into(),
                dtype: DType::F32,
                shape: vec![Dim::Symbolic("N".into()), Dim::Fixed(1), Dim::Fixed(8), Dim::Fixed(8)],
            }],
            outputs: vec![TensorSpec {
                name: "logits".into(),
                dtype: DType::F32,
                shape: vec![Dim::Symbolic("N".into()), Dim::Fixed(10)],
            }],
        },
        selftest: SelfTestSection::default(),
        created: NOW - DAY,
        expires: NOW + 30 * DAY,
        reference: None,
    }
}

/// The self-test vector good bundles carry: typed tensors (FP32 in, INT64 and BOOL out).
fn vectors() -> Vec<SelfTestVector> {
    let input: Vec<u8> = (0..64).flat_map(|i| (i as f32 / 64.0).to_le_bytes()).collect();
    let class: Vec<u8> = 7i64.to_le_bytes().to_vec();
    vec![SelfTestVector {
        inputs: vec![Tensor { name: "input".into(), dtype: DType::F32, shape: vec![1, 1, 8, 8], data: input }],
        expected: vec![
            Tensor { name: "class".into(), dtype: DType::I64, shape: vec![1], data: class },
            Tensor { name: "ok".into(), dtype: DType::Bool, shape: vec![1], data: vec![1] },
        ],
        tolerance: Tolerance::default(),
    }]
}

/// A correctly signed full bundle, after `edit` changed its manifest.
fn signed_with(keys: &[PrivateKey], edit: impl FnOnce(&mut Manifest)) -> Vec<u8> {
    let (payload, bytes) = bundle::prepare_payload(&model(2), None, ModelFormat::Onnx);
    let mut m = manifest(payload);
    edit(&mut m);
    bundle::create(&m, keys, &bytes, &vectors())
}

/// A bundle signed over exactly `m` (its self-test section as `edit` left it, not recomputed) with the
/// good payload and self-test bytes after it: for a release that lies about its self-test section.
fn signed_raw(edit: impl FnOnce(&mut Manifest)) -> Vec<u8> {
    let (payload, bytes) = bundle::prepare_payload(&model(2), None, ModelFormat::Onnx);
    let (section, vector_bytes) = SelfTestSection::encode(&vectors());
    let mut m = manifest(payload);
    m.selftest = section;
    edit(&mut m);
    let body = m.to_bytes();
    let sig = keys::sign(&release(0), keys::Domain::Manifest, &body);
    outpost_protocol::signed::encode(bundle::BUNDLE_MAGIC, &body, &[sig], &[bytes, vector_bytes].concat())
}

fn good() -> Vec<u8> {
    signed_with(&[release(0)], |_| {})
}

struct Case {
    name: &'static str,
    bundle: Vec<u8>,
    /// Fixture name and bytes of the trust policy the device holds.
    policy: (&'static str, Vec<u8>),
    base: Option<Vec<u8>>,
    expect: Option<RejectReason>,
}

fn case(name: &'static str, bundle: Vec<u8>, expect: Option<RejectReason>) -> Case {
    Case { name, bundle, policy: ("trust", policy(1, NOW + 365 * DAY, &root())), base: None, expect }
}

fn cases() -> Vec<Case> {
    use RejectReason::*;
    let good = good();
    let sig_at = {
        // The first signature's bytes start 8 (magic) + 4 + manifest + 4 + 1 (count) + 8 (key id) + 1 (len).
        let manifest_len = u32::from_le_bytes(good[8..12].try_into().unwrap()) as usize;
        12 + manifest_len + 4 + 1 + 8 + 1
    };
    let mut bad_sig = good.clone();
    bad_sig[sig_at + 10] ^= 0x40;
    let mut tampered_manifest = good.clone();
    tampered_manifest[20] ^= 1;
    let section = bundle::inspect(&good, &Limits::default()).unwrap().manifest.selftest.size as usize;
    let mut flipped_payload = good.clone();
    let last_payload_byte = good.len() - section - 1;
    flipped_payload[last_payload_byte] ^= 1;
    // The self-test section is bound to the signed manifest by its digest, size and count.
    let mut tampered_selftest = good.clone();
    *tampered_selftest.last_mut().unwrap() ^= 1;
    let mut endless = good.clone();
    endless.extend_from_slice(&[0u8; 4096]);

    // A payload that expands far beyond what its (correctly signed) manifest declares.
    let bomb_bytes = compress::compress_full(&vec![0u8; 8 << 20]);
    let bomb = {
        let payload = Payload {
            format: ModelFormat::Onnx,
            compression: Compression::Full,
            compressed_size: bomb_bytes.len() as u64,
            compressed_sha256: Digest::of(&bomb_bytes),
            model_size: 20_000,
            model_sha256: Digest::of(&model(2)),
        };
        bundle::create(&manifest(payload), &[release(0)], &bomb_bytes, &[])
    };
    // A delta against model(1): fine on a device whose base is model(1), refused on one with model(3).
    let delta = {
        let (payload, bytes) = bundle::prepare_payload(&model(2), Some(&model(1)), ModelFormat::Onnx);
        bundle::create(&manifest(payload), &[release(0)], &bytes, &vectors())
    };
    let mut garbage = vec![0u8; 4096];
    for (i, b) in garbage.iter_mut().enumerate() {
        *b = (i * 7919 % 251) as u8;
    }

    vec![
        case("good", good.clone(), None),
        Case { base: Some(model(1)), ..case("good-delta", delta.clone(), None) },
        case("bad-signature", bad_sig, Some(BadSignature)),
        case("tampered-manifest", tampered_manifest, Some(BadSignature)),
        case("unknown-key", signed_with(&[stranger()], |_| {}), Some(UnknownKey)),
        Case {
            policy: ("trust-2of3", policy(2, NOW + DAY, &root())),
            ..case("below-threshold", signed_with(&[release(0)], |_| {}), Some(BelowThreshold))
        },
        Case {
            // One key signing twice is still one key.
            policy: ("trust-2of3", policy(2, NOW + DAY, &root())),
            ..case("same-key-twice", signed_with(&[release(0), release(0)], |_| {}), Some(BelowThreshold))
        },
        Case {
            policy: ("trust-2of3", policy(2, NOW + DAY, &root())),
            ..case("two-of-three", signed_with(&[release(0), release(2)], |_| {}), None)
        },
        Case {
            policy: ("trust-forged", policy(1, NOW + DAY, &stranger())),
            ..case("policy-not-signed-by-root", good.clone(), Some(PolicyNotSignedByRoot))
        },
        Case {
            policy: ("trust-expired", policy(1, NOW - DAY, &root())),
            ..case("policy-expired", good.clone(), Some(PolicyExpired))
        },
        Case {
            policy: ("trust-old", policy_v(0, 1, NOW + DAY, &root())),
            ..case("policy-rollback", good.clone(), Some(PolicyRollback))
        },
        case("manifest-expired", signed_with(&[release(0)], |m| m.expires = NOW - DAY), Some(ManifestExpired)),
        case("rollback", signed_with(&[release(0)], |m| m.sequence = FLOOR), Some(Rollback)),
        case("payload-digest-mismatch", flipped_payload, Some(PayloadDigestMismatch)),
        case("payload-size-mismatch", endless, Some(PayloadSizeMismatch)),
        case("decompression-bomb", bomb, Some(DecompressionBomb)),
        case("selftest-tampered", tampered_selftest, Some(PayloadDigestMismatch)),
        case("selftest-oversized", signed_raw(|m| m.selftest.size = 1 << 40), Some(OverLimits)),
        case("selftest-count-mismatch", signed_raw(|m| m.selftest.vectors = 3), Some(Malformed)),
        case("manifest-old-format", signed_raw(|m| m.format = 1), Some(Malformed)),
        case("over-limits", signed_with(&[release(0)], |m| m.payload.model_size = 4 << 30), Some(OverLimits)),
        case("truncated", good[..40].to_vec(), Some(Truncated)),
        case("garbage", garbage, Some(Malformed)),
        case("wrong-arch", signed_with(&[release(0)], |m| m.targets.archs = vec![Arch::Armv7]), Some(WrongArch)),
        case(
            "agent-too-old",
            signed_with(&[release(0)], |m| m.targets.min_agent = Version::new(99, 0, 0)),
            Some(AgentTooOld),
        ),
        Case { base: Some(model(3)), ..case("delta-base-mismatch", delta.clone(), Some(DeltaBaseMismatch)) },
        case("delta-without-base", delta, Some(DeltaBaseMismatch)),
    ]
}

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/attacks")
}

/// Loads the committed fixture (or records it when blessing) and checks it is what the code makes.
fn fixture(name: &str, made: &[u8]) -> Vec<u8> {
    let path = data_dir().join(name);
    if std::env::var_os("OUTPOST_BLESS").is_some() {
        std::fs::write(&path, made).unwrap();
    }
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} (bless to create)", path.display()));
    assert!(bytes == made, "{name}: committed fixture differs from what this code makes (format change?)");
    bytes
}

#[test]
fn every_attack_fixture_is_refused_with_its_own_reason_and_good_ones_pass() {
    let roots = RootKeys::new(vec![root().verifying_key()]);
    let device = DeviceFacts { arch: Arch::X86_64, agent_version: Version::new(0, 1, 0) };
    let limits = Limits::default();
    // What `outpost bundle verify` needs to replay these cases (the controller's CLI test does).
    fixture("root.pub", keys::public_key_to_pem(&root().verifying_key()).as_bytes());
    fixture("base-model.bin", &model(1));
    fixture("other-model.bin", &model(3));
    let mut index = String::from(
        "# bundle\tpolicy\tbase\texpected (now 1800000000, floor 5, policy floor 1, x86_64, agent 0.1.0)\n",
    );
    for c in cases() {
        let base = match &c.base {
            Some(b) if *b == model(1) => "base-model.bin",
            Some(_) => "other-model.bin",
            None => "-",
        };
        let expect = c.expect.map(|r| r.code()).unwrap_or("ok");
        index.push_str(&format!("{}.obundle\t{}.policy\t{base}\t{expect}\n", c.name, c.policy.0));
    }
    fixture("index.tsv", index.as_bytes());
    for c in cases() {
        let bundle = fixture(&format!("{}.obundle", c.name), &c.bundle);
        let policy = fixture(&format!("{}.policy", c.policy.0), &c.policy.1);
        let req = VerifyRequest {
            policy: &policy,
            roots: &roots,
            bundle: &bundle,
            now: NOW,
            expiry_grace: 0,
            floor: FLOOR,
            policy_floor: POLICY_FLOOR,
            device: &device,
            base: c.base.as_deref(),
            limits: &limits,
        };
        match (verify(&req), c.expect) {
            (Ok(v), None) => {
                assert_eq!(v.model, model(2), "{}: the verified model is the signed one", c.name);
                assert_eq!(v.selftest, vectors(), "{}: the verified self-tests are the signed ones", c.name);
            }
            (Err(r), Some(want)) => {
                assert_eq!(r.reason, want, "{}: {r}", c.name);
                assert!(r.detail.len() > 10, "{}: the message says what was wrong: {r}", c.name);
            }
            (got, want) => panic!("{}: expected {want:?}, got {:?}", c.name, got.map(|v| v.manifest.sequence)),
        }
    }
}

#[test]
fn expiry_grace_lets_a_device_with_a_lagging_clock_install() {
    let roots = RootKeys::new(vec![root().verifying_key()]);
    let device = DeviceFacts { arch: Arch::X86_64, agent_version: Version::new(0, 1, 0) };
    let expired = signed_with(&[release(0)], |m| m.expires = NOW - 60);
    let policy = policy(1, NOW + DAY, &root());
    let mut req = VerifyRequest {
        policy: &policy,
        roots: &roots,
        bundle: &expired,
        now: NOW,
        expiry_grace: 0,
        floor: 0,
        policy_floor: 0,
        device: &device,
        base: None,
        limits: &Limits::default(),
    };
    assert_eq!(verify(&req).unwrap_err().reason, RejectReason::ManifestExpired);
    req.expiry_grace = 3600;
    assert!(verify(&req).is_ok());
}

#[test]
fn a_signature_added_later_meets_a_two_of_three_threshold() {
    let roots = RootKeys::new(vec![root().verifying_key()]);
    let device = DeviceFacts { arch: Arch::Aarch64, agent_version: Version::new(1, 0, 0) };
    let policy = policy(2, NOW + DAY, &root());
    let once = good();
    let twice = bundle::add_signature(&once, &release(1), &Limits::default()).unwrap();
    let again = bundle::add_signature(&twice, &release(1), &Limits::default()).unwrap();
    assert_eq!(twice, again, "signing twice with one key adds nothing");
    let req = |b: &[u8]| {
        verify(&VerifyRequest {
            policy: &policy,
            roots: &roots,
            bundle: b,
            now: NOW,
            expiry_grace: 0,
            floor: 0,
            policy_floor: 0,
            device: &device,
            base: None,
            limits: &Limits::default(),
        })
        .map(|v| v.signers.len())
        .map_err(|r| r.reason)
    };
    assert_eq!(req(&once), Err(RejectReason::BelowThreshold));
    assert_eq!(req(&twice), Ok(2));
}

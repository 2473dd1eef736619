//! Golden byte fixtures: one file per message under `tests/data/messages/`. If an encoding changes, this
//! test fails, because old agents in the field would no longer understand the new bytes. To record a
//! deliberate, versioned change: `OUTPOST_BLESS=1 cargo test -p outpost-protocol --test golden_messages`.

use outpost_protocol::codec;
use outpost_protocol::director::SignedDesired;
use outpost_protocol::enroll::*;
use outpost_protocol::keys::{SigBytes, private_key_from_seed};
use outpost_protocol::messages::*;
use outpost_protocol::telemetry::*;
use outpost_protocol::{Arch, DeviceId, Digest, Limits, ModelName, RejectReason, Version};
use std::path::PathBuf;

fn device() -> DeviceId {
    DeviceId::new("dev-0042").unwrap()
}
fn digits() -> ModelName {
    ModelName::new("digits").unwrap()
}
/// Rollout r-7's desired state of digits 2.0.0 (its plain and its director-signed goldens share it).
fn digits_2(mode: Mode, issued_at: u64, watch: Watch) -> DesiredState {
    DesiredState {
        model: digits(),
        version: Version::new(2, 0, 0),
        sequence: 2,
        bundle: BundleRef {
            digest: Digest([0xcd; 32]),
            size: 300_000,
            chunk_size: 262_144,
            chunks: vec![Digest([1; 32]), Digest([2; 32])],
        },
        rollout: Some("r-7".into()),
        mode,
        issued_at,
        watch,
    }
}
fn running() -> RunningModel {
    RunningModel { name: digits(), version: Version::new(1, 0, 0), digest: Digest([0xab; 32]), sequence: 1 }
}
fn kws() -> RunningModel {
    RunningModel {
        name: ModelName::new("kws").unwrap(),
        version: Version::new(3, 1, 0),
        digest: Digest([0xee; 32]),
        sequence: 7,
    }
}

fn samples() -> Vec<(&'static str, Message)> {
    let window = InferenceWindow {
        model: digits(),
        version: Version::new(1, 0, 0),
        digest: Digest([0xab; 32]),
        window_start: 1_800_000_000,
        window_secs: 60,
        requests: 1200,
        errors: 3,
        timeouts: 1,
        rejected: 0,
        latency_hist: vec![0, 900, 250, 40, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        latency_p50_us: 180,
        latency_p95_us: 420,
        cache_hits: 100,
        cache_misses: 1100,
        shadow: Some(ShadowStats {
            candidate_version: Version::new(2, 0, 0),
            candidate_digest: Digest([0xcd; 32]),
            compared: 120,
            agreed_top1: 118,
            max_abs_diff: 0.25,
            candidate_p95_us: 450,
            candidate_mem_bytes: 160_000,
        }),
        features: vec![FeatureStats {
            tensor: "input".into(),
            count: 76_800,
            mean: 0.3,
            variance: 0.12,
            lo: 0.0,
            hi: 1.0,
            bins: vec![0, 5, 10, 20, 10, 5, 0],
            psi: Some(0.02),
        }],
        output_classes: vec![120, 118, 121, 119, 122, 120, 118, 121, 120, 121],
        class_psi: Some(0.001),
    };
    let event = UpdateEvent {
        rollout: Some("r-7".into()),
        model: digits(),
        version: Version::new(2, 0, 0),
        bundle: Digest([0xcd; 32]),
        from: UpdateStage::Verifying,
        to: UpdateStage::Rejected,
        reason: Some(RejectReason::BadSignature),
        detail: "manifest: the signature by key 0102030405060708 does not verify".into(),
        seq: 1_800_000_000_123,
    };
    let health = DeviceHealth {
        rss_bytes: 24 << 20,
        cpu_percent: 12.5,
        disk_free_bytes: 1 << 30,
        uptime_secs: 3600,
        temperature_c: Some(48.0),
        queue_len: 3,
        dropped_total: 0,
    };
    let report = VersionReport {
        device: device(),
        counter: 9,
        at: 1_800_000_100,
        running: vec![running(), kws()],
        previous: vec![kws()],
        floors: vec![(digits(), 1), (ModelName::new("kws").unwrap(), 7)],
        agent_version: Version::new(0, 2, 0),
        policy_version: 3,
        root_version: 2,
    };
    // The encoding is what is pinned here; the signature's meaning is tested in `report.rs` (ring's ECDSA
    // signatures are randomised, so a real one would differ on every run).
    let signed_report = SignedVersionReport {
        report: postcard::to_allocvec(&report).unwrap(),
        device_key: [&[0x04u8][..], &[0x11; 64][..]].concat(),
        signature: SigBytes([0x5a; 64]),
    };
    vec![
        (
            "hello",
            Message::Hello(Hello {
                device: device(),
                arch: Arch::Aarch64,
                agent_version: Version::new(0, 1, 0),
                labels: vec![("region".into(), "eu".into()), ("arch".into(), "aarch64".into())],
                running: vec![running(), kws()],
                boot_id: 0x1234_5678_9abc_def0,
                max_packet: 1 << 20,
            }),
        ),
        (
            "telemetry",
            Message::Telemetry(TelemetryBatch {
                first_seq: 100,
                last_seq: 103,
                records: vec![
                    Record { seq: 100, at: 1_800_000_060, body: RecordBody::Inference(window) },
                    Record { seq: 101, at: 1_800_000_061, body: RecordBody::Update(event.clone()) },
                    Record { seq: 102, at: 1_800_000_062, body: RecordBody::Health(health) },
                    Record { seq: 103, at: 1_800_000_063, body: RecordBody::Dropped { count: 17 } },
                ],
            }),
        ),
        (
            "telemetry_trust",
            Message::Telemetry(TelemetryBatch {
                first_seq: 104,
                last_seq: 104,
                records: vec![Record {
                    seq: 104,
                    at: 1_800_000_064,
                    body: RecordBody::Trust(TrustEvent {
                        root_version: 2,
                        policy_version: 3,
                        reason: Some(RejectReason::RootVersionGap),
                        detail: "the root chain starts at v4".into(),
                    }),
                }],
            }),
        ),
        ("telemetry_ack", Message::TelemetryAck(TelemetryAck { up_to_seq: 103, hello_wanted: true })),
        ("event", Message::Event(event)),
        (
            "desired",
            Message::Desired(digits_2(
                Mode::Shadow { secs: 600, sample_percent: 10 },
                1_800_000_000,
                Watch { secs: 600, max_error_ppm: 10_000, max_p95_us: 50_000, min_requests: 50, max_restarts: 3 },
            )),
        ),
        (
            "desired_remove",
            Message::Desired(DesiredState {
                model: ModelName::new("kws").unwrap(),
                version: Version::new(3, 1, 0),
                sequence: 7,
                bundle: BundleRef {
                    digest: Digest([0xef; 32]),
                    size: 1000,
                    chunk_size: 1000,
                    chunks: vec![Digest([3; 32])],
                },
                rollout: Some("r-9".into()),
                mode: Mode::Remove,
                issued_at: 1_800_000_500,
                watch: Watch::default(),
            }),
        ),
        (
            "signed_desired_revert",
            Message::SignedDesired(SignedDesired::sign(
                &device(),
                &digits_2(Mode::Revert, 1_800_000_600, Watch::default()),
                // ed25519 signatures are deterministic: the same key and bytes give the same signature.
                &private_key_from_seed([3; 32]),
            )),
        ),
        ("chunk_request", Message::ChunkRequest(ChunkRequest { bundle: Digest([0xcd; 32]), first: 1, count: 1 })),
        ("chunk", Message::Chunk(Chunk { bundle: Digest([0xcd; 32]), index: 1, total: 2, data: (0..=255).collect() })),
        ("report", Message::Report(signed_report)),
        (
            "trust",
            Message::Trust(TrustUpdate {
                first_root: 2,
                roots: vec![b"OPROOT01 root v2".to_vec(), b"OPROOT01 root v3".to_vec()],
                policy: b"OPTRUST1 policy".to_vec(),
            }),
        ),
        ("presence", Message::Presence(Presence { device: device(), online: false, boot_id: 7 })),
        (
            "enroll_request",
            Message::EnrollRequest(EnrollRequest {
                device: device(),
                token: "opt_0123456789abcdef0123456789abcdef0123456789ab".into(),
                csr: (0..=200).collect(),
                arch: Arch::Armv7,
                agent_version: Version::new(0, 1, 0),
                labels: vec![("site".into(), "berlin-3".into())],
                nonce: 0x0102_0304_0506_0708,
            }),
        ),
        (
            "enroll_response_issued",
            Message::EnrollResponse(EnrollResponse {
                device: device(),
                nonce: 0x0102_0304_0506_0708,
                outcome: EnrollOutcome::Issued {
                    certificate: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into(),
                    ca: "-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n".into(),
                },
            }),
        ),
        (
            "enroll_response_pending",
            Message::EnrollResponse(EnrollResponse { device: device(), nonce: 9, outcome: EnrollOutcome::Pending }),
        ),
        (
            "enroll_response_refused",
            Message::EnrollResponse(EnrollResponse {
                device: device(),
                nonce: 9,
                outcome: EnrollOutcome::Refused {
                    reason: EnrollRefusal::InvalidToken,
                    detail: "no such enrollment token".into(),
                },
            }),
        ),
    ]
}

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/messages")
}

#[test]
fn every_message_encodes_to_its_golden_bytes_and_back() {
    let bless = std::env::var_os("OUTPOST_BLESS").is_some();
    for (name, msg) in samples() {
        let path = data_dir().join(format!("{name}.bin"));
        let bytes = codec::encode(&msg);
        if bless {
            std::fs::write(&path, &bytes).unwrap();
        }
        let golden = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} (bless to create)", path.display()));
        assert_eq!(bytes, golden, "encoding of {name} changed: old agents would not understand it");
        assert_eq!(codec::decode(&golden, &Limits::default()).unwrap(), msg, "{name} decodes");
    }
}

#[test]
fn compressed_telemetry_round_trips_and_is_smaller() {
    let (_, msg) = samples().into_iter().find(|(n, _)| *n == "telemetry").unwrap();
    let plain = codec::encode(&msg);
    let packed = codec::encode_compressed(&msg);
    assert!(packed.len() < plain.len(), "{} vs {}", packed.len(), plain.len());
    assert_eq!(codec::decode(&packed, &Limits::default()).unwrap(), msg);
}

#[test]
fn oversized_foreign_and_future_messages_are_refused_with_the_reason() {
    use codec::DecodeError::*;
    let limits = Limits { max_message: 64, ..Limits::default() };
    let big = codec::encode(&Message::Chunk(Chunk { bundle: Digest([0; 32]), index: 0, total: 1, data: vec![7; 100] }));
    assert!(matches!(codec::decode(&big, &limits), Err(TooLarge { .. })));
    assert_eq!(codec::decode(b"OP", &limits), Err(Truncated(2)));
    assert_eq!(codec::decode(b"{\"json\":1}", &limits), Err(BadMagic));
    assert_eq!(codec::decode(&[b'O', b'P', 9, 0, 0], &limits), Err(UnsupportedVersion(9)));
    assert_eq!(codec::decode(&[b'O', b'P', codec::MAJOR, 0x80, 0], &limits), Err(UnknownFlags(0x80)));
    // The unreleased single-model format 1 is not spoken any more.
    assert_eq!(codec::decode(&[b'O', b'P', 1, 0, 0], &limits), Err(UnsupportedVersion(1)));
    // A compressed body that expands past the limit is a bomb, caught while decompressing.
    let bomb = codec::encode_compressed(&Message::Chunk(Chunk {
        bundle: Digest([0; 32]),
        index: 0,
        total: 1,
        data: vec![0; 10_000],
    }));
    assert!(bomb.len() < 64);
    assert!(matches!(codec::decode(&bomb, &limits), Err(TooLarge { .. })));
}

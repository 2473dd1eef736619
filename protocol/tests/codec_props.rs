//! Property tests: every message survives encode → decode unchanged, compressed or not; and no byte
//! string, however hostile, makes the decoders panic.

use outpost_protocol::bundle;
use outpost_protocol::codec;
use outpost_protocol::director::SignedDesired;
use outpost_protocol::enroll::*;
use outpost_protocol::keys::{KeyId, SigBytes, Signature};
use outpost_protocol::messages::*;
use outpost_protocol::root;
use outpost_protocol::telemetry::*;
use outpost_protocol::trust;
use outpost_protocol::{Arch, DeviceId, Digest, Limits, ModelName, RejectReason, Version};
use proptest::collection::vec;
use proptest::prelude::*;

fn name() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9._-]{0,20}".prop_filter("no ..", |s| !s.contains(".."))
}
fn device() -> impl Strategy<Value = DeviceId> {
    name().prop_map(|s| DeviceId::new(s).unwrap())
}
fn model() -> impl Strategy<Value = ModelName> {
    name().prop_map(|s| ModelName::new(s).unwrap())
}
fn version() -> impl Strategy<Value = Version> {
    (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(a, b, c)| Version::new(a, b, c))
}
fn digest() -> impl Strategy<Value = Digest> {
    any::<[u8; 32]>().prop_map(Digest)
}
fn arch() -> impl Strategy<Value = Arch> {
    prop::sample::select(Arch::ALL.to_vec())
}
fn reason() -> impl Strategy<Value = RejectReason> {
    prop::sample::select(RejectReason::ALL.to_vec())
}
fn stage() -> impl Strategy<Value = UpdateStage> {
    use UpdateStage::*;
    prop::sample::select(vec![
        Idle, Fetching, Verifying, Staged, SelfTest, Shadow, Activating, Watching, Committed, RolledBack, Rejected,
    ])
}
fn finite() -> impl Strategy<Value = f32> {
    -1e6f32..1e6f32
}
fn running() -> impl Strategy<Value = RunningModel> {
    (model(), version(), digest(), any::<u64>()).prop_map(|(name, version, digest, sequence)| RunningModel {
        name,
        version,
        digest,
        sequence,
    })
}
fn event() -> impl Strategy<Value = UpdateEvent> {
    (prop::option::of(name()), model(), version(), digest(), stage(), stage(), prop::option::of(reason()), ".{0,40}")
        .prop_map(|(rollout, model, version, bundle, from, to, reason, detail)| UpdateEvent {
            rollout,
            model,
            version,
            bundle,
            from,
            to,
            reason,
            detail,
            seq: version.major.into(),
        })
}
fn window() -> impl Strategy<Value = InferenceWindow> {
    let shadow = (version(), digest(), any::<u64>(), any::<u64>(), finite(), any::<u32>(), any::<u64>()).prop_map(
        |(candidate_version, candidate_digest, compared, agreed_top1, max_abs_diff, candidate_p95_us, mem)| {
            ShadowStats {
                candidate_version,
                candidate_digest,
                compared,
                agreed_top1,
                max_abs_diff,
                candidate_p95_us,
                candidate_mem_bytes: mem,
            }
        },
    );
    let feature = (
        name(),
        any::<u64>(),
        -1e9f64..1e9,
        0f64..1e9,
        finite(),
        finite(),
        vec(any::<u64>(), 0..8),
        prop::option::of(finite()),
    )
        .prop_map(|(tensor, count, mean, variance, lo, hi, bins, psi)| FeatureStats {
            tensor,
            count,
            mean,
            variance,
            lo,
            hi,
            bins,
            psi,
        });
    (
        (model(), version(), digest(), any::<u64>(), any::<u32>()),
        (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()),
        (vec(any::<u64>(), 0..16), any::<u32>(), any::<u32>(), any::<u64>(), any::<u64>()),
        (prop::option::of(shadow), vec(feature, 0..3), vec(any::<u64>(), 0..10), prop::option::of(finite())),
    )
        .prop_map(
            |(
                (model, version, digest, window_start, window_secs),
                (requests, errors, timeouts, rejected),
                h,
                (shadow, features, output_classes, class_psi),
            )| {
                InferenceWindow {
                    model,
                    version,
                    digest,
                    window_start,
                    window_secs,
                    requests,
                    errors,
                    timeouts,
                    rejected,
                    latency_hist: h.0,
                    latency_p50_us: h.1,
                    latency_p95_us: h.2,
                    cache_hits: h.3,
                    cache_misses: h.4,
                    shadow,
                    features,
                    output_classes,
                    class_psi,
                }
            },
        )
}
fn record() -> impl Strategy<Value = Record> {
    let health =
        (any::<u64>(), finite(), any::<u64>(), any::<u64>(), prop::option::of(finite()), any::<u64>(), any::<u64>())
            .prop_map(
                |(rss_bytes, cpu_percent, disk_free_bytes, uptime_secs, temperature_c, queue_len, dropped_total)| {
                    DeviceHealth {
                        rss_bytes,
                        cpu_percent,
                        disk_free_bytes,
                        uptime_secs,
                        temperature_c,
                        queue_len,
                        dropped_total,
                    }
                },
            );
    let body = prop_oneof![
        window().prop_map(RecordBody::Inference),
        event().prop_map(RecordBody::Update),
        health.prop_map(RecordBody::Health),
        any::<u64>().prop_map(|count| RecordBody::Dropped { count }),
        (any::<u64>(), any::<u64>(), prop::option::of(reason()), ".{0,40}").prop_map(
            |(root_version, policy_version, reason, detail)| {
                RecordBody::Trust(TrustEvent { root_version, policy_version, reason, detail })
            }
        ),
    ];
    (any::<u64>(), any::<u64>(), body).prop_map(|(seq, at, body)| Record { seq, at, body })
}
fn message() -> impl Strategy<Value = Message> {
    let hello = (
        device(),
        arch(),
        version(),
        vec((name(), name()), 0..4),
        prop::collection::vec(running(), 0..4),
        any::<u64>(),
        any::<u32>(),
    )
        .prop_map(|(device, arch, agent_version, labels, running, boot_id, max_packet)| {
            Message::Hello(Hello { device, arch, agent_version, labels, running, boot_id, max_packet })
        });
    let telemetry = (any::<u64>(), any::<u64>(), vec(record(), 0..4))
        .prop_map(|(first_seq, last_seq, records)| Message::Telemetry(TelemetryBatch { first_seq, last_seq, records }));
    let mode = prop_oneof![
        Just(Mode::Activate),
        (any::<u32>(), any::<u8>()).prop_map(|(secs, sample_percent)| Mode::Shadow { secs, sample_percent }),
        Just(Mode::Revert),
        Just(Mode::Remove),
    ];
    let bundle_ref = (digest(), any::<u64>(), any::<u32>(), vec(digest(), 0..4))
        .prop_map(|(digest, size, chunk_size, chunks)| BundleRef { digest, size, chunk_size, chunks });
    let desired = (model(), version(), any::<u64>(), bundle_ref, prop::option::of(name()), mode, any::<u64>())
        .prop_map(|(model, version, sequence, bundle, rollout, mode, issued_at)| {
            let watch = Watch { secs: issued_at as u32, max_error_ppm: sequence as u32, ..Watch::default() };
            Message::Desired(DesiredState { model, version, sequence, bundle, rollout, mode, issued_at, watch })
        });
    let report = (vec(any::<u8>(), 0..64), vec(any::<u8>(), 0..70), any::<[u8; 32]>(), any::<[u8; 32]>()).prop_map(
        |(report, device_key, a, b)| {
            let mut sig = [0u8; 64];
            sig[..32].copy_from_slice(&a);
            sig[32..].copy_from_slice(&b);
            Message::Report(SignedVersionReport { report, device_key, signature: SigBytes(sig) })
        },
    );
    let enroll_request =
        (device(), ".{0,40}", vec(any::<u8>(), 0..300), arch(), version(), vec((name(), name()), 0..3), any::<u64>())
            .prop_map(|(device, token, csr, arch, agent_version, labels, nonce)| {
                Message::EnrollRequest(EnrollRequest { device, token, csr, arch, agent_version, labels, nonce })
            });
    let refusal = prop::sample::select(vec![
        EnrollRefusal::InvalidToken,
        EnrollRefusal::ExpiredToken,
        EnrollRefusal::BadCsr,
        EnrollRefusal::WrongSubject,
        EnrollRefusal::Revoked,
        EnrollRefusal::KeyMismatch,
        EnrollRefusal::Unavailable,
        EnrollRefusal::TokenUsedUp,
        EnrollRefusal::DeviceNotAllowed,
        EnrollRefusal::RateLimited,
        EnrollRefusal::NotDue,
    ]);
    let outcome = prop_oneof![
        (".{0,80}", ".{0,80}").prop_map(|(certificate, ca)| EnrollOutcome::Issued { certificate, ca }),
        Just(EnrollOutcome::Pending),
        (refusal, ".{0,40}").prop_map(|(reason, detail)| EnrollOutcome::Refused { reason, detail }),
    ];
    let enroll_response = (device(), any::<u64>(), outcome)
        .prop_map(|(device, nonce, outcome)| Message::EnrollResponse(EnrollResponse { device, nonce, outcome }));
    prop_oneof![
        hello,
        telemetry,
        (any::<u64>(), any::<bool>())
            .prop_map(|(up_to_seq, hello_wanted)| Message::TelemetryAck(TelemetryAck { up_to_seq, hello_wanted })),
        event().prop_map(Message::Event),
        desired,
        (digest(), any::<u32>(), any::<u32>()).prop_map(|(bundle, first, count)| Message::ChunkRequest(ChunkRequest {
            bundle,
            first,
            count
        })),
        (digest(), any::<u32>(), any::<u32>(), vec(any::<u8>(), 0..512))
            .prop_map(|(bundle, index, total, data)| Message::Chunk(Chunk { bundle, index, total, data })),
        report,
        (device(), any::<bool>(), any::<u64>()).prop_map(|(device, online, boot_id)| Message::Presence(Presence {
            device,
            online,
            boot_id
        })),
        enroll_request,
        enroll_response,
        (any::<u64>(), vec(vec(any::<u8>(), 0..80), 0..3), vec(any::<u8>(), 0..80))
            .prop_map(|(first_root, roots, policy)| Message::Trust(TrustUpdate { first_root, roots, policy })),
        (vec(any::<u8>(), 0..200), any::<[u8; 8]>(), any::<[u8; 32]>(), any::<[u8; 32]>()).prop_map(
            |(statement, id, a, b)| {
                let mut sig = [0u8; 64];
                sig[..32].copy_from_slice(&a);
                sig[32..].copy_from_slice(&b);
                let signature = Signature { key_id: KeyId(id), sig: SigBytes(sig) };
                Message::SignedDesired(SignedDesired { statement, signature })
            }
        ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_message_round_trips(msg in message()) {
        let limits = Limits::default();
        prop_assert_eq!(codec::decode(&codec::encode(&msg), &limits).unwrap(), msg.clone());
        prop_assert_eq!(codec::decode(&codec::encode_compressed(&msg), &limits).unwrap(), msg);
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in vec(any::<u8>(), 0..2048)) {
        let limits = Limits::default();
        let _ = codec::decode(&bytes, &limits);
        let mut framed = vec![b'O', b'P', codec::MAJOR, 0];
        framed.extend_from_slice(&bytes);
        let _ = codec::decode(&framed, &limits);
        framed[3] = 1;
        let _ = codec::decode(&framed, &limits);
        let _ = bundle::inspect(&bytes, &limits);
        let _ = trust::read_policy_unverified(&bytes, &limits);
        let _ = root::read_root_unverified(&bytes, &limits);
        let pinned = root::TrustedRoot::pinned(vec![outpost_protocol::keys::private_key_from_seed([1; 32]).verifying_key()], 1);
        let _ = root::walk(&pinned, 2, std::slice::from_ref(&bytes), &limits);
    }

    #[test]
    fn flipping_any_byte_of_a_message_never_panics(msg in message(), pos in any::<usize>(), bit in 0u8..8) {
        let mut bytes = codec::encode(&msg);
        let i = pos % bytes.len();
        bytes[i] ^= 1 << bit;
        let _ = codec::decode(&bytes, &Limits::default());
    }
}

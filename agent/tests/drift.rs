//! Drift statistics from live traffic, against the reference profile a release carries.

mod support;

use outpost_agent::config::{CacheConfig, DriftConfig, InferenceConfig, ShadowConfig};
use outpost_agent::runtime::TensorData;
use outpost_agent::runtime::model::LoadedModel;
use outpost_agent::runtime::{InferRequest, InputTensor, Runtime, RuntimeConfig};
use outpost_protocol::drift::{DEFAULT_BINS, bin_index, shares};
use outpost_protocol::manifest::{ReferenceProfile, TensorProfile};
use std::time::Duration;
use support::*;

fn runtime() -> std::sync::Arc<Runtime> {
    Runtime::start(RuntimeConfig {
        inference: InferenceConfig {
            workers: 1,
            threads: 1,
            max_batch: 1,
            max_delay: Duration::ZERO,
            queue_capacity: 64,
            request_timeout: Duration::from_secs(10),
            max_body_bytes: 1 << 20,
            max_rows: 1024,
        },
        cache: CacheConfig { max_entries: 0, max_bytes: 0, ttl: Duration::ZERO },
        shadow: ShadowConfig { sample_percent: 0, queue_capacity: 1 },
        drift: DriftConfig { lo: 0.0, hi: 1.0, bins: DEFAULT_BINS },
    })
}

/// The reference a release engineer's `bundle create --selftest-input` would record for these images.
fn reference(images: &[Vec<f32>], classes: &[usize]) -> ReferenceProfile {
    let (lo, hi) = (0.0, 1.0001);
    let mut counts = vec![0u64; DEFAULT_BINS + 2];
    for v in images.iter().flatten() {
        counts[bin_index(*v, lo, hi, DEFAULT_BINS)] += 1;
    }
    let mut class_counts = vec![0u64; 10];
    for c in classes {
        class_counts[*c] += 1;
    }
    ReferenceProfile {
        inputs: vec![TensorProfile { tensor: "input".into(), lo, hi, shares: shares(&counts), mean: 0.0, std: 0.0 }],
        output_classes: shares(&class_counts),
        samples: images.len() as u64,
    }
}

/// Sends `images` one by one and waits until the drift window has seen them all (it is updated after
/// each answer is sent).
async fn send(rt: &Runtime, images: &[Vec<f32>]) {
    for image in images {
        let req = InferRequest {
            model: "digits".into(),
            inputs: vec![InputTensor {
                name: "input".into(),
                shape: vec![1, 1, 8, 8],
                data: TensorData::F32(image.clone()),
            }],
            outputs: None,
        };
        rt.infer(req).await.unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let served = rt.model("digits").unwrap();
    while served.drift_rows() < images.len() as u64 {
        assert!(std::time::Instant::now() < deadline, "drift window saw {} of {}", served.drift_rows(), images.len());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_inputs_like_the_reference_score_low_psi_and_shifted_inputs_score_high() {
    let (images, labels) = test_set();
    let (reference_half, live_half) = images.split_at(180);
    let model = model_bytes("v1");
    let mut m = manifest(&model, "1.0.0", 1);
    let classes: Vec<usize> = labels[..180].iter().map(|&l| l as usize).collect();
    m.reference = Some(reference(reference_half, &classes));
    let rt = runtime();
    rt.activate(LoadedModel::load(&model, m, 1).unwrap());

    send(&rt, live_half).await;
    let (_, same) = rt.model("digits").unwrap().take_drift().unwrap();
    let f = &same.features[0];
    assert_eq!(f.count, 180 * 64);
    assert_eq!(f.bins.iter().sum::<u64>(), f.count);
    let psi_same = f.psi.unwrap();
    let class_psi_same = same.class_psi.unwrap();

    // A camera that got brighter: every pixel pushed up.
    let brighter: Vec<Vec<f32>> = live_half.iter().map(|i| i.iter().map(|v| (v + 0.5).min(1.0)).collect()).collect();
    send(&rt, &brighter).await;
    let (_, shifted) = rt.model("digits").unwrap().take_drift().unwrap();
    let psi_shifted = shifted.features[0].psi.unwrap();
    println!(
        "input PSI: held-out {psi_same:.3}, brighter {psi_shifted:.3}; class PSI {class_psi_same:.3} → {:.3}",
        shifted.class_psi.unwrap()
    );
    assert!(psi_same < 0.1, "{psi_same}");
    assert!(psi_shifted > 0.25, "{psi_shifted}");
    // 180 answers over 10 classes carry sampling noise of about (10 - 1) / 180 ≈ 0.05 PSI and more.
    assert!(class_psi_same < 0.25, "{class_psi_same}");
    assert!(shifted.class_psi.unwrap() > 0.5, "brighter images change the answers' mix");
    assert_eq!(shifted.output_classes.iter().sum::<u64>(), 180, "one top-1 class per request");
    rt.shutdown();
}

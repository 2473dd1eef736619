//! The runtime serves several models at once, keyed by name, on shared workers: each answers as it does
//! alone, requests for one never run on another, an update of one leaves the others' answers unchanged,
//! and a model taken off stops answering while the others serve.

mod support;

use outpost_agent::runtime::TensorData;
use outpost_agent::runtime::model::LoadedModel;
use outpost_agent::runtime::{InferError, InferRequest, InputTensor, NotReady, Runtime};
use std::sync::Arc;
use support::*;

/// The three models of these tests: (name, committed file).
const MODELS: [(&str, &str); 3] = [("digits", "v1"), ("shapes", "v2"), ("sensor", "subtle")];

fn load(name: &str, file: &str, version: &str, seq: u64) -> LoadedModel {
    let bytes = model_bytes(file);
    LoadedModel::load(&bytes, manifest_named(name, &bytes, version, seq), 4).unwrap()
}

fn request(model: &str, image: &[f32]) -> InferRequest {
    InferRequest {
        model: model.into(),
        inputs: vec![InputTensor {
            name: "input".into(),
            shape: vec![1, 1, 8, 8],
            data: TensorData::F32(image.to_vec()),
        }],
        outputs: None,
    }
}

/// Each model's logits for the first `n` test images, run directly (the model alone, no runtime).
fn alone(file: &str, n: usize) -> Vec<Vec<f32>> {
    let m = load("alone", file, "1.0.0", 1);
    test_set()
        .0
        .iter()
        .take(n)
        .map(|i| m.run(1, &[TensorData::F32(i.clone())]).unwrap()[0].0.as_f32().unwrap().to_vec())
        .collect()
}

/// The same answer as the model alone: equal to a few units in the last place. A request batched with
/// others runs through tract's matrix-matrix kernels, whose summation order differs from a lone row's
/// (seen on AVX-512 machines: 7e-7 apart); another model's answer, or another image's, is far off.
fn same_answer(got: &[f32], want: &[f32]) -> bool {
    got.len() == want.len() && got.iter().zip(want).all(|(g, w)| (g - w).abs() <= 1e-5 * w.abs().max(1.0))
}

fn runtime(dir: &std::path::Path) -> Arc<Runtime> {
    // Two workers and batching, so requests of different models meet in the shared queue.
    let cfg = config(dir, "[inference]\nworkers = 2\nmax_batch = 4\nmax_delay = \"2ms\"\n[cache]\nmax_entries = 0\n");
    Runtime::start(outpost_agent::serve::runtime_config(&cfg))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_models_answer_as_they_do_alone_from_concurrent_clients() {
    let dir = tempdir("multi-runtime");
    let rt = runtime(&dir);
    assert_eq!(rt.readiness(), Err(NotReady::NothingInstalled));
    for (name, file) in MODELS {
        rt.activate(load(name, file, "1.0.0", 1));
    }
    assert_eq!(rt.readiness(), Ok(()));
    let n = 60;
    let images = Arc::new(test_set().0);
    let mut tasks = tokio::task::JoinSet::new();
    for (name, file) in MODELS {
        let want = alone(file, n);
        for client in 0..3 {
            let (rt, images, want) = (rt.clone(), images.clone(), want.clone());
            tasks.spawn(async move {
                for i in (client..n).step_by(3) {
                    let got = rt.infer_on_workers(request(name, &images[i])).await.unwrap();
                    assert_eq!(got.model_name, name);
                    let got = got.outputs[0].data.as_f32().unwrap();
                    assert!(same_answer(got, &want[i]), "{name} image {i} answered {got:?}, alone {:?}", want[i]);
                }
            });
        }
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let metrics = rt.prometheus();
    for (name, _) in MODELS {
        let line = format!("outpost_requests_total{{model=\"{name}\"");
        assert!(!metrics.contains(&line), "requests are counted by the HTTP layer, not the runtime");
        assert!(metrics.contains(&format!("outpost_batch_rows_count{{model=\"{name}\"}}")), "{metrics}");
        assert!(metrics.contains(&format!("outpost_model_info{{model=\"{name}\",version=\"1.0.0\"}} 1")));
    }
    rt.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn updating_one_model_leaves_the_others_answers_unchanged_and_removal_stops_only_that_model() {
    let dir = tempdir("multi-update");
    let rt = runtime(&dir);
    for (name, file) in MODELS {
        rt.activate(load(name, file, "1.0.0", 1));
    }
    let images = Arc::new(test_set().0);
    let want_shapes = alone("v2", 40);
    // A client of `shapes` runs while `digits` is replaced twice and given a shadow candidate.
    let client = {
        let (rt, images) = (rt.clone(), images.clone());
        tokio::spawn(async move {
            for round in 0..5 {
                for (i, want) in want_shapes.iter().enumerate() {
                    let got = rt.infer_on_workers(request("shapes", &images[i])).await.unwrap();
                    assert_eq!(
                        (&got.model_version[..], got.outputs[0].data.as_f32().unwrap()),
                        ("1.0.0", &want[..]),
                        "round {round}"
                    );
                }
                tokio::task::yield_now().await;
            }
        })
    };
    rt.activate(load("digits", "v2", "2.0.0", 2));
    rt.set_candidate("digits", Some(load("digits", "bad", "3.0.0", 3)));
    rt.activate(load("digits", "bad", "3.0.0", 3));
    client.await.unwrap();
    let got = rt.infer_on_workers(request("digits", &images[0])).await.unwrap();
    assert_eq!(got.model_version, "3.0.0");
    assert_eq!(rt.candidate("shapes").map(|m| m.digest), None, "a candidate belongs to its own model");

    assert!(rt.remove("sensor"));
    assert_eq!(
        rt.infer_on_workers(request("sensor", &images[0])).await.unwrap_err(),
        InferError::UnknownModel("sensor".into())
    );
    assert_eq!(rt.infer_on_workers(request("shapes", &images[0])).await.unwrap().model_name, "shapes");
    assert_eq!(rt.take_departed().len(), 1, "the removed model's last window is still reported");
    rt.set_installed(["digits".to_string(), "shapes".to_string(), "later".to_string()].into());
    assert_eq!(rt.readiness(), Err(NotReady::Loading(vec!["later".into()])), "ready waits for every installed model");
    rt.shutdown();
}

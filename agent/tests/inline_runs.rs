//! In-process callers: a quick model answers on the caller's thread when the request is alone (no hand-off
//! to a worker); large requests and concurrent ones go through the workers, and every caller gets its own
//! answer. Over HTTP the model always runs on a worker (the server's threads carry the connections).

mod support;

use outpost_agent::runtime::TensorData;
use outpost_agent::runtime::model::LoadedModel;
use outpost_agent::runtime::{InferRequest, InputTensor, Runtime};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use support::*;

fn runtime(name: &str) -> (Arc<Runtime>, Vec<Vec<f32>>) {
    let dir = tempdir(name);
    let cfg = config(&dir, "[cache]\nmax_entries = 0\n");
    let rt = Runtime::start(outpost_agent::serve::runtime_config(&cfg));
    let model = model_bytes("v1");
    let mut loaded = LoadedModel::load(&model, manifest(&model, "1.0.0", 1), 8).unwrap();
    loaded.calibrate(std::time::Duration::from_millis(50));
    rt.activate(loaded);
    (rt, test_set().0)
}

fn request(images: &[Vec<f32>]) -> InferRequest {
    InferRequest {
        model: "digits".into(),
        inputs: vec![InputTensor {
            name: "input".into(),
            shape: vec![images.len(), 1, 8, 8],
            data: TensorData::F32(images.concat()),
        }],
        outputs: None,
    }
}

fn server_like_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

#[test]
fn a_lone_request_to_a_quick_model_runs_inline_and_large_ones_go_to_the_workers() {
    let (rt, images) = runtime("inline-seq");
    let inline = || rt.metrics.inline_runs.load(Ordering::Relaxed);
    let tokio_rt = server_like_runtime();
    tokio_rt.block_on(async {
        for image in images.iter().take(50) {
            rt.infer(request(std::slice::from_ref(image))).await.unwrap();
        }
        assert_eq!(inline(), 50, "every lone request of an idle runtime runs on its caller's thread");
        // 360 rows cost far more than the inline limit: the workers run them.
        let all = rt.infer(request(&images)).await.unwrap();
        assert_eq!(all.outputs[0].shape, vec![360, 10]);
        assert_eq!(inline(), 50);
        // The HTTP server's entry point never runs a model on its own threads.
        rt.infer_on_workers(request(&images[..1])).await.unwrap();
        assert_eq!(inline(), 50);
    });
    // From a current-thread runtime every request goes to the workers (inline runs would serialise tasks).
    let current = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    current.block_on(async { rt.infer(request(&images[..1])).await.unwrap() });
    assert_eq!(inline(), 50);
    rt.shutdown();
}

#[test]
fn concurrent_callers_each_get_their_own_answer_whether_inline_or_queued() {
    let (rt, images) = runtime("inline-concurrent");
    let tokio_rt = server_like_runtime();
    let want: Vec<Vec<f32>> = tokio_rt.block_on(async {
        let mut want = Vec::new();
        for image in images.iter().take(16) {
            let out = rt.infer(request(std::slice::from_ref(image))).await.unwrap();
            want.push(out.outputs[0].data.as_f32().unwrap().to_vec());
        }
        want
    });
    let mut tasks = Vec::new();
    for (i, image) in images.iter().take(16).enumerate() {
        let (rt, image, want) = (rt.clone(), image.clone(), want[i].clone());
        tasks.push(tokio_rt.spawn(async move {
            for _ in 0..50 {
                let out = rt.infer(request(std::slice::from_ref(&image))).await.unwrap();
                let got = out.outputs[0].data.as_f32().unwrap().to_vec();
                // A batched plan may round differently in the last bits; another image's logits differ by units.
                let diff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                assert!(diff < 1e-3, "caller {i} got someone else's answer: {got:?} vs {want:?}");
            }
        }));
    }
    tokio_rt.block_on(async {
        for t in tasks {
            t.await.unwrap();
        }
    });
    rt.shutdown();
}

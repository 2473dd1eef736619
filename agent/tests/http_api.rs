//! The local Open Inference Protocol API with the real digits models, served on loopback.

mod support;

use outpost_agent::install::{self, Target, Trust};
use outpost_agent::runtime::TensorData;
use outpost_agent::runtime::model::LoadedModel;
use outpost_agent::store::Store;
use support::*;

fn install_into(cfg: &outpost_agent::config::Config, name: &str, version: &str, seq: u64, target: Target) {
    let store = Store::open(&cfg.data_dir).unwrap();
    let trust = Trust::load(cfg).unwrap();
    install::install(&store, &trust, &signed_bundle(name, version, seq), now(), target).unwrap();
}

fn ready(agent: &Agent, version: &str) {
    agent.wait_for("/v2/models/digits", &format!("digits {version}"), |r| {
        r.status == 200 && r.json()["versions"][0] == version
    });
}

#[test]
fn digits_v1_over_http_classifies_the_test_set_like_tract_called_directly() {
    let dir = tempdir("accuracy");
    let cfg = config(&dir, "");
    install_into(&cfg, "v1", "1.0.0", 1, Target::Activate);
    let agent = Agent::start(cfg);
    ready(&agent, "1.0.0");
    let meta = agent.get("/v2/models/digits").json();
    assert_eq!(meta["inputs"][0]["shape"], serde_json::json!([-1, 1, 8, 8]));
    assert_eq!(agent.get("/v2/health/live").status, 200);
    assert_eq!(agent.get("/v2/models/digits/ready").status, 200);

    let (images, labels) = test_set();
    let model = model_bytes("v1");
    let direct = LoadedModel::load(&model, manifest(&model, "1.0.0", 1), 1).unwrap();
    let direct_logits = direct.run(images.len(), &[TensorData::F32(images.concat())]).unwrap().remove(0).0;
    let direct_logits = direct_logits.as_f32().unwrap();
    let mut correct = 0;
    let mut max_diff = 0f32;
    for (i, image) in images.iter().enumerate() {
        let r = agent.post("/v2/models/digits/infer", &infer_body(std::slice::from_ref(image)));
        assert_eq!(r.status, 200, "{}", r.text());
        let json = r.json();
        assert_eq!(json["model_version"], "1.0.0");
        assert_eq!(json["outputs"][0]["shape"], serde_json::json!([1, 10]));
        let logits: Vec<f32> =
            json["outputs"][0]["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        let want = &direct_logits[i * 10..i * 10 + 10];
        assert_eq!(argmax(&logits), argmax(want), "image {i}: same answer as tract called directly");
        max_diff = logits.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(max_diff, f32::max);
        correct += usize::from(argmax(&logits) == labels[i] as usize);
    }
    let accuracy = correct as f64 / images.len() as f64;
    println!("over HTTP: accuracy {:.2} %, max |HTTP - direct| {max_diff:e}", accuracy * 100.0);
    assert!(accuracy >= 0.97, "accuracy {accuracy}");
    assert!(max_diff < 1e-4, "JSON round trip changed logits by {max_diff}");

    // A whole batch in one request answers the same.
    let r = agent.post("/v2/models/digits/infer", &infer_body(&images[..32]));
    let batch: Vec<f64> =
        r.json()["outputs"][0]["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(batch.len(), 320);
    for (got, want) in batch.iter().zip(&direct_logits[..320]) {
        assert!((*got as f32 - want).abs() < 1e-4);
    }
    let metrics = agent.get("/metrics").text();
    assert!(metrics.contains("outpost_requests_total{model=\"digits\",version=\"1.0.0\",status=\"200\"}"), "{metrics}");
    assert!(metrics.contains("outpost_batch_rows_bucket"), "{metrics}");
    assert!(metrics.contains("outpost_process_resident_memory_bytes"), "{metrics}");
}

#[test]
fn malformed_requests_get_the_right_status_and_message_and_the_server_keeps_serving() {
    let dir = tempdir("malformed");
    let cfg = config(&dir, "[inference]\nmax_body_bytes = 100000\n");
    install_into(&cfg, "v1", "1.0.0", 1, Target::Activate);
    let agent = Agent::start(cfg);
    ready(&agent, "1.0.0");
    let (images, _) = test_set();
    let good = infer_body(&images[..1]);
    let image = &images[0];
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("bad JSON", b"{not json".to_vec(), 400, "invalid request JSON"),
        (
            "wrong shape",
            serde_json::to_vec(
                &serde_json::json!({"inputs":[{"name":"input","shape":[1,64],"datatype":"FP32","data":image}]}),
            )
            .unwrap(),
            400,
            "the model takes [N,1,8,8]",
        ),
        (
            "too few values",
            serde_json::to_vec(
                &serde_json::json!({"inputs":[{"name":"input","shape":[2,1,8,8],"datatype":"FP32","data":image}]}),
            )
            .unwrap(),
            400,
            "needs 128",
        ),
        (
            "wrong datatype",
            serde_json::to_vec(
                &serde_json::json!({"inputs":[{"name":"input","shape":[1,1,8,8],"datatype":"INT64","data":image}]}),
            )
            .unwrap(),
            400,
            // The values are parsed in the declared type: the first one is not an integer.
            "0.0 is not a value of type INT64",
        ),
        (
            "wrong input name",
            serde_json::to_vec(
                &serde_json::json!({"inputs":[{"name":"pixels","shape":[1,1,8,8],"datatype":"FP32","data":image}]}),
            )
            .unwrap(),
            400,
            "missing input \"input\"",
        ),
        ("oversized body", vec![b' '; 200_000], 413, "byte limit"),
    ];
    for (what, body, status, message) in cases {
        let r = agent.post("/v2/models/digits/infer", &body);
        assert_eq!(r.status, status, "{what}: {}", r.text());
        let err = r.json()["error"].as_str().unwrap().to_owned();
        assert!(err.contains(message), "{what}: {err}");
        assert_eq!(agent.post("/v2/models/digits/infer", &good).status, 200, "still serving after {what}");
    }
    let r = agent.post("/v2/models/nope/infer", &good);
    assert_eq!(r.status, 404);
    assert!(r.json()["error"].as_str().unwrap().contains("nope"));
    assert_eq!(agent.get("/v2/models/nope").status, 404);
}

#[test]
fn overload_gets_429_with_retry_after_quickly_and_the_agent_recovers() {
    let dir = tempdir("overload");
    // One worker, no batching, no cache, room for one waiting request: easy to overload on purpose. The
    // timeout is long so that a slow (debug, loaded) machine sees only 200 or 429, the behaviour tested.
    let cfg = config(
        &dir,
        "[inference]\nworkers = 1\nmax_batch = 1\nqueue_capacity = 1\nmax_rows = 4096\nrequest_timeout = \"60s\"\n\
         [cache]\nmax_entries = 0\n",
    );
    install_into(&cfg, "v1", "1.0.0", 1, Target::Activate);
    let agent = Agent::start(cfg);
    ready(&agent, "1.0.0");
    let (images, _) = test_set();
    // Each request carries the whole test set 8 times over: milliseconds of work per request.
    let heavy: Vec<Vec<f32>> = images.iter().cycle().take(2880).cloned().collect();
    let body = std::sync::Arc::new(infer_body(&heavy));
    let rss_before = agent.status()["rss_bytes"].as_u64().unwrap();
    let addr = agent.addr;
    let clients: Vec<_> = (0..24)
        .map(|_| {
            let body = body.clone();
            std::thread::spawn(move || {
                let start = std::time::Instant::now();
                let r = http(addr, "POST", "/v2/models/digits/infer", &body);
                (r, start.elapsed())
            })
        })
        .collect();
    let results: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let ok = results.iter().filter(|(r, _)| r.status == 200).count();
    let refused: Vec<_> = results.iter().filter(|(r, _)| r.status == 429).collect();
    println!("overload: {ok} answered, {} refused with 429", refused.len());
    assert_eq!(
        ok + refused.len(),
        results.len(),
        "only 200 or 429: {:?}",
        results.iter().map(|(r, _)| r.status).collect::<Vec<_>>()
    );
    assert!(!refused.is_empty(), "24 heavy requests against a queue of 1 must be refused in part");
    for (r, _) in &refused {
        assert_eq!(r.header("retry-after"), Some("1"));
        assert!(r.json()["error"].as_str().unwrap().contains("overloaded"));
    }
    let rss_after = agent.status()["rss_bytes"].as_u64().unwrap();
    assert!(rss_after < rss_before + (256 << 20), "memory stays bounded: {rss_before} → {rss_after}");
    assert_eq!(agent.post("/v2/models/digits/infer", &infer_body(&images[..1])).status, 200, "recovers");
    let metrics = agent.get("/metrics").text();
    assert!(metrics.contains("status=\"429\""), "{metrics}");
}

#[test]
fn cached_answers_are_byte_identical_and_a_new_version_never_gets_a_stale_one() {
    let dir = tempdir("cache");
    let cfg = config(&dir, "");
    install_into(&cfg, "v1", "1.0.0", 1, Target::Activate);
    let agent = Agent::start(cfg.clone());
    ready(&agent, "1.0.0");
    let (images, _) = test_set();
    let body = infer_body(&images[5..6]);
    let first = agent.post("/v2/models/digits/infer", &body);
    let second = agent.post("/v2/models/digits/infer", &body);
    assert_eq!(first.header("x-outpost-cache"), None);
    assert_eq!(second.header("x-outpost-cache"), Some("hit"));
    assert_eq!(first.body, second.body, "a cache hit is byte-identical");
    assert!(agent.get("/metrics").text().contains("outpost_cache_hits_total{model=\"digits\"} 1"));

    install_into(&cfg, "v2", "2.0.0", 2, Target::Activate);
    ready(&agent, "2.0.0");
    let third = agent.post("/v2/models/digits/infer", &body);
    assert_eq!(third.header("x-outpost-cache"), None, "v2 never answers from v1's cache");
    assert_eq!(third.json()["model_version"], "2.0.0");
    let v2 = model_bytes("v2");
    let want = LoadedModel::load(&v2, manifest(&v2, "2.0.0", 2), 1)
        .unwrap()
        .run(1, &[TensorData::F32(images[5].clone())])
        .unwrap();
    let got: Vec<f32> =
        third.json()["outputs"][0]["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    for (g, w) in got.iter().zip(want[0].0.as_f32().unwrap()) {
        assert!((g - w).abs() < 1e-4, "the answer is v2's");
    }
    let fourth = agent.post("/v2/models/digits/infer", &body);
    assert_eq!(fourth.header("x-outpost-cache"), Some("hit"));
    assert_eq!(fourth.body, third.body);
}

#[test]
fn a_request_that_cannot_be_answered_in_time_gets_504_and_the_next_one_is_served() {
    let dir = tempdir("timeout");
    let cfg = config(
        &dir,
        "[inference]\nmax_batch = 1\nmax_rows = 4096\nrequest_timeout = \"5ms\"\n[cache]\nmax_entries = 0\n",
    );
    install_into(&cfg, "v1", "1.0.0", 1, Target::Activate);
    let agent = Agent::start(cfg);
    ready(&agent, "1.0.0");
    let (images, _) = test_set();
    // 2,880 rows run one by one take far longer than 5 ms.
    let heavy: Vec<Vec<f32>> = images.iter().cycle().take(2880).cloned().collect();
    let r = agent.post("/v2/models/digits/infer", &infer_body(&heavy));
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(r.json()["error"].as_str().unwrap().contains("no answer within"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let r = agent.post("/v2/models/digits/infer", &infer_body(&images[..1]));
        if r.status == 200 {
            break;
        }
        // The worker may still be busy with the abandoned request: 504 (or 429 once the retries fill
        // the queue) until it is done, never a crash.
        assert!(matches!(r.status, 504 | 429), "{} {}", r.status, r.text());
        assert!(std::time::Instant::now() < deadline, "the agent recovers after a timeout");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

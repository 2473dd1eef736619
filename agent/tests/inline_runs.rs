//! A quick model answers on the requesting thread when the workers are idle (no hand-off), and under
//! concurrent load requests still queue, batch and all get their own answers.

mod support;

use outpost_agent::install::{self, Target, Trust};
use outpost_agent::store::Store;
use support::*;

const INFER: &str = "/v2/models/digits/infer";

fn serving_agent(name: &str, extra: &str) -> Agent {
    let dir = tempdir(name);
    let cfg = config(&dir, extra);
    let store = Store::open(&cfg.data_dir).unwrap();
    let trust = Trust::load(&cfg).unwrap();
    install::install(&store, &trust, &signed_bundle("v1", "1.0.0", 1), now(), Target::Activate).unwrap();
    let agent = Agent::start(cfg);
    agent.wait_for("/v2/models/digits", "digits 1.0.0", |r| r.status == 200);
    agent
}

fn counter(agent: &Agent, name: &str) -> u64 {
    let text = agent.get("/metrics").text();
    let line = text.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name}: {text}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn logits(r: &Response) -> Vec<f32> {
    r.json()["outputs"][0]["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect()
}

#[test]
fn sequential_requests_to_a_quick_model_run_inline_and_large_ones_go_to_the_workers() {
    let agent = serving_agent("inline-seq", "[cache]\nmax_entries = 0\n");
    let (images, _) = test_set();
    let before = counter(&agent, "outpost_inline_runs_total");
    for image in images.iter().take(50) {
        let r = agent.post(INFER, &infer_body(std::slice::from_ref(image)));
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let inline = counter(&agent, "outpost_inline_runs_total") - before;
    assert_eq!(inline, 50, "every request of an idle agent runs on its own thread");
    // 360 rows cost far more than the inline limit: the workers run them.
    let r = agent.post(INFER, &infer_body(&images));
    assert_eq!(r.status, 200);
    assert_eq!(counter(&agent, "outpost_inline_runs_total") - before, 50);
    // Calibration measured the cost that decides it, for a model of any batch shape.
    let calibration = &agent.status()["active"]["calibration_us_per_row"];
    assert!(calibration["1"].as_f64().unwrap() > 0.0, "{calibration}");
}

#[test]
fn concurrent_clients_each_get_their_own_answer_whether_inline_or_queued() {
    let agent = serving_agent("inline-concurrent", "[cache]\nmax_entries = 0\n");
    let (images, _) = test_set();
    let want: Vec<Vec<f32>> =
        images.iter().take(16).map(|im| logits(&agent.post(INFER, &infer_body(std::slice::from_ref(im))))).collect();
    let addr = agent.addr;
    std::thread::scope(|s| {
        for (i, image) in images.iter().take(16).enumerate() {
            let want = &want[i];
            s.spawn(move || {
                for _ in 0..25 {
                    let r = http(addr, "POST", INFER, &infer_body(std::slice::from_ref(image)));
                    assert_eq!(r.status, 200, "{}", r.text());
                    // A batched plan may round differently in the last bits; another image's logits differ by units.
                    let got = logits(&r);
                    let diff = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                    assert!(diff < 1e-3, "client {i} got someone else's answer: {got:?} vs {want:?}");
                }
            });
        }
    });
    assert!(counter(&agent, "outpost_inline_runs_total") > 0);
}

//! A panic inside a model run stays with its request: a model whose token ids are shifted before they
//! index its table (`Gather(table, ids + 1)`, which the agent's index check cannot follow through the `Add`)
//! makes tract index past the table and panic. That request gets a 500 naming the failure; every worker
//! keeps running, `/v2/health/ready` stays honest, and the next requests are answered.

mod support;

use outpost_agent::install::{self, Target, Trust};
use outpost_agent::store::Store;
use outpost_models::TensorData;
use outpost_models::tensor::to_manifest;
use outpost_protocol::manifest::{SelfTestVector, Tolerance};
use serde_json::json;
use support::*;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::array::Gather;
use tract_onnx::tract_core::ops::math;

const ROWS: usize = 10;

/// ids INT64 [N, 4] → rows FP32 [N, 4, 3] = table[ids + 1], table[r] = [3r, 3r+1, 3r+2].
fn shifted_lookup() -> Vec<u8> {
    let mut m = TypedModel::default();
    let n = m.symbols.sym("N");
    let ids = m.add_source("ids", i64::fact([n.to_dim(), 4.to_dim()])).unwrap();
    let one = m.add_const("one", tensor2(&[[1i64]])).unwrap();
    let shifted = m.wire_node("shift", math::add(), &[ids, one]).unwrap()[0];
    let table: Vec<f32> = (0..ROWS * 3).map(|v| v as f32).collect();
    let table = m.add_const("table", tract_ndarray::Array2::from_shape_vec((ROWS, 3), table).unwrap()).unwrap();
    let out = m.wire_node("rows", Gather::new(0), &[table, shifted]).unwrap()[0];
    m.select_output_outlets(&[out]).unwrap();
    m.set_outlet_label(out, "rows".into()).unwrap();
    outpost_models::nnef::write(&m.into_decluttered().unwrap()).unwrap()
}

fn request(ids: [i64; 4]) -> Vec<u8> {
    serde_json::to_vec(&json!({"inputs": [{"name": "ids", "shape": [1, 4], "datatype": "INT64", "data": ids}]}))
        .unwrap()
}

#[test]
fn a_panicking_run_answers_500_and_the_agent_keeps_every_worker_and_its_readiness() {
    let model = shifted_lookup();
    let dir = tempdir("worker-panic");
    let cfg = config(&dir, "[inference]\nworkers = 2\n[cache]\nmax_entries = 0\n");
    let store = Store::open(&cfg.data_dir).unwrap();
    let trust = Trust::load(&cfg).unwrap();
    let vector = SelfTestVector {
        inputs: vec![to_manifest("ids", &[1, 4], &TensorData::I64(vec![0, 1, 2, 3]))],
        expected: vec![to_manifest("rows", &[1, 4, 3], &TensorData::F32((3..15).map(|v| v as f32).collect()))],
        tolerance: Tolerance::default(),
    };
    let bundle = bundle_with_vectors(&manifest_named("lookup", &model, "1.0.0", 1), &model, &release(), &[vector]);
    install::install(&store, &trust, &bundle, now(), Target::Activate).unwrap();
    let agent = Agent::start(cfg);
    agent.wait_for("/v2/health/ready", "lookup loaded", |r| r.status == 200);
    let path = "/v2/models/lookup/infer";

    let ok = agent.post(path, &request([0, 1, 2, 8]));
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.json()["outputs"][0]["data"][9], json!(27.0), "{}", ok.text());

    // id 9 becomes 10: one past the table. Several times, more than there are workers.
    for i in 0..5 {
        let r = agent.post(path, &request([i, 1, 2, 9]));
        assert_eq!(r.status, 500, "{}", r.text());
        assert!(r.text().contains("panicked"), "{}", r.text());
        let ready = agent.get("/v2/health/ready");
        assert_eq!(ready.status, 200, "after panic {i}: {}", ready.text());
        let ok = agent.post(path, &request([i, 2, 3, 4]));
        assert_eq!(ok.status, 200, "after panic {i}: {}", ok.text());
    }
    let status = agent.status();
    assert_eq!(status["workers"]["running"], json!(2), "{status}");
    assert_eq!(status["workers"]["configured"], json!(2), "{status}");
}

//! Every typed fixture of `simulations/models/typed/` (UINT8 camera, INT64 ids with a mask, BOOL flags,
//! FP16 sensor, the 640×640 UINT8 detector) signed, installed and served by one real agent, as a client
//! sees it: metadata reports the real types, and every answer over a JSON body and over the binary tensor
//! extension equals onnxruntime's (integers and booleans exactly, floats within 1e-3). Then through NVIDIA's
//! `tritonclient` (simulations/tests/oip_client.py), a real Open Inference Protocol client; and hostile
//! typed requests (a token id outside the vocabulary, BYTES, the wrong type) get a 400 naming the problem.

mod support;

use outpost_agent::api::tensor_json::{Typed, Values};
use outpost_agent::install::{self, Target, Trust};
use outpost_agent::store::Store;
use outpost_models::tensor::{compare, to_manifest};
use outpost_models::{TensorData, onnx};
use outpost_protocol::manifest::{DType, SelfTestVector, Tolerance};
use serde::de::DeserializeSeed;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::Command;
use support::*;

const TOL: Tolerance = Tolerance { abs: 1e-3, rel: 0.0 };

fn typed_dir() -> PathBuf {
    models().join("typed")
}

fn index() -> Vec<Value> {
    let v: Value = serde_json::from_slice(&std::fs::read(typed_dir().join("typed.json")).unwrap()).unwrap();
    v["models"].as_array().unwrap().clone()
}

fn read(dtype: DType, file: &str) -> TensorData {
    TensorData::from_le_bytes(dtype, &std::fs::read(typed_dir().join(file)).unwrap()).unwrap()
}

/// Pixel (b, c, y, x) of detector test image b (typed_models.py `detector_image`).
fn detector_image(n: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(n * 3 * 640 * 640);
    for b in 0..n {
        for c in 0..3 {
            for y in 0..640 {
                for x in 0..640 {
                    v.push(((b * 11 + c * 7 + y * 13 + x * 31) % 256) as u8);
                }
            }
        }
    }
    v
}

/// One fixture: its inputs and onnxruntime's outputs for all its samples as one batch, with shapes.
struct Fixture {
    name: String,
    rows: usize,
    inputs: Vec<(String, Vec<usize>, TensorData)>,
    outputs: Vec<(String, Vec<usize>, TensorData)>,
    nnef: Vec<u8>,
}

fn fixtures() -> Vec<Fixture> {
    index()
        .iter()
        .map(|m| {
            let name = m["name"].as_str().unwrap().to_owned();
            let converted = onnx::convert(&std::fs::read(typed_dir().join(m["file"].as_str().unwrap())).unwrap())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let rows = m["samples"].as_u64().unwrap() as usize;
            let shape = |t: &Value| -> Vec<usize> {
                let dims = t["shape"].as_array().unwrap();
                std::iter::once(rows).chain(dims[1..].iter().map(|d| d.as_u64().unwrap() as usize)).collect()
            };
            let tensor = |t: &Value| {
                let tname = t["name"].as_str().unwrap().to_owned();
                let dtype = DType::parse(t["datatype"].as_str().unwrap()).unwrap();
                let data = match m["files"].get(&tname) {
                    Some(f) => read(dtype, f.as_str().unwrap()),
                    None => TensorData::U8(detector_image(rows)),
                };
                (tname, shape(t), data)
            };
            Fixture {
                name,
                rows,
                inputs: m["inputs"].as_array().unwrap().iter().map(tensor).collect(),
                outputs: m["outputs"].as_array().unwrap().iter().map(tensor).collect(),
                nnef: converted.nnef,
            }
        })
        .collect()
}

/// Row `r` of a tensor with `rows` rows, shaped `[1, ...]`.
fn row(shape: &[usize], data: &TensorData, rows: usize, r: usize) -> (Vec<usize>, TensorData) {
    let per = data.len() / rows;
    let mut s = shape.to_vec();
    s[0] = 1;
    (s, data.slice(r * per..(r + 1) * per).unwrap())
}

/// A bundle whose self-test is the fixture's first sample and onnxruntime's answer for it.
fn bundle(f: &Fixture) -> Vec<u8> {
    let m = manifest_named(&f.name, &f.nnef, "1.0.0", 1);
    let pick = |ts: &[(String, Vec<usize>, TensorData)]| {
        ts.iter()
            .map(|(n, s, d)| {
                let (s, d) = row(s, d, f.rows, 0);
                to_manifest(n, &s, &d)
            })
            .collect()
    };
    let vector = SelfTestVector { inputs: pick(&f.inputs), expected: pick(&f.outputs), tolerance: TOL };
    bundle_with_vectors(&m, &f.nnef, &release(), &[vector])
}

/// One agent serving every fixture (bodies up to 32 MB: the detector's batch as JSON text).
fn serving_all(dir_name: &str) -> (Agent, Vec<Fixture>) {
    let dir = tempdir(dir_name);
    let cfg = config(&dir, "[inference]\nmax_body_bytes = 33554432\n[cache]\nmax_entries = 0\n");
    let store = Store::open(&cfg.data_dir).unwrap();
    let trust = Trust::load(&cfg).unwrap();
    let fixtures = fixtures();
    for f in &fixtures {
        install::install(&store, &trust, &bundle(f), now(), Target::Activate)
            .unwrap_or_else(|e| panic!("install {}: {e}", f.name));
    }
    let agent = Agent::start(cfg);
    let n = fixtures.len();
    agent.wait_for("/v2/health/ready", "every typed model loaded", |r| {
        r.status == 200 && r.json()["models"].as_array().is_some_and(|m| m.len() == n)
    });
    (agent, fixtures)
}

fn infer_path(f: &Fixture) -> String {
    format!("/v2/models/{}/infer", f.name)
}

/// Compares the agent's outputs (name → (shape, data)) with onnxruntime's.
fn check(f: &Fixture, how: &str, got: &[(String, Vec<usize>, TensorData)]) {
    assert_eq!(got.len(), f.outputs.len(), "{} {how}: outputs", f.name);
    for ((name, shape, data), (want_name, want_shape, want)) in got.iter().zip(&f.outputs) {
        assert_eq!(name, want_name, "{} {how}", f.name);
        assert_eq!(shape, want_shape, "{} {how} {name}", f.name);
        assert_eq!(data.dtype(), want.dtype(), "{} {how} {name}: type", f.name);
        compare(data, shape, &to_manifest(name, want_shape, want), TOL)
            .unwrap_or_else(|e| panic!("{} {how}: agent and onnxruntime differ: {e}", f.name));
    }
}

fn shape_of(v: &Value) -> Vec<usize> {
    v.as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect()
}

#[test]
fn every_typed_model_answers_like_onnxruntime_over_json_and_binary_and_a_real_oip_client() {
    let (agent, fixtures) = serving_all("typed-all");
    for f in &fixtures {
        // Metadata: the real types, in order.
        let meta = agent.get(&format!("/v2/models/{}", f.name)).json();
        let types = |key: &str| -> Vec<(String, String)> {
            meta[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| (t["name"].as_str().unwrap().into(), t["datatype"].as_str().unwrap().into()))
                .collect()
        };
        let want = |ts: &[(String, Vec<usize>, TensorData)]| -> Vec<(String, String)> {
            ts.iter().map(|(n, _, d)| (n.clone(), d.dtype().as_str().to_owned())).collect()
        };
        assert_eq!(types("inputs"), want(&f.inputs), "{meta}");
        assert_eq!(types("outputs"), want(&f.outputs), "{meta}");

        // JSON: every sample as one batch.
        let inputs: Vec<Value> = f
            .inputs
            .iter()
            .map(|(n, s, d)| json!({"name": n, "shape": s, "datatype": d.dtype().as_str(), "data": serde_json::to_value(Values(d)).unwrap()}))
            .collect();
        let r = agent.post(&infer_path(f), &serde_json::to_vec(&json!({ "inputs": inputs })).unwrap());
        assert_eq!(r.status, 200, "{}: {}", f.name, r.text());
        let body = r.json();
        let got: Vec<_> = body["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| {
                let dtype = DType::parse(o["datatype"].as_str().unwrap()).unwrap();
                let data = Typed(dtype).deserialize(&o["data"]).unwrap();
                (o["name"].as_str().unwrap().to_owned(), shape_of(&o["shape"]), data)
            })
            .collect();
        check(f, "JSON", &got);

        // Binary tensors both ways.
        let mut raw = Vec::new();
        let inputs: Vec<Value> = f
            .inputs
            .iter()
            .map(|(n, s, d)| {
                d.write_le_bytes(&mut raw);
                json!({"name": n, "shape": s, "datatype": d.dtype().as_str(), "parameters": {"binary_data_size": d.byte_len()}})
            })
            .collect();
        let mut body =
            serde_json::to_vec(&json!({"inputs": inputs, "parameters": {"binary_data_output": true}})).unwrap();
        let len = body.len();
        body.extend_from_slice(&raw);
        let r = agent.post_with(&infer_path(f), &[("Inference-Header-Content-Length", len.to_string())], &body);
        assert_eq!(r.status, 200, "{}: {}", f.name, r.text());
        let json_len: usize = r.header("inference-header-content-length").unwrap().parse().unwrap();
        let head: Value = serde_json::from_slice(&r.body[..json_len]).unwrap();
        let mut rest = &r.body[json_len..];
        let mut got = Vec::new();
        for o in head["outputs"].as_array().unwrap() {
            let dtype = DType::parse(o["datatype"].as_str().unwrap()).unwrap();
            let size = o["parameters"]["binary_data_size"].as_u64().unwrap() as usize;
            let (mine, after) = rest.split_at(size);
            rest = after;
            got.push((
                o["name"].as_str().unwrap().to_owned(),
                shape_of(&o["shape"]),
                TensorData::from_le_bytes(dtype, mine).unwrap(),
            ));
        }
        assert!(rest.is_empty(), "{}: {} bytes after the outputs", f.name, rest.len());
        check(f, "binary", &got);
        println!("{}: {} rows, JSON and binary equal onnxruntime's", f.name, f.rows);
    }

    // A real Open Inference Protocol client: tritonclient[http], JSON and binary, compared in Python.
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../simulations/tests/oip_client.py");
    for f in &fixtures {
        let out = Command::new("python3")
            .arg(&script)
            .args(["--url", &agent.addr.to_string(), "--model", &f.name, "--typed-dir"])
            .arg(typed_dir())
            .output()
            .expect("python3 runs (scripts/test.sh installs tritonclient)");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "tritonclient on {}:\n{text}", f.name);
        assert!(text.contains("ok binary") && text.contains("ok JSON"), "{text}");
        print!("{text}");
    }
}

#[test]
fn hostile_typed_requests_get_a_400_naming_the_problem_and_the_agent_keeps_serving() {
    let (agent, fixtures) = serving_all("typed-hostile");
    let intent = fixtures.iter().find(|f| f.name == "intent-i64").unwrap();
    let path = infer_path(intent);
    let body = |ids: Value, ids_type: &str, mask: Value| {
        serde_json::to_vec(&json!({"inputs": [
            {"name": "ids", "shape": [1, 8], "datatype": ids_type, "data": ids},
            {"name": "mask", "shape": [1, 8], "datatype": "INT64", "data": mask}]}))
        .unwrap()
    };
    let ones = json!([1, 1, 1, 1, 1, 1, 1, 1]);
    let cases = [
        (
            "a token id outside the vocabulary",
            body(json!([3, 4, 5, 6, 7, 8, 9, 200]), "INT64", ones.clone()),
            "input ids holds 200 at element 7, but it indexes a table of 50 rows",
        ),
        (
            "an id of i64::MIN",
            body(json!([i64::MIN, 4, 5, 6, 7, 8, 9, 1]), "INT64", ones.clone()),
            "indexes a table of 50 rows",
        ),
        (
            "FP32 where the model takes INT64",
            body(json!([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]), "FP32", ones.clone()),
            "has datatype FP32; the model takes INT64",
        ),
        ("BYTES", body(json!(["a", "b", "c", "d", "e", "f", "g", "h"]), "BYTES", ones.clone()), "datatype BYTES"),
        (
            "a fraction as INT64",
            body(json!([1.5, 1, 1, 1, 1, 1, 1, 1]), "INT64", ones.clone()),
            "1.5 is not a value of type INT64",
        ),
    ];
    let good = body(json!([3, 4, 5, 6, 7, 8, 9, 10]), "INT64", ones.clone());
    for (what, req, needle) in cases {
        let r = agent.post(&path, &req);
        assert_eq!(r.status, 400, "{what}: {}", r.text());
        assert!(r.text().contains(needle), "{what}: {}", r.text());
        let ok = agent.post(&path, &good);
        assert_eq!(ok.status, 200, "after {what}: {}", ok.text());
        assert_eq!(agent.get("/v2/health/ready").status, 200, "after {what}");
    }

    // Binary: an id beyond the table, and a BOOL byte that is not 0 or 1.
    let mut raw: Vec<u8> = [3i64, 4, 5, 6, 7, 8, 9, 50].iter().flat_map(|v| v.to_le_bytes()).collect();
    raw.extend([1i64; 8].iter().flat_map(|v| v.to_le_bytes()));
    let header = json!({"inputs": [
        {"name": "ids", "shape": [1, 8], "datatype": "INT64", "parameters": {"binary_data_size": 64}},
        {"name": "mask", "shape": [1, 8], "datatype": "INT64", "parameters": {"binary_data_size": 64}}]});
    let mut req = serde_json::to_vec(&header).unwrap();
    let len = req.len();
    req.extend_from_slice(&raw);
    let r = agent.post_with(&path, &[("Inference-Header-Content-Length", len.to_string())], &req);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("input ids holds 50 at element 7"), "{}", r.text());
    let flags = fixtures.iter().find(|f| f.name == "flags-bool").unwrap();
    let header = json!({"inputs": [{"name": "flags", "shape": [1, 6], "datatype": "BOOL", "parameters": {"binary_data_size": 6}}]});
    let mut req = serde_json::to_vec(&header).unwrap();
    let len = req.len();
    req.extend_from_slice(&[0, 1, 0, 7, 1, 1]);
    let r = agent.post_with(&infer_path(flags), &[("Inference-Header-Content-Length", len.to_string())], &req);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("BOOL value 3 is the byte 7"), "{}", r.text());
    assert_eq!(agent.post(&path, &good).status, 200);
}

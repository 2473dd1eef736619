//! The Open Inference Protocol's binary tensor extension over the real local API, with the digits model:
//! raw little-endian tensors after a JSON header answer exactly what the JSON body answers, outputs come
//! back raw when asked, and malformed binary bodies get a 400 that names the problem.

mod support;

use outpost_agent::install::{self, Target, Trust};
use outpost_agent::store::Store;
use support::*;

const INFER: &str = "/v2/models/digits/infer";

fn serving_agent(name: &str) -> Agent {
    let dir = tempdir(name);
    let cfg = config(&dir, "");
    let store = Store::open(&cfg.data_dir).unwrap();
    let trust = Trust::load(&cfg).unwrap();
    install::install(&store, &trust, &signed_bundle("v1", "1.0.0", 1), now(), Target::Activate).unwrap();
    let agent = Agent::start(cfg);
    agent.wait_for("/v2/models/digits", "digits 1.0.0", |r| r.status == 200);
    agent
}

fn le_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn from_le(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

/// A binary request body: the JSON header, then `raw`. Returns the body and its header length.
fn binary_body(header: serde_json::Value, raw: &[u8]) -> (Vec<u8>, usize) {
    let mut body = serde_json::to_vec(&header).unwrap();
    let len = body.len();
    body.extend_from_slice(raw);
    (body, len)
}

fn post_binary(agent: &Agent, header: serde_json::Value, raw: &[u8]) -> Response {
    let (body, len) = binary_body(header, raw);
    agent.post_with(INFER, &[("Inference-Header-Content-Length", len.to_string())], &body)
}

fn json_logits(r: &Response) -> Vec<f32> {
    r.json()["outputs"][0]["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect()
}

#[test]
fn binary_inputs_and_outputs_answer_exactly_what_json_answers() {
    let agent = serving_agent("binary-same");
    let (images, _) = test_set();
    let rows = &images[..32];
    let data: Vec<f32> = rows.concat();
    let by_json = agent.post(INFER, &infer_body(rows));
    assert_eq!(by_json.status, 200, "{}", by_json.text());
    let want = json_logits(&by_json);
    assert_eq!(want.len(), 320);

    // Binary input, JSON output.
    let input = serde_json::json!({"name": "input", "shape": [32, 1, 8, 8], "datatype": "FP32",
        "parameters": {"binary_data_size": data.len() * 4}});
    let r = post_binary(&agent, serde_json::json!({"inputs": [input.clone()]}), &le_bytes(&data));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(json_logits(&r), want, "binary input changed the answer");

    // Binary input and output for the one named output.
    let header = serde_json::json!({"inputs": [input.clone()],
        "outputs": [{"name": "logits", "parameters": {"binary_data": true}}]});
    let r = post_binary(&agent, header, &le_bytes(&data));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    let json_len: usize = r.header("inference-header-content-length").expect("header length").parse().unwrap();
    let head: serde_json::Value = serde_json::from_slice(&r.body[..json_len]).unwrap();
    assert_eq!(head["outputs"][0]["name"], "logits");
    assert_eq!(head["outputs"][0]["shape"], serde_json::json!([32, 10]));
    assert_eq!(head["outputs"][0]["parameters"]["binary_data_size"], 1280);
    assert!(head["outputs"][0].get("data").is_none(), "{head}");
    let got = from_le(&r.body[json_len..]);
    assert_eq!(
        got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        want.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );

    // A JSON body may ask for every output raw.
    let body = serde_json::json!({"inputs": [{"name": "input", "shape": [32, 1, 8, 8], "datatype": "FP32",
        "data": data}], "parameters": {"binary_data_output": true}});
    let r = agent.post(INFER, &serde_json::to_vec(&body).unwrap());
    assert_eq!(r.status, 200, "{}", r.text());
    let json_len: usize = r.header("inference-header-content-length").unwrap().parse().unwrap();
    assert_eq!(from_le(&r.body[json_len..]), want);
}

#[test]
fn malformed_binary_bodies_get_400_naming_the_problem_and_the_server_keeps_serving() {
    let agent = serving_agent("binary-bad");
    let (images, _) = test_set();
    let raw = le_bytes(&images[0]);
    let input = |size: usize| {
        serde_json::json!({"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32",
            "parameters": {"binary_data_size": size}}]})
    };
    let cases: Vec<(&str, Response, &str)> = vec![
        ("size not whole FP32 values", post_binary(&agent, input(255), &raw[..255]), "not a whole number of FP32"),
        ("size beyond the body", post_binary(&agent, input(512), &raw), "only 256 binary bytes are left"),
        ("bytes left over", post_binary(&agent, input(252), &raw), "4 bytes after the last binary input"),
        ("too few values for the shape", post_binary(&agent, input(128), &raw[..128]), "has 32 values"),
        (
            "data and binary both",
            post_binary(
                &agent,
                serde_json::json!({"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32",
                    "data": images[0], "parameters": {"binary_data_size": 256}}]}),
                &raw,
            ),
            "both `data` and binary data",
        ),
        (
            "header length beyond the body",
            agent.post_with(INFER, &[("Inference-Header-Content-Length", "99999".into())], b"{}"),
            "exceeds the body's 2 bytes",
        ),
        (
            "header length not a number",
            agent.post_with(INFER, &[("Inference-Header-Content-Length", "ten".into())], b"{}"),
            "is not a byte count",
        ),
        (
            "binary_data_size not a number",
            post_binary(
                &agent,
                serde_json::json!({"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32",
                    "parameters": {"binary_data_size": "256"}}]}),
                &raw,
            ),
            "binary_data_size must be a non-negative integer",
        ),
    ];
    for (what, r, message) in cases {
        assert_eq!(r.status, 400, "{what}: {}", r.text());
        let error = r.json()["error"].as_str().unwrap().to_owned();
        assert!(error.contains(message), "{what}: {error:?} should say {message:?}");
    }
    let ok = post_binary(&agent, input(256), &raw);
    assert_eq!(ok.status, 200, "after bad bodies: {}", ok.text());
    assert_eq!(json_logits(&ok).len(), 10);
}

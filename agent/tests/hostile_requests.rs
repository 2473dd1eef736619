//! Local requests written to break the agent, sent with a plain HTTP client: each gets a 4xx that names the
//! problem, and the agent keeps answering normal requests and stays ready.

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

fn json(v: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&v).unwrap()
}

/// The agent still answers a real image correctly and says it is ready.
fn still_serving(agent: &Agent, after: &str) {
    let (images, _) = test_set();
    let r = agent.post(INFER, &infer_body(&images[..1]));
    assert_eq!(r.status, 200, "after {after}: {}", r.text());
    assert_eq!(agent.get("/v2/health/ready").status, 200, "after {after}");
}

#[test]
fn a_batch_dimension_that_wraps_the_size_check_is_refused_and_the_agent_keeps_serving() {
    let agent = serving_agent("hostile-wrap", "");
    // (2^58 + 1) rows × 64 values per row wraps to 64 in 64-bit arithmetic: exactly the values sent.
    let rows = (1u64 << 58) + 1;
    let body = json(serde_json::json!({"inputs": [
        {"name": "input", "shape": [rows, 1, 8, 8], "datatype": "FP32", "data": vec![0.5f32; 64]}]}));
    for _ in 0..3 {
        let r = agent.post(INFER, &body);
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r.text().contains(&format!("has {rows} rows; this agent takes at most 1024")), "{}", r.text());
    }
    still_serving(&agent, "a wrapping batch");
}

#[test]
fn every_malformed_request_gets_a_4xx_naming_the_problem() {
    let agent = serving_agent("hostile-cases", "[inference]\nmax_rows = 16\n");
    let image = vec![0.25f32; 64];
    let input = |shape: serde_json::Value, datatype: &str, data: serde_json::Value| {
        json(serde_json::json!({"inputs": [{"name": "input", "shape": shape, "datatype": datatype, "data": data}]}))
    };
    // (what, body, extra headers, status, what the error must say)
    type Case<'a> = (&'a str, Vec<u8>, Vec<(&'a str, String)>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "more rows than allowed",
            input(serde_json::json!([17, 1, 8, 8]), "FP32", serde_json::json!(vec![0.0f32; 17 * 64])),
            vec![],
            400,
            "at most 16 per request",
        ),
        (
            "a dimension beyond usize",
            br#"{"inputs":[{"name":"input","shape":[1,1,8,18446744073709551616],"datatype":"FP32","data":[1]}]}"#
                .to_vec(),
            vec![],
            400,
            "invalid request JSON",
        ),
        (
            "a negative dimension",
            input(serde_json::json!([-1, 1, 8, 8]), "FP32", serde_json::json!(image)),
            vec![],
            400,
            "invalid request JSON",
        ),
        (
            "zero rows",
            input(serde_json::json!([0, 1, 8, 8]), "FP32", serde_json::json!([])),
            vec![],
            400,
            "has shape [0,1,8,8]",
        ),
        (
            "too few values",
            input(serde_json::json!([2, 1, 8, 8]), "FP32", serde_json::json!(image)),
            vec![],
            400,
            "has 64 values; shape [2,1,8,8] needs 128",
        ),
        (
            "a string among numbers",
            input(serde_json::json!([1, 1, 8, 8]), "FP32", serde_json::json!(["x"])),
            vec![],
            400,
            "invalid request JSON",
        ),
        ("not JSON", b"{\"inputs\": [".to_vec(), vec![], 400, "invalid request JSON"),
        (
            "deeply nested data",
            {
                let nested = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
                format!(r#"{{"inputs":[{{"name":"input","shape":[1,1,8,8],"datatype":"FP32","data":{nested}}}]}}"#)
                    .into_bytes()
            },
            vec![],
            400,
            "invalid request JSON",
        ),
        (
            "a header length beyond the body",
            json(serde_json::json!({"inputs": []})),
            vec![("Inference-Header-Content-Length", "99999".into())],
            400,
            "exceeds the body",
        ),
        (
            "a header length that is not a number",
            json(serde_json::json!({"inputs": []})),
            vec![("Inference-Header-Content-Length", "-1".into())],
            400,
            "not a byte count",
        ),
        (
            "a binary size beyond the body",
            json(serde_json::json!({"inputs": [{"name": "input", "shape": [1, 1, 8, 8],
            "datatype": "FP32", "parameters": {"binary_data_size": 1u64 << 62}}]})),
            vec![],
            400,
            "binary bytes are left",
        ),
    ];
    for (what, body, mut headers, status, needle) in cases {
        if what == "a binary size beyond the body" {
            headers.push(("Inference-Header-Content-Length", body.len().to_string()));
        }
        let r = agent.post_with(INFER, &headers, &body);
        assert_eq!(r.status, status, "{what}: {}", r.text());
        assert!(r.text().contains(needle), "{what}: {}", r.text());
        still_serving(&agent, what);
    }
}

//! The local HTTP API: the Open Inference Protocol (KServe v2 REST) on loopback, `/metrics` in Prometheus
//! text, and `/outpost/v1/status` for `outpost-agent status`. Errors are `{"error": "..."}` with the
//! status a client can act on: 400 fix the request, 404 wrong model, 413 too big, 429/503 retry later
//! (`Retry-After`), 504 too slow.

pub mod binary;
pub mod oip;
pub mod tensor_json;

use crate::runtime::{InferError, InferRequest, InputTensor, NotReady, Runtime, TensorData};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use oip::{BinaryParameters, InferResponseJson, ModelMetadata, OutputJson, TensorMetadata};
use outpost_protocol::manifest::{Dim, TensorSpec};
use std::sync::Arc;
use std::time::Instant;

pub fn router(rt: Arc<Runtime>) -> Router {
    let max_body = rt.config().inference.max_body_bytes;
    Router::new()
        .route("/v2/health/live", get(|| async { Json(serde_json::json!({"live": true})) }))
        .route("/v2/health/ready", get(ready))
        .route("/v2/models/{name}", get(metadata))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/models/{name}/infer", post(infer))
        .route("/metrics", get(metrics))
        .route("/outpost/v1/status", get(status))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(rt)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let mut r = (status, Json(serde_json::json!({ "error": message.into() }))).into_response();
    let retry = match status {
        StatusCode::TOO_MANY_REQUESTS => Some("1"),
        StatusCode::SERVICE_UNAVAILABLE => Some("5"),
        _ => None,
    };
    if let Some(secs) = retry {
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static(secs));
    }
    r
}

fn infer_error(e: &InferError) -> Response {
    let status = match e {
        InferError::UnknownModel(_) => StatusCode::NOT_FOUND,
        InferError::NotReady | InferError::Loading(_) => StatusCode::SERVICE_UNAVAILABLE,
        InferError::BadRequest(_) => StatusCode::BAD_REQUEST,
        InferError::Overloaded(_) => StatusCode::TOO_MANY_REQUESTS,
        InferError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        InferError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, e.to_string())
}

/// Ready when every installed model is loaded: a client that waits for this finds each of them serving.
async fn ready(State(rt): State<Arc<Runtime>>) -> Response {
    match rt.readiness() {
        Ok(()) => {
            let models: Vec<String> = rt.models().iter().map(|s| s.name().to_owned()).collect();
            Json(serde_json::json!({"ready": true, "models": models})).into_response()
        }
        Err(NotReady::NothingInstalled) => error(StatusCode::SERVICE_UNAVAILABLE, "no model is active yet"),
        Err(NotReady::Loading(names)) => {
            error(StatusCode::SERVICE_UNAVAILABLE, format!("installed but not loaded yet: {}", names.join(", ")))
        }
        Err(NotReady::Workers { running, configured }) => {
            error(StatusCode::SERVICE_UNAVAILABLE, format!("{running} of {configured} inference workers are running"))
        }
    }
}

async fn model_ready(State(rt): State<Arc<Runtime>>, Path(name): Path<String>) -> Response {
    match rt.model(&name) {
        Some(s) if s.active().is_some() => Json(serde_json::json!({"name": name, "ready": true})).into_response(),
        Some(_) => error(StatusCode::SERVICE_UNAVAILABLE, format!("model {name:?} is not loaded yet")),
        None => error(StatusCode::NOT_FOUND, format!("model {name:?} is not served here")),
    }
}

fn tensor_meta(t: &TensorSpec) -> TensorMetadata {
    TensorMetadata {
        name: t.name.clone(),
        datatype: t.dtype.as_str(),
        shape: t.shape.iter().map(|d| if let Dim::Fixed(n) = d { *n as i64 } else { -1 }).collect(),
    }
}

async fn metadata(State(rt): State<Arc<Runtime>>, Path(name): Path<String>) -> Response {
    let Some(m) = rt.active(&name) else {
        return error(StatusCode::NOT_FOUND, format!("model {name:?} is not served here"));
    };
    let iface = m.interface();
    Json(ModelMetadata {
        name: m.name().to_owned(),
        versions: vec![m.manifest.version.to_string()],
        platform: "tract_nnef",
        inputs: iface.inputs.iter().map(tensor_meta).collect(),
        outputs: iface.outputs.iter().map(tensor_meta).collect(),
    })
    .into_response()
}

async fn infer(
    State(rt): State<Arc<Runtime>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let start = Instant::now();
    let (version, response) = match infer_inner(&rt, name.clone(), &headers, body).await {
        Ok((version, r)) => (Some(version), r),
        Err(r) => (None, r),
    };
    let cached = response.headers().contains_key("x-outpost-cache");
    rt.record_request(&name, response.status().as_u16(), start.elapsed(), cached, version.as_deref());
    response
}

async fn infer_inner(
    rt: &Runtime,
    name: String,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(String, Response), Response> {
    let body = body.map_err(|e| {
        let status = e.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            error(status, format!("request body over the {} byte limit", rt.config().inference.max_body_bytes))
        } else {
            error(status, e.body_text())
        }
    })?;
    let header_len = match headers.get(binary::HEADER).map(|v| v.to_str()) {
        None => None,
        Some(Ok(v)) => Some(v),
        Some(Err(_)) => return Err(error(StatusCode::BAD_REQUEST, "Inference-Header-Content-Length is not text")),
    };
    let req = binary::decode_request(&body, header_len).map_err(|e| error(StatusCode::BAD_REQUEST, e))?;
    drop(body);
    let id = req.id.clone();
    let binary_out = binary::binary_outputs(&req);
    let mut inputs = Vec::with_capacity(req.inputs.len());
    for t in req.inputs {
        // A datatype this agent does not serve (BYTES) is named even when the tensor carries no values.
        t.dtype().map_err(|e| error(StatusCode::BAD_REQUEST, e))?;
        let Some(data) = t.data else {
            let e = format!("input {:?} has no values: neither `data` nor parameters.binary_data_size", t.name);
            return Err(error(StatusCode::BAD_REQUEST, e));
        };
        inputs.push(InputTensor { name: t.name, shape: t.shape, data });
    }
    let request =
        InferRequest { model: name, inputs, outputs: req.outputs.map(|o| o.into_iter().map(|o| o.name).collect()) };
    let res = rt.infer_on_workers(request).await.map_err(|e| infer_error(&e))?;
    let outputs = res.outputs.iter().map(|t| {
        let raw = binary_out.contains(&t.name);
        OutputJson {
            name: &t.name,
            shape: &t.shape,
            datatype: t.data.dtype().as_str(),
            data: (!raw).then_some(tensor_json::Values(&t.data)),
            parameters: raw.then(|| BinaryParameters { binary_data_size: t.data.byte_len() }),
        }
    });
    let json = InferResponseJson {
        model_name: &res.model_name,
        model_version: &res.model_version,
        id,
        outputs: outputs.collect(),
    };
    let mut response = if binary_out.any() {
        let raw: Vec<&TensorData> =
            res.outputs.iter().filter(|t| binary_out.contains(&t.name)).map(|t| &t.data).collect();
        let (body, json_len) = binary::encode_response(&json, &raw);
        let mut r = ([(header::CONTENT_TYPE, "application/octet-stream")], body).into_response();
        r.headers_mut().insert(binary::HEADER, HeaderValue::from(json_len));
        r
    } else {
        Json(json).into_response()
    };
    if res.cached {
        response.headers_mut().insert("x-outpost-cache", HeaderValue::from_static("hit"));
    }
    Ok((res.model_version.clone(), response))
}

async fn metrics(State(rt): State<Arc<Runtime>>) -> Response {
    let text = rt.prometheus();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn status(State(rt): State<Arc<Runtime>>) -> Response {
    let model = |m: &crate::runtime::model::LoadedModel| {
        serde_json::json!({
            "name": m.name(),
            "version": m.manifest.version.to_string(),
            "sequence": m.manifest.sequence,
            "digest": m.digest.to_hex(),
            "load_ms": m.load_time.as_secs_f64() * 1e3,
            "mem_bytes": m.mem_bytes,
            "max_batch": m.max_rows(),
            "calibration_us_per_row": m.calibration.iter().map(|(b, t)| (b.to_string(), t.as_secs_f64() * 1e6)).collect::<std::collections::BTreeMap<_, _>>(),
        })
    };
    let models: serde_json::Map<String, serde_json::Value> = rt
        .models()
        .iter()
        .map(|s| {
            let latency = s.metrics.latency();
            let v = serde_json::json!({
                "active": s.active().as_deref().map(model),
                "candidate": s.candidate().as_deref().map(model),
                "shadow_agreement": s.shadow_agreement(),
                "shadow_compared": s.shadow_compared(),
                "requests": rt.metrics.requests_for(s.name()),
                "latency_p50_us": latency.quantile_us(0.5),
                "latency_p95_us": latency.quantile_us(0.95),
            });
            (s.name().to_owned(), v)
        })
        .collect();
    let g = rt.gauges();
    Json(serde_json::json!({
        "agent_version": crate::version().to_string(),
        "ready": rt.readiness().is_ok(),
        "models": models,
        "requests": rt.metrics.requests_total(),
        "queue_depth": g.queue_depth,
        "workers": {
            "configured": rt.config().inference.workers,
            "running": rt.live_workers(),
            "replaced_after_panic": rt.worker_restarts.load(std::sync::atomic::Ordering::Relaxed),
        },
        "cache_entries": g.cache_entries,
        "rss_bytes": g.rss_bytes,
    }))
    .into_response()
}

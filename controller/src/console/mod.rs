//! The operator console served by `outpost serve` on its API address: plain HTML, CSS and JavaScript
//! compiled into the binary (no build step, no CDN, works offline), reading the same JSON API as the CLI
//! with a session cookie instead of a bearer token (`auth.rs`). Pages: fleet, rollouts (with gates over
//! time and the verbs), device (with telemetry charts), audit. They poll the API every 2 s.
//!
//! Routes here: the static files, sign-in and sign-out, and the API additions the pages need (a device's
//! recent windows, a rollout's gate series, operators). Everything but the static files and sign-in sits
//! behind the same authentication as the rest of the API.

pub mod auth;
pub mod tls;

use crate::daemon::api::{Api, DevicePath, error};
use crate::daemon::fleet::now;
use auth::Operator;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};

const INDEX: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const CHARTS_JS: &str = include_str!("assets/charts.js");
const STYLE: &str = include_str!("assets/style.css");

/// Pages need no credentials (they hold no data); sign-in makes a session.
pub fn public_routes() -> Router<Api> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/console/") }))
        .route("/console", get(|| async { Redirect::to("/console/") }))
        .route("/console/", get(|| async { asset("text/html; charset=utf-8", INDEX) }))
        .route("/console/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/console/charts.js", get(|| async { asset("text/javascript; charset=utf-8", CHARTS_JS) }))
        .route("/console/style.css", get(|| async { asset("text/css; charset=utf-8", STYLE) }))
        .route("/console/login", post(login))
        .route("/console/logout", post(logout))
        .route("/console/session", get(session))
}

/// API routes the console adds; the caller puts them behind authentication.
pub fn protected_routes() -> Router<Api> {
    Router::new()
        .route("/api/v1/devices/{id}/windows", get(device_windows))
        .route("/api/v1/rollouts/{id}/gates", get(rollout_gates))
        .route("/api/v1/operators", get(list_operators).post(add_operator))
        .route("/api/v1/operators/{name}", delete(remove_operator))
        .route("/metrics", get(metrics))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let headers = [
        (header::CONTENT_TYPE, content_type),
        // The console loads nothing from elsewhere and runs no inline script.
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CACHE_CONTROL, "no-cache"),
    ];
    (headers, body).into_response()
}

#[derive(Debug, serde::Deserialize)]
struct LoginRequest {
    token: String,
}

/// Sign-in takes JSON only: a cross-site form cannot send `application/json` without a preflight.
async fn login(State(api): State<Api>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json {
        return error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "sign-in takes application/json: {\"token\": \"...\"}");
    }
    let Ok(req) = serde_json::from_slice::<LoginRequest>(&body) else {
        return error(StatusCode::BAD_REQUEST, "sign-in takes {\"token\": \"...\"}");
    };
    let t = now();
    match api.access.sign_in(req.token.trim(), t) {
        Ok((id, csrf, operator)) => {
            audit(&api, t, &operator, "signed in to the console");
            let cookie = HeaderValue::from_str(&api.access.cookie(Some(&id))).expect("ascii");
            ([(header::SET_COOKIE, cookie)], Json(serde_json::json!({"operator": operator, "csrf": csrf})))
                .into_response()
        }
        Err(_) => {
            tracing::warn!("console sign-in with a wrong token");
            error(StatusCode::UNAUTHORIZED, "wrong token: use the controller's api-token or an operator token")
        }
    }
}

async fn logout(State(api): State<Api>, headers: HeaderMap) -> Response {
    let cookie = headers.get(header::COOKIE).and_then(|v| v.to_str().ok()).and_then(auth::session_cookie);
    if let Some(operator) = cookie.and_then(|id| api.access.sign_out(id)) {
        audit(&api, now(), &operator, "signed out of the console");
    }
    let clear = HeaderValue::from_str(&api.access.cookie(None)).expect("ascii");
    ([(header::SET_COOKIE, clear)], Json(serde_json::json!({"ok": true}))).into_response()
}

/// Who the session belongs to and its CSRF token, for the page's own requests.
async fn session(State(api): State<Api>, headers: HeaderMap) -> Response {
    let cookie = headers.get(header::COOKIE).and_then(|v| v.to_str().ok()).and_then(auth::session_cookie);
    match cookie.and_then(|id| api.access.session(id, now())) {
        Some((operator, csrf)) => Json(serde_json::json!({"operator": operator, "csrf": csrf})).into_response(),
        None => error(StatusCode::UNAUTHORIZED, "not signed in"),
    }
}

fn audit(api: &Api, at: u64, operator: &str, what: &str) {
    if let Err(e) = api.store.audit(&serde_json::json!({"at": at, "what": what, "operator": operator})) {
        tracing::error!(error = %e, "cannot append to the audit log");
    }
}

async fn device_windows(State(api): State<Api>, DevicePath(id): DevicePath) -> Response {
    if api.fleet.device(&id).is_none() {
        return error(StatusCode::NOT_FOUND, format!("no device {id}"));
    }
    Json(api.fleet.observed.windows(&id)).into_response()
}

async fn rollout_gates(State(api): State<Api>, Path(id): Path<String>) -> Response {
    match api.rollouts.get(&id) {
        Some(r) => Json(api.fleet.observed.gate_series(&r)).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no rollout {id}")),
    }
}

async fn metrics(State(api): State<Api>) -> Response {
    let text = crate::daemon::metrics::render(&api);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

/// The refusal for anyone but `admin`.
fn not_admin(op: &Operator) -> Option<Response> {
    (op.name != auth::ADMIN).then(|| error(StatusCode::FORBIDDEN, "only the API token (admin) manages operators"))
}

async fn list_operators(State(api): State<Api>, Extension(op): Extension<Operator>) -> Response {
    if let Some(r) = not_admin(&op) {
        return r;
    }
    let list: Vec<_> =
        api.access.operators().into_iter().map(|o| serde_json::json!({"name": o.name, "created": o.created})).collect();
    Json(list).into_response()
}

#[derive(Debug, serde::Deserialize)]
struct AddOperator {
    name: String,
}

async fn add_operator(
    State(api): State<Api>,
    Extension(op): Extension<Operator>,
    Json(req): Json<AddOperator>,
) -> Response {
    if let Some(r) = not_admin(&op) {
        return r;
    }
    let t = now();
    match api.access.add_operator(&req.name, t) {
        Ok(token) => {
            audit(&api, t, &op.name, &format!("added operator {}", req.name));
            (StatusCode::CREATED, Json(serde_json::json!({"name": req.name, "token": token}))).into_response()
        }
        Err(e) => error(StatusCode::CONFLICT, e),
    }
}

async fn remove_operator(
    State(api): State<Api>,
    Extension(op): Extension<Operator>,
    Path(name): Path<String>,
) -> Response {
    if let Some(r) = not_admin(&op) {
        return r;
    }
    match api.access.remove_operator(&name) {
        Ok(()) => {
            audit(&api, now(), &op.name, &format!("removed operator {name}"));
            Json(serde_json::json!({"removed": name})).into_response()
        }
        Err(e) => error(StatusCode::NOT_FOUND, e),
    }
}

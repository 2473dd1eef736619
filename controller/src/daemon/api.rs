//! The controller's HTTP API (JSON) for everything the CLI does. Every route but `/api/v1/health`
//! needs `Authorization: Bearer <token>`; the token is made at first start in the data directory.

use super::bundles::{self, BundleMeta};
use super::fleet::{Fleet, now};
use super::registry::DeviceRecord;
use super::store::{Store, Table};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use outpost_protocol::DeviceId;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Clone)]
pub struct Api {
    pub rollouts: Arc<super::rollouts::Rollouts>,
    pub fleet: Arc<Fleet>,
    pub store: Arc<Store>,
    pub trust: Arc<super::fleet_trust::FleetTrust>,
    /// Who may use the API and the console: the API token, operator tokens, console sessions.
    pub access: Arc<crate::console::auth::Access>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api").finish_non_exhaustive()
    }
}

pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

pub fn router(api: Api) -> Router {
    let protected = Router::new()
        .route("/api/v1/devices", get(devices))
        .route("/api/v1/devices/{id}", get(device).delete(delete_device))
        .route("/api/v1/devices/{id}/approve", axum::routing::post(approve))
        .route("/api/v1/devices/{id}/revoke", axum::routing::post(revoke))
        .route("/api/v1/enroll-tokens", get(list_tokens).post(create_token))
        .route("/api/v1/bundles", get(list_bundles).post(push_bundle))
        .route("/api/v1/audit", get(audit))
        .route("/api/v1/rollouts", get(list_rollouts).post(start_rollout))
        .route("/api/v1/rollouts/{id}", get(get_rollout))
        .route("/api/v1/rollouts/{id}/{verb}", axum::routing::post(rollout_verb))
        .route("/api/v1/skew", get(skew))
        .route("/api/v1/skew/agents", get(super::api_trust::skew_agents))
        .route("/api/v1/trust", get(super::api_trust::status).post(super::api_trust::push))
        .merge(crate::console::protected_routes())
        .layer(middleware::from_fn_with_state(api.clone(), auth));
    Router::new()
        .route("/api/v1/health", get(|| async { Json(serde_json::json!({"ok": true})) }))
        .merge(crate::console::public_routes())
        .merge(protected)
        .fallback(unknown_path)
        .layer(DefaultBodyLimit::max(1 << 30))
        .with_state(api)
}

/// Any path no route serves: 404 with what was asked, before any credentials are looked at (a wrong
/// path is not a reason to talk about tokens), so `outpost` says "no such API path" and a script sees 404.
async fn unknown_path(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("no API path {method} {}: is the controller older than this outpost?", uri.path()),
    )
}

/// A bearer token (the API token or an operator's) or a console session; the operator goes to the
/// handler as an extension, so what they do is audited with their name (`console/auth.rs`).
async fn auth(State(api): State<Api>, mut req: Request, next: Next) -> Response {
    use crate::console::auth::{CSRF_HEADER, Refusal, session_cookie};
    let h = req.headers();
    let text = |name| h.get(name).and_then(|v: &header::HeaderValue| v.to_str().ok());
    let bearer = text(header::AUTHORIZATION).and_then(|v| v.strip_prefix("Bearer "));
    let cookie = text(header::COOKIE).and_then(session_cookie);
    let csrf = text(header::HeaderName::from_static(CSRF_HEADER));
    let safe = matches!(*req.method(), axum::http::Method::GET | axum::http::Method::HEAD);
    match api.access.authenticate(bearer, cookie, csrf, safe, now()) {
        Ok(operator) => {
            req.extensions_mut().insert(operator);
            next.run(req).await
        }
        Err(Refusal::Unauthenticated) => error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong API token (see the data directory's api-token, or OUTPOST_TOKEN), or no console session",
        ),
        Err(Refusal::Csrf) => {
            error(StatusCode::FORBIDDEN, "a console action needs the session's X-Outpost-CSRF header")
        }
    }
}

/// Compares two secrets in time that depends on neither: both are hashed first (so the lengths do not
/// show either) and the digests are compared without an early exit. A `==` on the strings returns at the
/// first wrong byte, and the time it takes tells an attacker how much of a guess was right.
pub fn same_secret(given: &str, secret: &str) -> bool {
    use sha2::Digest as _;
    let (a, b) = (sha2::Sha256::digest(given.as_bytes()), sha2::Sha256::digest(secret.as_bytes()));
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `?label=k=v&label=...` filters by labels; `arch` is a label too.
pub(super) fn matches(d: &DeviceRecord, filters: &[(String, String)]) -> bool {
    filters.iter().all(|(k, v)| {
        d.labels.get(k) == Some(v) || (k == "arch" && d.arch.map(|a| a.to_string()).as_deref() == Some(v.as_str()))
    })
}

/// The same selector language as rollouts (`rollout::Selector`): `key=value` pairs, all of which hold.
pub fn parse_selector(s: &str) -> Result<Vec<(String, String)>, String> {
    let pairs = crate::rollout::Selector::parse(s).map_err(|e| e.to_string())?.0;
    if let Some((k, _)) = pairs.iter().find(|(_, v)| v.is_empty()) {
        return Err(format!("selector part {:?} has no value", format!("{k}=")));
    }
    Ok(pairs)
}

/// `GET /api/v1/devices[?selector=..][&limit=N&after=ID][&view=brief]` (`device_list.rs`).
async fn devices(State(api): State<Api>, Query(q): Query<HashMap<String, String>>) -> Response {
    match super::device_list::ListQuery::parse(&q) {
        Ok(q) => Json(api.fleet.devices_page(&q)).into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

async fn device(State(api): State<Api>, DevicePath(id): DevicePath) -> Response {
    match api.fleet.device(&id) {
        Some(d) if d.decommissioned.is_some() => error(
            StatusCode::NOT_FOUND,
            format!("no device {id}: it was deleted (outpost devices delete) and its id stays revoked"),
        ),
        Some(d) => Json(d).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no device {id}")),
    }
}

/// `outpost devices delete ID`: decommission (`decommission.rs`).
async fn delete_device(
    State(api): State<Api>,
    axum::Extension(operator): axum::Extension<crate::console::auth::Operator>,
    DevicePath(id): DevicePath,
) -> Response {
    use super::decommission::Refused;
    match api.fleet.decommission(&id, &operator.name).await {
        Ok(done) => Json(done).into_response(),
        Err(Refused::NotFound(e)) => error(StatusCode::NOT_FOUND, e),
        Err(Refused::Failed(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// The `{id}` of a device route; a 400 naming it when it is not a device id, before any handler runs.
#[derive(Debug)]
pub struct DevicePath(pub DeviceId);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for DevicePath {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Response> {
        let Path(id) = Path::<String>::from_request_parts(parts, state).await.map_err(IntoResponse::into_response)?;
        let parsed = DeviceId::new(id.clone());
        parsed.map(DevicePath).map_err(|e| error(StatusCode::BAD_REQUEST, format!("{id:?} is not a device id: {e}")))
    }
}

async fn approve(
    State(api): State<Api>,
    axum::Extension(operator): axum::Extension<crate::console::auth::Operator>,
    DevicePath(id): DevicePath,
) -> Response {
    match api.fleet.approve(&id, &operator.name) {
        Ok(()) => Json(api.fleet.device(&id)).into_response(),
        Err(e) => error(StatusCode::CONFLICT, e),
    }
}

async fn revoke(
    State(api): State<Api>,
    axum::Extension(operator): axum::Extension<crate::console::auth::Operator>,
    DevicePath(id): DevicePath,
) -> Response {
    match api.fleet.revoke(&id, &operator.name).await {
        Ok(()) => Json(api.fleet.device(&id)).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// `outpost enroll-token create`: lifetime in seconds (default 7 days), auto-approve or not, how many
/// devices may use it (default 100) and which device ids (default any).
#[derive(Debug, serde::Deserialize)]
struct TokenRequest {
    #[serde(default)]
    auto_approve: bool,
    expires_secs: Option<u64>,
    max_uses: Option<u64>,
    #[serde(default)]
    devices: Vec<String>,
}

/// The largest use cap a token may have.
const MAX_TOKEN_USES: u64 = 1_000_000;

async fn create_token(
    State(api): State<Api>,
    axum::Extension(operator): axum::Extension<crate::console::auth::Operator>,
    Json(req): Json<TokenRequest>,
) -> Response {
    let lifetime = req.expires_secs.unwrap_or(7 * 86_400);
    if lifetime == 0 {
        return error(StatusCode::BAD_REQUEST, "a token must live longer than 0 seconds");
    }
    let max_uses = req.max_uses.unwrap_or(super::enroll::DEFAULT_MAX_USES);
    if !(1..=MAX_TOKEN_USES).contains(&max_uses) {
        return error(StatusCode::BAD_REQUEST, format!("max_uses {max_uses} is not in 1..={MAX_TOKEN_USES}"));
    }
    if let Some(bad) = req.devices.iter().find(|p| p.is_empty() || p.len() > 64 || p.contains(['/', '+', '#'])) {
        return error(StatusCode::BAD_REQUEST, format!("device pattern {bad:?} is empty, too long or has / + #"));
    }
    let limits = super::enroll::TokenLimits {
        lifetime_secs: lifetime,
        auto_approve: req.auto_approve,
        max_uses,
        devices: req.devices,
    };
    match api.fleet.create_token(&limits, &operator.name) {
        Ok((secret, t)) => (
            StatusCode::CREATED,
            Json(serde_json::json!({
                "token": secret, "id": t.id, "expires": t.expires, "auto_approve": t.auto_approve,
                "max_uses": t.max_uses, "devices": t.devices,
            })),
        )
            .into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn list_tokens(State(api): State<Api>) -> Response {
    match api.fleet.tokens() {
        Ok(list) => Json(
            list.into_iter()
                .map(|t| {
                    serde_json::json!({
                        "id": t.id, "created": t.created, "expires": t.expires,
                        "auto_approve": t.auto_approve, "uses": t.uses, "max_uses": t.max_uses,
                        "devices": t.devices,
                    })
                })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn list_bundles(State(api): State<Api>) -> Response {
    match api.store.all::<BundleMeta>(Table::Bundles) {
        Ok(b) => Json(b).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn push_bundle(
    State(api): State<Api>,
    axum::Extension(operator): axum::Extension<crate::console::auth::Operator>,
    body: Bytes,
) -> Response {
    let Some(trust) = api.trust.bundle_trust() else {
        return error(StatusCode::CONFLICT, "the controller has no trust policy configured to verify bundles with");
    };
    let store = api.store.clone();
    let result = tokio::task::spawn_blocking(move || bundles::push(&store, &trust, &body, now())).await;
    match result {
        Ok(Ok(meta)) => {
            let _ = api.store.audit(
                &serde_json::json!({"at": now(), "what": "bundle pushed", "bundle": &meta, "operator": operator.name}),
            );
            (StatusCode::CREATED, Json(meta)).into_response()
        }
        Ok(Err(e)) => error(StatusCode::UNPROCESSABLE_ENTITY, e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn audit(State(api): State<Api>) -> Response {
    match api.store.audit_log() {
        Ok(log) => Json(log.into_iter().map(|(n, e)| serde_json::json!({"n": n, "entry": e})).collect::<Vec<_>>())
            .into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn list_rollouts(State(api): State<Api>) -> Response {
    Json(api.rollouts.list()).into_response()
}

async fn get_rollout(State(api): State<Api>, Path(id): Path<String>) -> Response {
    match api.rollouts.get(&id) {
        Some(r) => Json(r).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no rollout {id}")),
    }
}

async fn start_rollout(
    State(api): State<Api>,
    axum::Extension(operator): axum::Extension<crate::console::auth::Operator>,
    Json(req): Json<super::rollouts::StartRequest>,
) -> Response {
    match api.rollouts.start(&req, &operator.name).await {
        Ok(r) => (StatusCode::CREATED, Json(r)).into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

async fn rollout_verb(
    State(api): State<Api>,
    axum::Extension(operator): axum::Extension<crate::console::auth::Operator>,
    Path((id, verb)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    use crate::rollout::Verb;
    let flag = |k: &str| q.get(k).is_some_and(|v| v == "true");
    let verb = match verb.as_str() {
        "pause" => Verb::Pause,
        "resume" => Verb::Resume,
        "promote" => Verb::Promote { full: flag("full") },
        "abort" => Verb::Abort { revert: flag("revert") },
        "undo" => Verb::Undo,
        other => return error(StatusCode::NOT_FOUND, format!("no rollout verb {other:?}")),
    };
    match api.rollouts.command(&id, verb, &operator.name).await {
        Ok(r) => Json(r).into_response(),
        Err(e) => error(StatusCode::CONFLICT, e),
    }
}

async fn skew(State(api): State<Api>) -> Response {
    Json(fleet_skew(&api)).into_response()
}

/// Per model: versions × devices (with attested counts) and compliance against the model's target
/// release (`outpost skew`, `/metrics`, the console's fleet page).
pub fn fleet_skew(api: &Api) -> Vec<crate::skew::ModelSkew> {
    let devices = api.fleet.devices();
    let views: Vec<_> = devices.iter().map(|d| d.view()).collect();
    let targets: Vec<_> = api
        .rollouts
        .targets()
        .into_iter()
        .map(|r| {
            let rel = &r.spec.release;
            let target = crate::skew::Target {
                version: rel.version,
                digest: rel.bundle.digest,
                model_digest: rel.model_digest,
                sequence: rel.sequence,
                rollout: Some(r.spec.id.clone()),
            };
            (rel.model.clone(), target)
        })
        .collect();
    let mut skew = crate::skew::fleet_skew(&views, &targets);
    super::attestation::count_attested(&mut skew, &devices);
    skew
}

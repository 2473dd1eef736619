//! The API of the trust lifecycle: `GET|POST /api/v1/trust` (the fleet's root and policy; `outpost trust
//! status | push`) and `GET /api/v1/skew/agents` (agent and trust versions across the fleet, devices too
//! old for a release; `outpost skew --agents`).

use super::api::{Api, error};
use super::attestation;
use crate::agent_skew::{self, AgentFacts, ReleaseNeed};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use outpost_protocol::ModelName;
use std::collections::HashMap;

pub async fn status(State(api): State<Api>) -> Response {
    Json(api.trust.status(&api.fleet.devices())).into_response()
}

/// The body is a `Message::Trust` frame, exactly what devices will receive.
pub async fn push(
    State(api): State<Api>,
    axum::Extension(operator): axum::Extension<crate::console::auth::Operator>,
    body: Bytes,
) -> Response {
    match super::fleet_trust::push(&api.fleet, &api.trust, &body, &operator.name).await {
        Ok(status) => (StatusCode::CREATED, Json(status)).into_response(),
        Err((code, e)) => error(StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST), e),
    }
}

/// Every rollout's release, and `?bundle=NAME@VERSION` or a digest prefix (a pushed bundle not rolled out yet).
pub async fn skew_agents(State(api): State<Api>, Query(q): Query<HashMap<String, String>>) -> Response {
    let mut releases: Vec<ReleaseNeed> = api
        .rollouts
        .targets()
        .into_iter()
        .map(|r| ReleaseNeed {
            model: r.spec.release.model.clone(),
            version: r.spec.release.version,
            min_agent: r.spec.release.targets.min_agent,
            rollout: Some(r.spec.id.clone()),
        })
        .collect();
    if let Some(digest) = q.get("bundle") {
        // `NAME@VERSION` or a digest prefix, as `rollout start --bundle` takes it.
        let meta = match super::bundles::find(&api.store, digest) {
            Ok(m) => m,
            Err(e) => return error(StatusCode::NOT_FOUND, e),
        };
        let (Ok(model), Ok(version)) = (ModelName::new(meta.name.clone()), meta.version.parse()) else {
            return error(StatusCode::INTERNAL_SERVER_ERROR, format!("bundle {digest} has a bad name or version"));
        };
        let Some(min_agent) = meta.min_agent else {
            return error(StatusCode::CONFLICT, format!("bundle {digest} was pushed before min_agent was recorded"));
        };
        releases.push(ReleaseNeed { model, version, min_agent, rollout: None });
    }
    let facts: Vec<AgentFacts> = api
        .fleet
        .devices()
        .iter()
        .map(|d| AgentFacts {
            id: d.id.clone(),
            agent_version: d.agent_version,
            attested: attestation::attested_agent(&d.attestation, d.agent_version.as_ref()),
            trust: d.attestation.last.as_ref().map(|a| (a.report.root_version, a.report.policy_version)),
            online: d.online,
        })
        .collect();
    Json(agent_skew::agent_skew(&facts, &releases)).into_response()
}

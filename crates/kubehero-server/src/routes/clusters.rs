//! Clusters: viewers list and get; admins register and delete, a scoped admin only within its scope.

use super::Json;
use crate::audit::{target_of, Audited};
use crate::auth::{allow, Auth};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use kubehero_core::ClusterName;
use kubehero_core::{Action, Target};
use kubehero_store::{Change, Cluster};
use serde::Deserialize;
use std::collections::BTreeMap;

/// `GET /api/v1/clusters` — permission: `cluster.list` (viewer).
pub async fn list(State(s): State<AppState>, Auth(p): Auth) -> ApiResult<impl IntoResponse> {
    allow(&p, Action::ClusterList, Target::NONE)?;
    Ok(axum::Json(serde_json::json!({ "items": s.store.list_clusters().await? })))
}

/// `GET /api/v1/clusters/{name}` — permission: `cluster.get` (viewer).
pub async fn get(State(s): State<AppState>, Auth(p): Auth, Path(name): Path<String>) -> ApiResult<impl IntoResponse> {
    allow(&p, Action::ClusterGet, Target::cluster(&name))?;
    Ok(axum::Json(s.store.get_cluster(&name).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterCluster {
    name: String,
    #[serde(default)]
    api_server_url: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// `POST /api/v1/clusters` (RegisterCluster) — permission: `cluster.register` (admin covering the name).
pub async fn register(
    State(s): State<AppState>,
    Auth(p): Auth,
    audited: Audited,
    Json(body): Json<RegisterCluster>,
) -> ApiResult<impl IntoResponse> {
    allow(&p, Action::ClusterRegister, Target::cluster(&body.name))?;
    let name = ClusterName::parse(&body.name).map_err(|e| ApiError::invalid(e.to_string()))?;
    if let Some(u) = &body.api_server_url {
        if !(u.starts_with("https://") && u.len() <= 2048) {
            return Err(ApiError::invalid("api_server_url must be an https:// URL"));
        }
    }
    if body.labels.len() > 64 || body.labels.iter().any(|(k, v)| k.is_empty() || k.len() > 63 || v.len() > 255) {
        return Err(ApiError::invalid("labels: at most 64, keys 1-63 characters, values at most 255"));
    }
    let cluster = Cluster {
        name: name.into(),
        api_server_url: body.api_server_url,
        labels: body.labels,
        created_by: p.subject_key(),
        created_at: s.clock.now(),
    };
    let target = target_of("cluster", &cluster.name, Some(&cluster.name), None);
    audited.apply(Change::CreateCluster(&cluster), Action::ClusterRegister, &target, StatusCode::CREATED).await?;
    Ok((StatusCode::CREATED, Audited::done(target), axum::Json(cluster)))
}

/// `DELETE /api/v1/clusters/{name}` — permission: `cluster.delete` (admin covering the name).
pub async fn delete(
    State(s): State<AppState>,
    Auth(p): Auth,
    audited: Audited,
    Path(name): Path<String>,
) -> ApiResult<impl IntoResponse> {
    // Whoever may see the cluster hears that an unknown one is not found, before being told they cannot delete.
    if allow(&p, Action::ClusterDelete, Target::cluster(&name)).is_err()
        && allow(&p, Action::ClusterGet, Target::cluster(&name)).is_ok()
    {
        s.store.get_cluster(&name).await?;
    }
    allow(&p, Action::ClusterDelete, Target::cluster(&name))?;
    let target = target_of("cluster", &name, Some(&name), None);
    audited.apply(Change::DeleteCluster(&name), Action::ClusterDelete, &target, StatusCode::NO_CONTENT).await?;
    Ok((StatusCode::NO_CONTENT, Audited::done(target)))
}

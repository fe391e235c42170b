//! Volume routes: `/volumes`, `/volumes/create`, `/volumes/{name}`, `/volumes/prune`.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::filters::Filters;
use super::{now_rfc3339, ApiError, ApiVersion, AppState, JsonBody};
use crate::service::events::Event;
use crate::service::volumes::{CreateVolume, VolumeFilter, VolumeRecord};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/volumes", get(list))
        .route("/volumes/create", post(create))
        .route("/volumes/prune", post(prune))
        .route("/volumes/{name}", get(inspect).delete(remove))
}

fn to_json(v: &VolumeRecord) -> Value {
    json!({
        "Name": v.name,
        "Driver": v.driver,
        "Mountpoint": v.mountpoint,
        "CreatedAt": v.created_at,
        "Labels": v.labels,
        "Options": v.options,
        "Scope": "local",
    })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateBody {
    name: Option<String>,
    driver: Option<String>,
    driver_opts: Option<BTreeMap<String, String>>,
    labels: Option<BTreeMap<String, String>>,
}

async fn create(
    State(st): State<AppState>,
    JsonBody(body): JsonBody<CreateBody>,
) -> Result<impl IntoResponse, ApiError> {
    let v = st.volumes.create(
        CreateVolume {
            name: body.name,
            driver: body.driver,
            driver_opts: body.driver_opts.unwrap_or_default(),
            labels: body.labels.unwrap_or_default(),
        },
        &now_rfc3339(),
    )?;
    st.events
        .publish(Event::now("volume", "create", &v.name, BTreeMap::new()));
    Ok((StatusCode::CREATED, Json(to_json(&v))))
}

#[derive(Debug, Deserialize)]
struct FilterQuery {
    filters: Option<String>,
}

/// The list or prune filters; `version` is the request's API version (prune of an API
/// older than 1.42 removes named volumes too, as dockerd does).
fn volume_filter(
    raw: Option<&str>,
    prune: bool,
    version: Option<ApiVersion>,
) -> Result<VolumeFilter, ApiError> {
    let f = Filters::parse(raw)?;
    if prune {
        f.only(&["label", "label!", "all"])?;
    } else {
        f.only(&["name", "label", "dangling", "driver"])?;
    }
    let old_api = version.is_some_and(|v| v < ApiVersion(1, 42));
    Ok(VolumeFilter {
        names: f.get("name"),
        labels: f.get("label"),
        not_labels: f.get("label!"),
        dangling: f.bool("dangling")?,
        drivers: f.get("driver"),
        all: f.bool("all")?.unwrap_or(old_api),
    })
}

async fn list(
    State(st): State<AppState>,
    Query(q): Query<FilterQuery>,
) -> Result<Json<Value>, ApiError> {
    let f = volume_filter(q.filters.as_deref(), false, None)?;
    let vols: Vec<Value> = st.volumes.list(&f).iter().map(to_json).collect();
    Ok(Json(json!({ "Volumes": vols, "Warnings": [] })))
}

async fn inspect(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(to_json(&st.volumes.inspect(&name)?)))
}

#[derive(Debug, Deserialize)]
struct RemoveQuery {
    force: Option<String>,
}

async fn remove(
    State(st): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<RemoveQuery>,
) -> Result<StatusCode, ApiError> {
    let force = super::query_bool(q.force.as_deref())?;
    st.volumes.remove(&name, force)?;
    st.events
        .publish(Event::now("volume", "destroy", &name, BTreeMap::new()));
    Ok(StatusCode::NO_CONTENT)
}

async fn prune(
    State(st): State<AppState>,
    version: Option<axum::Extension<ApiVersion>>,
    Query(q): Query<FilterQuery>,
) -> Result<Json<Value>, ApiError> {
    let f = volume_filter(q.filters.as_deref(), true, version.map(|v| v.0))?;
    let (removed, bytes) = st.volumes.prune(&f)?;
    for name in &removed {
        st.events
            .publish(Event::now("volume", "destroy", name, BTreeMap::new()));
    }
    Ok(Json(
        json!({ "VolumesDeleted": removed, "SpaceReclaimed": bytes }),
    ))
}

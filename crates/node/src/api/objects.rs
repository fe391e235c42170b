//! Secret and config routes: `/secrets`, `/secrets/create`, `/secrets/{id}`,
//! `/secrets/{id}/update` and the same under `/configs`. Translates Docker's query
//! parameters and JSON shapes to [`ObjectsService`] calls and back; decides nothing.
//!
//! Also Swarm's autolock endpoints, `GET /swarm/unlockkey` and `POST /swarm/unlock`,
//! answered as dockerd answers them on a swarm without autolock (berth refuses autolock,
//! see `api::swarm`'s init): no key, and "swarm is not locked!".
//!
//! Shapes (Swarm's): `{"ID", "Version": {"Index"}, "CreatedAt", "UpdatedAt", "Spec":
//! {"Name", "Labels"}}`; a config's `Spec` also has `Data` (base64) in inspect and list;
//! a secret's never does.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use berth_consensus::{ObjectKind, SealedObject};
use serde::Deserialize;
use serde_json::{json, Value};

use super::filters::Filters;
use super::{ApiError, AppState, JsonBody};
use crate::service::containers::health::go_time;
use crate::service::objects::{ObjectFilters, ObjectsService};

/// The secret and config routes (unversioned; `/v1.NN` is stripped first).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/secrets", get(list_secrets))
        .route("/secrets/create", post(create_secret))
        .route("/secrets/{id}", get(inspect_secret).delete(remove_secret))
        .route("/secrets/{id}/update", post(update_secret))
        .route("/configs", get(list_configs))
        .route("/configs/create", post(create_config))
        .route("/configs/{id}", get(inspect_config).delete(remove_config))
        .route("/configs/{id}/update", post(update_config))
        .route("/swarm/unlockkey", get(unlock_key))
        .route("/swarm/unlock", post(unlock))
}

/// `docker swarm unlock-key`: no key is set (the CLI then says "no unlock key is set").
async fn unlock_key(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    st.cluster.member()?;
    Ok(Json(json!({"UnlockKey": ""})))
}

/// `docker swarm unlock`: nothing is locked.
async fn unlock(State(st): State<AppState>) -> Result<StatusCode, ApiError> {
    st.cluster.member()?;
    Err(ApiError::BadRequest("swarm is not locked!".into()))
}

fn objects(st: &AppState) -> ObjectsService {
    ObjectsService::new(st.cluster.clone())
}

fn time(ns: u64) -> String {
    go_time(chrono::DateTime::from_timestamp_nanos(ns as i64))
}

/// Swarm's JSON of an object; `data` only for configs.
fn object_json(o: &SealedObject, data: Option<&[u8]>) -> Value {
    let mut spec = json!({"Name": o.name, "Labels": o.labels});
    if let Some(d) = data {
        use base64::Engine as _;
        spec["Data"] = json!(base64::engine::general_purpose::STANDARD.encode(d));
    }
    json!({
        "ID": o.id,
        "Version": {"Index": o.version},
        "CreatedAt": time(o.created_at),
        "UpdatedAt": time(o.updated_at),
        "Spec": spec,
    })
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    filters: Option<String>,
}

fn parse_filters(raw: Option<&str>) -> Result<ObjectFilters, ApiError> {
    let f = Filters::parse(raw)?;
    f.only(&["name", "names", "id", "label"])?;
    Ok(ObjectFilters {
        name_prefixes: f.get("name"),
        names: f.get("names"),
        id_prefixes: f.get("id"),
        labels: f.get("label"),
    })
}

async fn list(st: AppState, kind: ObjectKind, q: ListQuery) -> Result<Json<Value>, ApiError> {
    let filters = parse_filters(q.filters.as_deref())?;
    let svc = objects(&st);
    let found = svc.list(kind, &filters)?;
    let mut out = Vec::with_capacity(found.len());
    for o in &found {
        match kind {
            ObjectKind::Secret => out.push(object_json(o, None)),
            // dockerd lists configs with their data.
            ObjectKind::Config => {
                let (o, data) = svc.inspect(kind, &o.id).await?;
                out.push(object_json(&o, data.as_deref()));
            }
        }
    }
    Ok(Json(Value::Array(out)))
}

async fn create(
    st: AppState,
    kind: ObjectKind,
    body: Value,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = objects(&st).create(kind, &body).await?;
    Ok((StatusCode::CREATED, Json(json!({ "ID": id }))))
}

async fn inspect(st: AppState, kind: ObjectKind, id: String) -> Result<Json<Value>, ApiError> {
    let (o, data) = objects(&st).inspect(kind, &id).await?;
    Ok(Json(object_json(&o, data.as_deref())))
}

#[derive(Debug, Deserialize)]
struct UpdateQuery {
    version: Option<String>,
}

async fn update(
    st: AppState,
    kind: ObjectKind,
    id: String,
    q: UpdateQuery,
    body: Value,
) -> Result<StatusCode, ApiError> {
    let raw = q.version.unwrap_or_default();
    let version = raw.parse::<u64>().map_err(|_| {
        ApiError::BadRequest(format!(
            "invalid {kind} version '{raw}': strconv.ParseUint: parsing \"{raw}\": invalid syntax"
        ))
    })?;
    objects(&st).update(kind, &id, version, &body).await?;
    Ok(StatusCode::OK)
}

async fn remove(st: AppState, kind: ObjectKind, id: String) -> Result<StatusCode, ApiError> {
    objects(&st).remove(kind, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_secrets(
    State(st): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    list(st, ObjectKind::Secret, q).await
}

async fn list_configs(
    State(st): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    list(st, ObjectKind::Config, q).await
}

async fn create_secret(
    State(st): State<AppState>,
    JsonBody(body): JsonBody<Value>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    create(st, ObjectKind::Secret, body).await
}

async fn create_config(
    State(st): State<AppState>,
    JsonBody(body): JsonBody<Value>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    create(st, ObjectKind::Config, body).await
}

async fn inspect_secret(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    inspect(st, ObjectKind::Secret, id).await
}

async fn inspect_config(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    inspect(st, ObjectKind::Config, id).await
}

async fn update_secret(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<UpdateQuery>,
    JsonBody(body): JsonBody<Value>,
) -> Result<StatusCode, ApiError> {
    update(st, ObjectKind::Secret, id, q, body).await
}

async fn update_config(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<UpdateQuery>,
    JsonBody(body): JsonBody<Value>,
) -> Result<StatusCode, ApiError> {
    update(st, ObjectKind::Config, id, q, body).await
}

async fn remove_secret(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    remove(st, ObjectKind::Secret, id).await
}

async fn remove_config(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    remove(st, ObjectKind::Config, id).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show_data_configs_do() {
        let o = SealedObject {
            id: "abc".into(),
            name: "pw".into(),
            labels: [("a".to_string(), "b".to_string())].into(),
            data: berth_consensus::pki::seal::Sealed {
                nonce: "AAAAAAAAAAAAAAAA".into(),
                ciphertext: "xx".into(),
            },
            version: 7,
            created_at: 1,
            updated_at: 2,
        };
        let s = object_json(&o, None);
        assert_eq!(s["Version"]["Index"], 7);
        assert_eq!(s["Spec"]["Labels"]["a"], "b");
        assert!(s["Spec"].get("Data").is_none());
        assert!(!s.to_string().contains("xx"));
        let c = object_json(&o, Some(b"hello"));
        assert_eq!(c["Spec"]["Data"], "aGVsbG8=");
        assert!(parse_filters(Some(r#"{"bogus":["x"]}"#)).is_err());
        let f = parse_filters(Some(r#"{"name":["p"],"label":["a=b"]}"#)).unwrap();
        assert_eq!((f.name_prefixes.len(), f.labels.len()), (1, 1));
    }
}

//! Registry account routes: `POST /auth` (`docker login`) and `GET /images/search`
//! (`docker search`). Both ask the registry through the image service; nothing is stored
//! here: the client keeps the credentials and sends them again as `X-Registry-Auth`.

use axum::extract::{Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::filters::Filters;
use super::images::auth_config;
use super::{ApiError, AppState, JsonBody};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/auth", post(login))
        .route("/images/search", get(search))
}

/// `POST /auth`: checks the body's credentials (Docker's `AuthConfig`) against the
/// registry of `serveraddress` (Docker Hub when empty) as dockerd does, and answers
/// dockerd's `{"Status":"Login Succeeded","IdentityToken":""}`. Failures carry dockerd
/// 20.10's messages and status (see `RegistryClient::login`).
async fn login(
    State(st): State<AppState>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<Value>, ApiError> {
    let credentials = auth_config(&body)?;
    let server = body
        .get("serveraddress")
        .and_then(Value::as_str)
        .unwrap_or("");
    st.images.login(server, &credentials).await?;
    Ok(Json(
        json!({"Status": "Login Succeeded", "IdentityToken": ""}),
    ))
}

#[derive(Debug, Deserialize)]
struct SearchQuery {
    term: Option<String>,
    limit: Option<String>,
    filters: Option<String>,
}

/// `GET /images/search`: the registry's V1 search results, filtered by `stars`,
/// `is-official` and `is-automated` as dockerd filters them. A registry without the V1
/// search API (the Distribution registry) gives dockerd's "Unexpected status code 404".
async fn search(
    State(st): State<AppState>,
    Query(q): Query<SearchQuery>,
) -> Result<Json<Value>, ApiError> {
    let term = q.term.unwrap_or_default();
    let limit = match q.limit.as_deref().filter(|l| !l.is_empty()) {
        None => 25,
        Some(l) => l
            .parse::<i64>()
            .map_err(|_| ApiError::BadRequest(format!("invalid limit {l:?}")))?,
    };
    let limit = if limit == 0 { 25 } else { limit };
    if !(1..=100).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "Limit {limit} is outside the range of [1, 100]"
        )));
    }
    let filters = Filters::parse(q.filters.as_deref())?;
    filters.only(&["stars", "is-official", "is-automated"])?;
    let min_stars = filters
        .get("stars")
        .iter()
        .map(|s| {
            s.parse::<i64>()
                .map_err(|_| ApiError::BadRequest(format!("invalid filter 'stars={s}'")))
        })
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .max();
    let official = filters.bool("is-official")?;
    let automated = filters.bool("is-automated")?;
    let results = st.images.search(&term, limit as u32).await?;
    let kept: Vec<Value> = results
        .into_iter()
        .filter(|r| {
            let stars = r.get("star_count").and_then(Value::as_i64).unwrap_or(0);
            let flag = |k: &str| r.get(k).and_then(Value::as_bool).unwrap_or(false);
            min_stars.is_none_or(|m| stars >= m)
                && official.is_none_or(|o| flag("is_official") == o)
                && automated.is_none_or(|a| flag("is_automated") == a)
        })
        .collect();
    Ok(Json(Value::Array(kept)))
}

//! `POST /build` (the classic builder, Engine API "Build an image") and `POST
//! /build/prune`. The progress goes out as dockerd's JSON messages: `{"stream": "Step 1/3 :
//! FROM alpine\n"}`, pull progress (`{"status": ...}`), `{"aux": {"ID": "sha256:..."}}`,
//! and a failure as `{"errorDetail": {"code": 3, "message": M}, "error": M}`.
//!
//! Every query parameter of the API is either honoured or, when set to anything but its
//! default, refused by name (400): berth never builds something other than what was asked.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;

use axum::body::Body;
use axum::extract::{Query, RawQuery, Request, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use axum::{Json, Router};
use berth_registry_mirror::Credentials;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};

use super::images::{body_reader, json_body, progress_line, pull_event_json};
use super::{query_bool, ApiError, AppState};
use crate::service::build::{short_id, BuildEvent, BuildRequest};
use crate::service::containers::blocking;
use crate::service::images::ImageService;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/build", post(build))
        .route("/build/prune", post(prune))
}

/// Parameters that have no effect on the image built (cancellation IDs, session IDs of
/// clients that also speak BuildKit) and are accepted as they are.
const NO_EFFECT: [&str; 3] = ["buildid", "session", "outputs"];

/// Parameters berth's builder does not implement: fine at their default, refused
/// otherwise.
const UNSUPPORTED: [&str; 12] = [
    "memory",
    "memswap",
    "cpushares",
    "cpusetcpus",
    "cpusetmems",
    "cpuperiod",
    "cpuquota",
    "cgroupparent",
    "ulimits",
    "isolation",
    "squash",
    "securityopt",
];

fn is_default(v: &str) -> bool {
    matches!(
        v,
        "" | "0" | "null" | "[]" | "{}" | "false" | "False" | "default"
    )
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::BadRequest(msg.into())
}

/// Parses the query of `POST /build` into a request.
pub fn parse_query(pairs: &[(String, String)]) -> Result<(BuildRequest, bool), ApiError> {
    let mut req = BuildRequest {
        dockerfile: "Dockerfile".into(),
        rm: true,
        ..Default::default()
    };
    let mut quiet = false;
    let mut rm: Option<bool> = None;
    for (k, v) in pairs {
        match k.as_str() {
            "t" => {
                if v.is_empty() {
                    continue;
                }
                let mut r = ImageService::parse_reference(v)
                    .map_err(|_| bad(format!("invalid reference format: {v}")))?;
                if r.tag().is_none() && r.digest().is_none() {
                    r = r
                        .with_tag("latest")
                        .map_err(|_| bad(format!("invalid reference format: {v}")))?;
                }
                if r.digest().is_some() {
                    return Err(bad(format!(
                        "invalid reference format: {v}: a build cannot be tagged with a digest"
                    )));
                }
                req.tags.push(r);
            }
            "dockerfile" => {
                if !v.is_empty() {
                    req.dockerfile = v.clone();
                }
            }
            "buildargs" => {
                if !v.is_empty() {
                    req.build_args = serde_json::from_str(v)
                        .map_err(|e| bad(format!("invalid buildargs: {e}")))?;
                }
            }
            "labels" => {
                if !v.is_empty() {
                    req.labels =
                        serde_json::from_str(v).map_err(|e| bad(format!("invalid labels: {e}")))?;
                }
            }
            "target" => req.target = Some(v.clone()).filter(|t| !t.is_empty()),
            "nocache" => req.nocache = query_bool(Some(v))?,
            "pull" => req.pull = query_bool(Some(v))?,
            "rm" => rm = Some(query_bool(Some(v))?),
            "forcerm" => req.forcerm = query_bool(Some(v))?,
            "q" => quiet = query_bool(Some(v))?,
            "networkmode" => req.network_mode = Some(v.clone()).filter(|n| !n.is_empty()),
            "extrahosts" => {
                // A comma-separated list (docker CLI) or the parameter repeated (docker-py).
                for h in v.split(',').filter(|h| !h.is_empty()) {
                    if !h.contains(':') {
                        return Err(bad(format!("invalid extra host {h:?}: want host:ip")));
                    }
                    req.extra_hosts.push(h.to_string());
                }
            }
            "shmsize" => {
                if !v.is_empty() {
                    req.shm_size = v
                        .parse::<i64>()
                        .ok()
                        .filter(|n| *n >= 0)
                        .ok_or_else(|| bad(format!("invalid shmsize {v:?}")))?;
                }
            }
            "platform" => {
                if !v.is_empty() {
                    let p = berth_registry_mirror::Platform::parse(v)
                        .map_err(|e| bad(e.to_string()))?;
                    let host = berth_registry_mirror::Platform::default();
                    if p.os != host.os || p.architecture != host.architecture {
                        return Err(bad(format!(
                            "platform {v} is not supported by berth's builder: RUN steps run on this node ({}/{}), which does not emulate other platforms",
                            host.os, host.architecture
                        )));
                    }
                    req.platform = Some(v.clone());
                }
            }
            "cachefrom" => {
                if !v.is_empty() {
                    let list: Option<Vec<String>> = serde_json::from_str(v)
                        .map_err(|e| bad(format!("invalid cachefrom: {e}")))?;
                    req.cache_from = list.unwrap_or_default();
                }
            }
            "remote" => {
                if !v.is_empty() {
                    return Err(bad(format!(
                        "remote build contexts are not supported by berth (remote={v}): send the context in the request body"
                    )));
                }
            }
            "version" => {
                if !v.is_empty() && v != "1" {
                    return Err(bad(format!(
                        "builder version {v} (BuildKit) is not supported by berth: use the classic builder (version=1, DOCKER_BUILDKIT=0)"
                    )));
                }
            }
            k if NO_EFFECT.contains(&k) => {}
            k if UNSUPPORTED.contains(&k) => {
                if !is_default(v) {
                    return Err(bad(format!(
                        "the build parameter {k} is not supported by berth's builder (got {v:?})"
                    )));
                }
            }
            k => {
                if !is_default(v) {
                    return Err(bad(format!(
                        "unknown build parameter {k} is not supported by berth's builder (got {v:?})"
                    )));
                }
            }
        }
    }
    req.rm = req.forcerm || rm.unwrap_or(true);
    Ok((req, quiet))
}

/// `X-Registry-Config`: base64url JSON, registry address -> auth config.
fn registry_config(headers: &HeaderMap) -> Result<HashMap<String, Credentials>, ApiError> {
    use base64::Engine as _;
    let mut out = HashMap::new();
    let Some(raw) = headers
        .get("X-Registry-Config")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|r| !r.is_empty())
    else {
        return Ok(out);
    };
    let bytes = base64::engine::general_purpose::URL_SAFE
        .decode(raw)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(raw))
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(raw))
        .map_err(|_| bad("invalid X-Registry-Config header"))?;
    let map: BTreeMap<String, Value> =
        serde_json::from_slice(&bytes).map_err(|_| bad("invalid X-Registry-Config header"))?;
    for (addr, cfg) in map {
        let host = addr
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or("")
            .to_string();
        let user = cfg["username"].as_str().unwrap_or("");
        let pass = cfg["password"].as_str().unwrap_or("");
        let creds = if !user.is_empty() {
            Credentials::Basic {
                username: user.into(),
                password: pass.into(),
            }
        } else if let Some(auth) = cfg["auth"].as_str().filter(|a| !a.is_empty()) {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth)
                .ok()
                .and_then(|d| String::from_utf8(d).ok())
                .unwrap_or_default();
            match decoded.split_once(':') {
                Some((u, p)) => Credentials::Basic {
                    username: u.into(),
                    password: p.into(),
                },
                None => continue,
            }
        } else if let Some(t) = cfg["registrytoken"].as_str().filter(|t| !t.is_empty()) {
            Credentials::BearerToken(t.into())
        } else {
            continue;
        };
        let host = if host == "index.docker.io" {
            "docker.io".to_string()
        } else {
            host
        };
        out.insert(host, creds);
    }
    Ok(out)
}

fn event_json(e: BuildEvent) -> Value {
    match e {
        BuildEvent::Stream(s) => json!({ "stream": s }),
        BuildEvent::Pull { event, tag, path } => pull_event_json(&event, &tag, &path),
        BuildEvent::Built(id) => json!({"aux": {"ID": id}}),
    }
}

fn line(v: Value) -> Vec<u8> {
    progress_line(v).unwrap_or_else(|never| match never {})
}

async fn build(
    State(st): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    req: Request,
) -> Result<Response, ApiError> {
    let pairs: Vec<(String, String)> =
        url::form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let (mut breq, quiet) = parse_query(&pairs)?;
    breq.registry_auth = registry_config(&headers)?;
    let builds = st.builds.clone();
    let scratch = builds.scratch()?;
    let context_dir = scratch.path().join("context");
    let work = scratch.path().join("work");
    for d in [&context_dir, &work] {
        std::fs::create_dir_all(d)
            .map_err(crate::service::build::io_at("create", d))
            .map_err(ApiError::from)?;
    }
    let body = body_reader(req);
    {
        let dir = context_dir.clone();
        blocking(move || crate::service::build::context::unpack_context(body, &dir)).await?;
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let events = st.events.clone();
    tokio::spawn(async move {
        let _scratch = scratch;
        let tx2 = tx.clone();
        let emit = move |e: BuildEvent| {
            // `q`: nothing but the image ID at the end, as dockerd (no aux either).
            if quiet {
                return;
            }
            let _ = tx2.send(line(event_json(e)));
        };
        match builds.build(&breq, &context_dir, &work, &emit).await {
            Ok(id) => {
                emit(BuildEvent::Built(id.clone()));
                if quiet {
                    let _ = tx.send(line(json!({"stream": format!("{id}\n")})));
                } else {
                    let _ = tx.send(line(json!({
                        "stream": format!("Successfully built {}\n", short_id(&id))
                    })));
                    for t in &breq.tags {
                        let name = t.familiar_tagged().unwrap_or_else(|| t.to_string());
                        let _ = tx.send(line(json!({
                            "stream": format!("Successfully tagged {name}\n")
                        })));
                    }
                }
                for t in &breq.tags {
                    events.publish(crate::service::events::Event::now(
                        "image",
                        "tag",
                        &id,
                        [("name".to_string(), t.to_string())].into(),
                    ));
                }
            }
            Err(f) => {
                let detail = match f.code {
                    Some(c) => json!({"code": c, "message": f.message}),
                    None => json!({"message": f.message}),
                };
                let _ = tx.send(line(json!({"errorDetail": detail, "error": f.message})));
            }
        }
    });
    let lines = futures::stream::poll_fn({
        let mut rx = rx;
        move |cx| rx.poll_recv(cx)
    })
    .map(Ok::<_, Infallible>);
    Ok(json_body(Body::from_stream(lines)))
}

#[derive(Debug, Deserialize)]
struct PruneQuery {
    filters: Option<String>,
    all: Option<String>,
    #[serde(rename = "keep-storage")]
    keep_storage: Option<String>,
    #[serde(rename = "reserved-space")]
    reserved_space: Option<String>,
    #[serde(rename = "max-used-space")]
    max_used_space: Option<String>,
    #[serde(rename = "min-free-space")]
    min_free_space: Option<String>,
}

/// `POST /build/prune` (`docker builder prune`): empties the build cache; answers
/// `{"CachesDeleted": [ids] | null, "SpaceReclaimed": bytes}` as dockerd.
async fn prune(
    State(st): State<AppState>,
    Query(q): Query<PruneQuery>,
) -> Result<Json<Value>, ApiError> {
    let f = super::filters::Filters::parse(q.filters.as_deref())?;
    f.only(&[])?;
    // `all`: berth's cache holds only step results, which `all` and the default both prune.
    query_bool(q.all.as_deref())?;
    for (name, v) in [
        ("keep-storage", &q.keep_storage),
        ("reserved-space", &q.reserved_space),
        ("max-used-space", &q.max_used_space),
        ("min-free-space", &q.min_free_space),
    ] {
        if v.as_deref().is_some_and(|v| !is_default(v)) {
            return Err(bad(format!(
                "{name} is not supported by berth's builder prune: it always empties the whole cache"
            )));
        }
    }
    let builds = st.builds.clone();
    let (records, reclaimed) = blocking(move || builds.prune()).await?;
    let ids: Vec<String> = records.into_iter().map(|r| r.id).collect();
    Ok(Json(json!({
        "CachesDeleted": if ids.is_empty() { Value::Null } else { json!(ids) },
        "SpaceReclaimed": reclaimed,
    })))
}

/// `system df`'s `BuildCache` records.
pub fn df_records(st: &AppState) -> Vec<Value> {
    st.builds
        .records()
        .into_iter()
        .map(|r| {
            json!({
                "ID": r.id.trim_start_matches("sha256:"),
                "Parents": if r.entry.parent.is_empty() { Value::Null } else { json!([r.entry.parent]) },
                "Type": "regular",
                "Description": r.entry.description,
                "InUse": false,
                "Shared": false,
                "Size": r.entry.size,
                "CreatedAt": r.entry.created,
                "LastUsedAt": r.entry.last_used,
                "UsageCount": r.entry.usage_count,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Result<(BuildRequest, bool), ApiError> {
        let v: Vec<(String, String)> = pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        parse_query(&v)
    }

    #[test]
    fn docker_cli_defaults_are_accepted() {
        let (r, quiet) = q(&[
            ("t", "app"),
            ("t", "reg:5000/app:v2"),
            ("rm", "1"),
            ("memory", "0"),
            ("cpusetcpus", ""),
            ("ulimits", "null"),
            ("buildargs", r#"{"A":"1","B":null}"#),
            ("labels", "{}"),
            ("cachefrom", "null"),
            ("networkmode", "default"),
            ("extrahosts", "a:1.2.3.4,b:5.6.7.8"),
            ("version", "1"),
        ])
        .unwrap();
        assert!(!quiet && r.rm);
        assert_eq!(r.tags[0].to_string(), "app:latest");
        assert_eq!(r.build_args.get("B"), Some(&None));
        assert_eq!(r.extra_hosts.len(), 2);
    }

    #[test]
    fn unhonoured_parameters_are_refused_by_name() {
        for (k, v) in [
            ("memory", "1000000"),
            ("squash", "1"),
            ("remote", "https://x/y.git"),
            ("version", "2"),
            ("frobnicate", "yes"),
        ] {
            let e = q(&[(k, v)]).unwrap_err().to_string();
            assert!(e.contains(k) || e.contains("BuildKit"), "{k}: {e}");
        }
        let (r, _) = q(&[("rm", "0"), ("forcerm", "1")]).unwrap();
        assert!(r.rm && r.forcerm);
        let (r, _) = q(&[("rm", "0")]).unwrap();
        assert!(!r.rm);
    }
}

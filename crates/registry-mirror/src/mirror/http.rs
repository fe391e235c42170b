//! The HTTP layer: translates requests into [`MirrorRequest`]s, calls the [`Mirror`], and
//! turns typed results into responses. Errors become Distribution-shaped JSON
//! (`{"errors":[{"code":...,"message":...}]}`) in one place, [`error_response`].

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use axum::Router;

use super::route::{parse_range, parse_request, ByteRange, MirrorRequest, RouteError};
use super::{BlobReply, ManifestReply, Mirror};
use crate::digest::Digest;
use crate::error::Error;

const API_VERSION: &str = "registry/2.0";

/// Every path goes through one handler: the distribution API's names contain slashes.
pub fn router(mirror: Mirror) -> Router {
    Router::new().fallback(handle).with_state(mirror)
}

async fn handle(
    State(mirror): State<Mirror>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let default = mirror.config().default_upstream.clone();
    let req = match parse_request(method.as_str(), uri.path(), uri.query(), default.as_deref()) {
        Ok(r) => r,
        Err(e) => return route_error_response(&e),
    };
    match req {
        MirrorRequest::ApiBase => json(StatusCode::OK, "{}".into()),
        MirrorRequest::Metrics => Response::builder()
            .header(header::CONTENT_TYPE, "text/plain; version=0.0.4")
            .body(Body::from(mirror.render_metrics()))
            .expect("valid response"),
        MirrorRequest::Catalog => json(
            StatusCode::OK,
            serde_json::json!({ "repositories": mirror.catalog() }).to_string(),
        ),
        MirrorRequest::Tags { target } => match mirror.tags(&target).await {
            Ok(body) => json(StatusCode::OK, String::from_utf8_lossy(&body).into_owned()),
            Err(e) => error_response(&e),
        },
        MirrorRequest::Manifest {
            target,
            reference,
            head,
        } => match mirror.manifest(&target, &reference).await {
            Ok(reply) => manifest_response(&mirror, reply, head),
            Err(e) => error_response(&e),
        },
        MirrorRequest::Blob {
            target,
            digest,
            head,
        } => match mirror.blob(&target, &digest, head).await {
            Ok(reply) => blob_response(
                &mirror,
                &digest,
                reply,
                head,
                headers.get(header::RANGE).and_then(|v| v.to_str().ok()),
            )
            .await
            .unwrap_or_else(|e| error_response(&e)),
            Err(e) => error_response(&e),
        },
    }
}

fn json(status: StatusCode, body: String) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header("Docker-Distribution-API-Version", API_VERSION)
        .body(Body::from(body))
        .expect("valid response")
}

fn manifest_response(mirror: &Mirror, reply: ManifestReply, head: bool) -> Response {
    let len = reply.body.len();
    let mut b = Response::builder()
        .header(header::CONTENT_TYPE, reply.media_type)
        .header(header::CONTENT_LENGTH, len)
        .header("Docker-Content-Digest", reply.digest.to_string())
        .header(header::ETAG, format!("\"{}\"", reply.digest))
        .header("Docker-Distribution-API-Version", API_VERSION);
    if reply.stale {
        b = b.header(header::WARNING, "110 - \"Response is Stale\"");
    }
    let body = if head {
        Body::empty()
    } else {
        mirror.count_served(len as u64);
        Body::from(reply.body)
    };
    b.body(body).expect("valid response")
}

fn blob_headers(digest: &Digest) -> axum::http::response::Builder {
    Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header("Docker-Content-Digest", digest.to_string())
        .header(header::ETAG, format!("\"{digest}\""))
        .header(header::ACCEPT_RANGES, "bytes")
        .header("Docker-Distribution-API-Version", API_VERSION)
}

async fn blob_response(
    mirror: &Mirror,
    digest: &Digest,
    reply: BlobReply,
    head: bool,
    range: Option<&str>,
) -> Result<Response, Error> {
    match reply {
        BlobReply::Head { size } => Ok(blob_headers(digest)
            .header(header::CONTENT_LENGTH, size)
            .body(Body::empty())
            .expect("valid response")),
        BlobReply::Stored { file, size, pin } => {
            let (status, start, end) = match parse_range(range, size) {
                ByteRange::Whole => (StatusCode::OK, 0, size.saturating_sub(1)),
                ByteRange::Part { start, end } => (StatusCode::PARTIAL_CONTENT, start, end),
                ByteRange::Unsatisfiable => {
                    return Ok(blob_headers(digest)
                        .status(StatusCode::RANGE_NOT_SATISFIABLE)
                        .header(header::CONTENT_RANGE, format!("bytes */{size}"))
                        .body(Body::empty())
                        .expect("valid response"))
                }
            };
            let len = if size == 0 { 0 } else { end - start + 1 };
            let mut b = blob_headers(digest)
                .status(status)
                .header(header::CONTENT_LENGTH, len);
            if status == StatusCode::PARTIAL_CONTENT {
                b = b.header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{size}"));
            }
            if head {
                return Ok(b.body(Body::empty()).expect("valid response"));
            }
            let stream = mirror.stored_body(file, digest.clone(), start, len, size, pin);
            Ok(b.body(Body::from_stream(stream)).expect("valid response"))
        }
        BlobReply::Streaming { flight, total, pin } => {
            let mut b = blob_headers(digest);
            if let Some(t) = total {
                b = b.header(header::CONTENT_LENGTH, t);
            }
            if head {
                return Ok(b.body(Body::empty()).expect("valid response"));
            }
            let m = mirror.clone();
            let body = flight.body(pin, move |n| m.count_served(n));
            Ok(b.body(Body::from_stream(body)).expect("valid response"))
        }
    }
}

/// Status and distribution error code for a service error.
pub fn error_status(e: &Error) -> (StatusCode, &'static str) {
    match e {
        Error::ManifestNotFound { .. } | Error::TagNotCached { .. } => {
            (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN")
        }
        Error::BlobNotFound { .. } => (StatusCode::NOT_FOUND, "BLOB_UNKNOWN"),
        Error::Unauthorized { .. } | Error::TokenMissing { .. } => {
            (StatusCode::FORBIDDEN, "DENIED")
        }
        Error::DigestMismatch { .. } | Error::SizeMismatch { .. } => {
            (StatusCode::BAD_GATEWAY, "DIGEST_INVALID")
        }
        e if e.is_retryable() => (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE"),
        Error::RegistryStatus { .. } | Error::UnsupportedChallenge { .. } => {
            (StatusCode::BAD_GATEWAY, "UNKNOWN")
        }
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN"),
    }
}

/// A Distribution-shaped error response.
pub fn error_response(e: &Error) -> Response {
    let (status, code) = error_status(e);
    distribution_error(status, code, &e.to_string())
}

fn distribution_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "errors": [{ "code": code, "message": message }] });
    let mut r = json(status, body.to_string());
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    r
}

fn route_error_response(e: &RouteError) -> Response {
    let (status, code, msg) = match e {
        RouteError::NotFound => (StatusCode::NOT_FOUND, "UNSUPPORTED", "no such endpoint".into()),
        RouteError::MethodNotAllowed => (
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            "this mirror is read-only".into(),
        ),
        RouteError::NameInvalid(n) => (
            StatusCode::BAD_REQUEST,
            "NAME_INVALID",
            format!("invalid repository name {n:?}"),
        ),
        RouteError::NoUpstream(n) => (
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
            format!("{n:?} names no upstream (use ?ns=<registry> or /v2/<registry>/<repository>) and no default upstream is configured"),
        ),
        RouteError::DigestInvalid(d) => (
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
            format!("invalid digest {d:?}"),
        ),
        RouteError::TagInvalid(t) => (
            StatusCode::BAD_REQUEST,
            "TAG_INVALID",
            format!("invalid tag {t:?}"),
        ),
    };
    distribution_error(status, code, &msg)
}

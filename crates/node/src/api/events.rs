//! `GET /events`: past events since `since`, then live ones until `until` or disconnect, as
//! a stream of JSON objects.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use super::filters::Filters;
use super::{ApiError, AppState};
use crate::service::events::{Event, EventFilter};

pub fn routes() -> Router<AppState> {
    Router::new().route("/events", get(events))
}

#[derive(Debug, Deserialize)]
struct EventsQuery {
    since: Option<String>,
    until: Option<String>,
    filters: Option<String>,
}

/// Docker timestamps: seconds, optionally with a fraction (`1700000000.5`).
pub fn parse_timestamp_nanos(s: &str) -> Result<i64, ApiError> {
    let bad = || ApiError::BadRequest(format!("invalid timestamp {s:?}"));
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().map_err(|_| bad())?;
    let mut nanos = 0i64;
    if !frac.is_empty() {
        if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        nanos = format!("{frac:0<9}").parse().map_err(|_| bad())?;
    }
    // Seconds beyond i64 nanoseconds (past the year 2262) are refused, not wrapped
    // (found by fuzz/api_query).
    secs.checked_mul(1_000_000_000)
        .and_then(|n| n.checked_add(nanos))
        .ok_or_else(bad)
}

fn event_json(e: &Event) -> Vec<u8> {
    let mut line = serde_json::to_vec(&json!({
        "Type": e.kind,
        "Action": e.action,
        "status": e.action,
        "id": e.actor_id,
        "from": e.attributes.get("image"),
        "Actor": {"ID": e.actor_id, "Attributes": e.attributes},
        "scope": "local",
        "time": e.time_nano / 1_000_000_000,
        "timeNano": e.time_nano,
    }))
    .expect("event serialises");
    line.push(b'\n');
    line
}

async fn events(
    State(st): State<AppState>,
    Query(q): Query<EventsQuery>,
) -> Result<Response, ApiError> {
    let since = q.since.as_deref().map(parse_timestamp_nanos).transpose()?;
    let until = q.until.as_deref().map(parse_timestamp_nanos).transpose()?;
    let f = Filters::parse(q.filters.as_deref())?;
    f.only(&[
        "type",
        "event",
        "container",
        "image",
        "label",
        "volume",
        "network",
    ])?;
    let filter = EventFilter {
        kinds: f.get("type"),
        actions: f.get("event"),
        containers: f.get("container"),
        images: f.get("image"),
        volumes: f.get("volume"),
        networks: f.get("network"),
        labels: f.get("label"),
    };
    let (past, mut rx) = st.events.subscribe(since.or(until.map(|_| 0)));
    let (tx, body_rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, Infallible>>(64);
    tokio::spawn(async move {
        for e in past.iter().filter(|e| filter.matches(e)) {
            if until.is_some_and(|u| e.time_nano > u) {
                return;
            }
            if tx.send(Ok(event_json(e))).await.is_err() {
                return;
            }
        }
        let until_wait = until.map(|u| {
            let now = super::now_nanos();
            Duration::from_nanos(u.saturating_sub(now).max(0) as u64)
        });
        let deadline = until_wait.map(|d| tokio::time::Instant::now() + d);
        loop {
            let next = async {
                match deadline {
                    Some(d) => tokio::time::timeout_at(d, rx.recv()).await.ok(),
                    None => Some(rx.recv().await),
                }
            };
            tokio::select! {
                r = next => match r {
                    None => return,
                    Some(Ok(e)) => {
                        if filter.matches(&e) && tx.send(Ok(event_json(&e))).await.is_err() {
                            return;
                        }
                    }
                    Some(Err(RecvError::Lagged(_))) => continue,
                    Some(Err(RecvError::Closed)) => return,
                },
                _ = tx.closed() => return,
            }
        }
    });
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(super::stream::channel_body(body_rx))
        .expect("valid response"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_like_docker() {
        assert_eq!(parse_timestamp_nanos("1").unwrap(), 1_000_000_000);
        assert_eq!(parse_timestamp_nanos("1.5").unwrap(), 1_500_000_000);
        assert_eq!(parse_timestamp_nanos("2.000000001").unwrap(), 2_000_000_001);
        assert!(parse_timestamp_nanos("x").is_err());
        assert!(parse_timestamp_nanos("1.2.3").is_err());
        assert!(parse_timestamp_nanos("1.0000000001").is_err());
    }
}

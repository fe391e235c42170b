//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz, see fuzz/README.md): the pure
//! parsers of the Engine API, reached without a daemon. Each takes untrusted bytes as a
//! client would send them and must return (an `Err` is fine) without panicking, whatever
//! the input. Nothing here touches the filesystem, the network or the clock.

use std::collections::BTreeMap;

use crate::api::filters::{labels_match, parse_until, Filters};
use crate::service::containers::config::{
    create_body_from_json, parse_bind, parse_create, parse_extra_host, validate_name,
};

/// A fixed "now" (2026-01-01T00:00:00Z in Unix nanoseconds) for the relative forms of
/// `until`/`since`, so a run is reproducible.
const NOW_NANOS: i64 = 1_767_225_600_000_000_000;

/// The `filters` query parameter (`GET /containers/json?filters=...`, prune, events): parses
/// `raw` as JSON filters, then reads `until`, the boolean keys and label matches from it
/// as the endpoints do.
pub fn filters(raw: &str) {
    let Ok(f) = Filters::parse(Some(raw)) else {
        return;
    };
    let _ = f.until(NOW_NANOS);
    let _ = f.bool("dangling");
    let _ = f.only(&["label", "until", "dangling"]);
    let labels: BTreeMap<String, String> = [("a".to_string(), "b".to_string())].into();
    let _ = labels_match(&f, &labels);
}

/// One query-parameter value through the parsers the handlers call on them: `until`/`since`
/// (`parse_until`, `parse_timestamp_nanos`), a signal name (`kill`, `stop`), a container
/// name (`create?name=`), a `-v` bind and an `--add-host` entry (create bodies carry both).
pub fn query_value(value: &str) {
    let _ = parse_until(value, NOW_NANOS);
    let _ = crate::api::events::parse_timestamp_nanos(value);
    let _ = crate::service::containers::parse_signal(value);
    let _ = validate_name(value);
    let _ = parse_bind(value);
    let _ = parse_extra_host(value);
}

/// A `POST /containers/create` body (JSON bytes) through the same steps as the handler:
/// `create_body_from_json` then `parse_create`; and as a service's container spec
/// (`task_spec::validate_create_body`).
pub fn container_create(body: &[u8]) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return;
    };
    let _ = crate::service::task_spec::validate_create_body(&v);
    if let Ok(b) = create_body_from_json(v) {
        let _ = parse_create(b);
    }
}

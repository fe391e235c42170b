//! The filters of the prune endpoints as dockerd applies them: `label` (every value must
//! match), `label!` (excluded when every value matches) and `until` (only objects created
//! at or before a time). Pure; `now` is passed in.

use std::collections::BTreeMap;

use crate::error::ServiceError;

/// Which objects a prune may remove.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneFilter {
    /// `key` or `key=value`; all must match.
    pub labels: Vec<String>,
    /// `key` or `key=value`; an object matching all of them is kept.
    pub not_labels: Vec<String>,
    /// Nanoseconds since the epoch: objects created later are kept.
    pub until_nanos: Option<i64>,
}

/// dockerd's `MatchKVList`: true when `wanted` is empty or every entry matches `labels`.
pub fn match_kv_list(wanted: &[String], labels: &BTreeMap<String, String>) -> bool {
    wanted.iter().all(|w| match w.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
        None => labels.contains_key(w.as_str()),
    })
}

impl PruneFilter {
    /// From the raw values of `label`, `label!` and `until` (`until` as dockerd's
    /// `timetypes.GetTimestamp` reads it, relative to `now_nanos`).
    pub fn new(
        labels: Vec<String>,
        not_labels: Vec<String>,
        until: &[String],
        now_nanos: i64,
    ) -> Result<Self, ServiceError> {
        let until_nanos = match until {
            [] => None,
            [u] => Some(parse_timestamp(u, now_nanos).ok_or_else(|| {
                ServiceError::invalid(format!("failed to parse value as time or duration: {u:?}"))
            })?),
            _ => {
                return Err(ServiceError::invalid(
                    "more than one until filter specified",
                ))
            }
        };
        Ok(PruneFilter {
            labels,
            not_labels,
            until_nanos,
        })
    }

    /// Whether an object with `labels`, created at `created_nanos`, may go.
    pub fn allows(&self, labels: &BTreeMap<String, String>, created_nanos: i64) -> bool {
        match_kv_list(&self.labels, labels)
            && (self.not_labels.is_empty() || !match_kv_list(&self.not_labels, labels))
            && self.until_nanos.is_none_or(|u| created_nanos <= u)
    }
}

/// A Go duration (`10m`, `1h30m`, `1.5h`, `300ms`) in nanoseconds.
pub fn parse_go_duration(s: &str) -> Option<i64> {
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        let value: f64 = num.parse().ok()?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += value * scale;
        rest = tail;
    }
    let n = total as i64;
    Some(if neg { -n } else { n })
}

/// dockerd's `timetypes.GetTimestamp`: a Go duration before `now_nanos`, an RFC 3339 time,
/// a date (`2006-01-02`, `2006-01-02T15:04:05`, UTC) or Unix seconds (`1700000000.5`).
pub fn parse_timestamp(s: &str, now_nanos: i64) -> Option<i64> {
    if let Some(d) = parse_go_duration(s) {
        return Some(now_nanos - d);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return t.timestamp_nanos_opt();
    }
    if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f") {
        return t.and_utc().timestamp_nanos_opt();
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_nanos_opt();
    }
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().ok()?;
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let nanos: i64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().ok()?
    };
    Some(secs * 1_000_000_000 + nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000_000_000;

    #[test]
    fn timestamps_as_dockerd_reads_them() {
        assert_eq!(parse_go_duration("10m"), Some(600_000_000_000));
        assert_eq!(parse_go_duration("1h30m"), Some(5_400_000_000_000));
        assert_eq!(parse_go_duration("1.5h"), Some(5_400_000_000_000));
        assert_eq!(parse_go_duration("300ms"), Some(300_000_000));
        assert_eq!(parse_go_duration("10"), None);
        assert_eq!(parse_go_duration("x"), None);
        assert_eq!(parse_timestamp("1h", NOW), Some(NOW - 3_600_000_000_000));
        assert_eq!(
            parse_timestamp("1700000000.5", NOW),
            Some(NOW + 500_000_000)
        );
        assert_eq!(parse_timestamp("2023-11-14T22:13:20Z", NOW), Some(NOW));
        assert_eq!(parse_timestamp("2023-11-14T22:13:20", NOW), Some(NOW));
        assert_eq!(
            parse_timestamp("2023-11-14", NOW),
            Some(NOW - (22 * 3600 + 13 * 60 + 20) * 1_000_000_000)
        );
        assert_eq!(parse_timestamp("yesterday", NOW), None);
    }

    #[test]
    fn labels_not_labels_and_until() {
        let labels: BTreeMap<String, String> = [
            ("a".to_string(), "1".to_string()),
            ("keep".to_string(), "yes".to_string()),
        ]
        .into();
        let f = |l: &[&str], nl: &[&str], u: &[&str]| {
            let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
            PruneFilter::new(s(l), s(nl), &s(u), NOW).unwrap()
        };
        assert!(f(&[], &[], &[]).allows(&labels, 0));
        assert!(f(&["a=1", "keep"], &[], &[]).allows(&labels, 0));
        assert!(!f(&["a=2"], &[], &[]).allows(&labels, 0));
        assert!(!f(&[], &["keep"], &[]).allows(&labels, 0));
        assert!(f(&[], &["keep", "other"], &[]).allows(&labels, 0));
        assert!(f(&[], &[], &["1h"]).allows(&labels, NOW - 7_200_000_000_000));
        assert!(!f(&[], &[], &["1h"]).allows(&labels, NOW - 60_000_000_000));
        assert!(PruneFilter::new(vec![], vec![], &["1h".into(), "2h".into()], NOW).is_err());
        assert!(PruneFilter::new(vec![], vec![], &["soon".into()], NOW).is_err());
    }
}

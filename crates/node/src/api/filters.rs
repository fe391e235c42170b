//! The `filters` query parameter: JSON that maps a key to values, either
//! `{"label":{"a=b":true}}` (current) or `{"label":["a=b"]}` (legacy).

use std::collections::BTreeMap;

use super::ApiError;

/// Parsed filters: key -> values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters(BTreeMap<String, Vec<String>>);

impl Filters {
    /// The prune endpoints' `until` filter as Unix nanoseconds ([`parse_until`] against
    /// `now_nanos`); `None` without one, a 400 with dockerd's message for more than one.
    pub fn until(&self, now_nanos: i64) -> Result<Option<i64>, ApiError> {
        match self.get("until").as_slice() {
            [] => Ok(None),
            [u] => parse_until(u, now_nanos).map(Some),
            _ => Err(ApiError::BadRequest(
                "more than one until filter specified".into(),
            )),
        }
    }

    pub fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        let Some(raw) = raw.filter(|r| !r.trim().is_empty()) else {
            return Ok(Filters::default());
        };
        let v: serde_json::Value = serde_json::from_str(raw)
            .map_err(|e| ApiError::BadRequest(format!("invalid filter: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| ApiError::BadRequest("invalid filter: expected an object".into()))?;
        let mut out = BTreeMap::new();
        for (k, vals) in obj {
            let list: Vec<String> = match vals {
                serde_json::Value::Object(m) => m
                    .iter()
                    .filter(|(_, on)| on.as_bool().unwrap_or(false))
                    .map(|(s, _)| s.clone())
                    .collect(),
                serde_json::Value::Array(a) => a
                    .iter()
                    .map(|s| {
                        s.as_str().map(str::to_owned).ok_or_else(|| {
                            ApiError::BadRequest(format!("invalid filter value for {k}"))
                        })
                    })
                    .collect::<Result<_, _>>()?,
                _ => {
                    return Err(ApiError::BadRequest(format!(
                        "invalid filter value for {k}"
                    )))
                }
            };
            out.insert(k.clone(), list);
        }
        Ok(Filters(out))
    }

    /// Every key with its values.
    pub fn map(&self) -> &BTreeMap<String, Vec<String>> {
        &self.0
    }

    /// Values of `key` (empty if absent).
    pub fn get(&self, key: &str) -> Vec<String> {
        self.0.get(key).cloned().unwrap_or_default()
    }

    /// Rejects keys outside `allowed`, as dockerd does.
    pub fn only(&self, allowed: &[&str]) -> Result<(), ApiError> {
        match self.0.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(k) => Err(ApiError::BadRequest(format!("invalid filter '{k}'"))),
            None => Ok(()),
        }
    }

    /// A boolean filter such as `dangling=true`.
    pub fn bool(&self, key: &str) -> Result<Option<bool>, ApiError> {
        match self.get(key).first().map(String::as_str) {
            None => Ok(None),
            Some("true") | Some("1") => Ok(Some(true)),
            Some("false") | Some("0") => Ok(Some(false)),
            Some(other) => Err(ApiError::BadRequest(format!(
                "invalid filter '{key}={other}'"
            ))),
        }
    }
}

/// Whether `labels` pass every `label` filter (`key` or `key=value`) and no `label!` one,
/// as dockerd's prune and list filters match them.
pub fn labels_match(f: &Filters, labels: &BTreeMap<String, String>) -> bool {
    let has = |want: &str| match want.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
        None => labels.contains_key(want),
    };
    f.get("label").iter().all(|l| has(l)) && !f.get("label!").iter().any(|l| has(l))
}

/// The `until` filter as nanoseconds since the Unix epoch: dockerd's `GetTimestamp`
/// forms, relative to `now_nanos` for a duration. Accepts a Go duration (`24h`, `1h30m`,
/// `90s`, `1.5h`: that long before now), Unix seconds with an optional fraction, RFC 3339
/// with a zone, `YYYY-MM-DDTHH:MM:SS[.frac]` and `YYYY-MM-DD` (both UTC). Anything else is
/// a 400 with dockerd's message.
pub fn parse_until(value: &str, now_nanos: i64) -> Result<i64, ApiError> {
    let bad = || {
        ApiError::BadRequest(format!(
            "failed to parse value as time or duration: {value:?}"
        ))
    };
    if let Some(d) = go_duration_nanos(value) {
        return now_nanos.checked_sub(d).ok_or_else(bad);
    }
    if value.bytes().next().is_some_and(|b| b.is_ascii_digit())
        && value.bytes().all(|b| b.is_ascii_digit() || b == b'.')
    {
        return super::events::parse_timestamp_nanos(value).map_err(|_| bad());
    }
    let nanos = |t: chrono::DateTime<chrono::Utc>| t.timestamp_nanos_opt().ok_or_else(bad);
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(value) {
        return nanos(t.with_timezone(&chrono::Utc));
    }
    if let Ok(t) = chrono::NaiveDateTime::parse_from_str(value, "%Y-%m-%dT%H:%M:%S%.f") {
        return nanos(t.and_utc());
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d") {
        return nanos(d.and_hms_opt(0, 0, 0).ok_or_else(bad)?.and_utc());
    }
    Err(bad())
}

/// A Go duration (`1h30m`, `1.5h`, `500ms`, `-2m`) in nanoseconds; `None` if it is not one.
fn go_duration_nanos(s: &str) -> Option<i64> {
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest.is_empty() {
        return None;
    }
    if rest == "0" {
        return Some(0);
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += num * unit;
    }
    // Go's time.ParseDuration refuses durations beyond ±2^63 ns ("invalid duration");
    // `as` would saturate them instead.
    if !total.is_finite() || total >= i64::MAX as f64 {
        return None;
    }
    let n = total as i64;
    Some(if neg { -n } else { n })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (fuzz/api_query): timestamps and durations whose nanoseconds overflow
    /// i64 are a 400, not an arithmetic overflow panic.
    #[test]
    fn until_out_of_range_is_a_bad_request() {
        let now = 1_700_000_000_000_000_000;
        for v in [
            "17000000092001234.53",
            "9223372036854775807",
            "-9223372036854775807.5",
            "9223372036854775807h",
            "-3000000h",
            "3000000h",
            "1e400h",
        ] {
            assert!(
                matches!(parse_until(v, now), Err(ApiError::BadRequest(_))),
                "{v}: {:?}",
                parse_until(v, now)
            );
        }
        assert!(super::super::events::parse_timestamp_nanos("17000000092001234.53").is_err());
        assert_eq!(parse_until("-1h", now).unwrap(), now + 3_600_000_000_000);
    }

    #[test]
    fn until_takes_dockerds_forms() {
        let now = 1_700_000_000_000_000_000;
        assert_eq!(parse_until("24h", now).unwrap(), now - 86_400_000_000_000);
        assert_eq!(parse_until("1h30m", now).unwrap(), now - 5_400_000_000_000);
        assert_eq!(parse_until("1.5h", now).unwrap(), now - 5_400_000_000_000);
        assert_eq!(parse_until("90s", now).unwrap(), now - 90_000_000_000);
        assert_eq!(
            parse_until("1600000000", now).unwrap(),
            1_600_000_000_000_000_000
        );
        assert_eq!(
            parse_until("1600000000.5", now).unwrap(),
            1_600_000_000_500_000_000
        );
        assert_eq!(
            parse_until("2020-09-13T12:26:40Z", now).unwrap(),
            1_600_000_000_000_000_000
        );
        assert_eq!(
            parse_until("2020-09-13T14:26:40+02:00", now).unwrap(),
            1_600_000_000_000_000_000
        );
        assert_eq!(
            parse_until("2020-09-13T12:26:40", now).unwrap(),
            1_600_000_000_000_000_000
        );
        assert_eq!(
            parse_until("2020-09-13", now).unwrap(),
            1_599_955_200_000_000_000
        );
        for bad in ["", "soon", "24x", "h", "2020-13-45", "1.2.3"] {
            assert!(parse_until(bad, now).is_err(), "{bad}");
        }
    }

    #[test]
    fn label_and_not_label() {
        let f = Filters::parse(Some(r#"{"label":{"a":true},"label!":{"b=2":true}}"#)).unwrap();
        let l = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(labels_match(&f, &l(&[("a", "1")])));
        assert!(labels_match(&f, &l(&[("a", "1"), ("b", "3")])));
        assert!(!labels_match(&f, &l(&[("a", "1"), ("b", "2")])));
        assert!(!labels_match(&f, &l(&[("b", "1")])));
    }

    #[test]
    fn both_encodings_parse() {
        let a = Filters::parse(Some(r#"{"label":{"a=b":true,"c":false}}"#)).unwrap();
        assert_eq!(a.get("label"), vec!["a=b"]);
        let b = Filters::parse(Some(r#"{"label":["a=b"]}"#)).unwrap();
        assert_eq!(a, b);
        assert_eq!(Filters::parse(None).unwrap(), Filters::default());
    }

    #[test]
    fn garbage_is_a_bad_request() {
        assert!(Filters::parse(Some("{nope")).is_err());
        assert!(Filters::parse(Some("[1]")).is_err());
        assert!(Filters::parse(Some(r#"{"x":3}"#)).is_err());
        let f = Filters::parse(Some(r#"{"bogus":["1"]}"#)).unwrap();
        assert!(f.only(&["label"]).is_err());
        let d = Filters::parse(Some(r#"{"dangling":["maybe"]}"#)).unwrap();
        assert!(d.bool("dangling").is_err());
    }
}

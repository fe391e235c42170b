//! The `filters` query parameter: JSON that maps a key to values, either
//! `{"label":{"a=b":true}}` (current) or `{"label":["a=b"]}` (legacy).

use std::collections::BTreeMap;

use super::ApiError;

/// Parsed filters: key -> values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters(BTreeMap<String, Vec<String>>);

impl Filters {
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

#[cfg(test)]
mod tests {
    use super::*;

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

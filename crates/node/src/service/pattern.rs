//! How dockerd matches a filter value against a name or ID (`filters.Args.Match`): equal,
//! else the value read as a regular expression that matches anywhere (Go's
//! `regexp.MatchString`). An invalid expression matches only by equality.

use regex::Regex;

/// A filter value, compiled once.
#[derive(Debug, Clone)]
pub struct Pattern {
    text: String,
    re: Option<Regex>,
}

impl Pattern {
    pub fn new(text: &str) -> Self {
        Pattern {
            text: text.to_string(),
            re: Regex::new(text).ok(),
        }
    }

    /// Whether `s` equals the value or the value's expression matches somewhere in `s`.
    pub fn matches(&self, s: &str) -> bool {
        self.text == s || self.re.as_ref().is_some_and(|r| r.is_match(s))
    }
}

/// Whether any of `values` matches `s` (values of one key are OR'ed); true when empty.
pub fn any_matches(values: &[String], s: &str) -> bool {
    values.is_empty() || values.iter().any(|v| Pattern::new(v).matches(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_or_unanchored_regex() {
        assert!(Pattern::new("us1").matches("xus10"));
        assert!(Pattern::new("^us1$").matches("us1"));
        assert!(!Pattern::new("^us1$").matches("us10"));
        assert!(!Pattern::new("[").matches("a[b"));
        assert!(Pattern::new("[").matches("["));
        assert!(any_matches(&[], "x"));
        assert!(any_matches(&["^a$".into(), "b".into()], "abc"));
    }
}

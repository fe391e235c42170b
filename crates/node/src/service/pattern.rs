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

/// The values of one filter key, compiled once for a whole listing; they are OR'ed.
#[derive(Debug, Clone, Default)]
pub struct AnyPattern(Vec<Pattern>);

impl AnyPattern {
    pub fn new(values: &[String]) -> Self {
        AnyPattern(values.iter().map(|v| Pattern::new(v)).collect())
    }

    /// Whether any value matches `s`; true when there are none.
    pub fn matches(&self, s: &str) -> bool {
        self.0.is_empty() || self.0.iter().any(|p| p.matches(s))
    }
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
        assert!(AnyPattern::new(&[]).matches("x"));
        assert!(AnyPattern::new(&["^a$".into(), "b".into()]).matches("abc"));
    }
}

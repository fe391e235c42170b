//! Placement constraints (`node.role==worker`): parsing with swarmkit's syntax and
//! wording (`manager/constraint/constraint.go` `Parse`) and matching against a
//! [`NodeInfo`] (`NodeMatches`).
//!
//! Syntax: `<key> <op> <value>` with `op` one of `==`, `!=` (the first of them found in the
//! string, `==` tried first), surrounding spaces trimmed; the key matches
//! `^(?i)[a-z_][a-z0-9\-_.]+$` and the value `^(?i)[a-z0-9:\-_\s.*()?+\[\]\\^$|/]+$`.
//!
//! Case rules (swarmkit): key names are matched case-insensitively (`Node.Role`), the label
//! name after `node.labels.`/`engine.labels.` is case-sensitive, and values are compared
//! case-insensitively. A label the node does not have compares as the empty string (so
//! `==` fails and `!=` holds).
//!
//! Unlike swarmkit, which accepts any well-formed key at create time and then never matches
//! an unknown one (tasks pending forever), an unknown key is refused at parse time. So is
//! `node.ip` (swarmkit supports it; berth's nodes carry no address for it yet).

use crate::model::{Constraint, ConstraintOp, NodeInfo};
use crate::spec::SpecError;

/// Constraint key prefix of node labels (`docker node update --label-add`).
pub const NODE_LABEL_PREFIX: &str = "node.labels.";
/// Constraint key prefix of engine labels (the daemon's `--label`s).
pub const ENGINE_LABEL_PREFIX: &str = "engine.labels.";

/// The keys [`Constraint::parse`] accepts besides the label prefixes.
const PLAIN_KEYS: [&str; 5] = [
    "node.id",
    "node.hostname",
    "node.role",
    "node.platform.os",
    "node.platform.arch",
];

impl Constraint {
    /// Parse one constraint (`node.labels.zone == a`).
    ///
    /// Errors (swarmkit's wording): `constraint expected one operator from ==, !=` (no
    /// operator, e.g. `node.role=worker`), `key 'x y' is invalid`, `value 'a<b' is invalid`;
    /// and berth's for a well-formed but unknown key: `constraint key 'node.foo' is not
    /// supported (expected node.id, node.hostname, node.role, node.platform.os,
    /// node.platform.arch, node.labels.<label> or engine.labels.<label>)`.
    pub fn parse(s: &str) -> Result<Constraint, SpecError> {
        for (op_str, op) in [("==", ConstraintOp::Eq), ("!=", ConstraintOp::Ne)] {
            let Some((key, value)) = s.split_once(op_str) else {
                continue;
            };
            let key = key.trim();
            if !valid_key(key) {
                return Err(SpecError(format!("key '{key}' is invalid")));
            }
            let value = value.trim();
            if !valid_value(value) {
                return Err(SpecError(format!("value '{value}' is invalid")));
            }
            if !known_key(key) {
                return Err(SpecError(format!(
                    "constraint key '{key}' is not supported (expected node.id, node.hostname, node.role, node.platform.os, node.platform.arch, node.labels.<label> or engine.labels.<label>)"
                )));
            }
            return Ok(Constraint {
                key: key.to_string(),
                op,
                value: value.to_string(),
            });
        }
        Err(SpecError(
            "constraint expected one operator from ==, !=".into(),
        ))
    }

    /// Whether `node` satisfies this constraint (swarmkit `NodeMatches` for one
    /// constraint). `node.platform.arch` treats `x86_64`/`amd64` and `aarch64`/`arm64` as
    /// the same (Docker nodes report `x86_64`, images say `amd64`).
    pub fn matches(&self, node: &NodeInfo) -> bool {
        let key = self.key.as_str();
        let found = if key.eq_ignore_ascii_case("node.id") {
            fold_eq(&self.value, &node.id_str)
        } else if key.eq_ignore_ascii_case("node.hostname") {
            fold_eq(&self.value, &node.hostname)
        } else if key.eq_ignore_ascii_case("node.role") {
            fold_eq(&self.value, &node.role)
        } else if key.eq_ignore_ascii_case("node.platform.os") {
            fold_eq(&self.value, &node.platform.os)
        } else if key.eq_ignore_ascii_case("node.platform.arch") {
            fold_eq(
                normalize_arch(&self.value),
                normalize_arch(&node.platform.architecture),
            )
        } else if let Some(label) = strip_prefix_ci(key, NODE_LABEL_PREFIX) {
            fold_eq(
                &self.value,
                node.labels.get(label).map(String::as_str).unwrap_or(""),
            )
        } else if let Some(label) = strip_prefix_ci(key, ENGINE_LABEL_PREFIX) {
            fold_eq(
                &self.value,
                node.engine_labels
                    .get(label)
                    .map(String::as_str)
                    .unwrap_or(""),
            )
        } else {
            // Unreachable for parsed constraints; swarmkit: an unknown key never matches.
            return false;
        };
        match self.op {
            ConstraintOp::Eq => found,
            ConstraintOp::Ne => !found,
        }
    }
}

/// Whether `node` satisfies every constraint in `constraints`.
pub fn all_match(constraints: &[Constraint], node: &NodeInfo) -> bool {
    constraints.iter().all(|c| c.matches(node))
}

/// Go's name (`GOARCH`, as Docker reports platforms and swarmkit's `PlatformFilter` and
/// `node.platform.arch` compare them) of an architecture written as the kernel (`uname -m`),
/// Rust (`std::env::consts::ARCH`) or Go names it, case-insensitively: `x86_64` is `amd64`,
/// `aarch64` is `arm64`, `i686`/`x86` are `386`, `armv7l` is `arm`. Unknown names are
/// returned unchanged.
pub fn normalize_arch(arch: &str) -> &str {
    let lower = arch.to_ascii_lowercase();
    match lower.as_str() {
        "x86_64" | "amd64" => "amd64",
        "aarch64" | "arm64" => "arm64",
        "i386" | "i486" | "i586" | "i686" | "x86" | "386" => "386",
        m if m.starts_with("armv") || m == "arm" => "arm",
        _ => arch,
    }
}

/// The label name after `prefix` (prefix matched case-insensitively, at least one
/// character after it), as swarmkit's `NodeMatches` reads it.
pub(crate) fn strip_prefix_ci<'a>(key: &'a str, prefix: &str) -> Option<&'a str> {
    if key.len() > prefix.len()
        && key.is_char_boundary(prefix.len())
        && key[..prefix.len()].eq_ignore_ascii_case(prefix)
    {
        Some(&key[prefix.len()..])
    } else {
        None
    }
}

/// Go's `strings.EqualFold` (simple Unicode case folding, approximated by lowercasing
/// each character).
fn fold_eq(a: &str, b: &str) -> bool {
    a.chars()
        .flat_map(char::to_lowercase)
        .eq(b.chars().flat_map(char::to_lowercase))
}

fn known_key(key: &str) -> bool {
    PLAIN_KEYS.iter().any(|k| key.eq_ignore_ascii_case(k))
        || strip_prefix_ci(key, NODE_LABEL_PREFIX).is_some()
        || strip_prefix_ci(key, ENGINE_LABEL_PREFIX).is_some()
}

/// `^(?i)[a-z_][a-z0-9\-_.]+$`
fn valid_key(key: &str) -> bool {
    let b = key.as_bytes();
    b.len() >= 2
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// `^(?i)[a-z0-9:\-_\s\.\*\(\)\?\+\[\]\\\^\$\|\/]+$` (`\s` being Go RE2's ASCII
/// whitespace: space, `\t`, `\n`, `\f`, `\r`).
fn valid_value(value: &str) -> bool {
    !value.is_empty()
        && value.bytes().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(
                    c,
                    b':' | b'-'
                        | b'_'
                        | b' '
                        | b'\t'
                        | b'\n'
                        | b'\x0c'
                        | b'\r'
                        | b'.'
                        | b'*'
                        | b'('
                        | b')'
                        | b'?'
                        | b'+'
                        | b'['
                        | b']'
                        | b'\\'
                        | b'^'
                        | b'$'
                        | b'|'
                        | b'/'
                )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Platform, Resources};
    use std::collections::BTreeMap;

    fn node() -> NodeInfo {
        NodeInfo {
            id: 7,
            id_str: "abcdef0123456789abcdef012".into(),
            hostname: "Worker-1".into(),
            role: "worker".into(),
            active: true,
            drain: false,
            ready: true,
            platform: Platform {
                os: "linux".into(),
                architecture: "amd64".into(),
            },
            labels: BTreeMap::from([("zone".to_string(), "A".to_string())]),
            engine_labels: BTreeMap::from([("disk".to_string(), "ssd".to_string())]),
            capacity: Resources::default(),
        }
    }

    fn m(s: &str) -> bool {
        Constraint::parse(s).unwrap().matches(&node())
    }

    #[test]
    fn parse_trims_and_picks_the_operator() {
        let c = Constraint::parse(" node.role  ==  worker ").unwrap();
        assert_eq!(
            c,
            Constraint {
                key: "node.role".into(),
                op: ConstraintOp::Eq,
                value: "worker".into()
            }
        );
        let c = Constraint::parse("node.labels.zone!=a").unwrap();
        assert_eq!(c.op, ConstraintOp::Ne);
    }

    #[test]
    fn parse_errors_use_swarmkits_wording() {
        let e = |s: &str| Constraint::parse(s).unwrap_err().0;
        assert_eq!(
            e("node.role=worker"),
            "constraint expected one operator from ==, !="
        );
        assert_eq!(
            e("node.role"),
            "constraint expected one operator from ==, !="
        );
        assert_eq!(e("node role==worker"), "key 'node role' is invalid");
        assert_eq!(e("node.role!=a==b"), "key 'node.role!=a' is invalid");
        assert_eq!(e("node.role=="), "value '' is invalid");
        assert_eq!(e("node.role==a>b"), "value 'a>b' is invalid");
        assert!(e("node.foo==x").starts_with("constraint key 'node.foo' is not supported"));
        assert!(e("node.labels.==x").starts_with("constraint key 'node.labels.'"));
        assert!(e("node.ip==10.0.0.1").starts_with("constraint key 'node.ip'"));
    }

    #[test]
    fn matches_every_key_with_swarmkits_case_rules() {
        assert!(m("node.role==worker"));
        assert!(m("NODE.ROLE==WORKER"));
        assert!(!m("node.role==manager"));
        assert!(m("node.role!=manager"));
        assert!(m("node.id==abcdef0123456789abcdef012"));
        assert!(m("node.hostname==worker-1"));
        assert!(m("node.platform.os==linux"));
        assert!(m("node.platform.arch==amd64"));
        assert!(m("node.platform.arch==x86_64"));
        assert!(!m("node.platform.arch==arm64"));
        // label values compare case-insensitively, label names case-sensitively
        assert!(m("node.labels.zone==a"));
        assert!(m("Node.Labels.zone==a"));
        assert!(!m("node.labels.Zone==a"));
        assert!(m("node.labels.Zone!=a"));
        assert!(m("engine.labels.disk==SSD"));
        assert!(!m("engine.labels.disk==hdd"));
        // a missing label is the empty string
        assert!(!m("node.labels.rack==r1"));
        assert!(m("node.labels.rack!=r1"));
    }
}

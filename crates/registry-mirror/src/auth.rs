//! Registry authentication: credentials, and parsing of `WWW-Authenticate` challenges
//! (Basic, and the Bearer token flow of the distribution spec). Plain code, no I/O: the
//! client ([`crate::client`]) performs the token request.

use std::collections::BTreeMap;
use std::fmt;

/// What the caller authenticates with for one registry.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Credentials {
    /// No credentials: anonymous tokens only.
    #[default]
    Anonymous,
    /// Username and password (or personal access token).
    Basic { username: String, password: String },
    /// A static bearer token (a registry access token), sent with every request.
    BearerToken(String),
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::Basic { username, .. } => {
                write!(
                    f,
                    "Basic {{ username: {username:?}, password: <redacted> }}"
                )
            }
            Credentials::BearerToken(_) => f.write_str("BearerToken(<redacted>)"),
        }
    }
}

impl Credentials {
    /// The value of an `Authorization: Basic ...` header, if there are credentials.
    pub fn basic_header(&self) -> Option<String> {
        use base64::Engine as _;
        match self {
            Credentials::Anonymous | Credentials::BearerToken(_) => None,
            Credentials::Basic { username, password } => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
            )),
        }
    }
}

impl Credentials {
    /// A stable, non-reversible name of these credentials (sha256 of the kind and
    /// secrets; empty for anonymous), for keying caches of what they unlocked (tokens),
    /// so that nothing earned with one set of credentials serves another.
    pub fn identity(&self) -> String {
        use sha2::Digest as _;
        let material = match self {
            Credentials::Anonymous => return String::new(),
            Credentials::Basic { username, password } => {
                format!("basic\0{username}\0{password}")
            }
            Credentials::BearerToken(t) => format!("bearer\0{t}"),
        };
        hex::encode(sha2::Sha256::digest(material.as_bytes()))
    }

    /// The `Authorization` header sent before any challenge (static bearer tokens only).
    pub fn preemptive_header(&self) -> Option<String> {
        match self {
            Credentials::BearerToken(t) => Some(format!("Bearer {t}")),
            _ => None,
        }
    }
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic {
        realm: Option<String>,
    },
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses `Scheme k="v", k2=v2`. Returns `None` for schemes we cannot answer.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let params = parse_params(rest);
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic {
            realm: params.get("realm").cloned(),
        }),
        "bearer" => Some(Challenge::Bearer {
            realm: params.get("realm")?.clone(),
            service: params.get("service").cloned(),
            scope: params.get("scope").cloned(),
        }),
        _ => None,
    }
}

fn parse_params(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i] == b' ' || b[i] == b',') {
            i += 1;
        }
        let ks = i;
        while i < b.len() && b[i] != b'=' && b[i] != b',' {
            i += 1;
        }
        let key = s[ks..i].trim().to_ascii_lowercase();
        if i >= b.len() || b[i] != b'=' {
            continue;
        }
        i += 1;
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
        let mut val = String::new();
        if i < b.len() && b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' && i + 1 < b.len() {
                    i += 1;
                }
                let ch_len = s[i..].chars().next().map_or(1, char::len_utf8);
                val.push_str(&s[i..i + ch_len]);
                i += ch_len;
            }
            i += 1;
        } else {
            let vs = i;
            while i < b.len() && b[i] != b',' {
                i += 1;
            }
            val = s[vs..i].trim().to_string();
        }
        if !key.is_empty() {
            out.insert(key, val);
        }
    }
    out
}

/// The token scope for `actions` (e.g. `pull` or `pull,push`) on a repository.
pub fn repository_scope(repository: &str, actions: &str) -> String {
    format!("repository:{repository}:{actions}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_hub_bearer_challenge() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull".into()),
            })
        );
    }

    #[test]
    fn parses_basic_and_odd_spacing() {
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic {
                realm: Some("Registry Realm".into())
            })
        );
        assert_eq!(
            parse_challenge(r#"bearer  realm=http://x/t , service = "a\"b""#),
            Some(Challenge::Bearer {
                realm: "http://x/t".into(),
                service: Some("a\"b".into()),
                scope: None,
            })
        );
        assert_eq!(parse_challenge("Negotiate abc"), None);
        assert_eq!(parse_challenge(r#"Bearer service="x""#), None, "no realm");
    }

    #[test]
    fn basic_header_and_redacted_debug() {
        let c = Credentials::Basic {
            username: "u".into(),
            password: "p".into(),
        };
        assert_eq!(c.basic_header().unwrap(), "Basic dTpw");
        assert!(!format!("{c:?}").contains("\"p\""));
        assert_eq!(Credentials::Anonymous.basic_header(), None);
    }

    #[test]
    fn identities_differ_per_credentials_and_hide_the_secret() {
        let a = Credentials::Basic {
            username: "u".into(),
            password: "p".into(),
        };
        let b = Credentials::Basic {
            username: "u".into(),
            password: "q".into(),
        };
        assert_ne!(a.identity(), b.identity());
        assert_ne!(a.identity(), Credentials::Anonymous.identity());
        assert_ne!(
            a.identity(),
            Credentials::BearerToken("p".into()).identity()
        );
        assert_eq!(a.identity(), a.clone().identity());
        assert!(!a.identity().contains('p') || a.identity().len() == 64);
    }
}

//! Join tokens: `SWMTKN-1-<CA fingerprint>-<secret>`, as Swarm spells them.
//!
//! The fingerprint is the lowercase hex SHA-256 of the CA certificate (DER); a joining node
//! compares it with the CA the remote presents before it sends the secret. The secret is
//! `HMAC-SHA256(CA key, cluster id | role | generation)`, truncated to 128 bits: managers (who
//! hold the CA key) derive it on demand, the replicated state only stores the generation,
//! and rotating a token is bumping that generation.

use std::fmt;
use std::str::FromStr;

use ring::hmac;

use crate::error::ConsensusError;
use crate::state::NodeRole;

const PREFIX: &str = "SWMTKN";
const VERSION: &str = "1";

/// A parsed join token.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// Lowercase hex SHA-256 of the CA certificate.
    pub ca_fingerprint: String,
    /// Lowercase hex secret.
    pub secret: String,
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("ca_fingerprint", &self.ca_fingerprint)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PREFIX}-{VERSION}-{}-{}",
            self.ca_fingerprint, self.secret
        )
    }
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl FromStr for JoinToken {
    type Err = ConsensusError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.trim().split('-').collect();
        let [prefix, version, fingerprint, secret] = parts.as_slice() else {
            return Err(ConsensusError::MalformedToken {
                reason: "expected SWMTKN-1-<fingerprint>-<secret>",
            });
        };
        if *prefix != PREFIX {
            return Err(ConsensusError::MalformedToken {
                reason: "does not start with SWMTKN",
            });
        }
        if *version != VERSION {
            return Err(ConsensusError::MalformedToken {
                reason: "unsupported token version",
            });
        }
        if !is_lower_hex(fingerprint, 64) {
            return Err(ConsensusError::MalformedToken {
                reason: "fingerprint is not 64 lowercase hex digits",
            });
        }
        if !is_lower_hex(secret, 32) {
            return Err(ConsensusError::MalformedToken {
                reason: "secret is not 32 lowercase hex digits",
            });
        }
        Ok(JoinToken {
            ca_fingerprint: fingerprint.to_string(),
            secret: secret.to_string(),
        })
    }
}

/// Secret of `role`'s join token at `generation`.
pub fn token_secret(
    ca_key_der: &[u8],
    cluster_id: &str,
    role: NodeRole,
    generation: u64,
) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, ca_key_der);
    let message = format!(
        "berth-join-token/v1/{cluster_id}/{}/{generation}",
        role.as_str()
    );
    let tag = hmac::sign(&key, message.as_bytes());
    hex::encode(&tag.as_ref()[..16])
}

/// Which role, if any, `secret` grants at the current generations. Constant-time compare.
pub fn role_for_secret(
    ca_key_der: &[u8],
    cluster_id: &str,
    generations: &crate::state::TokenGenerations,
    secret: &str,
) -> Option<NodeRole> {
    [NodeRole::Manager, NodeRole::Worker]
        .into_iter()
        .find(|role| {
            let expected = token_secret(ca_key_der, cluster_id, *role, generations.get(*role));
            constant_time_eq(expected.as_bytes(), secret.as_bytes())
        })
}

/// Compare without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::TokenGenerations;

    #[test]
    fn token_round_trips_and_redacts_secret() {
        let token = JoinToken {
            ca_fingerprint: "ab".repeat(32),
            secret: "01".repeat(16),
        };
        let text = token.to_string();
        assert!(text.starts_with("SWMTKN-1-abab"));
        assert_eq!(text.parse::<JoinToken>().unwrap(), token);
        assert!(!format!("{token:?}").contains(&token.secret));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        for bad in [
            "",
            "SWMTKN-1-abc-def",
            "SWMTKN-2-".to_string().as_str(),
            &format!("XXX-1-{}-{}", "a".repeat(64), "b".repeat(32)),
            &format!("SWMTKN-1-{}-{}", "A".repeat(64), "b".repeat(32)),
            &format!("SWMTKN-1-{}-{}-x", "a".repeat(64), "b".repeat(32)),
        ] {
            assert!(bad.parse::<JoinToken>().is_err(), "{bad}");
        }
    }

    #[test]
    fn secrets_depend_on_role_generation_and_key() {
        let key = b"key-one";
        let gens = TokenGenerations::default();
        let manager = token_secret(key, "c", NodeRole::Manager, 0);
        let worker = token_secret(key, "c", NodeRole::Worker, 0);
        assert_ne!(manager, worker);
        assert_eq!(
            role_for_secret(key, "c", &gens, &manager),
            Some(NodeRole::Manager)
        );
        assert_eq!(
            role_for_secret(key, "c", &gens, &worker),
            Some(NodeRole::Worker)
        );
        assert_eq!(role_for_secret(b"other", "c", &gens, &worker), None);
        let rotated = TokenGenerations {
            manager: 0,
            worker: 1,
        };
        assert_eq!(role_for_secret(key, "c", &rotated, &worker), None);
        assert_eq!(
            role_for_secret(key, "c", &rotated, &manager),
            Some(NodeRole::Manager)
        );
    }
}

//! Encryption at rest of secret and config objects in the replicated state.
//!
//! The key is derived with HKDF-SHA256 from the cluster CA's private key (which only
//! managers hold, in `pki/ca.key`, outside the Raft log and snapshots) and the cluster id;
//! the cipher is ChaCha20-Poly1305 (ring's AEAD). A sealed value carries its random 96-bit
//! nonce; the associated data names the object (`secret:<id>`, `config:<id>`), so a
//! ciphertext cannot be moved to another object. Workers never hold the key: they get the
//! plaintext of what their tasks use from the leader, over the cluster's mTLS transport.
//!
//! ```text
//!  ca.key (PKCS#8 DER) ──HKDF-SHA256(salt, info = cluster id)──> 256-bit key
//!  plaintext + aad ──ChaCha20-Poly1305(key, random nonce)──> Sealed { nonce, ciphertext }
//! ```
//!
//! Autolock (Swarm's key-encryption key over the managers' keys) is not implemented: the
//! CA key, and so this key, are stored unencrypted on each manager's disk (mode 0600), as
//! Swarm stores its Raft key without autolock.

use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::hkdf;
use serde::{Deserialize, Serialize};

use crate::error::ConsensusError;

/// HKDF salt: names this use of the CA key (version 1 of the at-rest key).
const SALT: &[u8] = b"berth secrets and configs at rest v1";

/// A value encrypted with the at-rest key: base64 nonce (12 bytes) and base64 ciphertext
/// with its 16-byte tag.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// Base64 of the 96-bit nonce.
    pub nonce: String,
    /// Base64 of ciphertext and tag.
    pub ciphertext: String,
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealed")
            .field("ciphertext_len", &self.ciphertext.len())
            .finish_non_exhaustive()
    }
}

/// Associated data of a secret object's value.
pub fn secret_aad(id: &str) -> Vec<u8> {
    format!("secret:{id}").into_bytes()
}

/// Associated data of a config object's value.
pub fn config_aad(id: &str) -> Vec<u8> {
    format!("config:{id}").into_bytes()
}

/// The at-rest key of one cluster.
pub struct AtRestKey(LessSafeKey);

impl std::fmt::Debug for AtRestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AtRestKey(<redacted>)")
    }
}

struct KeyLen;

impl hkdf::KeyType for KeyLen {
    fn len(&self) -> usize {
        CHACHA20_POLY1305.key_len()
    }
}

fn seal_err(reason: &'static str) -> ConsensusError {
    ConsensusError::Seal { reason }
}

impl AtRestKey {
    /// Derives the key from the CA private key (PKCS#8 DER) and the cluster id.
    pub fn derive(ca_key_der: &[u8], cluster_id: &str) -> Result<Self, ConsensusError> {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, SALT).extract(ca_key_der);
        let info = [cluster_id.as_bytes()];
        let okm = prk
            .expand(&info, KeyLen)
            .map_err(|_| seal_err("key derivation failed"))?;
        let mut bytes = [0u8; 32];
        okm.fill(&mut bytes)
            .map_err(|_| seal_err("key derivation failed"))?;
        let key = UnboundKey::new(&CHACHA20_POLY1305, &bytes)
            .map_err(|_| seal_err("key derivation failed"))?;
        bytes.fill(0);
        Ok(AtRestKey(LessSafeKey::new(key)))
    }

    /// Encrypts `plaintext` with `nonce` (which must never repeat under one key: callers
    /// pass 12 random bytes).
    pub fn seal(&self, aad: &[u8], plaintext: &[u8], nonce: [u8; NONCE_LEN]) -> Sealed {
        let mut buf = plaintext.to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut buf,
            )
            .expect("ChaCha20-Poly1305 seals any length below 256 GiB");
        let b64 = base64::engine::general_purpose::STANDARD;
        Sealed {
            nonce: b64.encode(nonce),
            ciphertext: b64.encode(&buf),
        }
    }

    /// Encrypts with a fresh random nonce.
    pub fn seal_random(&self, aad: &[u8], plaintext: &[u8]) -> Sealed {
        self.seal(aad, plaintext, rand::random())
    }

    /// Decrypts `sealed`; fails when the key, the associated data or the bytes differ from
    /// those it was sealed with.
    pub fn open(&self, aad: &[u8], sealed: &Sealed) -> Result<Vec<u8>, ConsensusError> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let nonce: [u8; NONCE_LEN] = b64
            .decode(&sealed.nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or(seal_err("malformed nonce"))?;
        let mut buf = b64
            .decode(&sealed.ciphertext)
            .map_err(|_| seal_err("malformed ciphertext"))?;
        let plain = self
            .0
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut buf,
            )
            .map_err(|_| seal_err("authentication failed (wrong key or altered value)"))?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_the_same_key_and_aad() {
        let key = AtRestKey::derive(b"ca key bytes", "cluster1").unwrap();
        let sealed = key.seal(&secret_aad("s1"), b"hunter2", [7; 12]);
        assert!(!sealed.ciphertext.contains("hunter2"));
        assert_eq!(key.open(&secret_aad("s1"), &sealed).unwrap(), b"hunter2");
        // Another object's aad, another cluster, another CA key: refused.
        assert!(key.open(&secret_aad("s2"), &sealed).is_err());
        assert!(key.open(&config_aad("s1"), &sealed).is_err());
        let other_cluster = AtRestKey::derive(b"ca key bytes", "cluster2").unwrap();
        assert!(other_cluster.open(&secret_aad("s1"), &sealed).is_err());
        let other_ca = AtRestKey::derive(b"other ca key", "cluster1").unwrap();
        assert!(other_ca.open(&secret_aad("s1"), &sealed).is_err());
        // The same inputs derive the same key (every manager derives it alike).
        let again = AtRestKey::derive(b"ca key bytes", "cluster1").unwrap();
        assert_eq!(again.open(&secret_aad("s1"), &sealed).unwrap(), b"hunter2");
    }

    #[test]
    fn altered_ciphertext_and_random_nonces() {
        let key = AtRestKey::derive(b"k", "c").unwrap();
        let a = key.seal_random(b"x", b"same");
        let b = key.seal_random(b"x", b"same");
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut raw = b64.decode(&a.ciphertext).unwrap();
        raw[0] ^= 1;
        let tampered = Sealed {
            nonce: a.nonce.clone(),
            ciphertext: b64.encode(raw),
        };
        assert!(key.open(b"x", &tampered).is_err());
        assert!(format!("{a:?}").starts_with("Sealed"));
    }
}

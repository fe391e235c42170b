//! The node key pair: x25519, encoded as WireGuard's tools encode it (standard base64 of
//! the 32 bytes, 44 characters; the UAPI uses hex, see [`super::uapi`]).

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use boringtun::x25519::{PublicKey, StaticSecret};

use super::WgError;

fn decode32(s: &str) -> Result<[u8; 32], WgError> {
    let bytes = STANDARD.decode(s.trim()).map_err(|_| WgError::InvalidKey {
        reason: "not standard base64",
    })?;
    bytes.try_into().map_err(|_| WgError::InvalidKey {
        reason: "not 32 bytes",
    })
}

/// A node's public key. `Display`/`FromStr`/serde: base64 as `wg pubkey` prints it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WgPublicKey(pub [u8; 32]);

impl WgPublicKey {
    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for WgPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&STANDARD.encode(self.0))
    }
}

impl fmt::Debug for WgPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WgPublicKey({self})")
    }
}

impl FromStr for WgPublicKey {
    type Err = WgError;
    fn from_str(s: &str) -> Result<Self, WgError> {
        decode32(s).map(WgPublicKey)
    }
}

impl serde::Serialize for WgPublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for WgPublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A node's x25519 key pair. The secret is zeroized on drop; `Debug` shows only the public
/// key. Made once per node ([`WgKeyPair::generate`]); the public half goes to the cluster
/// state (`SetNodeWgKey`), the private half stays in berthd (memory, or a 0600 file in its
/// data root through [`WgKeyPair::save`]).
#[derive(Clone)]
pub struct WgKeyPair {
    secret: StaticSecret,
    public: WgPublicKey,
}

impl WgKeyPair {
    /// A fresh key pair from the operating system's CSPRNG (clamping is done by x25519).
    pub fn generate() -> Self {
        Self::from_secret(StaticSecret::random_from_rng(rand::rngs::OsRng))
    }

    fn from_secret(secret: StaticSecret) -> Self {
        let public = WgPublicKey(PublicKey::from(&secret).to_bytes());
        WgKeyPair { secret, public }
    }

    /// From a private key in base64 (`wg genkey` output).
    ///
    /// # Errors
    /// [`WgError::InvalidKey`] unless it is 32 bytes of standard base64.
    pub fn from_private_base64(s: &str) -> Result<Self, WgError> {
        Ok(Self::from_secret(StaticSecret::from(decode32(s)?)))
    }

    /// The private key in base64 (what `wg genkey` prints). Handle with care.
    pub fn private_key_base64(&self) -> String {
        STANDARD.encode(self.secret.as_bytes())
    }

    /// The raw private key bytes, for the device backends.
    pub(crate) fn private_bytes(&self) -> &[u8; 32] {
        self.secret.as_bytes()
    }

    /// The public key.
    pub fn public_key(&self) -> WgPublicKey {
        self.public
    }

    /// Writes the private key (base64 and a newline) to `path`, created or truncated with
    /// mode 0600 (the mode is also forced on an existing file before writing).
    ///
    /// # Errors
    /// [`WgError::KeyFile`] on any I/O failure.
    pub fn save(&self, path: &Path) -> Result<(), WgError> {
        let io = |source| WgError::KeyFile {
            path: path.to_path_buf(),
            source,
        };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io)?;
        f.set_len(0).map_err(io)?;
        f.write_all(format!("{}\n", self.private_key_base64()).as_bytes())
            .map_err(io)?;
        f.sync_all().map_err(io)
    }

    /// Reads a key written by [`WgKeyPair::save`] (or `wg genkey > file`).
    ///
    /// # Errors
    /// [`WgError::KeyFilePermissions`] when group or others have any permission on the
    /// file; [`WgError::KeyFile`] when it cannot be read; [`WgError::InvalidKey`].
    pub fn load(path: &Path) -> Result<Self, WgError> {
        let io = |source| WgError::KeyFile {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(WgError::KeyFilePermissions {
                path: path.to_path_buf(),
                mode,
            });
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        Self::from_private_base64(&text)
    }
}

impl fmt::Debug for WgKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WgKeyPair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

//! Cluster PKI: the cluster CA, node certificates, join tokens and TLS configurations.
//!
//! Owns: creating the CA at `init` (rcgen), signing node certificates from CSRs at join,
//! the files under `<data dir>/pki/`, token derivation ([`token`]) and the rustls client
//! and server configurations ([`tls`]).
//!
//! Does not own: deciding who may join (the leader checks the token against the replicated
//! token generations), or any network I/O.
//!
//! ```text
//!  init:  rcgen CA (ca.crt, ca.key) ──signs──> node.crt (CN = node id, SAN = berth-node)
//!  join:  joiner: key + CSR ──(secret)──> manager: checks secret, signs ──> node.crt
//! ```
//!
//! Every node holds `ca.crt`, `node.crt`, `node.key`; only managers hold `ca.key`. The
//! key that encrypts secret and config objects at rest is derived from `ca.key` ([`seal`]).

pub mod seal;
pub mod tls;
pub mod token;

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, CertificateSigningRequestDer};

pub use token::JoinToken;

use crate::error::ConsensusError;
use crate::state::NodeId;

/// DNS name in every node certificate; clients verify servers against it (node addresses
/// change, cluster membership is what the CA vouches for).
pub const NODE_SERVER_NAME: &str = "berth-node";

/// Lowercase hex SHA-256 of a DER blob (certificate fingerprint).
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, der))
}

fn cert_err(op: &'static str) -> impl FnOnce(rcgen::Error) -> ConsensusError {
    move |source| ConsensusError::Certificate { op, source }
}

/// A node's TLS identity plus the cluster CA certificate (and key, on managers).
#[derive(Clone)]
pub struct NodeIdentity {
    /// CA certificate, DER.
    pub ca_cert_der: Vec<u8>,
    /// Node certificate, DER.
    pub cert_der: Vec<u8>,
    /// Node private key, PKCS#8 DER.
    pub key_der: Vec<u8>,
    /// CA private key, PKCS#8 DER (managers only).
    pub ca_key_der: Option<Vec<u8>>,
}

impl std::fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeIdentity")
            .field("ca_fingerprint", &fingerprint(&self.ca_cert_der))
            .field("cert_fingerprint", &fingerprint(&self.cert_der))
            .field("has_ca_key", &self.ca_key_der.is_some())
            .finish()
    }
}

impl NodeIdentity {
    /// Fingerprint of the CA certificate (the one in join tokens).
    pub fn ca_fingerprint(&self) -> String {
        fingerprint(&self.ca_cert_der)
    }

    /// Fingerprint of this node's certificate.
    pub fn cert_fingerprint(&self) -> String {
        fingerprint(&self.cert_der)
    }

    fn dir(data_dir: &Path) -> PathBuf {
        data_dir.join("pki")
    }

    /// True when `data_dir` holds a node identity.
    pub fn exists(data_dir: &Path) -> bool {
        Self::dir(data_dir).join("node.crt").exists()
    }

    /// Write the identity under `<data_dir>/pki/` (fsync'd; keys mode 0600).
    pub fn save(&self, data_dir: &Path) -> Result<(), ConsensusError> {
        let dir = Self::dir(data_dir);
        std::fs::create_dir_all(&dir).map_err(|e| ConsensusError::io(&dir, e))?;
        write_file(&dir.join("ca.crt"), &self.ca_cert_der, 0o644)?;
        write_file(&dir.join("node.crt"), &self.cert_der, 0o644)?;
        write_file(&dir.join("node.key"), &self.key_der, 0o600)?;
        if let Some(key) = &self.ca_key_der {
            write_file(&dir.join("ca.key"), key, 0o600)?;
        }
        Ok(())
    }

    /// Write the CA key after a promotion.
    pub fn save_ca_key(data_dir: &Path, key: &[u8]) -> Result<(), ConsensusError> {
        write_file(&Self::dir(data_dir).join("ca.key"), key, 0o600)
    }

    /// Load the identity saved by [`save`](Self::save).
    pub fn load(data_dir: &Path) -> Result<Self, ConsensusError> {
        let dir = Self::dir(data_dir);
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|e| ConsensusError::io(&path, e))
        };
        let ca_key_path = dir.join("ca.key");
        let ca_key_der = if ca_key_path.exists() {
            Some(read("ca.key")?)
        } else {
            None
        };
        Ok(NodeIdentity {
            ca_cert_der: read("ca.crt")?,
            cert_der: read("node.crt")?,
            key_der: read("node.key")?,
            ca_key_der,
        })
    }
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), ConsensusError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| ConsensusError::io(&tmp, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| ConsensusError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| ConsensusError::io(path, e))
}

fn ca_params() -> Result<CertificateParams, ConsensusError> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_err("CA params"))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "berth cluster CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

fn node_params(node_id: NodeId) -> Result<CertificateParams, ConsensusError> {
    let mut params = CertificateParams::new(vec![NODE_SERVER_NAME.to_string()])
        .map_err(cert_err("node params"))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("{node_id:016x}"));
    dn.push(DnType::OrganizationName, "berth");
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    Ok(params)
}

/// Create a new cluster CA and the first node's identity (at `init`).
pub fn new_cluster(node_id: NodeId) -> Result<NodeIdentity, ConsensusError> {
    let ca_key = KeyPair::generate().map_err(cert_err("generate CA key"))?;
    let ca_cert = ca_params()?
        .self_signed(&ca_key)
        .map_err(cert_err("self-sign CA"))?;
    let node_key = KeyPair::generate().map_err(cert_err("generate node key"))?;
    let issuer = Issuer::new(ca_params()?, &ca_key);
    let node_cert = node_params(node_id)?
        .signed_by(&node_key, &issuer)
        .map_err(cert_err("sign node certificate"))?;
    Ok(NodeIdentity {
        ca_cert_der: ca_cert.der().to_vec(),
        cert_der: node_cert.der().to_vec(),
        key_der: node_key.serialize_der(),
        ca_key_der: Some(ca_key.serialize_der()),
    })
}

/// A fresh key pair and a CSR for it (joining node side). Returns (key DER, CSR DER).
pub fn new_csr(node_id: NodeId) -> Result<(Vec<u8>, Vec<u8>), ConsensusError> {
    let key = KeyPair::generate().map_err(cert_err("generate node key"))?;
    let csr = node_params(node_id)?
        .serialize_request(&key)
        .map_err(cert_err("serialize CSR"))?;
    Ok((key.serialize_der(), csr.der().to_vec()))
}

/// Sign the public key of `csr_der` as node `node_id` (manager side). Only the public key is
/// taken from the CSR: names, usages and CA flags are always ours.
pub fn sign_csr(
    ca_cert_der: &[u8],
    ca_key_der: &[u8],
    node_id: NodeId,
    csr_der: &[u8],
) -> Result<Vec<u8>, ConsensusError> {
    let ca_key = KeyPair::try_from(ca_key_der).map_err(cert_err("load CA key"))?;
    let issuer = Issuer::from_ca_cert_der(&CertificateDer::from(ca_cert_der), &ca_key)
        .map_err(cert_err("load CA certificate"))?;
    let csr =
        CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr_der))
            .map_err(cert_err("parse CSR"))?;
    let cert = node_params(node_id)?
        .signed_by(&csr.public_key, &issuer)
        .map_err(cert_err("sign node certificate"))?;
    Ok(cert.der().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csr_signed_by_cluster_ca_chains_to_it() {
        let first = new_cluster(1).unwrap();
        let (key, csr) = new_csr(2).unwrap();
        let cert = sign_csr(
            &first.ca_cert_der,
            first.ca_key_der.as_deref().unwrap(),
            2,
            &csr,
        )
        .unwrap();
        let joined = NodeIdentity {
            ca_cert_der: first.ca_cert_der.clone(),
            cert_der: cert,
            key_der: key,
            ca_key_der: None,
        };
        // A server config with the signed cert and a client verifier with the CA both build
        // and the signed cert verifies against the CA.
        tls::server_config(&joined).unwrap();
        tls::verify_node_cert(&first.ca_cert_der, &joined.cert_der).unwrap();
        let other = new_cluster(3).unwrap();
        assert!(tls::verify_node_cert(&other.ca_cert_der, &joined.cert_der).is_err());
        assert_ne!(first.ca_fingerprint(), other.ca_fingerprint());
    }

    #[test]
    fn identity_save_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let id = new_cluster(7).unwrap();
        assert!(!NodeIdentity::exists(dir.path()));
        id.save(dir.path()).unwrap();
        assert!(NodeIdentity::exists(dir.path()));
        let back = NodeIdentity::load(dir.path()).unwrap();
        assert_eq!(back.cert_der, id.cert_der);
        assert_eq!(back.ca_key_der, id.ca_key_der);
    }
}

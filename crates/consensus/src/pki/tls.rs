//! rustls configurations for node-to-node gRPC, and the client connector tonic uses.
//!
//! Server: presents the node certificate; a client certificate is *optional* at the TLS
//! layer (a joining node has none yet) but, when presented, must chain to the cluster CA.
//! RPCs other than `GetCaCertificate` and `Join` then require one (checked per RPC).
//! Clients verify servers against the cluster CA and the name [`NODE_SERVER_NAME`].

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use tonic::transport::{Channel, Endpoint, Uri};

use super::{NodeIdentity, NODE_SERVER_NAME};
use crate::error::ConsensusError;

const ALPN_H2: &[u8] = b"h2";

/// The crypto provider used everywhere (ring; independent of the process default).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca_cert_der: &[u8]) -> Result<RootCertStore, ConsensusError> {
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(ca_cert_der.to_vec()))?;
    Ok(roots)
}

fn key(identity: &NodeIdentity) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.key_der.clone()))
}

/// Server side: node certificate, optional client certificate chained to the cluster CA.
pub fn server_config(identity: &NodeIdentity) -> Result<Arc<ServerConfig>, ConsensusError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots(&identity.ca_cert_der)?),
        provider(),
    )
    .allow_unauthenticated()
    .build()?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from(identity.cert_der.clone())],
            key(identity),
        )?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// Client side, mutual TLS: verify the server against the CA, present our certificate.
pub fn client_config(identity: &NodeIdentity) -> Result<Arc<ClientConfig>, ConsensusError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(&identity.ca_cert_der)?)
        .with_client_auth_cert(
            vec![CertificateDer::from(identity.cert_der.clone())],
            key(identity),
        )?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// Client side for `Join`: verify the server against the (fingerprint-checked) CA, no client
/// certificate yet.
pub fn join_client_config(ca_cert_der: &[u8]) -> Result<Arc<ClientConfig>, ConsensusError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(ca_cert_der)?)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// Client side for `GetCaCertificate` only: the server certificate is not checked here
/// because the CA it returns is checked against the fingerprint in the join token before
/// anything secret is sent, and the following `Join` connection verifies the server against
/// that CA. Handshake signatures are still verified.
pub fn ca_fetch_client_config() -> Result<Arc<ClientConfig>, ConsensusError> {
    let provider = provider();
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(CaFetchVerifier { provider }))
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// Check that `cert_der` chains to `ca_cert_der` as a client certificate.
pub fn verify_node_cert(ca_cert_der: &[u8], cert_der: &[u8]) -> Result<(), ConsensusError> {
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca_cert_der)?), provider())
            .build()?;
    verifier.verify_client_cert(&CertificateDer::from(cert_der), &[], UnixTime::now())?;
    Ok(())
}

#[derive(Debug)]
struct CaFetchVerifier {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for CaFetchVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A lazily connecting gRPC channel to `addr` (`host:port`) over TLS with `config`.
pub fn channel(addr: &str, config: Arc<ClientConfig>) -> Result<Channel, ConsensusError> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|source| ConsensusError::Connect {
            addr: addr.to_string(),
            source,
        })?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true);
    let connector = tower::service_fn(move |uri: Uri| {
        let config = config.clone();
        async move {
            let host = uri.host().unwrap_or("127.0.0.1").to_string();
            let port = uri.port_u16().unwrap_or(443);
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from(NODE_SERVER_NAME)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Ok::<_, std::io::Error>(TokioIo::new(tls))
        }
    });
    Ok(endpoint.connect_with_connector_lazy(connector))
}

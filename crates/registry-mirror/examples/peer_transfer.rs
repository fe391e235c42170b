//! Node-to-node blob transfer, QUIC (the peer transport) against HTTP/2 over mutual TLS
//! (the mirror's HTTP API behind rustls, as the cluster's gRPC runs): one stored blob of
//! `SIZE_MIB` (default 50) served by one mirror, fetched whole `RUNS` times (default 5)
//! over each, alternating; prints the median wall time and throughput of each.
//!
//! `peer_transfer [BIND_IP]` — both sides on BIND_IP (default 127.0.0.1). Same
//! certificates (a test CA, rcgen), same flow-control windows (8 MiB per stream, 32 MiB
//! per connection), same body source (`Mirror::stored_body`, which re-hashes the blob).
//!
//! Across a LAN of network namespaces (root): `SERVER_NS=<name> CLIENT_NS=<name>
//! peer_transfer <SERVER_IP>` — the serving side's sockets are made inside
//! `/run/netns/<SERVER_NS>` bound to SERVER_IP, the fetching side's inside
//! `/run/netns/<CLIENT_NS>` (bound to `CLIENT_IP`, default any address), so every byte
//! crosses the namespaces' link (a veth pair, a bridge) as between two hosts. A socket
//! stays in the namespace it was made in; the process switches namespaces only on the
//! thread that makes them (setns(2) acts per thread).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_registry_mirror::mirror::peers::{Member, PeerSet};
use berth_registry_mirror::mirror::quic::{PeerIdentity, PeerTimeouts, PeerTransport};
use berth_registry_mirror::mirror::route::UpstreamRepo;
use berth_registry_mirror::mirror::NoLocalImages;
use berth_registry_mirror::{BlobStore, ClientConfig, Mirror, MirrorConfig, RegistryClient};
use futures::StreamExt;
use http_body_util::BodyExt;
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn identities() -> Result<(PeerIdentity, PeerIdentity), BoxError> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, &ca_key);
    let node = || -> Result<PeerIdentity, BoxError> {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::new(vec!["berth-node".to_string()])?;
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = p.signed_by(&key, &issuer)?;
        Ok(PeerIdentity {
            ca_cert_der: ca_cert.der().to_vec(),
            cert_der: cert.der().to_vec(),
            key_der: key.serialize_der(),
            server_name: "berth-node".into(),
        })
    };
    Ok((node()?, node()?))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_server(id: &PeerIdentity) -> Result<Arc<rustls::ServerConfig>, BoxError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(id.ca_cert_der.clone()))?;
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()?;
    let mut c = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from(id.cert_der.clone())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.key_der.clone())),
        )?;
    c.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(c))
}

fn tls_client(id: &PeerIdentity) -> Result<Arc<rustls::ClientConfig>, BoxError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(id.ca_cert_der.clone()))?;
    let mut c = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from(id.cert_der.clone())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.key_der.clone())),
        )?;
    c.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(c))
}

/// Serves `mirror`'s HTTP API over HTTP/2 with mutual TLS on `listener`.
async fn serve_h2(
    mirror: Mirror,
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, router) = (acceptor.clone(), mirror.router());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let svc = hyper_util::service::TowerToHyperService::new(router);
            let mut b =
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
            b.initial_stream_window_size(8 << 20)
                .initial_connection_window_size(32 << 20);
            let _ = b
                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                .await;
        });
    }
}

/// Moves this thread into the network namespace `/run/netns/<name>` (nothing if unset).
fn enter_netns(var: &str) -> Result<(), BoxError> {
    let Ok(name) = std::env::var(var) else {
        return Ok(());
    };
    let f = std::fs::File::open(format!("/run/netns/{name}"))?;
    // SAFETY: setns(2) on a valid namespace fd; it affects only the calling thread.
    let r = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) };
    if r != 0 {
        return Err(format!("setns {name}: {}", std::io::Error::last_os_error()).into());
    }
    Ok(())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let ip: std::net::IpAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1".into())
        .parse()?;
    let size_mib: usize = std::env::var("SIZE_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let (server_id, client_id) = identities()?;
    let dir = tempfile::tempdir()?;
    let blobs = BlobStore::open(dir.path().join("blobs"))?;
    let mut data = vec![0u8; size_mib << 20];
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let digest = blobs.put(&data)?;
    drop(data);
    let mirror = Mirror::new(
        MirrorConfig::new(dir.path().join("mirror")),
        blobs,
        RegistryClient::new(ClientConfig::default())?,
        Arc::new(NoLocalImages),
    )?;
    enter_netns("SERVER_NS")?;
    let server_t = PeerTransport::bind(
        SocketAddr::new(ip, 0),
        &server_id,
        PeerSet::new("server"),
        PeerTimeouts::default(),
    )?;
    mirror.attach_peers(server_t.clone());
    let server = Member {
        id: "server".into(),
        addr: server_t.local_addr()?,
    };
    let target = UpstreamRepo {
        upstream: "example.com".into(),
        repository: "team/big".into(),
    };
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(ip, 0)).await?;
    let h2_addr = listener.local_addr()?;
    tokio::spawn(serve_h2(mirror.clone(), listener, tls_server(&server_id)?));
    enter_netns("CLIENT_NS")?;
    let client_ip: std::net::IpAddr = match std::env::var("CLIENT_IP") {
        Ok(a) => a.parse()?,
        Err(_) if std::env::var("CLIENT_NS").is_ok() => "0.0.0.0".parse()?,
        Err(_) => ip,
    };
    let client_t = PeerTransport::bind(
        SocketAddr::new(client_ip, 0),
        &client_id,
        PeerSet::new("client"),
        PeerTimeouts::default(),
    )?;
    let connector = tokio_rustls::TlsConnector::from(tls_client(&client_id)?);
    let tcp = tokio::net::TcpStream::connect(h2_addr).await?;
    tcp.set_nodelay(true)?;
    let tls = connector
        .connect(ServerName::try_from("berth-node")?, tcp)
        .await?;
    let (mut h2, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .initial_stream_window_size(8 << 20)
            .initial_connection_window_size(32 << 20)
            .handshake::<_, http_body_util::Empty<bytes::Bytes>>(hyper_util::rt::TokioIo::new(tls))
            .await?;
    tokio::spawn(conn);

    let (mut quic, mut http2) = (Vec::new(), Vec::new());
    // One warm-up of each (connection set-up is not what is measured), then alternate.
    for round in 0..=runs {
        let t = Instant::now();
        let (_, mut body) = client_t.fetch_blob(&server, &target, &digest, 0).await?;
        let mut n = 0;
        while let Some(c) = body.next().await {
            n += c?.len();
        }
        assert_eq!(n, size_mib << 20);
        if round > 0 {
            quic.push(t.elapsed());
        }

        let t = Instant::now();
        let req = hyper::Request::get(format!("/v2/team/big/blobs/{digest}?ns=example.com"))
            .header("host", "berth-node")
            .body(http_body_util::Empty::new())?;
        let resp = h2.send_request(req).await?;
        assert!(resp.status().is_success(), "{}", resp.status());
        let mut body = resp.into_body();
        let mut n = 0;
        while let Some(f) = body.frame().await {
            if let Ok(d) = f?.into_data() {
                n += d.len();
            }
        }
        assert_eq!(n, size_mib << 20);
        if round > 0 {
            http2.push(t.elapsed());
        }
    }
    for (name, v) in [
        ("QUIC (quinn)", quic),
        ("HTTP/2 + mTLS (hyper, TCP)", http2),
    ] {
        let m = median(v.clone());
        println!(
            "{name:28} {size_mib} MiB x{runs}: median {:>6} ms, {:>7.1} MiB/s (all: {:?})",
            m.as_millis(),
            size_mib as f64 / m.as_secs_f64(),
            v.iter().map(|d| d.as_millis()).collect::<Vec<_>>()
        );
    }
    server_t.close();
    client_t.close();
    Ok(())
}

//! Cluster mirrors in one process: several [`Mirror`]s, each with its own blob store and
//! QUIC peer transport on loopback (certificates from a test cluster CA), in front of the
//! in-process fake registry that records every request.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use berth_registry_mirror::mirror::peers::{rendezvous_order, Member, OwnerKey, PeerSet};
use berth_registry_mirror::mirror::quic::{
    self, PeerIdentity, PeerReplyHeader, PeerRequest, PeerTimeouts, PeerTransport,
};
use berth_registry_mirror::mirror::route::{ManifestRef, UpstreamRepo};
use berth_registry_mirror::mirror::{http, BlobReply, NoLocalImages};
use berth_registry_mirror::{
    BlobStore, ClientConfig, Digest, Mirror, MirrorConfig, RegistryClient,
};
use common::*;
use futures::StreamExt;
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use reqwest::StatusCode;

const SERVER_NAME: &str = "berth-node";

/// A test cluster CA and a way to issue node identities from it.
struct Ca {
    cert_der: Vec<u8>,
    key: KeyPair,
    params: CertificateParams,
}

impl Ca {
    fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).unwrap();
        Ca {
            cert_der: cert.der().to_vec(),
            key,
            params,
        }
    }

    fn identity(&self) -> PeerIdentity {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![SERVER_NAME.to_string()]).unwrap();
        params.is_ca = IsCa::ExplicitNoCa;
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let issuer = Issuer::new(self.params.clone(), &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        PeerIdentity {
            ca_cert_der: self.cert_der.clone(),
            cert_der: cert.der().to_vec(),
            key_der: key.serialize_der(),
            server_name: SERVER_NAME.into(),
        }
    }
}

struct Node {
    id: String,
    mirror: Mirror,
    transport: PeerTransport,
    _dir: tempfile::TempDir,
}

fn timeouts() -> PeerTimeouts {
    PeerTimeouts {
        header: Duration::from_secs(2),
        idle: Duration::from_secs(2),
    }
}

fn node(id: &str, ca: &Ca, tag_ttl: Duration) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let mut config = MirrorConfig::new(dir.path().join("mirror"));
    config.tag_ttl = tag_ttl;
    let client = RegistryClient::new(ClientConfig::default()).unwrap();
    let blobs = BlobStore::open(dir.path().join("blobs")).unwrap();
    let mirror = Mirror::new(config, blobs, client, Arc::new(NoLocalImages)).unwrap();
    let transport = PeerTransport::bind(
        "127.0.0.1:0".parse().unwrap(),
        &ca.identity(),
        PeerSet::new(id),
        timeouts(),
    )
    .unwrap();
    mirror.attach_peers(transport.clone());
    Node {
        id: id.into(),
        mirror,
        transport,
        _dir: dir,
    }
}

/// Every node learns every node (as berthd does from the cluster state).
fn connect_all(nodes: &[&Node], extra: &[Member]) {
    let mut members: Vec<Member> = nodes
        .iter()
        .map(|n| Member {
            id: n.id.clone(),
            addr: n.transport.local_addr().unwrap(),
        })
        .collect();
    members.extend(extra.iter().cloned());
    for n in nodes {
        n.transport.members().set(members.clone());
    }
}

async fn read_blob(mirror: &Mirror, target: &UpstreamRepo, d: &Digest) -> Result<Vec<u8>, String> {
    let reply = mirror
        .blob(target, d, false)
        .await
        .map_err(|e| e.to_string())?;
    let mut body: std::pin::Pin<
        Box<dyn futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send>,
    > = match reply {
        BlobReply::Stored { file, size, pin } => {
            Box::pin(mirror.stored_body(file, d.clone(), 0, size, size, pin))
        }
        BlobReply::Streaming { flight, pin, .. } => Box::pin(flight.body(pin, |_| {})),
        BlobReply::Head { .. } => unreachable!(),
    };
    let mut out = Vec::new();
    while let Some(c) = body.next().await {
        out.extend_from_slice(&c.map_err(|e| e.to_string())?);
    }
    Ok(out)
}

/// Waits until the blob `d` is committed to `mirror`'s store (its last byte reaches
/// readers once verified; the rename into the store follows).
async fn stored(mirror: &Mirror, d: &Digest) -> bool {
    for _ in 0..200 {
        if mirror.blob_store().contains(d) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

fn blob_gets(reg: &FakeRegistry, d: &str) -> usize {
    reg.requests()
        .iter()
        .filter(|r| r.starts_with("GET ") && r.contains(&format!("/blobs/{d}")))
        .count()
}

fn image(seed: u8, size: usize) -> FakeImage {
    // Incompressible-ish content so the gzip'd layer stays about `size` bytes.
    let mut data = Vec::with_capacity(size);
    let mut x: u32 = 0x9e37_79b9 ^ seed as u32;
    for _ in 0..size {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        data.push(x as u8);
    }
    let tar = raw_tar(&[("data.bin", tar::EntryType::Regular, None, &data)]);
    FakeImage::from_layer_tar(&tar)
}

fn target(reg: &FakeRegistry) -> UpstreamRepo {
    UpstreamRepo {
        upstream: reg.addr.to_string(),
        repository: "team/big".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_mirrors_cold_fetching_one_blob_at_once_make_one_upstream_get() {
    let reg = FakeRegistry::start(FakeAuth::None);
    let img = image(1, 3 << 20);
    reg.add("team/big", "latest", &img, None);
    let ca = Ca::new();
    let nodes: Vec<Node> = (0..5)
        .map(|i| node(&format!("node{i}"), &ca, Duration::from_secs(300)))
        .collect();
    connect_all(&nodes.iter().collect::<Vec<_>>(), &[]);
    let t = target(&reg);
    let layer = Digest::parse(&sha256(&img.layer)).unwrap();

    // The tag first, everywhere at once: one manifest GET upstream.
    let latest = ManifestRef::Tag("latest".into());
    let manifests =
        futures::future::join_all(nodes.iter().map(|n| n.mirror.manifest(&t, &latest))).await;
    for m in manifests {
        assert_eq!(m.unwrap().body.as_ref(), img.manifest.as_slice());
    }
    let tag_gets = reg
        .requests()
        .iter()
        .filter(|r| r.starts_with("GET ") && r.contains("/manifests/latest"))
        .count();
    assert_eq!(tag_gets, 1, "{:?}", reg.requests());

    let bodies =
        futures::future::join_all(nodes.iter().map(|n| read_blob(&n.mirror, &t, &layer))).await;
    for (n, b) in nodes.iter().zip(bodies) {
        assert_eq!(Digest::of(&b.unwrap()), layer, "{}", n.id);
        assert!(stored(&n.mirror, &layer).await, "{} stored it", n.id);
    }
    assert_eq!(
        blob_gets(&reg, &layer.to_string()),
        1,
        "{:?}",
        reg.requests()
    );

    let members: Vec<Member> = nodes
        .iter()
        .map(|n| Member {
            id: n.id.clone(),
            addr: n.transport.local_addr().unwrap(),
        })
        .collect();
    let owner = rendezvous_order(&OwnerKey::Digest(layer.clone()), &members)[0]
        .id
        .clone();
    let tag_owner = rendezvous_order(
        &OwnerKey::Tag {
            target: t.clone(),
            tag: "latest".into(),
        },
        &members,
    )[0]
    .id
    .clone();
    let size = img.layer.len() as u64;
    let manifest = img.manifest.len() as u64;
    let (mut sent, mut received) = (0, 0);
    for n in &nodes {
        let text = n.mirror.render_metrics();
        assert!(text.contains("berth_mirror_peers 4\n"), "{}: {text}", n.id);
        let got = metric(&text, "berth_mirror_peer_bytes_total");
        let want =
            if n.id == owner { 0 } else { size } + if n.id == tag_owner { 0 } else { manifest };
        assert_eq!(got, want, "{}: {text}", n.id);
        let upstream = metric(&text, "berth_mirror_upstream_bytes_total");
        let want =
            if n.id == owner { size } else { 0 } + if n.id == tag_owner { manifest } else { 0 };
        assert_eq!(upstream, want, "{}: {text}", n.id);
        sent += metric(&text, "berth_mirror_peer_served_bytes_total");
        received += got;
    }
    assert_eq!(sent, received);
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} in {text}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_the_registry_down_a_tag_and_blobs_one_node_pulled_come_from_their_owners() {
    let reg = FakeRegistry::start(FakeAuth::None);
    let img = image(2, 256 << 10);
    reg.add("team/big", "latest", &img, None);
    let ca = Ca::new();
    // TTL 0: every tag request revalidates, so the owner must fall back to stale-if-error.
    let nodes: Vec<Node> = (0..3)
        .map(|i| node(&format!("n{i}"), &ca, Duration::ZERO))
        .collect();
    connect_all(&nodes.iter().collect::<Vec<_>>(), &[]);
    let t = target(&reg);
    let members: Vec<Member> = nodes
        .iter()
        .map(|n| Member {
            id: n.id.clone(),
            addr: n.transport.local_addr().unwrap(),
        })
        .collect();
    let tag_owner = rendezvous_order(
        &OwnerKey::Tag {
            target: t.clone(),
            tag: "latest".into(),
        },
        &members,
    )[0]
    .id
    .clone();
    // The first puller and the later one are both not the tag's owner.
    let others: Vec<&Node> = nodes.iter().filter(|n| n.id != tag_owner).collect();
    let (first, later) = (others[0], others[1]);

    let m = first
        .mirror
        .manifest(&t, &ManifestRef::Tag("latest".into()))
        .await
        .unwrap();
    let config = Digest::parse(&sha256(&img.config)).unwrap();
    let layer = Digest::parse(&sha256(&img.layer)).unwrap();
    for d in [&config, &layer] {
        read_blob(&first.mirror, &t, d).await.unwrap();
    }
    drop(reg); // the registry is gone: its port refuses connections

    // HEAD of a blob the registry cannot answer for, on a node that lacks it: a peer
    // that holds it answers.
    let lacking = nodes
        .iter()
        .find(|n| !n.mirror.blob_store().contains(&layer))
        .expect("3 nodes, 2 hold the layer at most");
    let BlobReply::Head { size } = lacking.mirror.blob(&t, &layer, true).await.unwrap() else {
        panic!("a HEAD is answered with a size");
    };
    assert_eq!(size, img.layer.len() as u64);
    // A HEAD of a blob no one holds: Distribution's 503 UNAVAILABLE, not a made-up size.
    let nobody = Digest::of(b"a blob no node holds");
    let e = later.mirror.blob(&t, &nobody, true).await.unwrap_err();
    assert_eq!(
        http::error_status(&e),
        (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE")
    );
    // tags/list: the tags the cluster resolved (`later` resolved none itself).
    let body = later.mirror.tags(&t).await.unwrap();
    let list: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(list["tags"], serde_json::json!(["latest"]), "{list}");
    assert_eq!(list["name"], serde_json::json!(t.display_name()), "{list}");

    let again = later
        .mirror
        .manifest(&t, &ManifestRef::Tag("latest".into()))
        .await
        .unwrap();
    assert_eq!(again.digest, m.digest);
    assert!(again.stale, "served from the owner's stale-if-error view");
    for d in [&config, &layer] {
        let b = read_blob(&later.mirror, &t, d).await.unwrap();
        assert_eq!(&Digest::of(&b), d);
    }
    // A tag nobody resolved is still an error, not a made-up answer.
    let unseen = later
        .mirror
        .manifest(&t, &ManifestRef::Tag("other".into()))
        .await;
    assert!(unseen.is_err());
}

/// A peer with a valid cluster certificate that answers every blob request with
/// `body(offset)` and then resets the stream when `cut` is set.
fn fake_peer(
    ca: &Ca,
    body: impl Fn(u64) -> Vec<u8> + Send + Sync + 'static,
    cut: bool,
) -> SocketAddr {
    let config = quic::server_config(&ca.identity()).unwrap();
    let ep = quinn::Endpoint::server(config, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = ep.local_addr().unwrap();
    let body = Arc::new(body);
    tokio::spawn(async move {
        while let Some(inc) = ep.accept().await {
            let Ok(conn) = inc.await else { continue };
            let body = body.clone();
            tokio::spawn(async move {
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    let mut len = [0u8; 4];
                    recv.read_exact(&mut len).await.unwrap();
                    let mut req = vec![0u8; u32::from_be_bytes(len) as usize];
                    recv.read_exact(&mut req).await.unwrap();
                    let PeerRequest::Blob { offset, .. } = serde_json::from_slice(&req).unwrap()
                    else {
                        continue;
                    };
                    let bytes = body(offset);
                    let h = serde_json::to_vec(&PeerReplyHeader {
                        status: "ok".into(),
                        size: None,
                        ..Default::default()
                    })
                    .unwrap();
                    send.write_all(&(h.len() as u32).to_be_bytes())
                        .await
                        .unwrap();
                    send.write_all(&h).await.unwrap();
                    let _ = send.write_all(&bytes).await;
                    if cut {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        let _ = send.reset(quinn::VarInt::from_u32(7));
                    } else {
                        let _ = send.finish();
                        let _ = send.stopped().await;
                    }
                }
            });
        }
    });
    addr
}

/// An id that ranks above `me` for `key`: the fake peer is asked first.
fn id_above(key: &OwnerKey, me: &Member) -> Member {
    (0..)
        .map(|i| Member {
            id: format!("peer-{i}"),
            addr: me.addr,
        })
        .find(|m| {
            let both = [m.clone(), me.clone()];
            rendezvous_order(key, &both)[0].id == m.id
        })
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_serving_wrong_bytes_is_refused_nothing_is_stored_and_it_is_not_asked_again() {
    let reg = FakeRegistry::start(FakeAuth::None);
    let img = image(3, 512 << 10);
    reg.add("team/big", "latest", &img, None);
    let ca = Ca::new();
    let me = node("me", &ca, Duration::from_secs(300));
    let layer = Digest::parse(&sha256(&img.layer)).unwrap();
    let size = img.layer.len();
    let liar_addr = fake_peer(&ca, move |_| vec![0x5a; size], false);
    let my = Member {
        id: me.id.clone(),
        addr: me.transport.local_addr().unwrap(),
    };
    let mut liar = id_above(&OwnerKey::Digest(layer.clone()), &my);
    liar.addr = liar_addr;
    me.transport.members().set(vec![my, liar]);
    let t = target(&reg);

    let first = read_blob(&me.mirror, &t, &layer).await;
    assert!(first.is_err(), "wrong bytes must not reach a client whole");
    assert!(!me.mirror.blob_store().contains(&layer));
    assert!(me.mirror.blob_store().partial_writes().unwrap().is_empty());
    assert_eq!(blob_gets(&reg, &layer.to_string()), 0);

    let second = read_blob(&me.mirror, &t, &layer).await.unwrap();
    assert_eq!(Digest::of(&second), layer);
    assert!(stored(&me.mirror, &layer).await);
    assert_eq!(blob_gets(&reg, &layer.to_string()), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_transfer_cut_mid_stream_resumes_upstream_from_where_it_stopped() {
    let reg = FakeRegistry::start(FakeAuth::None);
    let img = image(4, 1 << 20);
    reg.add("team/big", "latest", &img, None);
    let ca = Ca::new();
    let me = node("me", &ca, Duration::from_secs(300));
    let layer = Digest::parse(&sha256(&img.layer)).unwrap();
    let half = img.layer[..img.layer.len() / 2].to_vec();
    let cutter = fake_peer(&ca, move |off| half[off as usize..].to_vec(), true);
    let my = Member {
        id: me.id.clone(),
        addr: me.transport.local_addr().unwrap(),
    };
    let mut peer = id_above(&OwnerKey::Digest(layer.clone()), &my);
    peer.addr = cutter;
    me.transport.members().set(vec![my, peer]);
    let t = target(&reg);

    let body = read_blob(&me.mirror, &t, &layer).await.unwrap();
    assert_eq!(Digest::of(&body), layer);
    assert!(stored(&me.mirror, &layer).await);
    assert_eq!(blob_gets(&reg, &layer.to_string()), 1);
    let text = me.mirror.render_metrics();
    assert!(
        text.contains(&format!(
            "berth_mirror_peer_bytes_total {}",
            img.layer.len() / 2
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "berth_mirror_upstream_bytes_total {}",
            img.layer.len()
        )),
        "the fake registry ignores ranges: the whole blob came, the first half skipped: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cut_transfer_resumes_with_a_range_request_for_the_rest_only() {
    let reg = FakeRegistry::start(FakeAuth::None);
    reg.honour_ranges();
    let img = image(7, 1 << 20);
    reg.add("team/big", "latest", &img, None);
    let ca = Ca::new();
    let me = node("me", &ca, Duration::from_secs(300));
    let layer = Digest::parse(&sha256(&img.layer)).unwrap();
    let half = img.layer.len() / 2;
    let first = img.layer[..half].to_vec();
    let cutter = fake_peer(&ca, move |off| first[off as usize..].to_vec(), true);
    let my = Member {
        id: me.id.clone(),
        addr: me.transport.local_addr().unwrap(),
    };
    let mut peer = id_above(&OwnerKey::Digest(layer.clone()), &my);
    peer.addr = cutter;
    me.transport.members().set(vec![my, peer]);
    let t = target(&reg);

    let body = read_blob(&me.mirror, &t, &layer).await.unwrap();
    assert_eq!(Digest::of(&body), layer);
    assert!(stored(&me.mirror, &layer).await);
    assert_eq!(
        reg.ranges(),
        vec![format!("/v2/team/big/blobs/{layer} bytes={half}-")],
        "one GET of the rest, from where the cut left it"
    );
    let text = me.mirror.render_metrics();
    assert!(
        text.contains(&format!("berth_mirror_peer_bytes_total {half}\n")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "berth_mirror_upstream_bytes_total {}\n",
            img.layer.len() - half
        )),
        "only the second half came from the registry: {text}"
    );
    assert!(me.mirror.blob_store().partial_writes().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_cut_that_no_source_can_complete_stores_nothing() {
    // The only peer cuts the transfer half-way and the registry is gone: the fetch fails
    // and neither a blob nor a partial write is left behind as if complete.
    let reg = FakeRegistry::start(FakeAuth::None);
    let img = image(8, 1 << 20);
    reg.add("team/big", "latest", &img, None);
    let t = target(&reg);
    drop(reg);
    let ca = Ca::new();
    let me = node("me", &ca, Duration::from_secs(300));
    let layer = Digest::parse(&sha256(&img.layer)).unwrap();
    let first = img.layer[..img.layer.len() / 2].to_vec();
    let cutter = fake_peer(&ca, move |off| first[off as usize..].to_vec(), true);
    let my = Member {
        id: me.id.clone(),
        addr: me.transport.local_addr().unwrap(),
    };
    let mut peer = id_above(&OwnerKey::Digest(layer.clone()), &my);
    peer.addr = cutter;
    me.transport.members().set(vec![my, peer]);

    let got = read_blob(&me.mirror, &t, &layer).await;
    assert!(got.is_err(), "half a blob must not reach a client whole");
    // The body's error comes once the download has ended (its writer dropped).
    assert!(!me.mirror.blob_store().contains(&layer));
    assert!(me.mirror.blob_store().partial_writes().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_owner_that_is_down_is_skipped_for_the_next_source() {
    let reg = FakeRegistry::start(FakeAuth::None);
    let img = image(5, 64 << 10);
    reg.add("team/big", "latest", &img, None);
    let ca = Ca::new();
    let me = node("me", &ca, Duration::from_secs(300));
    let layer = Digest::parse(&sha256(&img.layer)).unwrap();
    // A UDP port nobody answers on.
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let my = Member {
        id: me.id.clone(),
        addr: me.transport.local_addr().unwrap(),
    };
    let mut down = id_above(&OwnerKey::Digest(layer.clone()), &my);
    down.addr = dead.local_addr().unwrap();
    me.transport.members().set(vec![my, down]);
    let body = read_blob(&me.mirror, &target(&reg), &layer).await.unwrap();
    assert_eq!(Digest::of(&body), layer);
    assert!(me
        .mirror
        .render_metrics()
        .contains("berth_mirror_peer_failures_total 1\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_without_a_cluster_certificate_are_refused() {
    let reg = FakeRegistry::start(FakeAuth::None);
    let img = image(6, 64 << 10);
    reg.add("team/big", "latest", &img, None);
    let ca = Ca::new();
    let server = node("server", &ca, Duration::from_secs(300));
    let layer = Digest::parse(&sha256(&img.layer)).unwrap();
    let addr = server.transport.local_addr().unwrap();
    let req = PeerRequest::Blob {
        upstream: reg.addr.to_string(),
        repository: "team/big".into(),
        digest: layer.to_string(),
        offset: 0,
    };

    // The same request from a member works.
    let member = node("member", &ca, Duration::from_secs(300));
    member.transport.members().set(vec![Member {
        id: "server".into(),
        addr,
    }]);
    let fetched = member
        .transport
        .fetch_blob(
            &Member {
                id: "server".into(),
                addr,
            },
            &target(&reg),
            &layer,
            0,
        )
        .await;
    assert!(fetched.is_ok());

    let other_ca = Ca::new();
    let strangers = [
        (
            "no certificate",
            quic::client_config(&ca.cert_der, None).unwrap(),
        ),
        (
            "a certificate from another CA",
            quic::client_config(
                &ca.cert_der,
                Some(&PeerIdentity {
                    ca_cert_der: ca.cert_der.clone(),
                    ..other_ca.identity()
                }),
            )
            .unwrap(),
        ),
    ];
    for (what, config) in strangers {
        let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        ep.set_default_client_config(config);
        let attempt = async {
            let conn = ep.connect(addr, SERVER_NAME)?.await?;
            let (mut send, mut recv) = conn.open_bi().await?;
            let body = serde_json::to_vec(&req)?;
            send.write_all(&(body.len() as u32).to_be_bytes()).await?;
            send.write_all(&body).await?;
            send.finish()?;
            let got = recv.read_to_end(1 << 20).await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(got)
        };
        let r = tokio::time::timeout(Duration::from_secs(10), attempt)
            .await
            .expect("the handshake ends one way or the other");
        assert!(r.is_err(), "{what}: got {} bytes", r.unwrap().len());
    }
    assert_eq!(
        blob_gets(&reg, &layer.to_string()),
        1,
        "only the member's request reached the registry"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_registry_that_accepts_and_never_answers_is_an_error_not_a_hang() {
    // A registry that accepts connections and then says nothing (a hung server, a
    // black-holing middlebox): HEADs, blobs and tag lists end in 503 UNAVAILABLE, a tag in
    // 404 MANIFEST_UNKNOWN, once the client's read timeout passes.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let held = Arc::new(std::sync::Mutex::new(Vec::new()));
    let h = held.clone();
    std::thread::spawn(move || {
        for c in silent.incoming().flatten() {
            h.lock().unwrap().push(c);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let client = RegistryClient::new(ClientConfig {
        read_timeout: Some(Duration::from_millis(500)),
        ..Default::default()
    })
    .unwrap();
    let blobs = BlobStore::open(dir.path().join("blobs")).unwrap();
    let mirror = Mirror::new(
        MirrorConfig::new(dir.path().join("mirror")),
        blobs,
        client,
        Arc::new(NoLocalImages),
    )
    .unwrap();
    let t = UpstreamRepo {
        upstream: addr.to_string(),
        repository: "team/app".into(),
    };
    let unavailable = (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE");
    let d = Digest::of(b"any");
    let e = mirror.blob(&t, &d, true).await.unwrap_err();
    assert_eq!(http::error_status(&e), unavailable, "HEAD blob: {e}");
    let e = mirror.blob(&t, &d, false).await.unwrap_err();
    assert_eq!(http::error_status(&e), unavailable, "GET blob: {e}");
    let e = mirror
        .manifest(&t, &ManifestRef::Tag("latest".into()))
        .await
        .unwrap_err();
    // A tag never resolved and a registry that cannot answer: 404 MANIFEST_UNKNOWN, as
    // for every tag the mirror cannot vouch for (clients then try the registry).
    assert_eq!(
        http::error_status(&e),
        (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"),
        "manifest: {e}"
    );
    assert!(e.to_string().contains("error sending request"), "{e}");
    let e = mirror.tags(&t).await.unwrap_err();
    assert_eq!(http::error_status(&e), unavailable, "tags: {e}");
    assert!(
        !held.lock().unwrap().is_empty(),
        "the requests reached the silent server"
    );
}

/// A minimal registry for one blob upload: `POST .../blobs/uploads/` answers 202 with a
/// Location, `PUT` reads its whole body, then answers 201. Anything else (a TLS probe)
/// closes the connection. Returns its address and the PUT bodies' sizes as they arrive.
fn slow_reader_registry() -> (SocketAddr, Arc<std::sync::Mutex<Vec<usize>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let puts = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = puts.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut w = conn;
                loop {
                    let mut head = Vec::new();
                    loop {
                        let mut line = String::new();
                        match r.read_line(&mut line) {
                            Ok(0) | Err(_) => return,
                            Ok(_) if line == "\r\n" => break,
                            Ok(_) => head.push(line),
                        }
                    }
                    let method = head.first().and_then(|l| l.split(' ').next());
                    let length: usize = head
                        .iter()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    let mut body = vec![0; length];
                    if r.read_exact(&mut body).is_err() {
                        return;
                    }
                    let reply = match method {
                        Some("POST") => "HTTP/1.1 202 Accepted\r\nLocation: /v2/team/app/blobs/uploads/u1\r\nContent-Length: 0\r\n\r\n",
                        Some("PUT") => {
                            seen.lock().unwrap().push(length);
                            "HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"
                        }
                        _ => return,
                    };
                    if w.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, puts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_time_out_but_an_upload_slower_than_the_read_timeout_goes_through() {
    let timeout = Duration::from_millis(300);
    let client = RegistryClient::new(ClientConfig {
        read_timeout: Some(timeout),
        ..Default::default()
    })
    .unwrap();

    // A registry that accepts and never answers: a pull's manifest request ends in an
    // error once the read timeout passes, it does not hang.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in silent.incoming().flatten() {
            held.push(c);
        }
    });
    let repo = |addr: SocketAddr| berth_registry_mirror::client::Repository {
        host: addr.to_string(),
        path: "team/app".into(),
        credentials: Default::default(),
    };
    let got = tokio::time::timeout(
        Duration::from_secs(20),
        client.get_manifest(&repo(silent_addr), "latest"),
    )
    .await
    .expect("a silent registry must fail the request, not hang it");
    assert!(got.is_err(), "a manifest from a silent registry");

    // An upload whose body takes 4 read timeouts to send, to a registry that answers once
    // it has all of it: not cut by the read timeout.
    let (addr, puts) = slow_reader_registry();
    let chunk = 64 * 1024;
    let body = move || {
        reqwest::Body::wrap_stream(futures::stream::unfold(0, move |i| async move {
            if i == 4 {
                return None;
            }
            tokio::time::sleep(timeout).await;
            Some((Ok::<_, std::io::Error>(vec![b'x'; chunk]), i + 1))
        }))
    };
    let digest = Digest::of(&vec![b'x'; 4 * chunk]);
    client
        .upload_blob(&repo(addr), &digest, 4 * chunk as u64, &body)
        .await
        .expect("an upload slower than the read timeout");
    assert_eq!(*puts.lock().unwrap(), vec![4 * chunk]);
}

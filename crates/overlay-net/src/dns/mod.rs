//! Embedded DNS for user-defined networks: container names, aliases and short ids resolve
//! to their addresses on that network; other names are forwarded to the host's resolvers.
//!
//! Owns: [`DnsRecords`] and [`records_for`] (pure: which names a network answers),
//! [`answer`] (pure: a query packet in, a reply packet or "forward" out), [`DnsServer`]
//! (one UDP+TCP server on a network's gateway address, port 53), and [`DnsServers`] (starts,
//! updates and stops one server per user-defined network from the desired state).
//!
//! Does not own: the container's `/etc/resolv.conf` (render it with
//! [`crate::netfiles::render_resolv_conf`] and `embedded_dns: Some(gateway)`).
//!
//! ```text
//!  container ─udp/tcp─> gateway:53 (host netns, DnsServer) ── answer(query, records)
//!                                            │ local name: reply A records
//!                                            └ otherwise: relay to host upstreams
//! ```
//!
//! Decision: the server listens on the bridge's gateway address in the host namespace (as
//! podman's aardvark-dns does) rather than on 127.0.0.11 inside every container (Docker):
//! one socket per network instead of one per container, no per-container NAT rules, and it
//! can forward to a loopback resolver of the host (systemd-resolved, dnsmasq). The default
//! `bridge` network gets no embedded DNS, as in Docker. UDP and TCP (queries forwarded over
//! the transport they came in on, so truncated UDP answers can be retried over TCP).

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

use crate::error::{NetError, Result};
use crate::state::NetState;

/// How long a TCP client may stay idle between queries.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// TTL of local answers, in seconds.
const LOCAL_TTL: u32 = 600;
const TYPE_A: u16 = 1;
const CLASS_IN: u16 = 1;
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// Names one network answers: lower-case name (no trailing dot) to addresses; and, for
/// containers started with `--dns`, where their other queries go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsRecords {
    /// Name to addresses.
    pub names: BTreeMap<String, Vec<Ipv4Addr>>,
    /// Container address to its own upstream resolvers (`--dns`, port 53), used instead
    /// of the server's (the host's) for queries from that address.
    pub upstreams: BTreeMap<Ipv4Addr, Vec<SocketAddr>>,
    /// The network's subnet: queries from any other address (a container of another
    /// network reaching this server's gateway address through the host) are refused
    /// (REFUSED), as Docker's per-container 127.0.0.11 answers only for that container's
    /// own networks. `None`: every client is answered.
    pub clients: Option<crate::ipam::Ipv4Net>,
    /// Client address to the names of the client's OTHER networks (a container on
    /// several networks asks one server, the one its resolv.conf names, and resolves the
    /// names of all its networks, as with Docker's per-container resolver). Looked up
    /// after [`DnsRecords::names`].
    pub neighbours: BTreeMap<Ipv4Addr, BTreeMap<String, Vec<Ipv4Addr>>>,
}

impl DnsRecords {
    /// Whether a query from `client` is this network's to answer ([`DnsRecords::clients`]).
    pub fn serves(&self, client: std::net::IpAddr) -> bool {
        match (self.clients, client) {
            (None, _) => true,
            (Some(net), std::net::IpAddr::V4(ip)) => net.contains(ip),
            (Some(_), std::net::IpAddr::V6(_)) => false,
        }
    }

    fn add(&mut self, name: &str, ip: Ipv4Addr) {
        let key = name.trim_end_matches('.').to_ascii_lowercase();
        if key.is_empty() {
            return;
        }
        let ips = self.names.entry(key).or_default();
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }

    /// The upstream resolvers of the container at `client`, if it has its own.
    pub fn upstreams_for(&self, client: std::net::IpAddr) -> Option<&[SocketAddr]> {
        match client {
            std::net::IpAddr::V4(ip) => self.upstreams.get(&ip).map(Vec::as_slice),
            std::net::IpAddr::V6(_) => None,
        }
    }

    /// Addresses for a name (case-insensitive, trailing dot ignored).
    pub fn lookup(&self, name: &str) -> Option<&[Ipv4Addr]> {
        self.names
            .get(&name.trim_end_matches('.').to_ascii_lowercase())
            .map(Vec::as_slice)
    }

    /// Addresses for a name as `client` sees them: this network's names, then those of
    /// the client's other networks ([`DnsRecords::neighbours`]).
    pub fn lookup_for(&self, name: &str, client: Option<std::net::IpAddr>) -> Option<&[Ipv4Addr]> {
        self.lookup(name).or_else(|| {
            let std::net::IpAddr::V4(ip) = client? else {
                return None;
            };
            self.neighbours
                .get(&ip)?
                .get(&name.trim_end_matches('.').to_ascii_lowercase())
                .map(Vec::as_slice)
        })
    }

    /// Gives each client with endpoints on other networks the names of those networks
    /// ([`DnsRecords::neighbours`]): `clients` pairs a client's address on this network
    /// with the records of its other networks.
    pub fn add_neighbours<'a>(
        &mut self,
        clients: impl IntoIterator<Item = (Ipv4Addr, Vec<&'a DnsRecords>)>,
    ) {
        for (client, others) in clients {
            let mut names: BTreeMap<String, Vec<Ipv4Addr>> = BTreeMap::new();
            for other in others {
                for (name, ips) in &other.names {
                    let e = names.entry(name.clone()).or_default();
                    for ip in ips {
                        if !e.contains(ip) {
                            e.push(*ip);
                        }
                    }
                }
            }
            if !names.is_empty() {
                self.neighbours.insert(client, names);
            }
        }
    }
}

/// The records of one network: each attached container's name (also as
/// `<name>.<network name>`, as Docker answers), its aliases on this network and its
/// 12-character short id.
pub fn records_for(state: &NetState, network_id: &str) -> DnsRecords {
    let mut r = DnsRecords {
        clients: state.networks.get(network_id).map(|n| n.pool.subnet),
        ..DnsRecords::default()
    };
    let net_name = state.networks.get(network_id).map(|n| n.name.as_str());
    for ep in state.endpoints_of(network_id) {
        r.add(&ep.container_name, ep.address);
        if let Some(net) = net_name {
            r.add(&format!("{}.{net}", ep.container_name), ep.address);
        }
        for alias in &ep.aliases {
            r.add(alias, ep.address);
        }
        r.add(
            &ep.container_id[..ep.container_id.len().min(12)],
            ep.address,
        );
        if !ep.dns_servers.is_empty() {
            r.upstreams.insert(
                ep.address,
                ep.dns_servers
                    .iter()
                    .map(|ip| SocketAddr::new(*ip, 53))
                    .collect(),
            );
        }
    }
    r
}

/// [`records_for`] of every user-defined network, each with its clients' other networks'
/// names ([`DnsRecords::neighbours`]): by network id.
pub fn records_with_neighbours(state: &NetState) -> BTreeMap<String, DnsRecords> {
    let own: BTreeMap<String, DnsRecords> = state
        .networks
        .values()
        .filter(|n| !n.is_default)
        .map(|n| (n.id.clone(), records_for(state, &n.id)))
        .collect();
    // Each container's networks, gathered once.
    let mut networks_of: HashMap<&str, Vec<&str>> = HashMap::new();
    for ep in state.endpoints.values() {
        networks_of
            .entry(ep.container_id.as_str())
            .or_default()
            .push(ep.network_id.as_str());
    }
    let mut out = BTreeMap::new();
    for (id, records) in &own {
        let mut r = records.clone();
        r.add_neighbours(state.endpoints_of(id).map(|ep| {
            let others = networks_of[ep.container_id.as_str()]
                .iter()
                .filter(|n| **n != id.as_str())
                .filter_map(|n| own.get(*n))
                .collect();
            (ep.address, others)
        }));
        out.insert(id.clone(), r);
    }
    out
}

/// The resolvers a forwarded query from `client` goes to: the container's own (`--dns`)
/// when it has some, else the server's.
fn upstreams_of(
    records: &RwLock<DnsRecords>,
    client: std::net::IpAddr,
    default: &Arc<Vec<SocketAddr>>,
) -> Arc<Vec<SocketAddr>> {
    let records = records.read().unwrap_or_else(|e| e.into_inner());
    match records.upstreams_for(client) {
        Some(own) => Arc::new(own.to_vec()),
        None => default.clone(),
    }
}

/// What to do with a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsDecision {
    /// Send this reply to the client.
    Reply(Vec<u8>),
    /// Not a local name: relay the query to an upstream resolver.
    Forward,
    /// Not a parseable query: ignore it.
    Drop,
    /// A client outside the network ([`DnsRecords::clients`]): answer REFUSED.
    Refuse,
}

struct Question {
    name: String,
    qtype: u16,
    qclass: u16,
    /// Offset just past the question.
    end: usize,
}

fn parse_question(packet: &[u8]) -> Option<Question> {
    if packet.len() < 12 {
        return None;
    }
    let flags = u16::from_be_bytes([packet[2], packet[3]]);
    let qdcount = u16::from_be_bytes([packet[4], packet[5]]);
    // Only standard queries (QR=0, opcode 0) with exactly one question.
    if flags & 0x8000 != 0 || (flags >> 11) & 0xf != 0 || qdcount != 1 {
        return None;
    }
    let mut pos = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*packet.get(pos)?);
        pos += 1;
        if len == 0 {
            break;
        }
        if len & 0xc0 != 0 {
            return None; // compression in a question: not from a sane stub resolver
        }
        let label = packet.get(pos..pos + len)?;
        labels.push(String::from_utf8_lossy(label).into_owned());
        pos += len;
    }
    let qtype = u16::from_be_bytes([*packet.get(pos)?, *packet.get(pos + 1)?]);
    let qclass = u16::from_be_bytes([*packet.get(pos + 2)?, *packet.get(pos + 3)?]);
    Some(Question {
        name: labels.join("."),
        qtype,
        qclass,
        end: pos + 4,
    })
}

/// Decides how to answer one query packet (pure).
///
/// A local name gets an authoritative reply: its A records for an A query, no records
/// (NOERROR) for any other type, so clients do not go looking elsewhere. Anything else is
/// forwarded. `client`: the asking address, whose other networks' names count too
/// ([`DnsRecords::lookup_for`]).
pub fn answer(query: &[u8], records: &DnsRecords, client: Option<std::net::IpAddr>) -> DnsDecision {
    let Some(q) = parse_question(query) else {
        return DnsDecision::Drop;
    };
    let Some(ips) = records.lookup_for(&q.name, client) else {
        return DnsDecision::Forward;
    };
    let mut ips: Vec<Ipv4Addr> = if q.qtype == TYPE_A && q.qclass == CLASS_IN {
        ips.to_vec()
    } else {
        Vec::new()
    };
    // A fresh order per answer, as libnetwork's resolver shuffles (`shuffleAddr`): clients
    // take the first address, so `--endpoint-mode dnsrr` and `tasks.<service>` spread
    // their connections over the tasks.
    rand::seq::SliceRandom::shuffle(ips.as_mut_slice(), &mut rand::thread_rng());
    let mut out = Vec::with_capacity(q.end + ips.len() * 16);
    out.extend_from_slice(&query[0..2]); // id
    let rd = query[2] & 0x01;
    out.push(0x84 | rd); // QR=1, opcode 0, AA=1, RD copied
    out.push(0x80); // RA=1, rcode NOERROR
    out.extend_from_slice(&1u16.to_be_bytes()); // qdcount
    out.extend_from_slice(&(ips.len() as u16).to_be_bytes()); // ancount
    out.extend_from_slice(&0u16.to_be_bytes()); // nscount
    out.extend_from_slice(&0u16.to_be_bytes()); // arcount
    out.extend_from_slice(&query[12..q.end]);
    for ip in &ips {
        out.extend_from_slice(&[0xc0, 0x0c]); // pointer to the question's name
        out.extend_from_slice(&TYPE_A.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&LOCAL_TTL.to_be_bytes());
        out.extend_from_slice(&4u16.to_be_bytes());
        out.extend_from_slice(&ip.octets());
    }
    DnsDecision::Reply(out)
}

/// The REFUSED answer (RFC 1035 §4.1.1, RCODE 5) to `query`: its id and question, no
/// records. `None` for a message too short to be a query.
fn refused(query: &[u8]) -> Option<Vec<u8>> {
    if query.len() < 12 || query[2] & 0x80 != 0 {
        return None;
    }
    let mut out = query.to_vec();
    out[2] = 0x80 | (query[2] & 0x79); // QR=1, opcode and RD kept, AA and TC off
    out[3] = 0x80 | 5; // RA=1, RCODE REFUSED
    out[6..12].fill(0); // no answer, authority or additional records
    Some(out)
}

/// One DNS server (UDP and TCP on the same port) for one network. Stops when dropped.
#[derive(Debug)]
pub struct DnsServer {
    records: Arc<RwLock<DnsRecords>>,
    local: SocketAddr,
    udp_task: JoinHandle<()>,
    tcp_task: JoinHandle<()>,
}

impl DnsServer {
    /// Binds `addr` (a gateway address, port 53) for UDP and TCP in the calling thread's
    /// namespace and serves. Must be called inside a tokio runtime.
    pub async fn bind(addr: SocketAddrV4, upstreams: Vec<SocketAddr>) -> Result<Self> {
        let socket = UdpSocket::bind(addr)
            .await
            .map_err(|source| NetError::DnsBind { addr, source })?;
        let local = socket
            .local_addr()
            .map_err(|source| NetError::DnsBind { addr, source })?;
        let tcp_addr = SocketAddrV4::new(*addr.ip(), local.port());
        let listener = TcpListener::bind(tcp_addr)
            .await
            .map_err(|source| NetError::DnsBind {
                addr: tcp_addr,
                source,
            })?;
        let records = Arc::new(RwLock::new(DnsRecords::default()));
        let upstreams = Arc::new(upstreams);
        let udp_task = tokio::spawn(serve(Arc::new(socket), records.clone(), upstreams.clone()));
        let tcp_task = tokio::spawn(serve_tcp(listener, records.clone(), upstreams));
        Ok(DnsServer {
            records,
            local,
            udp_task,
            tcp_task,
        })
    }

    /// Replaces the names this server answers.
    pub fn set_records(&self, records: DnsRecords) {
        *self.records.write().unwrap_or_else(|e| e.into_inner()) = records;
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.udp_task.abort();
        self.tcp_task.abort();
    }
}

async fn serve_tcp(
    listener: TcpListener,
    records: Arc<RwLock<DnsRecords>>,
    upstreams: Arc<Vec<SocketAddr>>,
) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "embedded DNS accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        tokio::spawn(serve_tcp_client(stream, records.clone(), upstreams.clone()));
    }
}

/// Reads one length-prefixed DNS message (RFC 1035 4.2.2).
async fn read_framed(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let len = tokio::time::timeout(TCP_IDLE, stream.read_u16())
        .await
        .ok()?
        .ok()?;
    let mut msg = vec![0u8; usize::from(len)];
    tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut msg))
        .await
        .ok()?
        .ok()?;
    Some(msg)
}

async fn write_framed(stream: &mut TcpStream, msg: &[u8]) -> Option<()> {
    let len = u16::try_from(msg.len()).ok()?;
    stream.write_u16(len).await.ok()?;
    stream.write_all(msg).await.ok()
}

async fn serve_tcp_client(
    mut stream: TcpStream,
    records: Arc<RwLock<DnsRecords>>,
    upstreams: Arc<Vec<SocketAddr>>,
) {
    let client = stream.peer_addr().ok().map(|a| a.ip());
    while let Some(query) = read_framed(&mut stream).await {
        let decision = {
            let r = records.read().unwrap_or_else(|e| e.into_inner());
            if !client.is_some_and(|c| r.serves(c)) {
                DnsDecision::Refuse
            } else {
                answer(&query, &r, client)
            }
        };
        let reply = match decision {
            DnsDecision::Reply(reply) => reply,
            DnsDecision::Forward => match forward_tcp(
                &query,
                &client.map_or(upstreams.clone(), |c| upstreams_of(&records, c, &upstreams)),
            )
            .await
            {
                Some(reply) => reply,
                None => return,
            },
            DnsDecision::Refuse => match refused(&query) {
                Some(reply) => reply,
                None => return,
            },
            DnsDecision::Drop => return,
        };
        if write_framed(&mut stream, &reply).await.is_none() {
            return;
        }
    }
}

/// Relays a query over TCP to each upstream in turn until one answers (large answers
/// that UDP truncated).
async fn forward_tcp(query: &[u8], upstreams: &[SocketAddr]) -> Option<Vec<u8>> {
    for upstream in upstreams {
        let attempt = async {
            let mut s = TcpStream::connect(upstream).await.ok()?;
            write_framed(&mut s, query).await?;
            read_framed(&mut s).await
        };
        if let Ok(Some(reply)) = tokio::time::timeout(UPSTREAM_TIMEOUT, attempt).await {
            return Some(reply);
        }
    }
    None
}

async fn serve(
    socket: Arc<UdpSocket>,
    records: Arc<RwLock<DnsRecords>>,
    upstreams: Arc<Vec<SocketAddr>>,
) {
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, client) = match socket.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "embedded DNS receive failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let query = buf[..n].to_vec();
        let decision = {
            let r = records.read().unwrap_or_else(|e| e.into_inner());
            if r.serves(client.ip()) {
                answer(&query, &r, Some(client.ip()))
            } else {
                DnsDecision::Refuse
            }
        };
        match decision {
            DnsDecision::Reply(reply) => {
                let _ = socket.send_to(&reply, client).await;
            }
            DnsDecision::Forward => {
                let socket = socket.clone();
                let upstreams = upstreams_of(&records, client.ip(), &upstreams);
                tokio::spawn(async move {
                    if let Some(reply) = forward(&query, &upstreams).await {
                        let _ = socket.send_to(&reply, client).await;
                    }
                });
            }
            DnsDecision::Refuse => {
                if let Some(reply) = refused(&query) {
                    let _ = socket.send_to(&reply, client).await;
                }
            }
            DnsDecision::Drop => {}
        }
    }
}

/// Relays a query to each upstream in turn until one answers.
async fn forward(query: &[u8], upstreams: &[SocketAddr]) -> Option<Vec<u8>> {
    for upstream in upstreams {
        let bind: SocketAddr = if upstream.is_ipv4() {
            "0.0.0.0:0".parse().ok()?
        } else {
            "[::]:0".parse().ok()?
        };
        let Ok(sock) = UdpSocket::bind(bind).await else {
            continue;
        };
        if sock.send_to(query, upstream).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; 4096];
        loop {
            match tokio::time::timeout(UPSTREAM_TIMEOUT, sock.recv_from(&mut buf)).await {
                Ok(Ok((n, from))) if from == *upstream && n >= 2 && buf[..2] == query[..2] => {
                    return Some(buf[..n].to_vec())
                }
                Ok(Ok(_)) => continue, // stray datagram
                _ => break,            // timeout or error: next upstream
            }
        }
    }
    None
}

/// One [`DnsServer`] per user-defined network, kept in line with the desired state.
#[derive(Debug, Default)]
pub struct DnsServers {
    servers: HashMap<String, DnsServer>,
}

impl DnsServers {
    /// Starts servers for new user-defined networks (on `gateway:53`), stops those of
    /// removed networks, and refreshes every server's records. Call after each change of
    /// the driver's state. Returns every bind error (other networks are still served).
    pub async fn sync(&mut self, state: &NetState, upstreams: &[SocketAddr]) -> Vec<NetError> {
        self.servers
            .retain(|id, _| state.networks.get(id).is_some_and(|n| !n.is_default));
        let mut errors = Vec::new();
        // Internal networks too: their bridge has the gateway address (dockerd's embedded
        // DNS answers on internal networks as well).
        for net in state.networks.values().filter(|n| !n.is_default) {
            if !self.servers.contains_key(&net.id) {
                match DnsServer::bind(SocketAddrV4::new(net.pool.gateway, 53), upstreams.to_vec())
                    .await
                {
                    Ok(server) => {
                        self.servers.insert(net.id.clone(), server);
                    }
                    Err(e) => {
                        errors.push(e);
                        continue;
                    }
                }
            }
        }
        for (id, records) in records_with_neighbours(state) {
            if let Some(server) = self.servers.get(&id) {
                server.set_records(records);
            }
        }
        errors
    }

    /// The server of a network, if running.
    pub fn get(&self, network_id: &str) -> Option<&DnsServer> {
        self.servers.get(network_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a query the way a stub resolver does.
    pub(crate) fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
        let mut q = Vec::new();
        q.extend_from_slice(&id.to_be_bytes());
        q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        for label in name.split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&CLASS_IN.to_be_bytes());
        q
    }

    fn records() -> DnsRecords {
        let mut r = DnsRecords::default();
        r.add("web", Ipv4Addr::new(10, 1, 0, 2));
        r.add("Db.", Ipv4Addr::new(10, 1, 0, 3));
        r
    }

    #[test]
    fn answers_local_names_with_a_records() {
        let q = query(0xbeef, "WEB", TYPE_A);
        let DnsDecision::Reply(r) = answer(&q, &records(), None) else {
            panic!("expected a reply")
        };
        assert_eq!(&r[0..2], &[0xbe, 0xef]);
        assert_eq!(r[2] & 0x80, 0x80, "QR");
        assert_eq!(r[2] & 0x01, 0x01, "RD copied");
        assert_eq!(r[3] & 0x0f, 0, "NOERROR");
        assert_eq!(u16::from_be_bytes([r[6], r[7]]), 1, "one answer");
        assert_eq!(&r[12..q.len()], &q[12..]);
        assert_eq!(&r[r.len() - 4..], &[10, 1, 0, 2]);
        assert_eq!(&r[q.len()..q.len() + 2], &[0xc0, 0x0c]);
    }

    #[test]
    fn answers_with_several_addresses_come_in_a_fresh_order() {
        let mut r = DnsRecords::default();
        let ips: Vec<Ipv4Addr> = (2..6).map(|i| Ipv4Addr::new(10, 0, 9, i)).collect();
        for ip in &ips {
            r.add("tasks.web", *ip);
        }
        let mut orders = std::collections::BTreeSet::new();
        for id in 0..50 {
            let DnsDecision::Reply(out) = answer(&query(id, "tasks.web", TYPE_A), &r, None) else {
                panic!("not answered locally");
            };
            let got: Vec<[u8; 4]> = out[out.len() - 16 * ips.len()..]
                .chunks(16)
                .map(|rr| rr[12..16].try_into().unwrap())
                .collect();
            let mut sorted = got.clone();
            sorted.sort();
            assert_eq!(sorted, ips.iter().map(|i| i.octets()).collect::<Vec<_>>());
            orders.insert(got);
        }
        assert!(orders.len() > 1, "always the same order: {orders:?}");
    }

    #[test]
    fn other_types_of_local_names_get_an_empty_answer() {
        let DnsDecision::Reply(r) = answer(&query(1, "db", 28), &records(), None) else {
            panic!("expected a reply")
        };
        assert_eq!(u16::from_be_bytes([r[6], r[7]]), 0);
        assert_eq!(r[3] & 0x0f, 0);
    }

    #[test]
    fn unknown_names_are_forwarded_and_garbage_dropped() {
        assert_eq!(
            answer(&query(1, "example.org", TYPE_A), &records(), None),
            DnsDecision::Forward
        );
        assert_eq!(answer(&[0u8; 5], &records(), None), DnsDecision::Drop);
        let mut response = query(1, "web", TYPE_A);
        response[2] |= 0x80;
        assert_eq!(answer(&response, &records(), None), DnsDecision::Drop);
        let truncated = &query(1, "web", TYPE_A)[..15];
        assert_eq!(answer(truncated, &records(), None), DnsDecision::Drop);
    }

    #[test]
    fn records_cover_names_aliases_and_short_ids_of_one_network() {
        use crate::ipam::AddressPool;
        use crate::state::{Endpoint, Network};
        let mut s = NetState::default();
        for id in ["n1", "n2"] {
            s.networks.insert(
                id.into(),
                Network {
                    id: id.into(),
                    name: id.into(),
                    bridge: format!("br-{id}"),
                    pool: AddressPool::new("10.1.0.0/24".parse().unwrap(), None).unwrap(),
                    is_default: false,
                    internal: false,
                    mtu: None,
                    icc: true,
                },
            );
        }
        let ep = |id: &str, net: &str, name: &str, ip: [u8; 4]| Endpoint {
            id: id.into(),
            container_id: format!("{id}0123456789abcdef"),
            container_name: name.into(),
            aliases: vec![format!("{name}-alias")],
            network_id: net.into(),
            netns: "/x".into(),
            netns_inode: None,
            ifname: "eth0".into(),
            default_route: true,
            host_veth: "v".into(),
            address: ip.into(),
            ports: vec![],
            dns_servers: if name == "web" {
                vec!["192.0.2.53".parse().unwrap()]
            } else {
                vec![]
            },
        };
        s.endpoints
            .insert("e1".into(), ep("e1", "n1", "web", [10, 1, 0, 2]));
        s.endpoints
            .insert("e2".into(), ep("e2", "n2", "db", [10, 1, 0, 3]));
        let r = records_for(&s, "n1");
        assert_eq!(r.lookup("web"), Some(&[Ipv4Addr::new(10, 1, 0, 2)][..]));
        assert_eq!(
            r.lookup("web-alias."),
            Some(&[Ipv4Addr::new(10, 1, 0, 2)][..])
        );
        assert_eq!(
            r.lookup("e10123456789"),
            Some(&[Ipv4Addr::new(10, 1, 0, 2)][..])
        );
        assert_eq!(r.lookup("web.n1"), Some(&[Ipv4Addr::new(10, 1, 0, 2)][..]));
        assert_eq!(r.lookup("db"), None, "names of other networks leak");
        assert_eq!(
            r.upstreams_for(Ipv4Addr::new(10, 1, 0, 2).into()),
            Some(&["192.0.2.53:53".parse().unwrap()][..]),
            "web's --dns servers"
        );
        assert_eq!(r.upstreams_for(Ipv4Addr::new(10, 1, 0, 3).into()), None);

        // "app" is on both networks (a front/back layout): asking n1's server, it resolves
        // n2's "db" too; "web", on n1 only, still does not.
        let mut app1 = ep("e3", "n1", "app", [10, 1, 0, 4]);
        app1.container_id = "app0123456789abcdef".into();
        let mut app2 = ep("e4", "n2", "app", [10, 1, 0, 5]);
        app2.container_id = app1.container_id.clone();
        s.endpoints.insert("e3".into(), app1);
        s.endpoints.insert("e4".into(), app2);
        let all = records_with_neighbours(&s);
        let n1 = &all["n1"];
        let db = Some(&[Ipv4Addr::new(10, 1, 0, 3)][..]);
        assert_eq!(
            n1.lookup_for("db", Some(Ipv4Addr::new(10, 1, 0, 4).into())),
            db
        );
        assert_eq!(
            n1.lookup_for("db", Some(Ipv4Addr::new(10, 1, 0, 2).into())),
            None
        );
        assert_eq!(n1.lookup_for("db", None), None);
        assert_eq!(
            all["n2"].lookup_for("web", Some(Ipv4Addr::new(10, 1, 0, 5).into())),
            Some(&[Ipv4Addr::new(10, 1, 0, 2)][..])
        );
    }

    #[tokio::test]
    async fn clients_outside_the_network_are_refused() {
        let server = DnsServer::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0), vec![])
            .await
            .unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let ask = |id| {
            let q = query(id, "web", TYPE_A);
            let (client, server) = (&client, server.local_addr());
            async move {
                client.send_to(&q, server).await.unwrap();
                let mut buf = [0u8; 512];
                let (n, _) =
                    tokio::time::timeout(Duration::from_secs(2), client.recv_from(&mut buf))
                        .await
                        .unwrap()
                        .unwrap();
                buf[..n].to_vec()
            }
        };
        // Another network's subnet: REFUSED, no answer records, the question echoed.
        let mut r = records();
        r.clients = Some("10.1.0.0/24".parse().unwrap());
        server.set_records(r.clone());
        let reply = ask(3).await;
        assert_eq!(&reply[0..2], &3u16.to_be_bytes());
        assert_eq!(reply[3] & 0x0f, 5, "RCODE REFUSED");
        assert_eq!(&reply[6..8], &[0, 0], "no answers");
        // The client's own network: answered.
        r.clients = Some("127.0.0.0/8".parse().unwrap());
        server.set_records(r);
        let reply = ask(4).await;
        assert_eq!(reply[3] & 0x0f, 0);
        assert_eq!(&reply[reply.len() - 4..], &[10, 1, 0, 2]);
    }

    #[tokio::test]
    async fn server_answers_locally_and_forwards_the_rest() {
        // A fake upstream on loopback that answers every query with its own id and a
        // marker byte.
        let upstream = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let upstream_addr = upstream.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = upstream.recv_from(&mut buf).await {
                let mut reply = buf[..n].to_vec();
                reply[2] |= 0x80;
                reply.push(0x42);
                let _ = upstream.send_to(&reply, from).await;
            }
        });
        let server = DnsServer::bind(
            SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0),
            vec![upstream_addr],
        )
        .await
        .unwrap();
        server.set_records(records());
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut buf = [0u8; 512];

        client
            .send_to(&query(7, "web", TYPE_A), server.local_addr())
            .await
            .unwrap();
        let (n, _) = tokio::time::timeout(Duration::from_secs(2), client.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[n - 4..n], &[10, 1, 0, 2]);

        client
            .send_to(&query(8, "example.org", TYPE_A), server.local_addr())
            .await
            .unwrap();
        let (n, _) = tokio::time::timeout(Duration::from_secs(3), client.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[0..2], &8u16.to_be_bytes());
        assert_eq!(buf[n - 1], 0x42, "not the upstream's reply");
    }

    /// A fake UDP upstream on loopback answering every query with a marker byte appended.
    async fn marking_upstream(marker: u8) -> SocketAddr {
        let upstream = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = upstream.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = upstream.recv_from(&mut buf).await {
                let mut reply = buf[..n].to_vec();
                reply[2] |= 0x80;
                reply.push(marker);
                let _ = upstream.send_to(&reply, from).await;
            }
        });
        addr
    }

    /// Sends a query for a non-local name to `server` from 127.0.0.1; the reply's last byte.
    async fn ask(server: SocketAddr, id: u16) -> u8 {
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client
            .send_to(&query(id, "example.org", TYPE_A), server)
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let (n, _) = tokio::time::timeout(Duration::from_secs(3), client.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        buf[n - 1]
    }

    #[tokio::test]
    async fn a_container_with_its_own_dns_servers_is_forwarded_to_them() {
        let host = marking_upstream(0x41).await;
        let own = marking_upstream(0x42).await;
        let server = DnsServer::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0), vec![host])
            .await
            .unwrap();
        server.set_records(records());
        assert_eq!(
            ask(server.local_addr(), 11).await,
            0x41,
            "no --dns: the host's resolvers"
        );
        // The client (127.0.0.1 here) is a container started with --dns.
        let mut r = records();
        r.upstreams.insert(Ipv4Addr::LOCALHOST, vec![own]);
        server.set_records(r);
        assert_eq!(
            ask(server.local_addr(), 12).await,
            0x42,
            "--dns: the container's own resolvers"
        );
    }

    #[tokio::test]
    async fn tcp_queries_are_answered_and_forwarded_over_tcp() {
        // A fake TCP upstream answering with the query plus a marker byte.
        let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream_addr = upstream.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = upstream.accept().await {
                tokio::spawn(async move {
                    while let Some(mut q) = read_framed(&mut s).await {
                        q[2] |= 0x80;
                        q.push(0x43);
                        if write_framed(&mut s, &q).await.is_none() {
                            break;
                        }
                    }
                });
            }
        });
        let server = DnsServer::bind(
            SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0),
            vec![upstream_addr],
        )
        .await
        .unwrap();
        server.set_records(records());
        let mut client = TcpStream::connect(server.local_addr()).await.unwrap();
        // Two queries on one connection: one local, one forwarded.
        write_framed(&mut client, &query(9, "db", TYPE_A))
            .await
            .unwrap();
        let r = tokio::time::timeout(Duration::from_secs(2), read_framed(&mut client))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&r[r.len() - 4..], &[10, 1, 0, 3]);
        write_framed(&mut client, &query(10, "example.org", TYPE_A))
            .await
            .unwrap();
        let r = tokio::time::timeout(Duration::from_secs(3), read_framed(&mut client))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&r[0..2], &10u16.to_be_bytes());
        assert_eq!(r[r.len() - 1], 0x43, "not the upstream's TCP reply");
    }
}

//! The WireGuard cross-platform userspace API (UAPI) text protocol, as data: requests to
//! send and the parser of `get=1` answers. Source: wireguard.com/xplatform ("Cross-platform
//! Userspace Implementation", Configuration Protocol): `key=value` lines, keys in hex, a
//! request ends with an empty line, the answer ends with `errno=N` and an empty line.
//!
//! Each request carries at most one peer section (boringtun 0.7 keeps the `remove` flag
//! of one peer section for the next, so several peers in one request are unsafe).

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::{PeerOp, WgPublicKey};

/// `get=1`: asks for the device's configuration and statistics.
pub const GET_REQUEST: &str = "get=1\n\n";

/// Sets the private key and the listen port.
pub fn device_request(private_key: &[u8; 32], listen_port: u16) -> String {
    format!(
        "set=1\nprivate_key={}\nlisten_port={listen_port}\n\n",
        hex::encode(private_key)
    )
}

/// The request for one [`PeerOp`].
pub fn peer_request(op: &PeerOp) -> String {
    let mut s = String::from("set=1\n");
    match op {
        PeerOp::Remove(key) => {
            let _ = write!(s, "public_key={}\nremove=true\n", hex::encode(key.0));
        }
        PeerOp::Add(p) => {
            let _ = write!(
                s,
                "public_key={}\nendpoint={}\nreplace_allowed_ips=true\nallowed_ip={}/32\n",
                hex::encode(p.public_key.0),
                p.endpoint,
                p.tunnel_ip
            );
        }
    }
    s.push('\n');
    s
}

/// A peer in a `get=1` answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UapiPeer {
    /// `public_key` (hex on the wire).
    pub public_key: Option<WgPublicKey>,
    /// `endpoint`.
    pub endpoint: Option<SocketAddr>,
    /// `allowed_ip` lines.
    pub allowed_ips: Vec<(IpAddr, u8)>,
    /// `rx_bytes`: bytes received from the peer (decrypted payload as the implementation
    /// counts it).
    pub rx_bytes: u64,
    /// `tx_bytes`.
    pub tx_bytes: u64,
    /// `last_handshake_time_sec`/`_nsec`, if present. Standard: since the Unix epoch;
    /// boringtun 0.7 reports the age of the last handshake instead.
    pub last_handshake: Option<Duration>,
}

/// A parsed `get=1` answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UapiDevice {
    /// `listen_port`.
    pub listen_port: Option<u16>,
    /// Peers, in answer order.
    pub peers: Vec<UapiPeer>,
}

/// Parses the body of a `get=1` answer (the lines before `errno=`). Unknown keys are
/// skipped (the protocol allows additions); a malformed line is returned as the error.
pub fn parse_get(body: &str) -> Result<UapiDevice, String> {
    let mut dev = UapiDevice::default();
    for line in body.lines().filter(|l| !l.is_empty()) {
        let (k, v) = line.split_once('=').ok_or_else(|| line.to_string())?;
        let bad = || line.to_string();
        if k == "public_key" {
            let bytes: [u8; 32] = hex::decode(v)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(bad)?;
            dev.peers.push(UapiPeer {
                public_key: Some(WgPublicKey(bytes)),
                ..Default::default()
            });
            continue;
        }
        let Some(peer) = dev.peers.last_mut() else {
            if k == "listen_port" {
                dev.listen_port = Some(v.parse().map_err(|_| bad())?);
            }
            continue;
        };
        match k {
            "endpoint" => peer.endpoint = Some(v.parse().map_err(|_| bad())?),
            "allowed_ip" => {
                let (ip, len) = v.split_once('/').ok_or_else(bad)?;
                peer.allowed_ips.push((
                    ip.parse().map_err(|_| bad())?,
                    len.parse().map_err(|_| bad())?,
                ));
            }
            "rx_bytes" => peer.rx_bytes = v.parse().map_err(|_| bad())?,
            "tx_bytes" => peer.tx_bytes = v.parse().map_err(|_| bad())?,
            "last_handshake_time_sec" => {
                let secs: u64 = v.parse().map_err(|_| bad())?;
                let nanos = peer.last_handshake.map_or(0, |d| d.subsec_nanos());
                peer.last_handshake = Some(Duration::new(secs, nanos));
            }
            "last_handshake_time_nsec" => {
                let nanos: u32 = v.parse().map_err(|_| bad())?;
                let secs = peer.last_handshake.map_or(0, |d| d.as_secs());
                peer.last_handshake = Some(Duration::new(secs, nanos));
            }
            _ => {}
        }
    }
    Ok(dev)
}

/// Parses the `errno=N` line closing every answer.
pub fn parse_errno(line: &str) -> Option<i32> {
    line.trim_end().strip_prefix("errno=")?.parse().ok()
}

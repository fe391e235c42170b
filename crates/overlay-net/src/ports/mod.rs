//! Published ports: parsing `-p` specifications and choosing host ports.
//!
//! Owns: [`PortRequest`] (what the user asked for, parsed from `hostPort:containerPort[/udp]`,
//! `ip:hostPort:containerPort`, `ip::containerPort` or a bare `containerPort`),
//! [`PublishedPort`] (a decided mapping), [`allocate_ports`] (pure: checks berth's own
//! mappings and asks a [`PortProbe`] whether a host socket holds the port), and the probe
//! seam with its real implementation [`BindProbe`].
//!
//! Does not own: the DNAT rules that implement a mapping (`firewall`).
//!
//! ```text
//!  "-p 18080:8080"  --PortRequest::parse-->  PortRequest
//!        + mappings of other endpoints       |
//!        + PortProbe (try to bind) --------> allocate_ports --> Vec<PublishedPort>
//! ```

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{NetError, PortHolder, Result};

/// Transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

impl FromStr for Protocol {
    type Err = NetError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            _ => Err(NetError::InvalidPortSpec {
                input: s.to_string(),
                reason: "protocol must be tcp or udp",
            }),
        }
    }
}

/// One port the user asked to publish. `host_port: None` lets the daemon choose (`-P`, or
/// `-p 80`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRequest {
    /// Host address to listen on; `None` means every host address.
    pub host_ip: Option<Ipv4Addr>,
    /// Host port, or `None` for one chosen by the daemon.
    pub host_port: Option<u16>,
    /// Port inside the container.
    pub container_port: u16,
    /// tcp or udp.
    pub protocol: Protocol,
}

impl PortRequest {
    /// A request for a daemon-chosen host port, as `-P` makes for every exposed port.
    pub fn publish_all(container_port: u16, protocol: Protocol) -> Self {
        PortRequest {
            host_ip: None,
            host_port: None,
            container_port,
            protocol,
        }
    }

    /// Parses a docker `-p` value. Port ranges and IPv6 host addresses are refused.
    pub fn parse(spec: &str) -> Result<Self> {
        let invalid = |reason| NetError::InvalidPortSpec {
            input: spec.to_string(),
            reason,
        };
        let (ports, protocol) = match spec.rsplit_once('/') {
            Some((p, proto)) => (
                p,
                proto
                    .parse()
                    .map_err(|_| invalid("protocol must be tcp or udp"))?,
            ),
            None => (spec, Protocol::Tcp),
        };
        if ports.contains('-') {
            return Err(invalid("port ranges are not supported"));
        }
        if ports.contains('[') {
            return Err(invalid("IPv6 host addresses are not supported"));
        }
        let port = |s: &str| -> Result<u16> {
            match s.parse::<u16>() {
                Ok(0) | Err(_) => Err(invalid("ports are numbers in 1..=65535")),
                Ok(p) => Ok(p),
            }
        };
        let parts: Vec<&str> = ports.split(':').collect();
        let (host_ip, host_port, container) = match parts.as_slice() {
            [c] => (None, None, *c),
            [h, c] => (None, Some(*h), *c),
            [ip, h, c] => (Some(*ip), Some(*h), *c),
            _ => return Err(invalid("expected [[ip:]hostPort:]containerPort[/proto]")),
        };
        let host_ip = match host_ip {
            None | Some("") => None,
            Some(ip) => Some(
                ip.parse::<Ipv4Addr>()
                    .map_err(|_| invalid("host address is not IPv4"))?,
            ),
        }
        .filter(|ip| !ip.is_unspecified());
        let host_port = match host_port {
            None | Some("") => None,
            Some(h) => Some(port(h)?),
        };
        Ok(PortRequest {
            host_ip,
            host_port,
            container_port: port(container)?,
            protocol,
        })
    }
}

/// A decided port mapping: traffic to `host_ip:host_port` goes to the container's
/// `container_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PublishedPort {
    /// Host address; `None` means every local address (and 127.0.0.1).
    pub host_ip: Option<Ipv4Addr>,
    /// Host port.
    pub host_port: u16,
    /// Port inside the container.
    pub container_port: u16,
    /// tcp or udp.
    pub protocol: Protocol,
}

impl PublishedPort {
    fn clashes(&self, host_ip: Option<Ipv4Addr>, host_port: u16, protocol: Protocol) -> bool {
        self.protocol == protocol
            && self.host_port == host_port
            && (self.host_ip.is_none() || host_ip.is_none() || self.host_ip == host_ip)
    }
}

/// What a [`PortProbe`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortStatus {
    /// Nothing on the host holds the port.
    Free,
    /// A host socket holds it.
    InUse,
    /// The host address is not one of this host's addresses.
    AddressNotLocal,
}

/// Whether a host socket already holds a port. One real implementation ([`BindProbe`]) and
/// a fake in `testing` (feature `testing`).
pub trait PortProbe: Send + Sync {
    /// Checks `ip:port` (`ip` None = any address).
    fn probe(&self, ip: Option<Ipv4Addr>, port: u16, protocol: Protocol) -> PortStatus;
}

/// Probes by binding a socket (in the calling thread's network namespace) and closing it.
/// TCP binds use `SO_REUSEADDR` (std's default), so only listeners count, not TIME_WAIT.
#[derive(Debug, Clone, Copy, Default)]
pub struct BindProbe;

impl PortProbe for BindProbe {
    fn probe(&self, ip: Option<Ipv4Addr>, port: u16, protocol: Protocol) -> PortStatus {
        let addr = SocketAddrV4::new(ip.unwrap_or(Ipv4Addr::UNSPECIFIED), port);
        let result = match protocol {
            Protocol::Tcp => TcpListener::bind(addr).map(drop),
            Protocol::Udp => UdpSocket::bind(addr).map(drop),
        };
        match result {
            Ok(()) => PortStatus::Free,
            Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => {
                PortStatus::AddressNotLocal
            }
            Err(_) => PortStatus::InUse,
        }
    }
}

/// The range daemon-chosen host ports come from (Docker uses the kernel's ephemeral range;
/// this is the same default, configurable by berthd).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// First port.
    pub first: u16,
    /// Last port (inclusive).
    pub last: u16,
}

impl Default for PortRange {
    fn default() -> Self {
        PortRange {
            first: 32768,
            last: 60999,
        }
    }
}

/// Decides the host ports for `requests` of endpoint `owner`.
///
/// `taken` lists every mapping berth has already made (endpoint id, mapping). A fixed host
/// port is refused with [`NetError::PortInUse`] if berth or a host socket holds it; a chosen
/// port is the first in `range` that neither holds. Requests of one call are checked against
/// each other too.
pub fn allocate_ports(
    requests: &[PortRequest],
    owner: &str,
    taken: &[(String, PublishedPort)],
    probe: &dyn PortProbe,
    range: PortRange,
) -> Result<Vec<PublishedPort>> {
    let mut decided: Vec<PublishedPort> = Vec::with_capacity(requests.len());
    // Err: the host address is not local; Ok(Some): who holds the port.
    let holder = |ip: Option<Ipv4Addr>,
                  port,
                  proto,
                  decided: &[PublishedPort]|
     -> Result<Option<PortHolder>> {
        if let Some((endpoint, _)) = taken.iter().find(|(_, p)| p.clashes(ip, port, proto)) {
            return Ok(Some(PortHolder::Endpoint {
                endpoint: endpoint.clone(),
            }));
        }
        if decided.iter().any(|p| p.clashes(ip, port, proto)) {
            return Ok(Some(PortHolder::Endpoint {
                endpoint: owner.to_string(),
            }));
        }
        match probe.probe(ip, port, proto) {
            PortStatus::Free => Ok(None),
            PortStatus::InUse => Ok(Some(PortHolder::HostSocket)),
            PortStatus::AddressNotLocal => Err(NetError::HostAddressNotLocal {
                address: ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
            }),
        }
    };
    for req in requests {
        let host_port = match req.host_port {
            Some(port) => {
                if let Some(h) = holder(req.host_ip, port, req.protocol, &decided)? {
                    return Err(NetError::PortInUse {
                        host_ip: req.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
                        host_port: port,
                        protocol: req.protocol,
                        holder: h,
                    });
                }
                port
            }
            None => {
                let mut chosen = None;
                for p in range.first..=range.last {
                    if holder(req.host_ip, p, req.protocol, &decided)?.is_none() {
                        chosen = Some(p);
                        break;
                    }
                }
                chosen.ok_or(NetError::NoFreePort {
                    protocol: req.protocol,
                    first: range.first,
                    last: range.last,
                })?
            }
        };
        decided.push(PublishedPort {
            host_ip: req.host_ip,
            host_port,
            container_port: req.container_port,
            protocol: req.protocol,
        });
    }
    Ok(decided)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakePortProbe;

    #[test]
    fn parses_docker_forms() {
        let p = PortRequest::parse("18080:8080").unwrap();
        assert_eq!(
            p,
            PortRequest {
                host_ip: None,
                host_port: Some(18080),
                container_port: 8080,
                protocol: Protocol::Tcp
            }
        );
        let p = PortRequest::parse("53:53/udp").unwrap();
        assert_eq!((p.host_port, p.protocol), (Some(53), Protocol::Udp));
        let p = PortRequest::parse("127.0.0.1:8000:80").unwrap();
        assert_eq!(p.host_ip, Some(Ipv4Addr::LOCALHOST));
        let p = PortRequest::parse("10.0.0.1::80/tcp").unwrap();
        assert_eq!(
            (p.host_ip, p.host_port),
            (Some(Ipv4Addr::new(10, 0, 0, 1)), None)
        );
        let p = PortRequest::parse("0.0.0.0:80:80").unwrap();
        assert_eq!(p.host_ip, None);
        assert_eq!(PortRequest::parse("80").unwrap().host_port, None);
        for bad in [
            "",
            "0:80",
            "80:0",
            "x:80",
            "8080-8081:80",
            "1:2:3:4",
            "80/sctp",
            "[::1]:80:80",
            "999999:80",
        ] {
            assert!(
                matches!(
                    PortRequest::parse(bad),
                    Err(NetError::InvalidPortSpec { .. })
                ),
                "{bad} should be refused"
            );
        }
    }

    fn mapping(ip: Option<Ipv4Addr>, port: u16, proto: Protocol) -> PublishedPort {
        PublishedPort {
            host_ip: ip,
            host_port: port,
            container_port: 80,
            protocol: proto,
        }
    }

    #[test]
    fn fixed_port_refused_when_berth_holds_it() {
        let taken = vec![("web".to_string(), mapping(None, 8080, Protocol::Tcp))];
        let probe = FakePortProbe::default();
        let req = PortRequest::parse("127.0.0.1:8080:80").unwrap();
        match allocate_ports(&[req], "b", &taken, &probe, PortRange::default()) {
            Err(NetError::PortInUse {
                holder: PortHolder::Endpoint { endpoint },
                host_port: 8080,
                ..
            }) => {
                assert_eq!(endpoint, "web")
            }
            other => panic!("expected PortInUse, got {other:?}"),
        }
        // Same port, other protocol: fine.
        let udp = PortRequest::parse("8080:80/udp").unwrap();
        assert_eq!(
            allocate_ports(&[udp], "b", &taken, &probe, PortRange::default()).unwrap()[0].host_port,
            8080
        );
        // Different specific addresses do not clash.
        let taken = vec![(
            "web".to_string(),
            mapping(Some(Ipv4Addr::new(10, 0, 0, 1)), 8080, Protocol::Tcp),
        )];
        let req = PortRequest::parse("10.0.0.2:8080:80").unwrap();
        assert!(allocate_ports(&[req], "b", &taken, &probe, PortRange::default()).is_ok());
    }

    #[test]
    fn fixed_port_refused_when_host_socket_holds_it() {
        let probe = FakePortProbe::default();
        probe.hold(8443, Protocol::Tcp);
        let req = PortRequest::parse("8443:443").unwrap();
        let err = allocate_ports(&[req], "b", &[], &probe, PortRange::default()).unwrap_err();
        assert!(matches!(
            err,
            NetError::PortInUse {
                holder: PortHolder::HostSocket,
                ..
            }
        ));
        assert!(err.to_string().contains("0.0.0.0:8443/tcp"), "{err}");
    }

    #[test]
    fn chosen_ports_skip_held_ones_and_each_other() {
        let probe = FakePortProbe::default();
        probe.hold(40000, Protocol::Tcp);
        let taken = vec![("x".to_string(), mapping(None, 40001, Protocol::Tcp))];
        let range = PortRange {
            first: 40000,
            last: 40004,
        };
        let reqs = [
            PortRequest::publish_all(80, Protocol::Tcp),
            PortRequest::publish_all(443, Protocol::Tcp),
            PortRequest::publish_all(53, Protocol::Udp),
        ];
        let got = allocate_ports(&reqs, "b", &taken, &probe, range).unwrap();
        let ports: Vec<u16> = got.iter().map(|p| p.host_port).collect();
        assert_eq!(ports, vec![40002, 40003, 40000]);
        let too_many = [PortRequest::publish_all(1, Protocol::Tcp); 4];
        assert!(matches!(
            allocate_ports(&too_many, "b", &taken, &probe, range),
            Err(NetError::NoFreePort { .. })
        ));
    }

    #[test]
    fn a_host_address_that_is_not_local_is_refused_clearly() {
        let probe = FakePortProbe::default();
        probe.not_local(Ipv4Addr::new(192, 0, 2, 1));
        for spec in ["192.0.2.1:8080:80", "192.0.2.1::80"] {
            let req = PortRequest::parse(spec).unwrap();
            let err = allocate_ports(&[req], "b", &[], &probe, PortRange::default()).unwrap_err();
            assert!(
                matches!(err, NetError::HostAddressNotLocal { address } if address == Ipv4Addr::new(192, 0, 2, 1)),
                "{err}"
            );
        }
    }

    #[test]
    fn duplicate_fixed_ports_in_one_request_are_refused() {
        let probe = FakePortProbe::default();
        let reqs = [
            PortRequest::parse("9000:80").unwrap(),
            PortRequest::parse("9000:81").unwrap(),
        ];
        assert!(matches!(
            allocate_ports(&reqs, "b", &[], &probe, PortRange::default()),
            Err(NetError::PortInUse { .. })
        ));
    }

    #[test]
    fn bind_probe_sees_a_real_listener() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert_eq!(
            BindProbe.probe(Some(Ipv4Addr::LOCALHOST), port, Protocol::Tcp),
            PortStatus::InUse
        );
        assert_eq!(
            BindProbe.probe(None, port, Protocol::Tcp),
            PortStatus::InUse
        );
        // 192.0.2.0/24 is TEST-NET-1: never a local address.
        assert_eq!(
            BindProbe.probe(Some(Ipv4Addr::new(192, 0, 2, 1)), port, Protocol::Tcp),
            PortStatus::AddressNotLocal
        );
        drop(l);
        assert_eq!(
            BindProbe.probe(Some(Ipv4Addr::LOCALHOST), port, Protocol::Tcp),
            PortStatus::Free
        );
    }
}

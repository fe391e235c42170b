//! Unit tests of the pure parts: keys, the peer plan, the UAPI codec.

use std::net::{IpAddr, Ipv4Addr};

use super::uapi::{device_request, parse_errno, parse_get, peer_request};
use super::*;

fn key(n: u8) -> WgPublicKey {
    WgPublicKey([n; 32])
}

fn peer(n: u8) -> WgPeer {
    WgPeer {
        public_key: key(n),
        endpoint: format!("192.0.2.{n}:51820").parse().unwrap(),
        tunnel_ip: Ipv4Addr::new(10, 255, 0, n),
    }
}

fn seen(p: &WgPeer) -> ObservedPeer {
    ObservedPeer {
        public_key: p.public_key,
        endpoint: Some(p.endpoint),
        allowed_ips: vec![(IpAddr::V4(p.tunnel_ip), 32)],
    }
}

const OWN: WgPublicKey = WgPublicKey([0; 32]);

#[test]
fn key_pair_round_trips_through_base64_and_matches_rfc7748() {
    // RFC 7748 section 6.1: Alice's private key and public key.
    let private =
        hex::decode("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a").unwrap();
    let public =
        hex::decode("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a").unwrap();
    let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &private);
    let kp = WgKeyPair::from_private_base64(&b64).unwrap();
    assert_eq!(kp.public_key().0.to_vec(), public);
    assert_eq!(kp.private_key_base64(), b64);
    let shown = kp.public_key().to_string();
    assert_eq!(shown.len(), 44);
    assert_eq!(shown.parse::<WgPublicKey>().unwrap(), kp.public_key());
    assert!(
        !format!("{kp:?}").contains(&b64),
        "Debug must not show the private key"
    );
    let json = serde_json::to_string(&kp.public_key()).unwrap();
    assert_eq!(json, format!("\"{shown}\""));
}

#[test]
fn generated_keys_differ_and_bad_keys_are_refused() {
    assert_ne!(
        WgKeyPair::generate().public_key(),
        WgKeyPair::generate().public_key()
    );
    assert!(matches!(
        "abc".parse::<WgPublicKey>(),
        Err(WgError::InvalidKey { .. })
    ));
    assert!(matches!(
        "AAAA".parse::<WgPublicKey>(),
        Err(WgError::InvalidKey {
            reason: "not 32 bytes"
        })
    ));
}

#[test]
fn key_file_is_0600_and_a_wider_mode_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wg.key");
    let kp = WgKeyPair::generate();
    kp.save(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(
        WgKeyPair::load(&path).unwrap().public_key(),
        kp.public_key()
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(matches!(
        WgKeyPair::load(&path),
        Err(WgError::KeyFilePermissions { mode: 0o644, .. })
    ));
    // Saving again tightens the mode.
    kp.save(&path).unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn plan_adds_new_peers_and_removes_the_ones_not_wanted() {
    let ops = plan_peers(&OWN, &[seen(&peer(1)), seen(&peer(3))], &[peer(1), peer(2)]).unwrap();
    assert_eq!(ops, vec![PeerOp::Remove(key(3)), PeerOp::Add(peer(2))]);
}

#[test]
fn plan_is_empty_when_the_device_already_matches() {
    let ops = plan_peers(&OWN, &[seen(&peer(2)), seen(&peer(1))], &[peer(1), peer(2)]).unwrap();
    assert!(ops.is_empty());
}

#[test]
fn a_changed_peer_is_removed_and_added_again_removes_first() {
    let mut moved = peer(1);
    moved.endpoint = "198.51.100.7:51820".parse().unwrap();
    let ops = plan_peers(&OWN, &[seen(&peer(1)), seen(&peer(2))], &[moved.clone()]).unwrap();
    assert_eq!(
        ops,
        vec![
            PeerOp::Remove(key(1)),
            PeerOp::Remove(key(2)),
            PeerOp::Add(moved)
        ]
    );
    // Extra allowed IPs on the device (set by hand) are not what berth wants either.
    let mut extra = seen(&peer(1));
    extra.allowed_ips.push(("10.9.0.0".parse().unwrap(), 16));
    let ops = plan_peers(&OWN, &[extra], &[peer(1)]).unwrap();
    assert_eq!(ops, vec![PeerOp::Remove(key(1)), PeerOp::Add(peer(1))]);
}

#[test]
fn empty_desired_set_removes_every_peer() {
    let ops = plan_peers(&OWN, &[seen(&peer(2)), seen(&peer(1))], &[]).unwrap();
    assert_eq!(ops, vec![PeerOp::Remove(key(1)), PeerOp::Remove(key(2))]);
}

#[test]
fn inconsistent_peer_sets_are_refused() {
    let twice = plan_peers(&OWN, &[], &[peer(1), peer(1)]);
    assert!(matches!(twice, Err(WgError::InvalidPeers { .. })));
    let mut same_ip = peer(2);
    same_ip.tunnel_ip = peer(1).tunnel_ip;
    assert!(matches!(
        plan_peers(&OWN, &[], &[peer(1), same_ip]),
        Err(WgError::InvalidPeers { .. })
    ));
    let own = plan_peers(&key(1), &[], &[peer(1)]);
    assert!(matches!(own, Err(WgError::InvalidPeers { .. })));
    let mut bcast = peer(1);
    bcast.tunnel_ip = Ipv4Addr::BROADCAST;
    assert!(matches!(
        plan_peers(&OWN, &[], &[bcast]),
        Err(WgError::InvalidPeers { .. })
    ));
}

#[test]
fn uapi_requests_carry_one_section_each_in_hex() {
    let r = device_request(&[0xab; 32], 51820);
    assert_eq!(
        r,
        format!(
            "set=1\nprivate_key={}\nlisten_port=51820\n\n",
            "ab".repeat(32)
        )
    );
    assert_eq!(
        peer_request(&PeerOp::Remove(key(1))),
        format!("set=1\npublic_key={}\nremove=true\n\n", "01".repeat(32))
    );
    assert_eq!(
        peer_request(&PeerOp::Add(peer(2))),
        format!(
            "set=1\npublic_key={}\nendpoint=192.0.2.2:51820\nreplace_allowed_ips=true\nallowed_ip=10.255.0.2/32\n\n",
            "02".repeat(32)
        )
    );
}

#[test]
fn uapi_get_answer_is_parsed_peer_by_peer() {
    let body = format!(
        "own_public_key={}\nlisten_port=51820\npublic_key={}\nendpoint=192.0.2.1:51820\n\
         allowed_ip=10.255.0.1/32\nlast_handshake_time_sec=3\nlast_handshake_time_nsec=5\n\
         rx_bytes=100\ntx_bytes=200\npublic_key={}\nallowed_ip=10.255.0.2/32\nrx_bytes=0\ntx_bytes=0\n",
        "00".repeat(32),
        "01".repeat(32),
        "02".repeat(32)
    );
    let dev = parse_get(&body).unwrap();
    assert_eq!(dev.listen_port, Some(51820));
    assert_eq!(dev.peers.len(), 2);
    assert_eq!(dev.peers[0].public_key, Some(key(1)));
    assert_eq!(
        dev.peers[0].endpoint,
        Some("192.0.2.1:51820".parse().unwrap())
    );
    assert_eq!(dev.peers[0].rx_bytes, 100);
    assert_eq!(dev.peers[0].tx_bytes, 200);
    assert_eq!(
        dev.peers[0].last_handshake,
        Some(std::time::Duration::new(3, 5))
    );
    assert_eq!(dev.peers[1].endpoint, None);
    assert_eq!(dev.peers[1].last_handshake, None);
    assert_eq!(
        dev.peers[1].allowed_ips,
        vec![("10.255.0.2".parse().unwrap(), 32)]
    );
    assert!(parse_get("public_key=zz\n").is_err());
    assert!(parse_get("garbage\n").is_err());
    assert_eq!(parse_errno("errno=0\n"), Some(0));
    assert_eq!(parse_errno("errno=98\n"), Some(98));
    assert_eq!(parse_errno("rx_bytes=1\n"), None);
}

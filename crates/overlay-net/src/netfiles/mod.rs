//! The contents of a container's `/etc/hosts` and `/etc/resolv.conf` (pure rendering).
//!
//! Owns: [`render_hosts`], [`render_resolv_conf`], [`ResolvConfOptions`].
//!
//! Does not own: writing the files into the container's rootfs or bind-mounting them
//! (`berth-runtime` / berthd), reading the host's `/etc/resolv.conf` (the caller passes its
//! text in).

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

/// Renders `/etc/hosts` the way Docker does: loopback and IPv6 boilerplate, `--add-host`
/// entries, then the container's own addresses under its hostname (and `hostname.domain`).
pub fn render_hosts(
    hostname: &str,
    domainname: Option<&str>,
    own_addresses: &[Ipv4Addr],
    extra_hosts: &[(String, IpAddr)],
) -> String {
    let mut s = String::from(
        "127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         ff00::0\tip6-mcastprefix\n\
         ff02::1\tip6-allnodes\n\
         ff02::2\tip6-allrouters\n",
    );
    for (name, ip) in extra_hosts {
        let _ = writeln!(s, "{ip}\t{name}");
    }
    let names = match domainname.filter(|d| !d.is_empty()) {
        Some(domain) => format!("{hostname}.{domain} {hostname}"),
        None => hostname.to_string(),
    };
    for ip in own_addresses {
        let _ = writeln!(s, "{ip}\t{names}");
    }
    s
}

/// Overrides from `docker run --dns/--dns-search/--dns-option`, and the embedded DNS server
/// address when the container's network has one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvConfOptions {
    /// `--dns`: replaces the host's nameservers.
    pub nameservers: Vec<IpAddr>,
    /// `--dns-search`: replaces the host's search list.
    pub search: Vec<String>,
    /// `--dns-option`: replaces the host's options.
    pub options: Vec<String>,
    /// When set, the only nameserver the container sees (the embedded DNS server); the
    /// upstream servers are listed in a comment, as Docker does.
    pub embedded_dns: Option<Ipv4Addr>,
}

/// Docker's fallback when the host has only loopback resolvers (unreachable from a
/// container's namespace).
pub const FALLBACK_NAMESERVERS: [Ipv4Addr; 2] =
    [Ipv4Addr::new(8, 8, 8, 8), Ipv4Addr::new(8, 8, 4, 4)];

/// The nameservers a container should use given the host's `resolv.conf` text: the host's
/// non-loopback servers, or [`FALLBACK_NAMESERVERS`] when none is left.
pub fn upstream_nameservers(host_resolv_conf: &str) -> Vec<IpAddr> {
    let servers: Vec<IpAddr> = directives(host_resolv_conf, "nameserver")
        .filter_map(|v| v.split('%').next()?.parse::<IpAddr>().ok())
        .filter(|ip| !ip.is_loopback())
        .collect();
    if servers.is_empty() {
        FALLBACK_NAMESERVERS
            .iter()
            .map(|ip| IpAddr::V4(*ip))
            .collect()
    } else {
        servers
    }
}

fn directives<'a>(text: &'a str, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    text.lines().filter_map(move |line| {
        let line = line.trim();
        let rest = line.strip_prefix(key)?;
        rest.starts_with([' ', '\t']).then(|| rest.trim())
    })
}

/// Renders a container's `/etc/resolv.conf` from the host's and the options.
pub fn render_resolv_conf(host_resolv_conf: &str, opts: &ResolvConfOptions) -> String {
    let upstream = if opts.nameservers.is_empty() {
        upstream_nameservers(host_resolv_conf)
    } else {
        opts.nameservers.clone()
    };
    let search: Vec<String> = if opts.search.is_empty() {
        let mut s: Vec<String> = directives(host_resolv_conf, "search")
            .last()
            .map(|v| v.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        if s.is_empty() {
            s.extend(
                directives(host_resolv_conf, "domain")
                    .last()
                    .map(str::to_string),
            );
        }
        s
    } else {
        opts.search.clone()
    };
    let mut options: Vec<String> = if opts.options.is_empty() {
        directives(host_resolv_conf, "options")
            .flat_map(|v| v.split_whitespace().map(str::to_string))
            .collect()
    } else {
        opts.options.clone()
    };
    // libnetwork's rule for the embedded DNS: `ndots:0` unless an ndots is given, so a
    // search domain never turns a container's name into another host's.
    if opts.embedded_dns.is_some() && !options.iter().any(|o| o.starts_with("ndots:")) {
        options.push("ndots:0".into());
    }

    // dockerd's order (libnetwork's resolvconf.Build): search, nameservers, options.
    let mut s = String::new();
    if !search.is_empty() {
        let _ = writeln!(s, "search {}", search.join(" "));
    }
    match opts.embedded_dns {
        Some(dns) => {
            let _ = writeln!(s, "nameserver {dns}");
        }
        None => {
            for ns in &upstream {
                let _ = writeln!(s, "nameserver {ns}");
            }
        }
    }
    if !options.is_empty() {
        let _ = writeln!(s, "options {}", options.join(" "));
    }
    if opts.embedded_dns.is_some() {
        let list: Vec<String> = upstream.iter().map(|ip| format!("host({ip})")).collect();
        let _ = writeln!(s, "\n# ExtServers: [{}]", list.join(" "));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_has_loopback_extra_and_own_entries_in_order() {
        let text = render_hosts(
            "abc123",
            None,
            &[Ipv4Addr::new(172, 17, 0, 2)],
            &[("db".into(), IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5)))],
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "127.0.0.1\tlocalhost");
        assert_eq!(lines[6], "10.0.0.5\tdb");
        assert_eq!(lines[7], "172.17.0.2\tabc123");
        let with_domain = render_hosts(
            "web",
            Some("example.org"),
            &[Ipv4Addr::new(10, 1, 0, 2)],
            &[],
        );
        assert!(with_domain.ends_with("10.1.0.2\tweb.example.org web\n"));
    }

    const HOST: &str = "# generated\nnameserver 127.0.0.53\nnameserver 10.0.0.2\nnameserver ::1\nsearch corp.example lab\noptions edns0 trust-ad\n";

    #[test]
    fn resolv_conf_drops_loopback_servers_and_keeps_search_and_options() {
        let text = render_resolv_conf(HOST, &ResolvConfOptions::default());
        assert_eq!(
            text,
            "search corp.example lab\nnameserver 10.0.0.2\noptions edns0 trust-ad\n"
        );
    }

    #[test]
    fn resolv_conf_falls_back_when_only_loopback_is_left() {
        let text = render_resolv_conf("nameserver 127.0.0.53\n", &ResolvConfOptions::default());
        assert_eq!(text, "nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
    }

    #[test]
    fn resolv_conf_overrides_and_embedded_dns() {
        let opts = ResolvConfOptions {
            nameservers: vec!["1.1.1.1".parse().unwrap()],
            search: vec!["svc".into()],
            options: vec!["ndots:2".into()],
            embedded_dns: None,
        };
        assert_eq!(
            render_resolv_conf(HOST, &opts),
            "search svc\nnameserver 1.1.1.1\noptions ndots:2\n"
        );
        let opts = ResolvConfOptions {
            embedded_dns: Some(Ipv4Addr::new(127, 0, 0, 11)),
            ..ResolvConfOptions::default()
        };
        let text = render_resolv_conf(HOST, &opts);
        assert!(
            text.starts_with("search corp.example lab\nnameserver 127.0.0.11\n"),
            "{text}"
        );
        assert!(
            text.contains("\noptions edns0 trust-ad ndots:0\n"),
            "{text}"
        );
        let kept = ResolvConfOptions {
            options: vec!["ndots:3".into()],
            ..opts.clone()
        };
        assert!(render_resolv_conf(HOST, &kept).contains("\noptions ndots:3\n"));
        assert!(text.contains("# ExtServers: [host(10.0.0.2)]"));
        assert!(!text.contains("nameserver 10.0.0.2"));
    }

    #[test]
    fn domain_is_used_when_there_is_no_search_line() {
        let text = render_resolv_conf(
            "domain lan\nnameserver 192.168.1.1\n",
            &ResolvConfOptions::default(),
        );
        assert_eq!(text, "search lan\nnameserver 192.168.1.1\n");
    }
}

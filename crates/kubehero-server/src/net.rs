//! Who a request came from: the TCP peer, or — when the peer is a trusted proxy (`KUBEHERO_TRUSTED_PROXIES`)
//! — the address it reports in `X-Forwarded-For`. Every per-address rule (SCIM's wrong-token lockout, the
//! pre-authentication rate limits) and the audit row's `source` use this one answer.

use axum::http::HeaderMap;
use std::net::IpAddr;

/// The client address of a request, put into its extensions by [`crate::middleware::observe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// Networks whose connections are proxies (load balancers, ingress controllers) that say in
/// `X-Forwarded-For` whom they forward for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<(IpAddr, u8)>);

impl TrustedProxies {
    /// Parses a comma-separated list of CIDRs or single addresses (`10.0.0.0/8, 192.168.1.7, fd00::/8`).
    pub fn parse(list: &str) -> Result<TrustedProxies, String> {
        let mut nets = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (addr, bits) = match item.split_once('/') {
                Some((a, b)) => (a, Some(b)),
                None => (item, None),
            };
            let addr: IpAddr = addr.parse().map_err(|_| format!("{item:?} is not an address or CIDR"))?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let bits = match bits {
                None => max,
                Some(b) => {
                    b.parse::<u8>().ok().filter(|b| *b <= max).ok_or_else(|| format!("{item:?}: bad prefix length"))?
                }
            };
            nets.push((addr, bits));
        }
        Ok(TrustedProxies(nets))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` is in one of the networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|(net, bits)| match (canonical(*net), ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => prefix_eq(&n.octets(), &a.octets(), *bits),
            (IpAddr::V6(n), IpAddr::V6(a)) => prefix_eq(&n.octets(), &a.octets(), *bits),
            _ => false,
        })
    }

    /// The client of a request whose TCP peer is `peer`: `peer` itself unless it is trusted; then the
    /// right-most `X-Forwarded-For` address that is not a trusted proxy (the left part of the header is
    /// whatever the client wrote and is never believed past the first untrusted hop).
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.contains(peer) {
            return canonical(peer);
        }
        let mut client = canonical(peer);
        let hops = headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>();
        for hop in hops.iter().rev().flat_map(|v| v.rsplit(',')) {
            let Ok(ip) = hop.trim().parse::<IpAddr>() else { break };
            client = canonical(ip);
            if !self.contains(ip) {
                break;
            }
        }
        client
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`, from dual-stack listeners) as the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let (whole, rest) = (usize::from(bits / 8), bits % 8);
    if a[..whole] != b[..whole] {
        return false;
    }
    rest == 0 || {
        let mask = 0xffu8 << (8 - rest);
        a[whole] & mask == b[whole] & mask
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", v.parse().unwrap_or_else(|_| unreachable!()));
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|_| unreachable!())
    }

    #[test]
    fn forwarded_addresses_count_only_from_trusted_peers() {
        let t = TrustedProxies::parse("10.0.0.0/8, ::1").unwrap_or_default();
        // An untrusted peer's header is ignored.
        assert_eq!(t.client(ip("203.0.113.9"), &headers(&["1.2.3.4"])), ip("203.0.113.9"));
        // A trusted peer: the right-most untrusted hop, not what the client wrote on the left.
        assert_eq!(t.client(ip("10.1.2.3"), &headers(&["6.6.6.6, 198.51.100.7, 10.0.0.2"])), ip("198.51.100.7"));
        assert_eq!(t.client(ip("10.1.2.3"), &headers(&["6.6.6.6", "198.51.100.7"])), ip("198.51.100.7"));
        assert_eq!(t.client(ip("::ffff:10.0.0.1"), &headers(&["198.51.100.7"])), ip("198.51.100.7"));
        assert_eq!(t.client(ip("::1"), &headers(&[])), ip("::1"));
        // Garbage stops the walk at the last address that parsed.
        assert_eq!(t.client(ip("10.1.2.3"), &headers(&["junk, 10.0.0.9"])), ip("10.0.0.9"));
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
        assert!(TrustedProxies::parse("example.com").is_err());
        assert!(TrustedProxies::parse("10.1.0.0/15").unwrap_or_default().contains(ip("10.0.255.1")));
        assert!(!TrustedProxies::parse("10.1.0.0/16").unwrap_or_default().contains(ip("10.0.255.1")));
    }
}

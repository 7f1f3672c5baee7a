//! The client address behind reverse proxies: [`TrustedProxy`] and the `X-Forwarded-For` walk.
//!
//! A proxy such as nginx (`proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for`)
//! appends the address it saw to whatever `X-Forwarded-For` the client sent. Only the entries
//! written by proxies we trust are facts; anything to their left may be made up by the client.
//! So the header is read only when the TCP peer is a trusted proxy, and then from the right:
//! trusted hops are skipped and the first untrusted address is the client ("rightmost
//! untrusted hop"). Daphne's `--proxy-headers` takes the leftmost entry instead, which any
//! client can forge; Herald deliberately does not.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use hyper::HeaderMap;

use crate::error::{Error, ErrorKind};

/// A reverse proxy's address or network (`10.0.0.1`, `10.0.0.0/8`, `::1`, `fd00::/8`) whose
/// `X-Forwarded-For` entries are believed.
///
/// ```
/// use herald_server::config::TrustedProxy;
/// let net: TrustedProxy = "10.0.0.0/8".parse().unwrap();
/// assert!(net.contains("10.1.2.3".parse().unwrap()));
/// assert!(!net.contains("192.0.2.1".parse().unwrap()));
/// assert!("10.0.0.0/33".parse::<TrustedProxy>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustedProxy {
    network: IpAddr,
    prefix_len: u8,
}

impl TrustedProxy {
    /// One address (`/32` or `/128`).
    pub fn addr(ip: IpAddr) -> Self {
        TrustedProxy {
            network: ip,
            prefix_len: max_prefix(ip),
        }
    }

    /// Whether `ip` is in this network. An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`, what a
    /// dual-stack listener reports) counts as its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix_len));
                let mask = mask.unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix_len));
                let mask = mask.unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

fn max_prefix(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

impl FromStr for TrustedProxy {
    type Err = Error;

    /// Parses `ADDR` or `ADDR/PREFIX`.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for anything else, or a prefix longer than the address.
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || {
            Error::new(
                ErrorKind::Config,
                format!("trusted proxy {s:?}: expected an IP address or CIDR (10.0.0.0/8)"),
            )
        };
        let s = s.trim();
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, prefix)) => (ip, Some(prefix)),
            None => (s, None),
        };
        let ip: IpAddr = ip.parse().map_err(|_| bad())?;
        let ip = ip.to_canonical();
        let prefix_len = match prefix {
            None => max_prefix(ip),
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|&n| n <= max_prefix(ip))
                .ok_or_else(bad)?,
        };
        Ok(TrustedProxy {
            network: ip,
            prefix_len,
        })
    }
}

impl fmt::Display for TrustedProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

/// The client address of a request whose TCP peer is `peer`: the peer itself unless it is a
/// trusted proxy; then the rightmost `X-Forwarded-For` entry that is not a trusted proxy, with
/// port 0 (proxies do not forward the client's port). All entries trusted: the leftmost. An
/// entry that is not an IP address ends the walk at the last address before it.
pub(crate) fn client_addr(
    headers: &HeaderMap,
    peer: SocketAddr,
    trusted: &[TrustedProxy],
) -> SocketAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|t| t.contains(ip));
    if !is_trusted(peer.ip()) {
        return peer;
    }
    // Several header lines are one list, in order (RFC 9110 5.3).
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for entry in entries.iter().rev() {
        let Ok(ip) = entry.parse::<IpAddr>() else {
            break;
        };
        client = SocketAddr::new(ip.to_canonical(), 0);
        if !is_trusted(ip) {
            break;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    fn proxies(list: &[&str]) -> Vec<TrustedProxy> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn parses_addresses_and_networks() {
        let p: TrustedProxy = "10.0.0.0/8".parse().unwrap();
        assert_eq!(p.to_string(), "10.0.0.0/8");
        assert!(p.contains("10.255.0.1".parse().unwrap()));
        assert!(p.contains("::ffff:10.0.0.1".parse().unwrap()));
        assert!(!p.contains("11.0.0.1".parse().unwrap()));
        let one: TrustedProxy = " 127.0.0.1 ".parse().unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let v6: TrustedProxy = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        let all: TrustedProxy = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("192.0.2.9".parse().unwrap()));
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "nginx",
            "10.0.0.0/8/8",
            "1.2.3.4:80",
        ] {
            let err = bad.parse::<TrustedProxy>().unwrap_err();
            assert!(err.is_config(), "{bad}");
        }
    }

    #[test]
    fn untrusted_peer_headers_are_ignored() {
        let peer: SocketAddr = "198.51.100.1:4000".parse().unwrap();
        let h = headers(&["203.0.113.7"]);
        assert_eq!(client_addr(&h, peer, &[]), peer);
        assert_eq!(client_addr(&h, peer, &proxies(&["10.0.0.0/8"])), peer);
    }

    #[test]
    fn trusted_peer_yields_rightmost_untrusted_hop() {
        let peer: SocketAddr = "10.0.0.2:4000".parse().unwrap();
        let trusted = proxies(&["10.0.0.0/8"]);
        // The client forged the first entry; the proxy appended what it saw.
        let h = headers(&["1.1.1.1, 203.0.113.7"]);
        assert_eq!(
            client_addr(&h, peer, &trusted),
            "203.0.113.7:0".parse().unwrap()
        );
        // Two trusted hops, two header lines.
        let h = headers(&["1.1.1.1, 203.0.113.7", "10.0.0.9"]);
        assert_eq!(
            client_addr(&h, peer, &trusted),
            "203.0.113.7:0".parse().unwrap()
        );
        // Only trusted hops: the leftmost.
        let h = headers(&["10.0.0.5, 10.0.0.9"]);
        assert_eq!(
            client_addr(&h, peer, &trusted),
            "10.0.0.5:0".parse().unwrap()
        );
        // Garbage stops the walk at the last address right of it.
        let h = headers(&["203.0.113.7, unknown, 10.0.0.9"]);
        assert_eq!(
            client_addr(&h, peer, &trusted),
            "10.0.0.9:0".parse().unwrap()
        );
        // No header: the proxy itself.
        assert_eq!(client_addr(&HeaderMap::new(), peer, &trusted), peer);
        let h = headers(&["2001:db8::1"]);
        assert_eq!(
            client_addr(&h, peer, &trusted),
            "[2001:db8::1]:0".parse().unwrap()
        );
    }
}

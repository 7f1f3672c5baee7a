//! The loopback-only rule: a load run never sends a packet off this machine.

use std::net::{IpAddr, SocketAddr};

use crate::error::{Error, ErrorKind, Result};

/// Parses a `ws://host:port/path` URL and returns its socket address, refusing anything that
/// is not a loopback address (`127.0.0.0/8`, `::1`, or `localhost`) or not plain `ws://`.
///
/// No DNS lookup is made: `localhost` maps to `127.0.0.1`, every other name is refused.
///
/// # Errors
/// [`ErrorKind::InvalidTarget`] for any other scheme, host, or a malformed URL.
pub fn require_loopback(url: &str) -> Result<SocketAddr> {
    let invalid = |why: &str| Error::new(ErrorKind::InvalidTarget, format!("{why}: {url}"));
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| invalid("only ws:// URLs are supported"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.contains('@') {
        return Err(invalid("user info is not allowed in the target URL"));
    }
    let (host, port) = split_host_port(authority).ok_or_else(|| invalid("malformed host"))?;
    let ip: IpAddr = if host.eq_ignore_ascii_case("localhost") {
        IpAddr::from([127, 0, 0, 1])
    } else {
        host.parse()
            .map_err(|_| invalid("the target must be a loopback IP address or localhost"))?
    };
    if !ip.is_loopback() {
        return Err(invalid("refusing a non-loopback target"));
    }
    Ok(SocketAddr::new(ip, port))
}

/// Splits `host[:port]` or `[v6][:port]`; the port defaults to 80 like any `ws://` URL.
fn split_host_port(authority: &str) -> Option<(&str, u16)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => 80,
            None => return None,
        };
        return Some((host, port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Some((host, port.parse().ok()?)),
        None => Some((authority, 80)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_targets_are_accepted() {
        assert_eq!(
            require_loopback("ws://127.0.0.1:8000/ws/tasks/").unwrap(),
            "127.0.0.1:8000".parse().unwrap()
        );
        assert_eq!(
            require_loopback("ws://localhost:9/").unwrap(),
            "127.0.0.1:9".parse().unwrap()
        );
        assert_eq!(
            require_loopback("ws://[::1]:81/x").unwrap(),
            "[::1]:81".parse().unwrap()
        );
        assert_eq!(
            require_loopback("ws://127.9.9.9/").unwrap(),
            "127.9.9.9:80".parse().unwrap()
        );
    }

    #[test]
    fn non_loopback_targets_are_refused() {
        for url in [
            "ws://10.0.0.1:8000/ws/tasks/",
            "ws://example.com/ws/",
            "wss://127.0.0.1/ws/",
            "http://127.0.0.1/",
            "ws://user@127.0.0.1/",
            "ws://[2001:db8::1]:80/",
            "ws://127.0.0.1:notaport/",
        ] {
            let err = require_loopback(url).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidTarget, "{url}");
        }
    }
}

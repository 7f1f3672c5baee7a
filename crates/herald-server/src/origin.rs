//! Origin checking with the rules of Channels' `OriginValidator` / `AllowedHostsOriginValidator`
//! (channels 4.3.2 `channels/security/websocket.py`, Django `is_same_domain`).
//!
//! Rules (checked against the pinned Python 3.11 + channels 4.3.2 venv, not only the spec):
//! * the **last** `Origin` header is used, latin-1 decoded and parsed like `urllib.parse.urlparse`;
//! * no `Origin` header: allowed only if `"*"` is a pattern; `"*"` allows anything;
//! * an origin without a hostname (`null`, `example.com`) is rejected;
//! * a pattern without a scheme (a plain `ALLOWED_HOSTS` entry such as `example.com`,
//!   `.example.com`, `[::1]`, `127.0.0.1:8000`) compares hostnames only, with `.example.com`
//!   matching the domain and every subdomain;
//! * a pattern with a scheme (`https://example.com`, `http://.example.com:8000`) must match the
//!   scheme, the port (explicit, else 80 for http/ws, 443 for https/wss) and the hostname.
//!
//! Parity traps kept on purpose: like Python's `urlsplit`, a pattern such as `example.com:8000`
//! is read as scheme `example.com`, so it never matches a browser origin (the spec text says it
//! behaves like `example.com`; the venv says otherwise). Where Python raises `ValueError` on an
//! unparsable origin port (a 500), Herald rejects with 403.

/// A parsed URL, as much of `urllib.parse.urlsplit` as origin checks need.
#[derive(Debug, PartialEq, Eq)]
struct Parsed {
    scheme: String,
    hostname: Option<String>,
    /// `None`: no port; `Some(Err)`: present but not a valid port (Python raises on `.port`).
    port: Option<Result<u16, ()>>,
}

fn is_scheme_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '+' || c == '-' || c == '.'
}

/// `urllib.parse.urlsplit` reduced to scheme, hostname and port.
fn urlsplit(url: &str) -> Parsed {
    // urlsplit strips WHATWG C0 control-or-space from both ends and drops tab/CR/LF anywhere.
    let cleaned: String = url
        .trim_matches(|c: char| c <= ' ')
        .chars()
        .filter(|c| !matches!(c, '\t' | '\r' | '\n'))
        .collect();
    let mut rest = cleaned.as_str();
    let mut scheme = String::new();
    if let Some(i) = rest.find(':')
        && i > 0
        && rest.as_bytes()[0].is_ascii_alphabetic()
        && rest[..i].chars().all(is_scheme_char)
    {
        scheme = rest[..i].to_ascii_lowercase();
        rest = &rest[i + 1..];
    }
    let Some(after) = rest.strip_prefix("//") else {
        return Parsed {
            scheme,
            hostname: None,
            port: None,
        };
    };
    let end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let netloc = &after[..end];
    let hostinfo = netloc.rsplit_once('@').map_or(netloc, |(_, h)| h);
    let (host, port) = if let Some(bracketed) = hostinfo.strip_prefix('[') {
        match bracketed.split_once(']') {
            Some((h, tail)) => (h, tail.strip_prefix(':')),
            None => (bracketed, None),
        }
    } else {
        match hostinfo.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostinfo, None),
        }
    };
    let hostname = (!host.is_empty()).then(|| host.to_lowercase());
    let port = port.filter(|p| !p.is_empty()).map(|p| {
        if p.bytes().all(|b| b.is_ascii_digit()) {
            p.parse::<u16>().map_err(|_| ())
        } else {
            Err(())
        }
    });
    Parsed {
        scheme,
        hostname,
        port,
    }
}

/// Django `is_same_domain`: `.example.com` matches `example.com` and its subdomains.
fn is_same_domain(host: &str, pattern: &str) -> bool {
    if pattern.is_empty() {
        return false;
    }
    let pattern = pattern.to_lowercase();
    if let Some(bare) = pattern.strip_prefix('.') {
        host.ends_with(&pattern) || host == bare
    } else {
        host == pattern
    }
}

fn default_port(p: &Parsed) -> Result<Option<u16>, ()> {
    match p.port {
        Some(port) => port.map(Some),
        None => Ok(match p.scheme.as_str() {
            "http" | "ws" => Some(80),
            "https" | "wss" => Some(443),
            _ => None,
        }),
    }
}

fn matches_pattern(origin: &Parsed, pattern: &str) -> bool {
    let Some(origin_host) = origin.hostname.as_deref() else {
        return false;
    };
    let parsed_pattern = urlsplit(&pattern.to_lowercase());
    if parsed_pattern.scheme.is_empty() {
        let with_slashes = format!("//{pattern}");
        let pattern_host = urlsplit(&with_slashes)
            .hostname
            .unwrap_or_else(|| pattern.to_owned());
        return is_same_domain(origin_host, &pattern_host);
    }
    let (Ok(origin_port), Ok(pattern_port)) = (default_port(origin), default_port(&parsed_pattern))
    else {
        return false;
    };
    parsed_pattern.scheme == origin.scheme
        && origin_port == pattern_port
        && parsed_pattern
            .hostname
            .as_deref()
            .is_some_and(|h| is_same_domain(origin_host, h))
}

/// Decides whether a handshake with this `Origin` value may proceed.
///
/// `origin` is the last `Origin` header (already latin-1 decoded), `None` when absent.
///
/// ```
/// use herald_server::origin::origin_allowed;
/// let hosts = ["example.com".to_owned(), ".example.org".to_owned()];
/// assert!(origin_allowed(Some("https://example.com"), &hosts));
/// assert!(origin_allowed(Some("http://a.b.example.org:8000"), &hosts));
/// assert!(!origin_allowed(Some("https://evil.com"), &hosts));
/// assert!(!origin_allowed(None, &hosts));
/// ```
pub fn origin_allowed(origin: Option<&str>, patterns: &[String]) -> bool {
    if patterns.iter().any(|p| p == "*") {
        return true;
    }
    let Some(origin) = origin else {
        return false;
    };
    let parsed = urlsplit(origin);
    patterns.iter().any(|p| matches_pattern(&parsed, p))
}

/// Decodes a header value as latin-1, as Channels does with `scope["headers"]`.
pub(crate) fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(origin: &str, pattern: &str) -> bool {
        origin_allowed(Some(origin), &[pattern.to_owned()])
    }

    /// Every row was produced by channels 4.3.2 `OriginValidator.match_allowed_origin` under
    /// Python 3.11.7 (tests/compat/.venv), with `urlparse(origin)` as the parsed origin.
    #[test]
    fn matches_channels_for_python_verified_cases() {
        let cases = [
            ("http://example.com:8000", "example.com:8000", false),
            ("http://example.com", "example.com:8000", false),
            ("http://sub.example.com", ".example.com", true),
            ("http://example.com", ".example.com", true),
            ("http://[::1]:8000", "[::1]", true),
            ("http://EXAMPLE.com", "example.com", true),
            ("https://example.com", "https://example.com:443", true),
            ("http://example.com:80", "http://example.com", true),
            ("http://example.com:8080", "http://example.com", false),
            ("ws://example.com", "http://example.com", false),
            ("http://a.example.com", "http://.example.com", true),
            ("http://example.com", "HTTP://EXAMPLE.COM", true),
            ("foo://example.com", "foo://example.com", true),
            ("foo://example.com:5", "foo://example.com", false),
            ("http://localhost:8000", "localhost:8000", false),
            ("http://user@example.com", "example.com", true),
            ("http://example.com.", "example.com", false),
            ("http://example.com:abc", "example.com", true),
            ("http://Example.COM", "EXAMPLE.com", true),
            ("http://xexample.com", ".example.com", false),
            ("http://127.0.0.1:8000", "127.0.0.1", true),
        ];
        for (origin, pattern, expected) in cases {
            assert_eq!(allowed(origin, pattern), expected, "{origin} vs {pattern}");
        }
    }

    #[test]
    fn null_origin_is_rejected() {
        assert!(!allowed("null", "example.com"));
    }

    #[test]
    fn invalid_origin_port_with_scheme_pattern_is_rejected() {
        assert!(!allowed("http://example.com:abc", "http://example.com"));
    }

    #[test]
    fn missing_origin_needs_star() {
        assert!(!origin_allowed(None, &["example.com".to_owned()]));
        assert!(origin_allowed(None, &["*".to_owned()]));
    }

    #[test]
    fn star_allows_anything() {
        assert!(allowed("https://evil.com", "*"));
    }

    #[test]
    fn latin1_maps_bytes_to_code_points() {
        assert_eq!(latin1(b"caf\xe9"), "café");
    }
}

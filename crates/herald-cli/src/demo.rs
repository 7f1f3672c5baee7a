//! `herald serve --demo`: the demo page at `/demo/` and a `demo` user for browsers on this
//! machine, so a newcomer can see notifications without a Django login:
//!
//! ```text
//! herald serve --demo
//! # open http://127.0.0.1:8700/demo/, then (through the loopback-only publish API):
//! herald send --user demo "Hello"
//! ```
//!
//! Safety: the flag is off by default and refuses a non-loopback `--bind`; the `demo` identity
//! is only given to an otherwise anonymous handshake whose TCP peer is loopback, that carries
//! no proxy header (a reverse proxy on the same host would make every visitor look local) and
//! whose `Origin`, if any, is a loopback host (so a web page elsewhere cannot ride a local
//! browser's socket). Real authentication configured next to `--demo` still wins.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use anyhow::bail;
use async_trait::async_trait;
use herald_server::{
    AuthError, Authenticator, Credential, DEMO_PATH, HandshakeRequest, Identity, SessionState,
};
use tracing::{info, warn};

use crate::settings::{Backend, DEFAULT_BIND, LayerOpts};

/// The username demo sockets get (group `user_demo`).
pub(crate) const DEMO_USER: &str = "demo";

/// Headers a reverse proxy adds: their presence means the peer address is not the browser's.
const PROXY_HEADERS: [&str; 4] = ["forwarded", "x-forwarded-for", "x-real-ip", "via"];

/// Refuses `--demo` on anything but a loopback address.
pub(crate) fn check_bind(bind: SocketAddr) -> anyhow::Result<()> {
    if !bind.ip().is_loopback() {
        bail!("--demo only binds to loopback addresses (e.g. 127.0.0.1:8700), not {bind}");
    }
    Ok(())
}

/// Tells the operator what `--demo` turned on and how to try it.
pub(crate) fn announce(addr: SocketAddr, layer: &LayerOpts) {
    warn!(
        url = %format!("http://{addr}{DEMO_PATH}"),
        user = DEMO_USER,
        "demo mode: anonymous browsers on this machine connect as the demo user; \
         never use --demo in production"
    );
    let how = if layer.backend() == Backend::Memory {
        // No Redis: `herald send` goes through this server's loopback-only publish API.
        if addr == DEFAULT_BIND.parse().unwrap() {
            String::new()
        } else {
            format!(" --server http://{addr}")
        }
    } else {
        " --redis <the same URL>".to_owned()
    };
    info!(
        "try it: herald send{how} --user {DEMO_USER} \"Hello\" (no herald command? `cargo \
         install --path crates/herald-cli` in the repository)"
    );
}

/// Wraps the configured authenticator: its users stay who they are, and an anonymous local
/// browser becomes [`DEMO_USER`].
pub(crate) fn authenticator(inner: Arc<dyn Authenticator>) -> Arc<dyn Authenticator> {
    Arc::new(DemoAuthenticator { inner })
}

/// See the module docs.
#[derive(Debug)]
struct DemoAuthenticator {
    inner: Arc<dyn Authenticator>,
}

#[async_trait]
impl Authenticator for DemoAuthenticator {
    async fn authenticate(
        &self,
        request: &HandshakeRequest,
    ) -> Result<Option<Identity>, AuthError> {
        if let Some(identity) = self.inner.authenticate(request).await? {
            return Ok(Some(identity));
        }
        Ok(is_local_browser(request).then(|| Identity::new(DEMO_USER, "0")))
    }

    /// The configured authenticator's users are re-validated by it; the demo user has no
    /// credential and is never asked about.
    async fn revalidate(&self, credentials: &[Credential]) -> Result<Vec<SessionState>, AuthError> {
        self.inner.revalidate(credentials).await
    }
}

fn is_local_browser(request: &HandshakeRequest) -> bool {
    request.client().is_some_and(|peer| peer.ip().is_loopback())
        && PROXY_HEADERS.iter().all(|h| request.header(h).is_none())
        && request.origin().is_none_or(|o| is_loopback_origin(&o))
}

/// `http://127.0.0.1:8000`, `https://localhost`, `http://[::1]:8000` → true.
fn is_loopback_origin(origin: &str) -> bool {
    let Some(rest) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_server::AnonymousAuthenticator;

    fn local() -> SocketAddr {
        "127.0.0.1:50000".parse().unwrap()
    }

    async fn auth(req: HandshakeRequest) -> Option<String> {
        let a = authenticator(Arc::new(AnonymousAuthenticator));
        a.authenticate(&req).await.unwrap().map(|i| i.username)
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn loopback_browser_from_a_loopback_page_is_the_demo_user() {
        let req = HandshakeRequest::new("/ws/tasks/")
            .with_client(local())
            .with_header("origin", "http://127.0.0.1:8000");
        assert_eq!(block_on(auth(req)).as_deref(), Some(DEMO_USER));
        let no_origin = HandshakeRequest::new("/ws/tasks/").with_client("[::1]:1".parse().unwrap());
        assert_eq!(block_on(auth(no_origin)).as_deref(), Some(DEMO_USER));
    }

    #[test]
    fn remote_peers_proxied_requests_and_foreign_origins_stay_anonymous() {
        let remote =
            HandshakeRequest::new("/ws/tasks/").with_client("192.0.2.1:5".parse().unwrap());
        assert_eq!(block_on(auth(remote)), None);
        let proxied = HandshakeRequest::new("/ws/tasks/")
            .with_client(local())
            .with_header("x-forwarded-for", "198.51.100.7");
        assert_eq!(block_on(auth(proxied)), None);
        let foreign = HandshakeRequest::new("/ws/tasks/")
            .with_client(local())
            .with_header("origin", "https://evil.example");
        assert_eq!(block_on(auth(foreign)), None);
        let no_peer = HandshakeRequest::new("/ws/tasks/");
        assert_eq!(block_on(auth(no_peer)), None);
    }

    #[test]
    fn loopback_origins_are_recognised() {
        for o in [
            "http://localhost:8000",
            "https://LOCALHOST",
            "http://127.0.0.2:1/x",
            "http://[::1]:8000",
        ] {
            assert!(is_loopback_origin(o), "{o}");
        }
        for o in [
            "null",
            "http://localhost.evil.example",
            "http://127.0.0.1.nip.io",
            "file://",
            "http://[::2]",
        ] {
            assert!(!is_loopback_origin(o), "{o}");
        }
    }

    #[test]
    fn demo_refuses_non_loopback_binds() {
        assert!(check_bind("127.0.0.1:8000".parse().unwrap()).is_ok());
        assert!(check_bind("[::1]:8000".parse().unwrap()).is_ok());
        assert!(check_bind("0.0.0.0:8000".parse().unwrap()).is_err());
    }
}

//! The crate's one HTTP client, for the auth callback and the presence webhook: one HTTP/1.1
//! connection per request (`Connection: close`) on hyper's client connection, plain `http`
//! only — both talk to a Django next to Herald, on loopback or a private network.

use std::str::FromStr;

use hyper::body::{Body, Incoming};
use hyper::{Request, Response, Uri};
use hyper_util::rt::TokioIo;

use crate::error::{Error, ErrorKind, Result};

/// An error while talking to the server, with the step it happened in (`"connect"`,
/// `"handshake"`, `"request"`).
pub(crate) type Failure = (&'static str, Box<dyn std::error::Error + Send + Sync>);

/// Where requests go: a parsed `http://` URL.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) host: String,
    pub(crate) port: u16,
    /// `host[:port]` as written, for the `Host` header.
    pub(crate) authority: String,
    pub(crate) path_and_query: String,
}

impl Target {
    /// Parses `url`; `what` names the setting in errors.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] unless it is an `http://` URL with a host and no credentials.
    pub(crate) fn parse(url: &str, what: &str) -> Result<Target> {
        let bad = |why: &str| Error::new(ErrorKind::Config, format!("{what}: {why}"));
        let uri = Uri::from_str(url).map_err(|_| bad("not a valid URL"))?;
        if uri.scheme_str() != Some("http") {
            return Err(bad("only http:// is supported"));
        }
        let authority = uri.authority().ok_or_else(|| bad("missing host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("credentials in the URL are not supported"));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("missing host"));
        }
        Ok(Target {
            host: host.to_owned(),
            port: authority.port_u16().unwrap_or(80),
            authority: authority.as_str().to_owned(),
            path_and_query: uri
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
        })
    }

    /// Sends `request` on a new connection and returns the response (its body still to read).
    /// Not bounded in time: callers wrap it in their timeout.
    pub(crate) async fn send<B>(
        &self,
        request: Request<B>,
    ) -> std::result::Result<Response<Incoming>, Failure>
    where
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let stream = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| ("connect", e.into()))?;
        let _ = stream.set_nodelay(true);
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ("handshake", e.into()))?;
        // The connection future does the I/O; it ends once the response is read and `sender` is
        // dropped (or when this request is cancelled).
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "http client connection ended with an error");
            }
        });
        sender
            .send_request(request)
            .await
            .map_err(|e| ("request", e.into()))
    }
}

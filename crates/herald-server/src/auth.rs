//! Who is connecting: [`HandshakeRequest`] (the scope-like view of the HTTP upgrade request),
//! [`Identity`], and the [`Authenticator`] hook.
//!
//! Channels resolves `scope["user"]` in `AuthMiddlewareStack` before the consumer runs; Herald
//! does the same with an [`Authenticator`] called once per handshake. The CLI plugs in a Django
//! session authenticator; this module ships two small real ones: [`StaticTokenAuthenticator`]
//! (a token → user table, for tests, examples and service accounts) and
//! [`TrustedHeaderAuthenticator`] (a reverse proxy that already authenticated the user).

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::OnceLock;

use async_trait::async_trait;
use hyper::HeaderMap;
use hyper::header::{HeaderName, HeaderValue};

use crate::origin::latin1;

/// An authenticated user, the part of Django's `request.user` a WebSocket consumer needs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Identity {
    /// `user.username`; the guide's consumer joins `user_{username}`.
    pub username: String,
    /// `user.pk` as text (Django stores `_auth_user_id` as a string in the session).
    pub user_id: String,
    /// What the authenticator needs to check this identity again later; see
    /// [`with_credential`](Self::with_credential).
    credential: Option<Credential>,
}

impl Identity {
    /// An identity for `username` with primary key `user_id`.
    pub fn new(username: impl Into<String>, user_id: impl Into<String>) -> Self {
        Identity {
            username: username.into(),
            user_id: user_id.into(),
            credential: None,
        }
    }

    /// With the credential the handshake presented (e.g. the session key), so that
    /// [`Authenticator::revalidate`] can later tell whether it still logs this user in. An
    /// identity without one is never re-validated.
    pub fn with_credential(mut self, credential: impl Into<Credential>) -> Self {
        self.credential = Some(credential.into());
        self
    }

    /// The credential, if the authenticator gave one.
    pub fn credential(&self) -> Option<&Credential> {
        self.credential.as_ref()
    }
}

/// An opaque, secret token an [`Authenticator`] attaches to an [`Identity`] to check it again
/// later: for Django, the session key (or the whole `Cookie` header for the HTTP callback).
/// Cheap to clone; `Debug` never prints it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Credential(std::sync::Arc<str>);

impl Credential {
    /// The token.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credential(***)")
    }
}

impl From<String> for Credential {
    fn from(s: String) -> Self {
        Credential(s.into())
    }
}

impl From<&str> for Credential {
    fn from(s: &str) -> Self {
        Credential(s.into())
    }
}

/// What a credential is now, according to [`Authenticator::revalidate`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionState {
    /// It still logs in the user with this id (`Identity::user_id`); a socket of another user
    /// holding it is closed.
    User(String),
    /// It logs nobody in any more (logged out, expired, password changed, deactivated).
    Gone,
    /// It could not be checked this time (e.g. the callback timed out): nothing is closed.
    Unknown,
}

/// Authentication could not be performed (the backend failed). Anonymous is not an error: it
/// is `Ok(None)`. Channels lets such an exception escape before accept, which Daphne answers
/// with HTTP 500; Herald does the same.
#[derive(Debug)]
pub struct AuthError {
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl AuthError {
    /// An error with a description.
    pub fn new(message: impl Into<String>) -> Self {
        AuthError {
            message: message.into(),
            source: None,
        }
    }

    /// An error wrapping its cause.
    pub fn with_source(
        message: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        AuthError {
            message: message.into(),
            source: Some(source.into()),
        }
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl std::error::Error for AuthError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Resolves the user of a WebSocket handshake.
///
/// Called once per handshake, before the consumer's `connect`, bounded by the handshake
/// timeout.
///
/// ```
/// use async_trait::async_trait;
/// use herald_server::{AuthError, Authenticator, HandshakeRequest, Identity};
///
/// /// Everyone who says `?user=<name>` is that user (local development only!).
/// #[derive(Debug)]
/// struct QueryUser;
///
/// #[async_trait]
/// impl Authenticator for QueryUser {
///     async fn authenticate(&self, req: &HandshakeRequest) -> Result<Option<Identity>, AuthError> {
///         Ok(req.query_param("user").map(|u| Identity::new(u.clone(), u)))
///     }
/// }
/// ```
#[async_trait]
pub trait Authenticator: Send + Sync + fmt::Debug + 'static {
    /// The identity behind `request`, `Ok(None)` for an anonymous user.
    ///
    /// # Errors
    /// An [`AuthError`] when the backend (database, cache) fails; the handshake is answered
    /// with HTTP 500.
    async fn authenticate(&self, request: &HandshakeRequest)
    -> Result<Option<Identity>, AuthError>;

    /// Checks again the credentials of open sockets (those whose [`Identity`] carries one),
    /// one [`SessionState`] per credential, in order. Called every
    /// [`session_revalidation`](crate::ServerConfig::session_revalidation) with the distinct
    /// credentials of this server's sockets, in batches: an implementation should answer a
    /// batch with a few queries, not one per credential.
    ///
    /// The default answers [`SessionState::Unknown`] for all: nothing is ever closed.
    ///
    /// # Errors
    /// An [`AuthError`] when the backend fails (database down): the round counts as failed
    /// and nothing is closed — a transient failure is not a logout.
    async fn revalidate(&self, credentials: &[Credential]) -> Result<Vec<SessionState>, AuthError> {
        Ok(vec![SessionState::Unknown; credentials.len()])
    }
}

/// Treats everyone as anonymous: the default when no authenticator is configured.
#[derive(Debug, Clone, Copy, Default)]
pub struct AnonymousAuthenticator;

#[async_trait]
impl Authenticator for AnonymousAuthenticator {
    async fn authenticate(
        &self,
        _request: &HandshakeRequest,
    ) -> Result<Option<Identity>, AuthError> {
        Ok(None)
    }
}

/// A fixed table of bearer tokens.
///
/// The token is read from `Authorization: Bearer <token>` or, because browsers cannot set
/// headers on a WebSocket, from the `token` query parameter. Tokens are compared in constant
/// time against every entry, so lookup time does not reveal how much of a token matched.
///
/// ```
/// use herald_server::{HandshakeRequest, Identity, StaticTokenAuthenticator, Authenticator};
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let auth = StaticTokenAuthenticator::new().with_token("s3cret", Identity::new("amadmin", "1"));
/// let req = HandshakeRequest::new("/ws/tasks/?token=s3cret");
/// assert_eq!(auth.authenticate(&req).await.unwrap().unwrap().username, "amadmin");
/// # });
/// ```
#[derive(Clone, Default)]
pub struct StaticTokenAuthenticator {
    tokens: Vec<(Vec<u8>, Identity)>,
}

impl fmt::Debug for StaticTokenAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the tokens themselves.
        f.debug_struct("StaticTokenAuthenticator")
            .field("tokens", &self.tokens.len())
            .finish()
    }
}

impl StaticTokenAuthenticator {
    /// An empty table (everyone is anonymous until tokens are added).
    pub fn new() -> Self {
        StaticTokenAuthenticator::default()
    }

    /// Adds a token for `identity`.
    pub fn with_token(mut self, token: impl Into<String>, identity: Identity) -> Self {
        self.tokens.push((token.into().into_bytes(), identity));
        self
    }

    fn lookup(&self, presented: &[u8]) -> Option<Identity> {
        let mut found = None;
        for (token, identity) in &self.tokens {
            if constant_time_eq(token, presented) && found.is_none() {
                found = Some(identity.clone());
            }
        }
        found
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[async_trait]
impl Authenticator for StaticTokenAuthenticator {
    async fn authenticate(
        &self,
        request: &HandshakeRequest,
    ) -> Result<Option<Identity>, AuthError> {
        let from_header = request
            .header("authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned);
        let Some(token) = from_header.or_else(|| request.query_param("token")) else {
            return Ok(None);
        };
        Ok(self.lookup(token.as_bytes()))
    }
}

/// Trusts a header set by an authenticating reverse proxy (e.g. `X-Remote-User`).
///
/// Only use it when every client connection passes through that proxy and the proxy
/// overwrites the header: anyone who can reach the server directly can claim any user.
#[derive(Debug, Clone)]
pub struct TrustedHeaderAuthenticator {
    user_header: HeaderName,
    id_header: Option<HeaderName>,
}

impl Default for TrustedHeaderAuthenticator {
    fn default() -> Self {
        TrustedHeaderAuthenticator {
            user_header: HeaderName::from_static("x-remote-user"),
            id_header: Some(HeaderName::from_static("x-remote-user-id")),
        }
    }
}

impl TrustedHeaderAuthenticator {
    /// Reads the username from `X-Remote-User` and the id from `X-Remote-User-Id` (falling back
    /// to the username).
    pub fn new() -> Self {
        TrustedHeaderAuthenticator::default()
    }

    /// Reads the username from `header` instead.
    pub fn with_user_header(mut self, header: HeaderName) -> Self {
        self.user_header = header;
        self
    }

    /// Reads the user id from `header` instead (`None`: the id is the username).
    pub fn with_id_header(mut self, header: Option<HeaderName>) -> Self {
        self.id_header = header;
        self
    }
}

#[async_trait]
impl Authenticator for TrustedHeaderAuthenticator {
    async fn authenticate(
        &self,
        request: &HandshakeRequest,
    ) -> Result<Option<Identity>, AuthError> {
        let Some(user) = request
            .header(self.user_header.as_str())
            .filter(|u| !u.is_empty())
        else {
            return Ok(None);
        };
        let id = self
            .id_header
            .as_ref()
            .and_then(|h| request.header(h.as_str()))
            .unwrap_or(user);
        Ok(Some(Identity::new(user, id)))
    }
}

/// The WebSocket handshake as a consumer sees it: Daphne's scope (`path`, `query_string`,
/// `headers`, `client`, `server`, `subprotocols`) without the ASGI plumbing.
///
/// Header names containing `_` are dropped, as Daphne does (CVE-2015-0219).
#[derive(Debug, Clone, Default)]
pub struct HandshakeRequest {
    raw_path: String,
    path: String,
    query_string: String,
    headers: Headers,
    client: Option<SocketAddr>,
    server: Option<SocketAddr>,
}

/// A request's headers: a [`HeaderMap`] while the handshake runs; afterwards (see
/// [`HandshakeRequest::pack_headers`]) one byte string, from which the map is rebuilt only if
/// someone asks for it again. An idle socket then pays a few hundred bytes instead of a map
/// with one allocation per value.
#[derive(Clone, Default)]
struct Headers {
    /// `name\0value\n` per entry, in order. Names are tokens and values exclude NUL and
    /// LF (`HeaderValue` rejects control bytes but tab), so the separators are unambiguous.
    packed: Box<[u8]>,
    /// Either the live map (`packed` empty) or the map rebuilt from `packed` on demand.
    map: OnceLock<HeaderMap>,
}

impl std::fmt::Debug for Headers {
    // Names only: values include the session cookie, which must not reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set()
            .entries(self.map().keys().map(HeaderName::as_str))
            .finish()
    }
}

impl Headers {
    fn map(&self) -> &HeaderMap {
        self.map.get_or_init(|| unpack_headers(&self.packed))
    }

    fn take(&mut self) -> HeaderMap {
        let map = self
            .map
            .take()
            .unwrap_or_else(|| unpack_headers(&self.packed));
        self.packed = Box::default();
        map
    }

    fn set(&mut self, map: HeaderMap) {
        self.packed = Box::default();
        self.map = OnceLock::from(map);
    }

    fn pack(&mut self) {
        let map = self.take();
        let mut packed = Vec::new();
        for (name, value) in &map {
            packed.extend_from_slice(name.as_str().as_bytes());
            packed.push(0);
            packed.extend_from_slice(value.as_bytes());
            packed.push(b'\n');
        }
        // `take` left the map empty: it is rebuilt from `packed` if asked for.
        self.packed = packed.into_boxed_slice();
    }
}

fn unpack_headers(packed: &[u8]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for entry in packed.split(|&b| b == b'\n').filter(|e| !e.is_empty()) {
        let Some(sep) = entry.iter().position(|&b| b == 0) else {
            continue;
        };
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&entry[..sep]),
            HeaderValue::from_bytes(&entry[sep + 1..]),
        ) {
            map.append(name, value);
        }
    }
    map
}

impl HandshakeRequest {
    /// A request for `path_and_query` (e.g. `"/ws/tasks/?token=x"`) with no headers; used by
    /// tests and by the server after parsing the real request.
    pub fn new(path_and_query: &str) -> Self {
        let (raw_path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        HandshakeRequest {
            raw_path: raw_path.to_owned(),
            path: percent_decode(raw_path),
            query_string: query.to_owned(),
            headers: Headers::default(),
            client: None,
            server: None,
        }
    }

    /// Adds a header (names with `_` are dropped like Daphne; invalid names/values are ignored).
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        if name.contains('_') {
            return self;
        }
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            let mut map = self.headers.take();
            map.append(name, value);
            self.headers.set(map);
        }
        self
    }

    /// Replaces all headers (names with `_` are dropped like Daphne). Values are copied, so
    /// the request does not keep the connection's read buffer alive.
    pub fn with_headers(mut self, headers: HeaderMap) -> Self {
        let mut kept = HeaderMap::with_capacity(headers.len());
        let mut last_name = None;
        for (name, value) in headers {
            if let Some(name) = name {
                last_name = Some(name);
            }
            if let Some(name) = &last_name
                && !name.as_str().contains('_')
            {
                // Copy the value: hyper's values are slices of the connection's 8 KiB read
                // buffer, and keeping one alive for the socket's lifetime would pin that
                // whole buffer to every idle WebSocket.
                let Ok(mut copied) = HeaderValue::from_bytes(value.as_bytes()) else {
                    continue;
                };
                copied.set_sensitive(value.is_sensitive());
                kept.append(name.clone(), copied);
            }
        }
        self.headers.set(kept);
        self
    }

    /// Packs the headers into one allocation (the server does this once a connection is
    /// accepted); [`headers`](Self::headers) still returns them, rebuilding the map on demand.
    pub fn pack_headers(&mut self) {
        self.headers.pack();
    }

    /// Sets the client address (`scope["client"]`).
    pub fn with_client(mut self, addr: SocketAddr) -> Self {
        self.client = Some(addr);
        self
    }

    /// Sets the server address (`scope["server"]`).
    pub fn with_server(mut self, addr: SocketAddr) -> Self {
        self.server = Some(addr);
        self
    }

    /// The URL-decoded path (`scope["path"]`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The path as sent (`scope["raw_path"]`).
    pub fn raw_path(&self) -> &str {
        &self.raw_path
    }

    /// The raw query string without `?` (`scope["query_string"]`).
    pub fn query_string(&self) -> &str {
        &self.query_string
    }

    /// All headers.
    pub fn headers(&self) -> &HeaderMap {
        self.headers.map()
    }

    /// The first value of a header as text, when it is visible ASCII; use
    /// [`headers`](Self::headers) for raw bytes.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers().get(name).and_then(|v| v.to_str().ok())
    }

    /// The client address (`scope["client"]`).
    pub fn client(&self) -> Option<SocketAddr> {
        self.client
    }

    /// The server address (`scope["server"]`).
    pub fn server(&self) -> Option<SocketAddr> {
        self.server
    }

    /// The last `Origin` header, latin-1 decoded (what Channels' `OriginValidator` reads).
    pub fn origin(&self) -> Option<String> {
        self.headers()
            .get_all("origin")
            .iter()
            .next_back()
            .map(|v| latin1(v.as_bytes()))
    }

    /// `Sec-WebSocket-Protocol` split on `,` and stripped (`scope["subprotocols"]`).
    pub fn subprotocols(&self) -> Vec<String> {
        self.headers()
            .get_all("sec-websocket-protocol")
            .iter()
            .flat_map(|v| {
                latin1(v.as_bytes())
                    .split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The first value of a query parameter, `+` and percent-escapes decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query_string.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (form_decode(k) == name).then(|| form_decode(v))
        })
    }

    /// Every value of a query parameter, in order, decoded as [`query_param`](Self::query_param).
    pub fn query_params(&self, name: &str) -> Vec<String> {
        self.query_string
            .split('&')
            .filter_map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (form_decode(k) == name).then(|| form_decode(v))
            })
            .collect()
    }

    /// Cookies from the **first** `Cookie` header, parsed like Django's `parse_cookie` (later
    /// duplicates win; a chunk without `=` has key `""`).
    pub fn cookies(&self) -> HashMap<String, String> {
        let mut out = HashMap::new();
        let Some(header) = self.headers().get("cookie") else {
            return out;
        };
        for chunk in latin1(header.as_bytes()).split(';') {
            let (key, value) = match chunk.split_once('=') {
                Some((k, v)) => (k.trim(), v.trim()),
                None => ("", chunk.trim()),
            };
            if !key.is_empty() || !value.is_empty() {
                out.insert(key.to_owned(), unquote_cookie(value));
            }
        }
        out
    }

    /// One cookie's value (see [`cookies`](Self::cookies)).
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.cookies().remove(name)
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `urllib.parse.unquote`: `%XX` escapes decoded as UTF-8 (invalid sequences replaced).
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn form_decode(s: &str) -> String {
    percent_decode(&s.replace('+', " "))
}

/// Python `http.cookies._unquote`: strips surrounding quotes and decodes `\ooo` and `\x` escapes.
fn unquote_cookie(value: &str) -> String {
    let Some(inner) = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .filter(|_| value.len() >= 2)
    else {
        return value.to_owned();
    };
    let bytes = inner.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 1 < bytes.len() {
            let octal = &bytes[i + 1..bytes.len().min(i + 4)];
            if octal.len() == 3 && octal.iter().all(|b| (b'0'..=b'7').contains(b)) {
                out.push((octal[0] - b'0') * 64 + (octal[1] - b'0') * 8 + (octal[2] - b'0'));
                i += 4;
            } else {
                out.push(bytes[i + 1]);
                i += 2;
            }
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_headers_read_back_the_same_and_debug_shows_no_values() {
        let mut map = HeaderMap::new();
        map.append(
            "cookie",
            HeaderValue::from_static("sessionid=secret123; x=1"),
        );
        map.append("origin", HeaderValue::from_static("https://a.example"));
        map.append("sec-websocket-protocol", HeaderValue::from_static("a, b"));
        map.append("sec-websocket-protocol", HeaderValue::from_static("c"));
        map.append("x-latin", HeaderValue::from_bytes(b"caf\xe9\tbar").unwrap());
        let mut req = HandshakeRequest::new("/ws/tasks/?a=1").with_headers(map.clone());
        req.pack_headers();
        assert_eq!(req.headers(), &map);
        assert_eq!(req.subprotocols(), ["a", "b", "c"]);
        assert_eq!(req.cookie("sessionid").as_deref(), Some("secret123"));
        assert_eq!(req.origin().as_deref(), Some("https://a.example"));
        let debug = format!("{req:?}");
        assert!(
            debug.contains("cookie") && !debug.contains("secret123"),
            "{debug}"
        );

        // Still a builder after packing: a header added later joins the unpacked ones.
        let req = req.with_header("x-extra", "1");
        assert_eq!(req.headers().len(), map.len() + 1);
        assert_eq!(req.header("x-extra"), Some("1"));
        assert_eq!(req.header("origin"), Some("https://a.example"));
    }

    #[test]
    fn header_names_with_underscore_are_dropped() {
        let req = HandshakeRequest::new("/")
            .with_header("x_remote_user", "mallory")
            .with_header("x-remote-user", "alice");
        assert_eq!(req.headers().len(), 1);
        assert_eq!(req.header("x-remote-user"), Some("alice"));
    }

    #[test]
    fn query_param_is_form_decoded() {
        let req = HandshakeRequest::new("/ws/?a=1&token=a%2Fb+c&token=second");
        assert_eq!(req.query_param("token").as_deref(), Some("a/b c"));
        assert_eq!(req.query_param("missing"), None);
        assert_eq!(req.query_string(), "a=1&token=a%2Fb+c&token=second");
    }

    #[test]
    fn path_is_percent_decoded_and_raw_path_kept() {
        let req = HandshakeRequest::new("/ws/t%C3%A9st/");
        assert_eq!(req.path(), "/ws/tést/");
        assert_eq!(req.raw_path(), "/ws/t%C3%A9st/");
    }

    #[test]
    fn cookies_follow_django_parse_cookie() {
        let req = HandshakeRequest::new("/")
            .with_header(
                "cookie",
                "sessionid=abc; csrftoken=x; sessionid=def; lone; q=\"a\\054b\"",
            )
            .with_header("cookie", "ignored=1");
        let cookies = req.cookies();
        assert_eq!(cookies["sessionid"], "def");
        assert_eq!(cookies["csrftoken"], "x");
        assert_eq!(cookies[""], "lone");
        assert_eq!(cookies["q"], "a,b");
        assert!(!cookies.contains_key("ignored"));
    }

    #[test]
    fn last_origin_header_wins() {
        let req = HandshakeRequest::new("/")
            .with_header("origin", "http://a.com")
            .with_header("origin", "http://b.com");
        assert_eq!(req.origin().as_deref(), Some("http://b.com"));
    }

    #[test]
    fn subprotocols_are_split_and_trimmed() {
        let req = HandshakeRequest::new("/").with_header("sec-websocket-protocol", "a, b ,c");
        assert_eq!(req.subprotocols(), ["a", "b", "c"]);
    }

    #[tokio::test]
    async fn static_tokens_accept_header_or_query_and_reject_unknown() {
        let auth = StaticTokenAuthenticator::new().with_token("tok1", Identity::new("alice", "1"));
        let by_header = HandshakeRequest::new("/").with_header("authorization", "Bearer tok1");
        let by_query = HandshakeRequest::new("/?token=tok1");
        let wrong = HandshakeRequest::new("/?token=tok2");
        let prefix = HandshakeRequest::new("/?token=tok");
        assert_eq!(
            auth.authenticate(&by_header).await.unwrap(),
            Some(Identity::new("alice", "1"))
        );
        assert!(auth.authenticate(&by_query).await.unwrap().is_some());
        assert!(auth.authenticate(&wrong).await.unwrap().is_none());
        assert!(auth.authenticate(&prefix).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn trusted_header_uses_id_header_or_username() {
        let auth = TrustedHeaderAuthenticator::new();
        let with_id = HandshakeRequest::new("/")
            .with_header("x-remote-user", "bob")
            .with_header("x-remote-user-id", "42");
        let without_id = HandshakeRequest::new("/").with_header("x-remote-user", "bob");
        assert_eq!(
            auth.authenticate(&with_id).await.unwrap(),
            Some(Identity::new("bob", "42"))
        );
        assert_eq!(
            auth.authenticate(&without_id).await.unwrap(),
            Some(Identity::new("bob", "bob"))
        );
        assert_eq!(
            auth.authenticate(&HandshakeRequest::new("/"))
                .await
                .unwrap(),
            None
        );
    }
}

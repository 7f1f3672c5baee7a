//! The HTTP callback authenticator: for setups this crate cannot read directly (cache sessions,
//! custom backends, SSO middleware), ask Django itself.
//!
//! `GET <callback_url>` with the handshake's `Cookie` header forwarded verbatim. The view answers
//! `200` with `{"username": "...", "user_id": ...}` (a string or a number) for a logged-in user, or
//! `401`/`403` for anyone else; anything else is an [`ErrorKind::Callback`] error (our side is
//! broken, not the user). One HTTP/1.1 connection per request (`Connection: close`), plain `http`
//! only: the view is meant to be on loopback or a private network next to Herald.
//!
//! The Django side is a few lines (see `tests/compat/django_project/OptsIO/views.py`):
//!
//! ```text
//! def herald_whoami(request):
//!     if not request.user.is_authenticated:
//!         return JsonResponse({"detail": "anonymous"}, status=401)
//!     return JsonResponse({"username": request.user.get_username(), "user_id": request.user.pk})
//! ```

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{ACCEPT, CONNECTION, COOKIE, HOST, HeaderValue, USER_AGENT};
use hyper::{Request, StatusCode};

use crate::error::{Error, ErrorKind, Result};
use crate::http::Target;

/// Largest response body we read from the callback.
const MAX_BODY: usize = 64 * 1024;

/// What the callback view said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    /// 200 with a user.
    User { user_id: String, username: String },
    /// 401 or 403.
    Refused(u16),
}

/// A parsed callback URL.
#[derive(Debug, Clone)]
pub(crate) struct Callback {
    target: Target,
    timeout: Duration,
}

impl Callback {
    pub(crate) fn new(url: &str, timeout: Duration) -> Result<Self> {
        let target = Target::parse(url, "callback_url")?;
        if timeout.is_zero() {
            return Err(Error::new(
                ErrorKind::Config,
                "callback_url: timeout must be positive",
            ));
        }
        Ok(Callback { target, timeout })
    }

    /// Asks the view about `cookie_header`.
    ///
    /// # Errors
    /// [`ErrorKind::Timeout`] after the configured timeout; [`ErrorKind::Callback`] if it cannot
    /// be reached or answers anything but 200-with-a-user, 401 or 403.
    pub(crate) async fn ask(&self, cookie_header: &HeaderValue) -> Result<Answer> {
        match tokio::time::timeout(self.timeout, self.request(cookie_header)).await {
            Ok(result) => result,
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                "auth callback did not answer in time",
            )),
        }
    }

    async fn request(&self, cookie_header: &HeaderValue) -> Result<Answer> {
        let failed = |what: &str, e: Box<dyn std::error::Error + Send + Sync>| {
            Error::with_source(ErrorKind::Callback, format!("auth callback: {what}"), e)
        };
        let request = Request::get(self.target.path_and_query.as_str())
            .header(HOST, self.target.authority.as_str())
            .header(COOKIE, cookie_header.clone())
            .header(ACCEPT, "application/json")
            .header(
                USER_AGENT,
                concat!("herald-django/", env!("CARGO_PKG_VERSION")),
            )
            .header(CONNECTION, "close")
            .body(Empty::<Bytes>::new())
            .map_err(|e| failed("request", e.into()))?;
        let response = self
            .target
            .send(request)
            .await
            .map_err(|(what, e)| failed(what, e))?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Ok(Answer::Refused(status.as_u16()));
        }
        if status != StatusCode::OK {
            return Err(Error::new(
                ErrorKind::Callback,
                format!("auth callback answered {status}"),
            ));
        }
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| failed("body", e))?
            .to_bytes();
        parse_user(&body)
    }
}

/// `{"username": "...", "user_id": "..." | 123}` → the user.
fn parse_user(body: &[u8]) -> Result<Answer> {
    let malformed = || {
        Error::new(
            ErrorKind::Callback,
            "auth callback: 200 body is not {\"username\": str, \"user_id\": str|int}",
        )
    };
    let json: serde_json::Value = serde_json::from_slice(body).map_err(|_| malformed())?;
    let username = json
        .get("username")
        .and_then(|v| v.as_str())
        .ok_or_else(malformed)?;
    let user_id = match json.get("user_id") {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Number(n)) => n.to_string(),
        _ => return Err(malformed()),
    };
    Ok(Answer::User {
        user_id,
        username: username.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(1);

    #[test]
    fn parses_http_urls_with_defaults() {
        let c = Callback::new("http://127.0.0.1:8000/herald/whoami/?x=1", T).unwrap();
        let t = &c.target;
        assert_eq!((t.host.as_str(), t.port), ("127.0.0.1", 8000));
        assert_eq!(t.authority, "127.0.0.1:8000");
        assert_eq!(t.path_and_query, "/herald/whoami/?x=1");
        let c = Callback::new("http://localhost", T).unwrap();
        assert_eq!((c.target.port, c.target.path_and_query.as_str()), (80, "/"));
        let c = Callback::new("http://[::1]:9/x", T).unwrap();
        assert_eq!(c.target.host, "::1");
    }

    #[test]
    fn rejects_non_http_or_credentials() {
        for bad in [
            "https://h/x",
            "h/x",
            "ftp://h",
            "http://u:p@h/x",
            "not a url",
        ] {
            assert!(Callback::new(bad, T).unwrap_err().is_config(), "{bad}");
        }
        assert!(Callback::new("http://h/", Duration::ZERO).is_err());
    }

    #[test]
    fn user_body_accepts_string_or_number_ids() {
        let a = parse_user(br#"{"username": "amadmin", "user_id": 3}"#).unwrap();
        assert_eq!(
            a,
            Answer::User {
                user_id: "3".into(),
                username: "amadmin".into()
            }
        );
        let a = parse_user(br#"{"username": "u", "user_id": "5f0c"}"#).unwrap();
        assert!(matches!(a, Answer::User { user_id, .. } if user_id == "5f0c"));
        for bad in [
            &b"{}"[..],
            b"null",
            b"{\"username\": 1, \"user_id\": 1}",
            b"<html>",
        ] {
            assert!(parse_user(bad).unwrap_err().is_callback());
        }
    }
}

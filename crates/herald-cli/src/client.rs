//! A tiny HTTP/1.1 client for herald's publish API (`POST /api/publish`, `GET /api/presence`),
//! used by the senders when no Redis is configured (e.g. next to `herald serve --demo`).

use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Where `herald serve` listens by default ([`DEFAULT_BIND`](crate::settings::DEFAULT_BIND)).
pub(crate) fn default_server() -> String {
    format!("http://{}", crate::settings::DEFAULT_BIND)
}
/// How long one API call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer read.
const MAX_ANSWER: u64 = 1024 * 1024;

/// Where the publish API is, for senders without `--redis`.
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct ApiOpts {
    /// herald's HTTP address, used when no --redis is given [default: http://127.0.0.1:8700].
    #[arg(long, env = "HERALD_SERVER")]
    pub(crate) server: Option<String>,
    /// Bearer token of the publish API (`herald serve --publish-token`).
    #[arg(long, env = "HERALD_PUBLISH_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
}

impl ApiOpts {
    fn base(&self) -> String {
        self.server.clone().unwrap_or_else(default_server)
    }

    /// `POST /api/publish` with `body`; returns the JSON answer of a 200.
    pub(crate) async fn publish(
        &self,
        body: &serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        self.call("POST", "/api/publish", Some(body)).await
    }

    /// `POST /api/test-connection`: the sockets of `user` that got the test message.
    pub(crate) async fn test_connection(
        &self,
        user: &str,
        wait: Duration,
    ) -> anyhow::Result<serde_json::Value> {
        let body = serde_json::json!({"user": user, "wait": wait.as_secs()});
        self.call("POST", "/api/test-connection", Some(&body)).await
    }

    /// `POST /api/disconnect`: a `herald.disconnect` with `code` to `user`'s group.
    pub(crate) async fn disconnect(
        &self,
        user: &str,
        code: u16,
    ) -> anyhow::Result<serde_json::Value> {
        let body = serde_json::json!({"user": user, "code": code});
        self.call("POST", "/api/disconnect", Some(&body)).await
    }

    /// `GET /api/presence[?user=…]`.
    pub(crate) async fn presence(&self, user: Option<&str>) -> anyhow::Result<serde_json::Value> {
        let path = match user {
            Some(u) => format!("/api/presence?user={}", encode(u)),
            None => "/api/presence".to_owned(),
        };
        self.call("GET", &path, None).await
    }

    /// `GET /api/connections[?user=…]`.
    pub(crate) async fn connections(
        &self,
        user: Option<&str>,
    ) -> anyhow::Result<serde_json::Value> {
        let path = match user {
            Some(u) => format!("/api/connections?user={}", encode(u)),
            None => "/api/connections".to_owned(),
        };
        self.call("GET", &path, None).await
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> anyhow::Result<serde_json::Value> {
        let base = self.base();
        let base = base.as_str();
        let authority = base
            .strip_prefix("http://")
            .with_context(|| format!("--server {base:?} must be an http:// URL"))?
            .trim_end_matches('/');
        let body = body.map(serde_json::Value::to_string).unwrap_or_default();
        let auth = self
            .token
            .as_deref()
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {authority}\r\n{auth}Content-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let exchange = async {
            let mut stream = tokio::net::TcpStream::connect(authority).await?;
            stream.write_all(request.as_bytes()).await?;
            let mut answer = Vec::new();
            stream.take(MAX_ANSWER).read_to_end(&mut answer).await?;
            Ok::<_, std::io::Error>(answer)
        };
        let answer = match tokio::time::timeout(CALL_TIMEOUT, exchange).await {
            Ok(Ok(a)) => a,
            Ok(Err(err)) => bail!(
                "no Redis configured (--redis) and herald's publish API at {base} is unreachable \
                 ({err}); start `herald serve --demo` or pass --redis / --server"
            ),
            Err(_) => bail!("herald at {base} did not answer within {CALL_TIMEOUT:?}"),
        };
        let text = String::from_utf8_lossy(&answer);
        let status: u16 = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("{base} did not answer with HTTP"))?;
        let json: serde_json::Value = text
            .split_once("\r\n\r\n")
            .and_then(|(_, b)| serde_json::from_str(b).ok())
            .unwrap_or(serde_json::Value::Null);
        match status {
            200 => Ok(json),
            401 => bail!("{base} refused the publish API call: wrong or missing --token"),
            404 => bail!(
                "{base} has no publish API: start herald serve with --publish-token (or --demo)"
            ),
            _ => bail!(
                "{base} answered {status}: {}",
                json["error"].as_str().unwrap_or("no details")
            ),
        }
    }
}

fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(encode("a b@c"), "a%20b%40c");
        assert_eq!(encode("amadmin"), "amadmin");
    }

    #[tokio::test]
    async fn non_http_servers_are_refused() {
        let api = ApiOpts {
            server: Some("https://x".into()),
            token: None,
        };
        let err = api.presence(None).await.unwrap_err();
        assert!(err.to_string().contains("http://"));
    }
}

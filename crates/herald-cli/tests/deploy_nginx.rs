//! `docs/deploy.md` followed end to end: its TOML file and its nginx configuration (read out of
//! the document, so they cannot drift) put `herald serve` behind a real nginx next to the
//! site's app server (a stand-in that names itself), with a real Django site's `db` sessions.
//! A logged-in socket through nginx gets Python's `group_send`; `X-Forwarded-For` is believed
//! from nginx only; `/ws/other/` stays on the app server; the event stream `/sse/tasks/` gets the
//! same message through nginx. Herald runs with `--permessage-deflate` and every socket offers it,
//! so the frames through nginx are compressed ones (deploy.md §12: nginx passes the extension).

mod support;

use std::net::SocketAddr;

use herald_server::deflate::{CLIENT_OFFER, InflateStream};
use herald_test_support::compat_python;
use herald_test_support::ws::recv_json;
use support::django::{SECRET, SiteDb};
use support::nginx::{Nginx, deploy_doc_block, replace_once};
use support::sse::EventStream;
use support::{Herald, TIMEOUT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A socket through nginx that negotiated `permessage-deflate`.
type Ws = WebSocketStream<InflateStream<tokio::net::TcpStream>>;

/// The site's existing app server (Daphne in the doc): answers every request with its name and
/// the path, so a test can tell who served it.
async fn app_server_stand_in() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let n = stream.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                let path = head.split_whitespace().nth(1).unwrap_or("?").to_owned();
                let body = format!("django app server: {path}");
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(resp.as_bytes()).await;
            });
        }
    });
    addr
}

/// A raw HTTP/1.1 request through `addr`; the response, read up to its `Content-Length` (nginx
/// keeps the client connection alive).
async fn raw_request(addr: SocketAddr, head: &str) -> String {
    let io = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(head.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 16384];
        loop {
            let n = s.read(&mut buf).await.unwrap();
            out.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&out).into_owned();
            if n == 0 {
                return text;
            }
            if let Some((headers, body)) = text.split_once("\r\n\r\n") {
                let length = headers.lines().find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                });
                if length.is_some_and(|len| body.len() >= len) {
                    return text;
                }
            }
        }
    };
    tokio::time::timeout(TIMEOUT, io).await.unwrap()
}

/// A `/ws/tasks/` handshake through nginx from the local address `source` (any of 127.0.0.0/8
/// is this host), as a browser on the site would send it; the socket, or the refusal's status.
async fn ws_via(
    nginx: SocketAddr,
    source: &str,
    cookie: &str,
    forwarded_for: Option<&str>,
) -> Result<Ws, u16> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(source.parse().unwrap(), 0))
        .unwrap();
    let stream = tokio::time::timeout(TIMEOUT, socket.connect(nginx))
        .await
        .unwrap()
        .unwrap();
    let mut req = format!("ws://{nginx}/ws/tasks/")
        .into_client_request()
        .unwrap();
    let headers = req.headers_mut();
    headers.insert("host", "app.example.com".parse().unwrap());
    headers.insert("origin", "https://app.example.com".parse().unwrap());
    headers.insert("cookie", cookie.parse().unwrap());
    headers.insert("sec-websocket-extensions", CLIENT_OFFER.parse().unwrap());
    if let Some(xff) = forwarded_for {
        headers.insert("x-forwarded-for", xff.parse().unwrap());
    }
    let stream = InflateStream::client(stream, None);
    match tokio::time::timeout(TIMEOUT, tokio_tungstenite::client_async(req, stream))
        .await
        .unwrap()
    {
        Ok((ws, resp)) => {
            let ext = resp.headers().get("sec-websocket-extensions");
            assert_eq!(
                ext.and_then(|v| v.to_str().ok()),
                Some("permessage-deflate; server_no_context_takeover"),
                "the extension made it through nginx both ways"
            );
            Ok(ws)
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(other) => panic!("expected a handshake or an HTTP refusal, got {other:?}"),
    }
}

/// The doc's `herald.toml` with this machine's Redis, database and secret in place of the
/// examples; every other key (origins, trusted proxies, prefix) as written.
fn herald_toml(redis_url: &str, db_url: &str) -> String {
    let mut doc: toml::Table = toml::from_str(&deploy_doc_block("herald-toml")).unwrap();
    let table = |doc: &mut toml::Table, name: &str| -> toml::Table {
        doc.get(name).unwrap().as_table().unwrap().clone()
    };
    let mut layer = table(&mut doc, "layer");
    assert!(layer.contains_key("hosts"));
    layer.insert("hosts".into(), toml::Value::Array(vec![redis_url.into()]));
    let mut django = table(&mut doc, "django");
    for (key, value) in [("secret_key", SECRET), ("database_url", db_url)] {
        assert!(django.contains_key(key), "{key}");
        django.insert(key.into(), value.into());
    }
    doc.insert("layer".into(), layer.into());
    doc.insert("django".into(), django.into());
    toml::to_string(&doc).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn deploy_guide_puts_herald_behind_nginx() {
    let Some(python) = compat_python() else {
        return;
    };
    let site = SiteDb::start(python, "amadmin").await;
    let (redis, db_url, django, fixture) = (&site.redis, &site.db_url, &site.django, &site.fixture);
    let dir = tempfile::tempdir().unwrap();

    // Herald from the doc's TOML (its bind address is replaced by a free port). One socket per
    // client address, so the address Herald sees is visible as accept or 429.
    let config = dir.path().join("herald.toml");
    std::fs::write(&config, herald_toml(&redis.url(), db_url)).unwrap();
    let config = config.to_str().unwrap();
    let herald = Herald::start(&[
        "--config",
        config,
        "--max-connections-per-ip",
        "1",
        "--permessage-deflate",
    ])
    .await;

    // nginx from the doc, pointed at this Herald and the stand-in app server.
    let app = app_server_stand_in().await;
    let conf = deploy_doc_block("nginx");
    let conf = replace_once(
        &conf,
        "server 127.0.0.1:8001;",
        &format!("server {};", herald.addr),
    );
    let conf = replace_once(&conf, "server 127.0.0.1:8000;", &format!("server {app};"));
    let Some(nginx) = Nginx::start(&conf, "listen 80;").await else {
        return;
    };

    // The guide's check passes with the same file and the browser's cookie.
    let check = support::herald(&["check", "--config", config, "--cookie", &fixture.cookie]).await;
    assert!(
        check.status.success(),
        "herald check failed:\n{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    // Only /ws/tasks/ and the static client reach Herald; other sockets stay on the app server.
    let other = raw_request(
        nginx.addr,
        "GET /ws/other/ HTTP/1.1\r\nHost: app.example.com\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n",
    )
    .await;
    assert!(other.contains("django app server: /ws/other/"), "{other}");
    let page = raw_request(
        nginx.addr,
        "GET /accounts/login/ HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        page.contains("django app server: /accounts/login/"),
        "{page}"
    );
    let js = raw_request(
        nginx.addr,
        &format!(
            "GET {} HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n",
            herald_server::CLIENT_JS_PATH
        ),
    )
    .await;
    assert!(js.starts_with("HTTP/1.1 200"), "{js}");
    assert!(js.contains("taskNotifications"), "static client not served");

    // A logged-in browser at 127.0.0.2 gets Python's group_send through nginx.
    let mut ws = ws_via(nginx.addr, "127.0.0.2", &fixture.cookie, None)
        .await
        .unwrap();
    django
        .shell(
            "from OptsIO.ws_utils import ws_send_message\n\
             assert ws_send_message('amadmin', 'through nginx')\n",
        )
        .await;
    let m = recv_json(&mut ws).await;
    assert_eq!(m["type"], "user_message");
    assert_eq!(m["message"], "through nginx");
    assert_eq!(m["username"], "amadmin");

    // The event stream through nginx: same cookie, same message, unbuffered. A same-origin
    // `EventSource` sends no `Origin`: the site's host name is what Herald checks.
    let mut stream = EventStream::open(
        nginx.addr,
        "/sse/tasks/",
        &[("Host", "app.example.com"), ("Cookie", &fixture.cookie)],
    )
    .await;
    assert_eq!(stream.status, 200);
    assert_eq!(stream.header("content-type"), Some("text/event-stream"));
    django
        .shell(
            "from OptsIO.ws_utils import ws_send_message\n\
             assert ws_send_message('amadmin', 'streamed through nginx')\n",
        )
        .await;
    // The socket above gets it too.
    assert_eq!(
        recv_json(&mut ws).await["message"],
        "streamed through nginx"
    );
    let event = stream.next_json().await;
    assert_eq!(event["type"], "user_message");
    assert_eq!(event["message"], "streamed through nginx");
    drop(stream);

    // Herald sees the browsers' addresses, not nginx's: a second browser is a second client...
    let _second = ws_via(nginx.addr, "127.0.0.3", &fixture.cookie, None)
        .await
        .unwrap();
    // ...and the first cannot pass for someone else by sending its own X-Forwarded-For (nginx
    // appends 127.0.0.2 after it, and that is what Herald takes).
    let forged = ws_via(
        nginx.addr,
        "127.0.0.2",
        &fixture.cookie,
        Some("203.0.113.50"),
    )
    .await
    .unwrap_err();
    assert_eq!(forged, 429);
    // Without a session the socket is refused.
    let anonymous = ws_via(nginx.addr, "127.0.0.4", "sessionid=nope", None)
        .await
        .unwrap_err();
    assert_eq!(anonymous, 403);
    drop(nginx);
}

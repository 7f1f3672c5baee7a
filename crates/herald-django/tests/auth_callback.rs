//! The HTTP callback authenticator: against the test project's `herald/whoami/` view served by
//! Django itself (`herald_serve`), and against tiny raw TCP servers for the failure modes.

mod common;

use std::time::Duration;

use common::{Django, OLD_SECRET, SECRET, check};
use herald_django::{AuthOutcome, DjangoAuth, DjangoAuthConfig, ErrorKind, Refusal};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

const TIMEOUT: Duration = Duration::from_secs(60);

/// `manage.py herald_serve` on an ephemeral port; killed on drop.
struct Served {
    _child: tokio::process::Child,
    port: u16,
}

async fn serve(django: &Django) -> Served {
    let mut child = django
        .command(&["herald_serve"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = tokio::time::timeout(TIMEOUT, BufReader::new(stdout).lines().next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap_or_else(|| panic!("herald_serve exited without printing its port"));
    let json: serde_json::Value = serde_json::from_str(&line).unwrap();
    let port = u16::try_from(json["port"].as_u64().unwrap()).unwrap();
    Served {
        _child: child,
        port,
    }
}

fn callback_auth(url: String, timeout: Duration) -> DjangoAuth {
    DjangoAuth::new(
        DjangoAuthConfig::default()
            .with_callback_url(url)
            .with_callback_timeout(timeout),
    )
    .unwrap()
}

async fn check_err(auth: &DjangoAuth, header: &str) -> ErrorKind {
    tokio::time::timeout(Duration::from_secs(20), auth.check(Some(header)))
        .await
        .unwrap()
        .unwrap_err()
        .kind()
}

/// One SQLite site with the callback view served; the fixture args make the session.
async fn django_site() -> Option<(tempfile::TempDir, Django)> {
    let python = herald_test_support::compat_python()?;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:///{}", dir.path().join("db.sqlite3").display());
    Some((dir, Django::new(python, &url)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_answers_what_django_decides() {
    let Some((_dir, django)) = django_site().await else {
        return;
    };
    let valid = django.fixture(&[]).await;
    let changed = django
        .fixture(&[
            "--username",
            "changed",
            "--no-migrate",
            "--change-password",
            "x",
        ])
        .await;
    let inactive = django
        .fixture(&["--username", "inactive", "--no-migrate", "--inactive"])
        .await;
    let served = serve(&django).await;
    let url = format!("http://127.0.0.1:{}/herald/whoami/", served.port);
    let auth = callback_auth(url, Duration::from_secs(10));

    assert_eq!(
        check(&auth, Some(&valid.header())).await,
        AuthOutcome::Authenticated(valid.user.clone())
    );
    assert_eq!(
        check(&auth, None).await,
        AuthOutcome::Anonymous(Refusal::NoCookieHeader)
    );
    let refused = AuthOutcome::Anonymous(Refusal::CallbackRefused);
    let forged = "sessionid=0123456789abcdefghijklmnopqrstuv";
    for header in [forged, &changed.header(), &inactive.header(), "theme=dark"] {
        assert_eq!(check(&auth, Some(header)).await, refused, "{header}");
    }
    // Concurrent handshakes each get their own answer.
    let (a, b) = tokio::join!(
        check(&auth, Some(&valid.cookie)),
        check(&auth, Some(forged))
    );
    assert_eq!(a, AuthOutcome::Authenticated(valid.user.clone()));
    assert_eq!(b, refused);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_many_asks_the_view_per_cookie_and_an_unreachable_view_is_unknown_not_refused() {
    let Some((_dir, django)) = django_site().await else {
        return;
    };
    let valid = django.fixture(&[]).await;
    let changed = django
        .fixture(&[
            "--username",
            "changed",
            "--no-migrate",
            "--change-password",
            "x",
        ])
        .await;
    let served = serve(&django).await;
    let auth = callback_auth(
        format!("http://127.0.0.1:{}/herald/whoami/", served.port),
        Duration::from_secs(10),
    );
    // In callback mode the credential is the whole Cookie header, forwarded as the handshake's.
    let header = valid.header();
    assert_eq!(
        auth.credential(Some(&header)).as_deref(),
        Some(header.as_str())
    );
    let changed_header = changed.header();
    let many: Vec<&str> = std::iter::repeat_n(header.as_str(), 10)
        .chain([changed_header.as_str(), "theme=dark"])
        .collect();
    let answers = tokio::time::timeout(TIMEOUT, auth.check_many(&many))
        .await
        .unwrap()
        .unwrap();
    let authenticated = Some(AuthOutcome::Authenticated(valid.user.clone()));
    let refused = Some(AuthOutcome::Anonymous(Refusal::CallbackRefused));
    assert!(
        answers[..10].iter().all(|a| *a == authenticated),
        "{answers:?}"
    );
    assert_eq!(answers[10..], [refused.clone(), refused]);

    // The view is gone: nobody is refused, every answer is unknown.
    drop(served);
    let answers = tokio::time::timeout(TIMEOUT, auth.check_many(&many[..3]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answers, [None, None, None]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_follows_djangos_key_rotation() {
    let Some((_dir, django)) = django_site().await else {
        return;
    };
    let before_rotation = django.with_env("SECRET_KEY", OLD_SECRET).fixture(&[]).await;
    let rotated = django
        .with_env("SECRET_KEY", SECRET)
        .with_env("SECRET_KEY_FALLBACKS", OLD_SECRET);
    let served = serve(&rotated).await;
    let auth = callback_auth(
        format!("http://127.0.0.1:{}/herald/whoami/", served.port),
        Duration::from_secs(10),
    );
    assert_eq!(
        check(&auth, Some(&before_rotation.header())).await,
        AuthOutcome::Authenticated(before_rotation.user.clone())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_url_that_is_not_the_view_is_an_error() {
    let Some((_dir, django)) = django_site().await else {
        return;
    };
    django.manage(&["migrate", "--verbosity", "0"]).await;
    let served = serve(&django).await;
    let auth = callback_auth(
        format!("http://127.0.0.1:{}/no/such/view/", served.port),
        Duration::from_secs(10),
    );
    assert_eq!(
        check_err(&auth, "sessionid=abcdefgh12345678").await,
        ErrorKind::Callback
    );
}

/// A raw HTTP server answering every connection with `response`; returns its port and a channel
/// receiving each request head.
async fn raw_server(response: &'static str) -> (u16, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tx.send(String::from_utf8_lossy(&head).into_owned());
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (port, rx)
}

#[tokio::test]
async fn cookie_header_is_forwarded_verbatim() {
    let body = r#"{"username": "amadmin", "user_id": "7"}"#;
    let response: &'static str = Box::leak(
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_boxed_str(),
    );
    let (port, mut heads) = raw_server(response).await;
    let auth = callback_auth(
        format!("http://127.0.0.1:{port}/auth/?check=1"),
        Duration::from_secs(5),
    );
    let header = "csrftoken=x; sessionid=abcdefgh12345678; theme=\"dark mode\"";
    assert_eq!(
        check(&auth, Some(header)).await,
        AuthOutcome::Authenticated(herald_django::AuthenticatedUser::new("7", "amadmin"))
    );
    let head = tokio::time::timeout(Duration::from_secs(5), heads.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        head.starts_with("GET /auth/?check=1 HTTP/1.1\r\n"),
        "{head}"
    );
    assert!(head.contains(&format!("cookie: {header}\r\n")), "{head}");
    assert!(
        head.contains(&format!("host: 127.0.0.1:{port}\r\n")),
        "{head}"
    );
}

#[tokio::test]
async fn unauthorized_and_forbidden_are_anonymous_other_statuses_are_errors() {
    let cases: [(&'static str, Result<Refusal, ErrorKind>); 4] = [
        (
            "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n",
            Ok(Refusal::CallbackRefused),
        ),
        (
            "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n",
            Ok(Refusal::CallbackRefused),
        ),
        (
            "HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n",
            Err(ErrorKind::Callback),
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n<html>",
            Err(ErrorKind::Callback),
        ),
    ];
    for (response, expected) in cases {
        let (port, _heads) = raw_server(response).await;
        let auth = callback_auth(format!("http://127.0.0.1:{port}/"), Duration::from_secs(5));
        let got = tokio::time::timeout(
            Duration::from_secs(10),
            auth.check(Some("sessionid=abcdefgh12345678")),
        )
        .await
        .unwrap();
        match expected {
            Ok(reason) => assert_eq!(got.unwrap(), AuthOutcome::Anonymous(reason), "{response}"),
            Err(kind) => assert_eq!(got.unwrap_err().kind(), kind, "{response}"),
        }
    }
}

#[tokio::test]
async fn silent_callback_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accept and hold connections without ever answering.
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let auth = callback_auth(
        format!("http://127.0.0.1:{port}/"),
        Duration::from_millis(300),
    );
    let started = std::time::Instant::now();
    assert_eq!(
        check_err(&auth, "sessionid=abcdefgh12345678").await,
        ErrorKind::Timeout
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    holder.abort();
}

#[tokio::test]
async fn unreachable_callback_is_an_error() {
    let port = herald_test_support::free_port();
    let auth = callback_auth(format!("http://127.0.0.1:{port}/"), Duration::from_secs(5));
    assert_eq!(
        check_err(&auth, "sessionid=abcdefgh12345678").await,
        ErrorKind::Callback
    );
}

#[tokio::test]
async fn unforwardable_cookie_header_is_anonymous_without_a_request() {
    // Port 9 (discard) on loopback: never contacted, the header is refused first.
    let auth = callback_auth("http://127.0.0.1:9/".to_owned(), Duration::from_secs(5));
    assert_eq!(
        check(&auth, Some("sessionid=abc\r\nX-Injected: 1")).await,
        AuthOutcome::Anonymous(Refusal::InvalidCookieHeader)
    );
}

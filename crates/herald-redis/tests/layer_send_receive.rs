//! send/receive against a real redis-server: channels_redis tests/test_core.py 1, 3–8, 18–19.

use std::time::Duration;

use herald_core::{ChannelLayer, ErrorKind, Message};
use herald_redis::{RedisChannelLayer, RedisLayerConfig};
use herald_test_support::RedisServer;
use tokio::time::timeout;

const T: Duration = Duration::from_secs(5);

fn layer(server: &RedisServer) -> RedisChannelLayer {
    RedisChannelLayer::new(
        RedisLayerConfig::default()
            .with_hosts([server.url()])
            .with_capacity(3)
            .with_brpop_timeout(Duration::from_secs(1)),
    )
    .unwrap()
}

#[tokio::test]
async fn send_then_receive_on_a_general_channel() {
    let server = RedisServer::start();
    let layer = layer(&server);
    let msg = Message::with_type("test.message").with("text", "Ahoy-hoy!");
    timeout(T, layer.send("test-channel-1", msg.clone()))
        .await
        .unwrap()
        .unwrap();
    let got = timeout(T, layer.receive("test-channel-1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, msg);
}

#[tokio::test]
async fn process_local_channel_send_receive() {
    let server = RedisServer::start();
    let layer = layer(&server);
    let ch = timeout(T, layer.new_channel("specific"))
        .await
        .unwrap()
        .unwrap();
    assert!(ch.starts_with(&format!("specific.{}!", layer.client_prefix())));
    assert_eq!(ch.len(), 74);
    let msg = Message::with_type("test.message").with("text", "Local only please");
    timeout(T, layer.send(&ch, msg.clone()))
        .await
        .unwrap()
        .unwrap();
    let got = timeout(T, layer.receive(&ch)).await.unwrap().unwrap();
    assert_eq!(got, msg, "__asgi_channel__ must be stripped");
}

#[tokio::test]
async fn multiple_sends_arrive_in_fifo_order() {
    let server = RedisServer::start();
    let layer = layer(&server);
    let ch = timeout(T, layer.new_channel("specific"))
        .await
        .unwrap()
        .unwrap();
    for n in 1..=3 {
        let msg = Message::with_type("message.n").with("n", n);
        timeout(T, layer.send(&ch, msg)).await.unwrap().unwrap();
    }
    for n in 1..=3i64 {
        let got = timeout(T, layer.receive(&ch)).await.unwrap().unwrap();
        assert_eq!(got.get("n").and_then(|v| v.as_i64()), Some(n));
    }
}

#[tokio::test]
async fn bad_channel_names_are_rejected() {
    let server = RedisServer::start();
    let layer = layer(&server);
    let err = layer
        .send("=+135!", Message::with_type("x"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidName);
    let err = timeout(T, layer.receive("=+135!"))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidName);
}

#[tokio::test]
async fn receive_on_another_processes_channel_is_rejected() {
    let server = RedisServer::start();
    let layer = layer(&server);
    let err = timeout(T, layer.receive("not-client-prefix!local_part"))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidName);
}

#[tokio::test]
async fn reserved_key_in_message_is_rejected() {
    let server = RedisServer::start();
    let layer = layer(&server);
    let msg = Message::with_type("x").with("__asgi_channel__", "y");
    let err = layer.send("chan", msg).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidMessage);
}

#[tokio::test]
async fn channel_names_never_repeat() {
    let server = RedisServer::start();
    let a = layer(&server);
    let b = layer(&server);
    assert_ne!(a.client_prefix(), b.client_prefix());
    let mut seen = std::collections::HashSet::new();
    for _ in 0..100 {
        assert!(seen.insert(a.new_channel("specific").await.unwrap()));
    }
}

#[tokio::test]
async fn two_layers_exchange_messages_on_their_own_channels() {
    let server = RedisServer::start();
    let a = layer(&server);
    let b = layer(&server);
    let ch_a = a.new_channel("specific").await.unwrap();
    let ch_b = b.new_channel("specific").await.unwrap();
    timeout(T, b.send(&ch_a, Message::with_type("to.a")))
        .await
        .unwrap()
        .unwrap();
    timeout(T, a.send(&ch_b, Message::with_type("to.b")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        timeout(T, a.receive(&ch_a))
            .await
            .unwrap()
            .unwrap()
            .msg_type(),
        Some("to.a")
    );
    assert_eq!(
        timeout(T, b.receive(&ch_b))
            .await
            .unwrap()
            .unwrap()
            .msg_type(),
        Some("to.b")
    );
}

#[tokio::test]
async fn cancelled_receive_loses_nothing() {
    let server = RedisServer::start();
    let layer = layer(&server);
    let ch = layer.new_channel("specific").await.unwrap();
    // Cancel a receive while it waits...
    assert!(
        timeout(Duration::from_millis(100), layer.receive(&ch))
            .await
            .is_err()
    );
    // ...then the next message is still delivered to the next receive.
    layer
        .send(&ch, Message::with_type("after.cancel"))
        .await
        .unwrap();
    let got = timeout(T, layer.receive(&ch)).await.unwrap().unwrap();
    assert_eq!(got.msg_type(), Some("after.cancel"));
}

#[tokio::test]
async fn closed_channel_wakes_its_receiver_with_closed() {
    let server = RedisServer::start();
    let layer = std::sync::Arc::new(layer(&server));
    let ch = layer.new_channel("specific").await.unwrap();
    let l = layer.clone();
    let c = ch.clone();
    let waiter = tokio::spawn(async move { l.receive(&c).await });
    // The receiver may not be waiting yet (a receive after a close re-opens the channel), so
    // close until it has been woken.
    let deadline = std::time::Instant::now() + T;
    while !waiter.is_finished() {
        assert!(std::time::Instant::now() < deadline, "receiver never woke");
        layer.close_channel(&ch);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let err = timeout(T, waiter).await.unwrap().unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed);
}

#[tokio::test]
async fn encrypted_layers_interoperate_and_store_ciphertext() {
    let server = RedisServer::start();
    let cfg = || {
        RedisLayerConfig::default()
            .with_hosts([server.url()])
            .with_symmetric_encryption_keys(["a-test-key"])
    };
    let a = RedisChannelLayer::new(cfg()).unwrap();
    let b = RedisChannelLayer::new(cfg()).unwrap();
    let ch = b.new_channel("specific").await.unwrap();
    let msg = Message::with_type("secret").with("text", "hidden-text");
    timeout(T, a.send(&ch, msg.clone())).await.unwrap().unwrap();
    assert_eq!(timeout(T, b.receive(&ch)).await.unwrap().unwrap(), msg);
}

/// `rediss://` with a self-signed certificate made by the `openssl` CLI; `#insecure` skips
/// verification like redis-py's `ssl_cert_reqs=None`.
#[tokio::test]
async fn send_receive_over_rediss() {
    let dir = tempfile_dir();
    let status = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "openssl could not make a certificate");
    let tls_port = herald_test_support::free_port().to_string();
    let cert = dir.join("cert.pem").display().to_string();
    let key = dir.join("key.pem").display().to_string();
    let server = RedisServer::start_with_args(&[
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
        "--tls-ca-cert-file",
        &cert,
        "--tls-auth-clients",
        "no",
    ]);
    let layer = RedisChannelLayer::new(
        RedisLayerConfig::default()
            .with_hosts([format!("rediss://127.0.0.1:{tls_port}/#insecure")])
            .with_brpop_timeout(Duration::from_secs(1)),
    )
    .unwrap();
    let ch = layer.new_channel("specific").await.unwrap();
    timeout(T, layer.send(&ch, Message::with_type("over.tls")))
        .await
        .unwrap()
        .unwrap();
    let got = timeout(T, layer.receive(&ch)).await.unwrap().unwrap();
    assert_eq!(got.msg_type(), Some("over.tls"));
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "herald-tls-{}",
        herald_core::names::random_hex_id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `unix://` sockets, with redis-py's `?db=` query.
#[tokio::test]
async fn send_receive_over_a_unix_socket() {
    let dir = tempfile_dir();
    let sock = dir.join("redis.sock").display().to_string();
    let server = RedisServer::start_with_args(&["--unixsocket", &sock, "--unixsocketperm", "700"]);
    let layer = RedisChannelLayer::new(
        RedisLayerConfig::default()
            .with_hosts([format!("unix://{sock}?db=2")])
            .with_brpop_timeout(Duration::from_secs(1)),
    )
    .unwrap();
    let ch = layer.new_channel("specific").await.unwrap();
    timeout(T, layer.group_add("g", &ch))
        .await
        .unwrap()
        .unwrap();
    timeout(T, layer.group_send("g", Message::with_type("over.unix")))
        .await
        .unwrap()
        .unwrap();
    let got = timeout(T, layer.receive(&ch)).await.unwrap().unwrap();
    assert_eq!(got.msg_type(), Some("over.unix"));
    let client = redis::Client::open(server.url_db(2)).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let n: i64 = redis::cmd("ZCARD")
        .arg("asgi:group:g")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(n, 1, "db 2 from the query string");
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn ping_answers_on_every_shard_and_names_the_one_that_is_down() {
    let a = RedisServer::start();
    let mut b = RedisServer::start();
    let layer =
        RedisChannelLayer::new(RedisLayerConfig::default().with_hosts([a.url(), b.url()])).unwrap();
    timeout(Duration::from_secs(10), layer.ping())
        .await
        .unwrap()
        .unwrap();
    b.kill();
    let err = timeout(Duration::from_secs(10), layer.ping())
        .await
        .unwrap()
        .unwrap_err();
    assert!(err.is_redis() || err.is_timeout(), "{err:?}");
    assert!(err.to_string().starts_with("redis host #1"), "{err}");
}

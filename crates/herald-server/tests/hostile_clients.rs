//! Hostile clients at the byte level: invalid UTF-8, protocol violations, fragmented garbage,
//! oversized fragmented messages, half-open peers, slowloris handshakes and idle keep-alives.
//!
//! server_limits.rs already covers oversized single frames, rate-limited floods and the
//! slow-consumer close; this file adds what a well-behaved client library cannot send, through a
//! raw TCP client that writes frames by hand. Every case checks that another socket is still
//! served and that `connections_current` returns to its baseline.

mod common;

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use common::*;
use futures_util::SinkExt;
use herald_core::Message;
use herald_server::ServerConfig;
use herald_server::tungstenite::Message as WsMessage;
use herald_test_support::eventually;
use herald_test_support::ws::{Ws, recv_text, ws_connect};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CONTINUATION: u8 = 0x0;
const PING: u8 = 0x9;

/// A WebSocket client that writes raw frames (always masked, as RFC 6455 requires of clients,
/// unless asked otherwise) and reads the server's frames without validating them.
struct RawWs {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawWs {
    async fn connect(addr: SocketAddr, token: &str) -> RawWs {
        let mut stream = within(TcpStream::connect(addr)).await.unwrap();
        let req = format!(
            "GET /ws/tasks/?token={token} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        );
        within(stream.write_all(req.as_bytes())).await.unwrap();
        let mut buf = Vec::new();
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 1024];
            let n = within(stream.read(&mut chunk)).await.unwrap();
            assert!(n > 0, "closed during handshake: {buf:?}");
            buf.extend_from_slice(&chunk[..n]);
        };
        assert!(buf.starts_with(b"HTTP/1.1 101"), "{buf:?}");
        buf.drain(..head_end);
        RawWs { stream, buf }
    }

    async fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        self.send_raw(&frame(fin, opcode, payload, true)).await;
    }

    /// Writes bytes; a server that already closed may reset the connection, which is fine.
    async fn send_raw(&mut self, bytes: &[u8]) {
        let _ = within(self.stream.write_all(bytes)).await;
    }

    /// The server's close code: reads frames until a close frame or the end of the stream.
    /// `None` means the server dropped the TCP connection without a close frame.
    async fn close_code(&mut self) -> Option<u16> {
        loop {
            match self.next_frame().await {
                Some((0x8, payload)) => {
                    return (payload.len() >= 2)
                        .then(|| u16::from_be_bytes([payload[0], payload[1]]));
                }
                Some(_) => continue,
                None => return None,
            }
        }
    }

    /// Next (opcode, payload) from the server, or `None` at EOF/reset.
    async fn next_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if let Some((opcode, payload, used)) = parse_frame(&self.buf) {
                self.buf.drain(..used);
                return Some((opcode, payload));
            }
            let mut chunk = [0u8; 4096];
            match within(self.stream.read(&mut chunk)).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

fn frame(fin: bool, opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | opcode];
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= 0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        let key = [0x12, 0x34, 0x56, 0x78];
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// Parses one unmasked server frame: (opcode, payload, bytes used).
fn parse_frame(buf: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let opcode = buf[0] & 0x0f;
    let (len, mut at) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (usize::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
        127 if buf.len() >= 10 => (
            u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize,
            10,
        ),
        126 | 127 => return None,
        n => (usize::from(n), 2),
    };
    if buf[1] & 0x80 != 0 {
        at += 4;
    }
    if buf.len() < at + len {
        return None;
    }
    Some((opcode, buf[at..at + len].to_vec(), at + len))
}

/// Another user is still served promptly, and the hostile socket is fully released.
async fn others_still_served_and_released(server: &TestServer, bob: &mut Ws) {
    sync(bob).await;
    let note = Message::with_type("user.message").with("message", "still here");
    within(server.layer.group_send("user_bob", note))
        .await
        .unwrap();
    assert_eq!(
        recv_text(bob).await,
        r#"{"type": "user_message", "message": "still here"}"#
    );
    let app = server.app.clone();
    eventually(STEP, "open == 1", || {
        let open = app.metrics().connections_current();
        async move { open == 1 }
    })
    .await;
    assert_eq!(group_members(&server.layer, "user_amadmin").await, 0);
}

async fn server_with_bob(config: ServerConfig) -> (TestServer, Ws) {
    let server = TestServer::tasks(config).await;
    let mut bob = ws_connect(&server.url("/ws/tasks/?token=bob-token")).await;
    sync(&mut bob).await;
    (server, bob)
}

#[tokio::test]
async fn invalid_utf8_text_frame_closes_with_1007() {
    let (server, mut bob) = server_with_bob(ServerConfig::default()).await;
    let mut raw = RawWs::connect(server.addr, "amadmin-token").await;
    raw.send_frame(
        true,
        TEXT,
        b"{\"action\": \"ping\", \"x\": \"\xff\xfe\xc0\xaf\"}",
    )
    .await;
    assert_eq!(raw.close_code().await, Some(1007));
    others_still_served_and_released(&server, &mut bob).await;
}

#[tokio::test]
async fn invalid_utf8_split_across_fragments_closes_with_1007() {
    let (server, mut bob) = server_with_bob(ServerConfig::default()).await;
    let mut raw = RawWs::connect(server.addr, "amadmin-token").await;
    // "é" is c3 a9: the first fragment ends mid code point (legal), the second breaks it.
    raw.send_frame(false, TEXT, b"{\"x\": \"\xc3").await;
    raw.send_frame(true, CONTINUATION, b"\x28\"}").await;
    assert_eq!(raw.close_code().await, Some(1007));
    others_still_served_and_released(&server, &mut bob).await;
}

#[tokio::test]
async fn protocol_violations_close_with_1002() {
    let (server, mut bob) = server_with_bob(ServerConfig::default()).await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "continuation without a start",
            frame(true, CONTINUATION, b"garbage", true),
        ),
        ("new data frame inside a fragmented message", {
            let mut b = frame(false, TEXT, b"{\"act", true);
            b.extend(frame(true, BINARY, b"\x00\x01", true));
            b
        }),
        ("reserved opcode", frame(true, 0x3, b"?", true)),
        ("RSV bits without an extension", {
            let mut b = frame(true, TEXT, b"{}", true);
            b[0] |= 0x70;
            b
        }),
        ("unmasked client frame", frame(true, TEXT, b"{}", false)),
        ("fragmented control frame", frame(false, PING, b"p", true)),
        (
            "control frame over 125 bytes",
            frame(true, PING, &[b'p'; 126], true),
        ),
    ];
    for (what, bytes) in cases {
        let mut raw = RawWs::connect(server.addr, "amadmin-token").await;
        raw.send_raw(&bytes).await;
        assert_eq!(raw.close_code().await, Some(1002), "{what}");
        others_still_served_and_released(&server, &mut bob).await;
    }
}

#[tokio::test]
async fn many_small_fragments_over_the_message_limit_close_with_1009() {
    let config = ServerConfig::default()
        .with_max_message_size(Some(4096))
        .with_max_frame_size(Some(4096));
    let (server, mut bob) = server_with_bob(config).await;
    let mut raw = RawWs::connect(server.addr, "amadmin-token").await;
    // Each fragment is far below the frame limit; together they pass the message limit.
    raw.send_frame(false, BINARY, &[b'a'; 1000]).await;
    for _ in 0..10 {
        raw.send_frame(false, CONTINUATION, &[b'a'; 1000]).await;
    }
    assert_eq!(raw.close_code().await, Some(1009));
    others_still_served_and_released(&server, &mut bob).await;
}

#[tokio::test]
async fn declared_huge_frame_length_is_refused_without_buffering_it() {
    let (server, mut bob) = server_with_bob(ServerConfig::default()).await;
    let mut raw = RawWs::connect(server.addr, "amadmin-token").await;
    // A header promising 2^62 bytes, then nothing: refused from the header alone.
    let mut header = vec![0x82, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 62).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    raw.send_raw(&header).await;
    assert_eq!(raw.close_code().await, Some(1009));
    others_still_served_and_released(&server, &mut bob).await;
}

/// A peer that vanished without a FIN looks, to the server, like a socket that stops reading
/// and answering: the kernel still accepts the pings. The ping timeout must free it.
#[tokio::test]
async fn half_open_peer_is_freed_by_the_ping_timeout() {
    let config = ServerConfig::default()
        .with_ping_interval(Duration::from_millis(100))
        .with_ping_timeout(Duration::from_millis(300));
    let server = TestServer::tasks(config).await;
    // Bob answers pings because `sync`/`next_text` keep polling his socket.
    let mut bob = ws_connect(&server.url("/ws/tasks/?token=bob-token")).await;
    sync(&mut bob).await;
    let before = server.app.metrics().ping_timeouts();
    // Held open, never read or written again: no FIN, no RST.
    let _vanished = RawWs::connect(server.addr, "amadmin-token").await;
    let app = server.app.clone();
    let started = Instant::now();
    loop {
        // Keep bob's side live (answers pings) while waiting.
        sync(&mut bob).await;
        if app.metrics().ping_timeouts() > before && app.metrics().connections_current() == 1 {
            break;
        }
        assert!(started.elapsed() < STEP, "half-open peer never freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Bob was never mistaken for a dead peer.
    assert_eq!(app.metrics().ping_timeouts(), before + 1);
    others_still_served_and_released(&server, &mut bob).await;
}

/// Slowloris: the request head trickles in a byte at a time, each byte well inside the
/// timeout. The handshake timeout is a deadline for the whole head, not an idle timer.
#[tokio::test]
async fn trickled_request_head_is_cut_at_the_handshake_timeout() {
    let timeout = Duration::from_millis(400);
    let (server, mut bob) =
        server_with_bob(ServerConfig::default().with_handshake_timeout(timeout)).await;
    let mut stream = within(TcpStream::connect(server.addr)).await.unwrap();
    let head = b"GET /ws/tasks/?token=amadmin-token HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaa\
                 aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    let started = Instant::now();
    let mut cut = false;
    for &byte in head.iter() {
        if stream.write_all(&[byte]).await.is_err() {
            cut = true;
            break;
        }
        // Detect the close without blocking: a zero-length read or an error means cut.
        let mut probe = [0u8; 256];
        if let Ok(res) =
            tokio::time::timeout(Duration::from_millis(25), stream.read(&mut probe)).await
        {
            match res {
                Ok(0) | Err(_) => {
                    cut = true;
                    break;
                }
                // A 408 answer, then the close.
                Ok(_) => continue,
            }
        }
    }
    let elapsed = started.elapsed();
    assert!(cut, "the whole trickled head was accepted ({elapsed:?})");
    assert!(elapsed >= timeout, "cut before the timeout: {elapsed:?}");
    assert!(elapsed < timeout * 10, "cut too late: {elapsed:?}");
    assert_eq!(server.app.metrics().connections_current(), 1);
    others_still_served_and_released(&server, &mut bob).await;
}

/// A keep-alive connection that asked for `/healthz` and then sits idle is not kept forever.
#[tokio::test]
async fn idle_keep_alive_connection_is_closed_after_the_handshake_timeout() {
    let (server, mut bob) =
        server_with_bob(ServerConfig::default().with_handshake_timeout(Duration::from_millis(300)))
            .await;
    let mut stream = within(TcpStream::connect(server.addr)).await.unwrap();
    within(stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"))
        .await
        .unwrap();
    let mut buf = Vec::new();
    // `within` fails the test if the idle connection is held open for 10 s.
    let _ = within(stream.read_to_end(&mut buf)).await;
    assert!(buf.starts_with(b"HTTP/1.1 200"), "{buf:?}");
    others_still_served_and_released(&server, &mut bob).await;
}

/// A request head far larger than any real handshake is refused without buffering it all.
#[tokio::test]
async fn oversized_request_head_is_refused() {
    let (server, mut bob) = server_with_bob(ServerConfig::default()).await;
    let mut stream = within(TcpStream::connect(server.addr)).await.unwrap();
    let mut head = b"GET /ws/tasks/ HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..4096 {
        head.extend_from_slice(format!("X-Junk-{i}: {}\r\n", "j".repeat(200)).as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    // The server may reset the connection mid-write.
    let _ = within(stream.write_all(&head)).await;
    let mut buf = Vec::new();
    let _ = within(stream.read_to_end(&mut buf)).await;
    assert!(
        buf.is_empty() || buf.starts_with(b"HTTP/1.1 431") || buf.starts_with(b"HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&buf[..buf.len().min(200)])
    );
    others_still_served_and_released(&server, &mut bob).await;
}

/// A reader that never reads while a group floods it: it is closed with 4008 once its bounded
/// queue is full, and another user's delivery latency stays low throughout (measured).
#[tokio::test]
async fn never_reading_client_gets_4008_while_another_keeps_low_latency() {
    let config = ServerConfig::default()
        .with_max_outbound_frames(NonZeroUsize::new(16).unwrap())
        .with_close_timeout(Duration::from_secs(2));
    let (server, mut bob) = server_with_bob(config).await;
    // Never read from: its receive window and the server's queue fill up.
    let mut slow = RawWs::connect(server.addr, "amadmin-token").await;
    let payload = "s".repeat(32 * 1024);
    let mut latencies = Vec::new();
    let started = Instant::now();
    while server.app.metrics().slow_consumer_closes() == 0 {
        assert!(started.elapsed() < STEP, "slow consumer never detected");
        for _ in 0..10 {
            let msg = Message::with_type("user.message").with("message", payload.as_str());
            within(server.layer.group_send("user_amadmin", msg))
                .await
                .unwrap();
        }
        let sent_at = Instant::now();
        let note = Message::with_type("user.message").with("message", "bob");
        within(server.layer.group_send("user_bob", note))
            .await
            .unwrap();
        assert_eq!(
            recv_text(&mut bob).await,
            r#"{"type": "user_message", "message": "bob"}"#
        );
        latencies.push(sent_at.elapsed());
    }
    latencies.sort();
    let worst = *latencies.last().unwrap();
    let median = latencies[latencies.len() / 2];
    eprintln!(
        "bob latency while amadmin stalls: {} samples, median {median:?}, max {worst:?}",
        latencies.len()
    );
    // Generous for a loaded 2-core debug build; a blocked fan-out would take the close timeout.
    assert!(worst < Duration::from_millis(500), "max latency {worst:?}");
    // The stalled socket finally reads: the queued data, then 4008.
    assert_eq!(slow.close_code().await, Some(4008));
    others_still_served_and_released(&server, &mut bob).await;
    // Bob's socket is untouched by all of this.
    within(bob.send(WsMessage::text(r#"{"action": "ping"}"#)))
        .await
        .unwrap();
    assert_eq!(recv_text(&mut bob).await, r#"{"type": "pong"}"#);
}

/// A burst of sockets that complete the handshake and then vanish at once (RST): every one is
/// released, and the server keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_abandoned_sockets_is_fully_released() {
    let (server, mut bob) = server_with_bob(ServerConfig::default()).await;
    let mut raws = Vec::new();
    for _ in 0..200 {
        raws.push(RawWs::connect(server.addr, "amadmin-token").await);
    }
    let app = server.app.clone();
    eventually(STEP, "open == 201", || {
        let open = app.metrics().connections_current();
        async move { open == 201 }
    })
    .await;
    for raw in raws {
        // SO_LINGER 0: close sends RST instead of FIN, like a crashed client.
        raw.stream.set_zero_linger().unwrap();
        drop(raw);
    }
    others_still_served_and_released(&server, &mut bob).await;
}

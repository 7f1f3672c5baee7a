//! `permessage-deflate` over real sockets: the negotiation (off by default), server frames
//! compressed and read back through a client-side inflate layer, client messages compressed
//! with context takeover as browsers send them, and the close codes for data that does not
//! inflate (1007) or inflates too far (1009).

mod common;

use bytes::Bytes;
use common::*;
use flate2::{Compress, Compression, FlushCompress};
use futures_util::SinkExt;
use herald_core::Message;
use herald_server::ServerConfig;
use herald_server::deflate::{self, CLIENT_OFFER, InflateStream};
use herald_server::tungstenite::Message as WsMessage;
use herald_server::tungstenite::client::IntoClientRequest;
use herald_server::tungstenite::http::HeaderValue;
use herald_server::tungstenite::protocol::frame::coding::Data as OpData;
use herald_test_support::ws::{close_code, recv_text, send_text};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;

type DeflateWs = WebSocketStream<InflateStream<TcpStream>>;

/// Connects with `offer` in `Sec-WebSocket-Extensions`; returns the socket and the
/// extension header of the answer.
async fn connect(server: &TestServer, query: &str, offer: &str) -> (DeflateWs, Option<String>) {
    let mut req = server
        .url(&format!("/ws/tasks/?{query}"))
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "Sec-WebSocket-Extensions",
        HeaderValue::from_str(offer).unwrap(),
    );
    let tcp = within(TcpStream::connect(server.addr)).await.unwrap();
    let (ws, resp) = within(tokio_tungstenite::client_async(
        req,
        InflateStream::client(tcp, Some(1 << 20)),
    ))
    .await
    .unwrap();
    let ext = resp
        .headers()
        .get("Sec-WebSocket-Extensions")
        .map(|v| v.to_str().unwrap().to_owned());
    (ws, ext)
}

fn deflate_on() -> ServerConfig {
    ServerConfig::default().with_permessage_deflate(true)
}

/// The guide's notification, long enough to be compressed.
fn notification(i: usize) -> Message {
    herald_messaging::user_message(
        "amadmin",
        &format!("Your export #{i} is ready: 12,345 rows, download it from the reports page."),
        None,
    )
}

/// A browser-style client compressor: one context for the whole connection.
struct ClientDeflate(Compress);

impl ClientDeflate {
    fn new() -> Self {
        ClientDeflate(Compress::new(Compression::default(), false))
    }

    fn frame(&mut self, text: &str) -> WsMessage {
        let mut out = Vec::with_capacity(text.len() + 64);
        self.0
            .compress_vec(text.as_bytes(), &mut out, FlushCompress::Sync)
            .unwrap();
        out.truncate(out.len() - 4);
        deflate::message_frame(OpData::Text, Bytes::from(out))
    }
}

#[tokio::test]
async fn off_by_default_an_offer_gets_plain_frames() {
    let server = TestServer::tasks(ServerConfig::default()).await;
    let (mut ws, ext) = connect(&server, "token=amadmin-token", CLIENT_OFFER).await;
    assert_eq!(ext, None);
    within(server.layer.group_send("user_amadmin", notification(1)))
        .await
        .unwrap();
    assert!(recv_text(&mut ws).await.contains("Your export #1 is ready"));
    assert_eq!(server.app.metrics().frames_deflated(), 0);
}

#[tokio::test]
async fn server_frames_go_out_compressed_and_read_back_in_order() {
    let server = TestServer::tasks(deflate_on()).await;
    let (mut ws, ext) = connect(&server, "token=amadmin-token", CLIENT_OFFER).await;
    assert_eq!(
        ext.as_deref(),
        Some("permessage-deflate; server_no_context_takeover")
    );
    let (mut second, _) = connect(&server, "token=amadmin-token", CLIENT_OFFER).await;
    for i in 0..20 {
        within(server.layer.group_send("user_amadmin", notification(i)))
            .await
            .unwrap();
    }
    for socket in [&mut ws, &mut second] {
        for i in 0..20 {
            let text = recv_text(socket).await;
            assert!(
                text.starts_with(r#"{"type": "user_message", "username": "amadmin""#),
                "{text}"
            );
            assert!(
                text.contains(&format!("Your export #{i} is ready")),
                "{text}"
            );
        }
    }
    assert_eq!(server.app.metrics().frames_deflated(), 40);
    // A short frame (the pong) goes out plain.
    send_text(&mut ws, r#"{"action": "ping"}"#).await;
    assert_eq!(recv_text(&mut ws).await, r#"{"type": "pong"}"#);
    assert_eq!(server.app.metrics().frames_deflated(), 40);
}

#[tokio::test]
async fn client_messages_compressed_with_context_takeover_are_understood() {
    let server = TestServer::tasks(deflate_on()).await;
    let (mut ws, _) = connect(&server, "token=amadmin-token", CLIENT_OFFER).await;
    let mut client = ClientDeflate::new();
    // The same message three times: the later ones are mostly back-references.
    for _ in 0..3 {
        within(ws.send(client.frame(r#"{"action": "ping"}"#)))
            .await
            .unwrap();
        assert_eq!(recv_text(&mut ws).await, r#"{"type": "pong"}"#);
    }
    // Plain frames still work between compressed ones.
    send_text(&mut ws, r#"{"action": "ping"}"#).await;
    assert_eq!(recv_text(&mut ws).await, r#"{"type": "pong"}"#);
    within(ws.send(client.frame(r#"{"action": "ping"}"#)))
        .await
        .unwrap();
    assert_eq!(recv_text(&mut ws).await, r#"{"type": "pong"}"#);
    assert_eq!(server.app.metrics().frames_in(), 5);
}

#[tokio::test]
async fn data_that_does_not_inflate_closes_with_1007_and_a_bomb_with_1009() {
    let server = TestServer::tasks(
        deflate_on()
            .with_max_frame_size(Some(64 * 1024))
            .with_max_message_size(Some(64 * 1024)),
    )
    .await;
    let (mut ws, _) = connect(&server, "token=amadmin-token", CLIENT_OFFER).await;
    let garbage = deflate::message_frame(OpData::Text, Bytes::from_static(&[0xff, 0xff, 0x01]));
    within(ws.send(garbage)).await.unwrap();
    assert_eq!(close_code(&mut ws).await, Some(1007));

    let (mut ws, _) = connect(&server, "token=amadmin-token", CLIENT_OFFER).await;
    let mut client = ClientDeflate::new();
    let bomb = client.frame(&" ".repeat(1 << 20));
    within(ws.send(bomb)).await.unwrap();
    assert_eq!(close_code(&mut ws).await, Some(1009));
    assert_eq!(server.app.metrics().oversize_closes(), 1);

    // The server keeps serving.
    let (mut ws, _) = connect(&server, "token=amadmin-token", CLIENT_OFFER).await;
    send_text(&mut ws, r#"{"action": "ping"}"#).await;
    assert_eq!(recv_text(&mut ws).await, r#"{"type": "pong"}"#);
}

#[tokio::test]
async fn a_window_limit_sends_longer_frames_plain() {
    let server = TestServer::tasks(deflate_on()).await;
    let (mut ws, ext) = connect(
        &server,
        "token=amadmin-token",
        "permessage-deflate; server_max_window_bits=8; client_no_context_takeover",
    )
    .await;
    assert_eq!(
        ext.as_deref(),
        Some(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=8"
        )
    );
    // Frames of this notification are over 256 bytes: sent plain, still delivered.
    let long = herald_messaging::user_message("amadmin", &"ready ".repeat(60), None);
    within(server.layer.group_send("user_amadmin", long))
        .await
        .unwrap();
    assert!(recv_text(&mut ws).await.contains("ready ready"));
    assert_eq!(server.app.metrics().frames_deflated(), 0);
}

//! A custom route and consumer over real sockets: echo, binary frames, consumer close codes,
//! subprotocols, and protocol-level ping/pong.

mod common;

use async_trait::async_trait;
use bytes::Bytes;
use common::*;
use futures_util::SinkExt;
use herald_server::tungstenite::Message as WsMessage;
use herald_server::tungstenite::client::IntoClientRequest;
use herald_server::{App, Consumer, Context, Frame, Result, ServerConfig};
use herald_test_support::eventually;
use herald_test_support::ws::{close_code, next_frame, recv_text, send_text, ws_connect};

#[derive(Debug, Default)]
struct Echo;

#[async_trait]
impl Consumer for Echo {
    async fn connect(&mut self, ctx: &mut Context) -> Result<()> {
        if ctx.request().subprotocols().iter().any(|p| p == "echo.v1") {
            ctx.accept_subprotocol("echo.v1")
        } else {
            ctx.accept()
        }
    }

    async fn receive(&mut self, ctx: &mut Context, frame: Frame) -> Result<()> {
        match frame {
            Frame::Text(text) if text.as_str() == "close please" => {
                ctx.send_text("bye")?;
                ctx.close(Some(4000));
                Ok(())
            }
            Frame::Text(text) if text.as_str() == "fail" => Err(herald_server::Error::new(
                herald_server::ErrorKind::Consumer,
                "asked to fail",
            )),
            Frame::Text(text) => ctx.send_text(text),
            Frame::Binary(bytes) => ctx.send_binary(bytes),
        }
    }
}

async fn echo_server() -> TestServer {
    let builder = App::builder()
        .config(ServerConfig::default())
        .route("/ws/echo/", Echo::default);
    TestServer::start(builder, memory_layer()).await
}

#[tokio::test]
async fn text_and_binary_frames_are_echoed_in_order() {
    let server = echo_server().await;
    let mut ws = ws_connect(&server.url("/ws/echo/")).await;
    for i in 0..20 {
        send_text(&mut ws, &format!("hello {i}")).await;
    }
    for i in 0..20 {
        assert_eq!(recv_text(&mut ws).await, format!("hello {i}"));
    }
    within(ws.send(WsMessage::binary(vec![0u8, 159, 146, 150])))
        .await
        .unwrap();
    assert_eq!(
        next_frame(&mut ws).await,
        WsMessage::Binary(Bytes::from_static(&[0, 159, 146, 150]))
    );
    assert_eq!(server.app.metrics().frames_in(), 21);
    assert_eq!(server.app.metrics().frames_out(), 21);
}

#[tokio::test]
async fn consumer_close_delivers_queued_frames_then_its_code() {
    let server = echo_server().await;
    let mut ws = ws_connect(&server.url("/ws/echo/")).await;
    send_text(&mut ws, "close please").await;
    assert_eq!(recv_text(&mut ws).await, "bye");
    assert_eq!(close_code(&mut ws).await, Some(4000));
}

#[tokio::test]
async fn handler_error_closes_with_1011() {
    let server = echo_server().await;
    let mut ws = ws_connect(&server.url("/ws/echo/")).await;
    send_text(&mut ws, "fail").await;
    assert_eq!(close_code(&mut ws).await, Some(1011));
    assert_eq!(server.app.metrics().handler_errors(), 1);
}

#[tokio::test]
async fn offered_subprotocol_is_selected() {
    let server = echo_server().await;
    let mut req = server.url("/ws/echo/").into_client_request().unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", "other, echo.v1".parse().unwrap());
    let (mut ws, resp) = within(tokio_tungstenite::connect_async(req)).await.unwrap();
    assert_eq!(
        resp.headers().get("sec-websocket-protocol").unwrap(),
        "echo.v1"
    );
    send_text(&mut ws, "x").await;
    assert_eq!(recv_text(&mut ws).await, "x");
}

#[tokio::test]
async fn client_ping_gets_a_pong() {
    let server = echo_server().await;
    let mut ws = ws_connect(&server.url("/ws/echo/")).await;
    within(ws.send(WsMessage::Ping(Bytes::from_static(b"are you there"))))
        .await
        .unwrap();
    match within(futures_util::StreamExt::next(&mut ws))
        .await
        .unwrap()
        .unwrap()
    {
        WsMessage::Pong(payload) => assert_eq!(&payload[..], b"are you there"),
        other => panic!("expected pong, got {other:?}"),
    }
}

#[tokio::test]
async fn client_close_code_ends_the_connection() {
    let server = echo_server().await;
    let mut ws = ws_connect(&server.url("/ws/echo/")).await;
    send_text(&mut ws, "x").await;
    assert_eq!(recv_text(&mut ws).await, "x");
    within(ws.close(None)).await.unwrap();
    let app = server.app.clone();
    eventually(STEP, "n == 0", || {
        let n = app.metrics().connections_current();
        async move { n == 0 }
    })
    .await;
}

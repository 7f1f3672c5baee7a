//! WebSocket client helpers for end-to-end tests: connect, read the next data frame, send text
//! or JSON, read a close code. The readers and writers take any client stream (a plain TCP
//! socket, or one wrapped in a `permessage-deflate` layer). Every await is bounded by
//! [`WS_STEP`] (or the caller's wait), and every failure panics with what went wrong.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A client socket as `tokio_tungstenite::connect_async` returns it.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Bound on each WebSocket step (connect, one frame, one send): generous for a loaded CI
/// machine, short enough that a lost frame fails the test instead of hanging it.
pub const WS_STEP: Duration = Duration::from_secs(10);

/// Opens a WebSocket (a URL or a request with headers); panics unless the server answers 101.
pub async fn ws_connect(request: impl IntoClientRequest + Unpin) -> Ws {
    let (ws, resp) = tokio::time::timeout(WS_STEP, tokio_tungstenite::connect_async(request))
        .await
        .unwrap_or_else(|_| panic!("WebSocket handshake timed out"))
        .unwrap();
    assert_eq!(resp.status(), 101);
    ws
}

/// The HTTP status of a handshake the server refused; panics if it was accepted.
pub async fn refused_status(request: impl IntoClientRequest + Unpin) -> u16 {
    match tokio::time::timeout(WS_STEP, tokio_tungstenite::connect_async(request))
        .await
        .unwrap_or_else(|_| panic!("WebSocket handshake timed out"))
    {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(other) => panic!("expected an HTTP refusal, got {other:?}"),
        Ok(_) => panic!("expected an HTTP refusal, but the handshake succeeded"),
    }
}

/// The next data or close frame within `wait` (pings and pongs skipped).
pub async fn next_frame_within<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    wait: Duration,
) -> Message {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no frame within {wait:?}"))
            .unwrap()
            .unwrap();
        if !matches!(msg, Message::Ping(_) | Message::Pong(_)) {
            return msg;
        }
    }
}

/// The next data or close frame (pings and pongs skipped).
pub async fn next_frame<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>) -> Message {
    next_frame_within(ws, WS_STEP).await
}

/// The next text frame as sent (pings and pongs skipped): for byte-for-byte comparisons and
/// for JSON that `serde_json` does not read (`NaN`). Panics on any other frame.
pub async fn recv_text<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>) -> String {
    match next_frame(ws).await {
        Message::Text(t) => t.as_str().to_owned(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

/// The next text frame, parsed as JSON.
pub async fn recv_json<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
) -> serde_json::Value {
    recv_json_within(ws, WS_STEP).await
}

/// The next text frame as JSON, waiting at most `wait`.
pub async fn recv_json_within<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    wait: Duration,
) -> serde_json::Value {
    match next_frame_within(ws, wait).await {
        Message::Text(t) => serde_json::from_str(t.as_str()).unwrap(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

/// Sends a text frame as given.
pub async fn send_text<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>, text: &str) {
    tokio::time::timeout(WS_STEP, ws.send(Message::text(text)))
        .await
        .unwrap_or_else(|_| panic!("send timed out"))
        .unwrap();
}

/// Sends `value` as a JSON text frame.
pub async fn send_json<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    value: serde_json::Value,
) {
    send_text(ws, &value.to_string()).await;
}

/// The close code the server sent (reads until a close frame or the end of the stream).
pub async fn close_code<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
) -> Option<u16> {
    loop {
        match tokio::time::timeout(WS_STEP, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no close frame within {WS_STEP:?}"))
        {
            Some(Ok(Message::Close(frame))) => {
                // Keep polling so tungstenite sends our close reply and sees the TCP close,
                // completing the handshake instead of leaving the server to time out.
                while let Some(Ok(_)) = tokio::time::timeout(WS_STEP, ws.next()).await.unwrap() {}
                return frame.map(|f| u16::from(f.code));
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return None,
        }
    }
}

//! `permessage-deflate` (RFC 7692): the handshake negotiation, the compression of outbound
//! messages, and [`InflateStream`], the byte-stream layer that turns the peer's compressed
//! frames back into plain ones before tungstenite reads them.
//!
//! tungstenite has no extension support: its reader fails a connection on any frame with a
//! reserved bit set. So compression lives around it, in two halves:
//! * **outbound**: Herald always answers with `server_no_context_takeover`, so every message it
//!   sends is compressed on its own. A fan-out frame is then compressed once and the same
//!   bytes go to every socket (see `SharedText`), and the runtime hands tungstenite a
//!   ready-made frame with RSV1 set. Small messages, and messages that do not shrink, go out
//!   uncompressed, which RFC 7692 allows message by message.
//! * **inbound**: [`InflateStream`] parses the frames on the raw byte stream, collects a
//!   compressed message (RSV1 on its first frame), inflates it and hands tungstenite one plain
//!   frame in its place; every other byte passes through unchanged. The client keeps its
//!   compression context unless it offered `client_no_context_takeover`; instead of a live
//!   inflater (tens of KiB per socket), the stream keeps only the last window of what the
//!   client sent (a few hundred bytes for a page's subscribe messages) and replays it as a
//!   stored block in front of the next message. An idle socket holds no inflater at all.
//!
//! Errors: a message that inflates past the size limit is [`InflateError::TooBig`] (the
//! connection closes with 1009), data that does not inflate is [`InflateError::Invalid`]
//! (1007). Both surface as an `io::Error` of kind `InvalidData` wrapping the `InflateError`.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data as OpData, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};

/// The extension's name in `Sec-WebSocket-Extensions`.
pub const EXTENSION: &str = "permessage-deflate";

/// What a client offers: the extension, and that the server may choose the client's window.
pub const CLIENT_OFFER: &str = "permessage-deflate; client_max_window_bits";

/// Messages shorter than this go out uncompressed: the deflate block overhead eats the gain.
pub const MIN_COMPRESS_SIZE: usize = 64;

/// The largest deflate window (2^15 bytes), what a peer's context can refer back to.
const MAX_WINDOW: usize = 1 << 15;

/// The four bytes a sync flush ends with; RFC 7692 strips them from the wire and the receiver
/// appends them again.
const SYNC_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The parameters agreed with one client (RFC 7692 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// `server_max_window_bits`: the client's window for Herald's messages (8..=15). Messages
    /// longer than the window are sent uncompressed, so no back-reference can reach past it.
    pub server_max_window_bits: u8,
    /// `client_no_context_takeover`: the client compresses each message on its own, so none
    /// of its earlier messages is kept.
    pub client_no_context_takeover: bool,
}

impl Negotiated {
    /// Picks the first acceptable `permessage-deflate` offer in the request's
    /// `Sec-WebSocket-Extensions` values; `None` when there is none (the socket then runs
    /// uncompressed). An offer with an unknown, repeated or out-of-range parameter is declined,
    /// as RFC 7692 §7.1 requires.
    pub fn from_offers<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<Negotiated> {
        values
            .into_iter()
            .flat_map(|v| v.split(','))
            .find_map(parse_offer)
    }

    /// The `Sec-WebSocket-Extensions` value of the 101 answer.
    pub fn response(&self) -> String {
        let mut out = String::from("permessage-deflate; server_no_context_takeover");
        if self.client_no_context_takeover {
            out.push_str("; client_no_context_takeover");
        }
        if self.server_max_window_bits < 15 {
            out.push_str(&format!(
                "; server_max_window_bits={}",
                self.server_max_window_bits
            ));
        }
        out
    }

    /// Whether a message of `len` bytes may go out compressed under this agreement.
    pub fn compresses(&self, len: usize) -> bool {
        len >= MIN_COMPRESS_SIZE
            && (self.server_max_window_bits >= 15 || len <= 1 << self.server_max_window_bits)
    }
}

/// One extension offer (`name; param; param=value`): the agreement if Herald accepts it.
fn parse_offer(offer: &str) -> Option<Negotiated> {
    let mut parts = offer.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case(EXTENSION) {
        return None;
    }
    let mut agreed = Negotiated {
        server_max_window_bits: 15,
        client_no_context_takeover: false,
    };
    let mut seen: Vec<String> = Vec::new();
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
            None => (param, None),
        };
        let name = name.to_ascii_lowercase();
        if seen.contains(&name) {
            return None;
        }
        match (name.as_str(), value) {
            ("server_no_context_takeover", None) => {}
            ("client_no_context_takeover", None) => agreed.client_no_context_takeover = true,
            ("server_max_window_bits", Some(v)) => agreed.server_max_window_bits = window_bits(v)?,
            ("client_max_window_bits", None) => {}
            ("client_max_window_bits", Some(v)) => {
                window_bits(v)?;
            }
            _ => return None,
        }
        seen.push(name);
    }
    Some(agreed)
}

/// A window-bits value: a decimal 8..=15 without leading zeros.
fn window_bits(value: &str) -> Option<u8> {
    if value.starts_with('0') {
        return None;
    }
    value.parse::<u8>().ok().filter(|b| (8..=15).contains(b))
}

/// Whether a 101 answer's `Sec-WebSocket-Extensions` values accept `permessage-deflate` (for
/// clients: Herald's load generator and tests).
pub fn accepted<'a>(values: impl IntoIterator<Item = &'a str>) -> bool {
    values.into_iter().flat_map(|v| v.split(',')).any(|ext| {
        ext.split(';')
            .next()
            .is_some_and(|name| name.trim().eq_ignore_ascii_case(EXTENSION))
    })
}

thread_local! {
    /// One compressor per thread, reset between messages (no context takeover): creating one
    /// allocates a few hundred KiB, far more than compressing a notification costs.
    static COMPRESSOR: RefCell<Compress> = RefCell::new(Compress::new(Compression::default(), false));
    /// One decompressor per thread, reset before each message (its window is the message's
    /// own, plus the replayed history under context takeover).
    static DECOMPRESSOR: RefCell<Decompress> = RefCell::new(Decompress::new(false));
}

/// A message's payload compressed on its own (RFC 7692 §7.2.1, the trailing sync-flush bytes
/// removed); `None` when it would not be shorter, so it should go out uncompressed.
pub fn compress(payload: &[u8]) -> Option<Bytes> {
    COMPRESSOR.with(|cell| {
        let mut c = cell.borrow_mut();
        c.reset();
        let mut out = Vec::with_capacity(payload.len() / 2 + 64);
        let mut input = payload;
        loop {
            let before = c.total_in();
            if c.compress_vec(input, &mut out, FlushCompress::Sync)
                .is_err()
            {
                return None;
            }
            input = &input[(c.total_in() - before) as usize..];
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
            out.reserve(out.capacity().max(64));
        }
        if out.ends_with(&SYNC_TAIL) {
            out.truncate(out.len() - SYNC_TAIL.len());
        }
        (out.len() < payload.len()).then(|| Bytes::from(out))
    })
}

/// A whole message whose payload is `compressed` (from [`compress`]), RSV1 set, ready for
/// tungstenite to write as is.
pub fn message_frame(opcode: OpData, compressed: Bytes) -> WsMessage {
    let header = FrameHeader {
        is_final: true,
        rsv1: true,
        opcode: OpCode::Data(opcode),
        ..FrameHeader::default()
    };
    WsMessage::Frame(Frame::from_payload(header, compressed))
}

/// Why an inbound compressed message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InflateError {
    /// It inflates to more than the message size limit (close 1009).
    TooBig,
    /// It is not valid deflate data (close 1007).
    Invalid,
}

impl std::fmt::Display for InflateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            InflateError::TooBig => "compressed message inflates past the size limit",
            InflateError::Invalid => "compressed message is not valid deflate data",
        })
    }
}

impl std::error::Error for InflateError {}

impl InflateError {
    /// The `InflateError` an I/O error from an [`InflateStream`] carries, if it is one.
    pub fn of(err: &io::Error) -> Option<InflateError> {
        err.get_ref()?.downcast_ref::<InflateError>().copied()
    }
}

/// Where the frame parser is in the byte stream.
#[derive(Debug)]
enum ReadState {
    /// Client side only: the HTTP response head, passed through up to its blank line; the
    /// value is how many bytes of `\r\n\r\n` have matched so far.
    HttpHead(u8),
    /// Collecting a frame header (the bytes so far are in `header`).
    Header,
    /// Passing `remaining` payload bytes of a plain frame through.
    Pass(u64),
    /// Collecting `remaining` payload bytes of a compressed message's frame.
    Collect {
        remaining: u64,
        mask: Option<[u8; 4]>,
        offset: usize,
        fin: bool,
    },
}

/// The frames a peer sends, with its compressed messages inflated: an `AsyncRead +
/// AsyncWrite` around the raw connection that tungstenite reads as if nothing were
/// compressed. Writes pass through untouched.
#[derive(Debug)]
pub struct InflateStream<S> {
    inner: S,
    /// Frames from a client are masked (and must stay so for tungstenite's server side).
    masked: bool,
    /// Keep the peer's last window of inflated bytes for its next message.
    context_takeover: bool,
    max_message_size: usize,
    state: ReadState,
    header: Vec<u8>,
    /// Client side: the HTTP response head so far (its extension parameters matter).
    head: Vec<u8>,
    /// Transformed bytes not yet handed to the reader.
    output: Vec<u8>,
    output_pos: usize,
    /// The compressed message being collected: its opcode and deflate data so far.
    message: Option<(u8, Vec<u8>)>,
    /// The last window of the peer's inflated messages (context takeover).
    history: Vec<u8>,
    failed: Option<InflateError>,
}

impl<S> InflateStream<S> {
    /// The server side of a socket whose handshake agreed `negotiated`; inflated messages
    /// longer than `max_message_size` are refused.
    pub fn server(inner: S, negotiated: &Negotiated, max_message_size: Option<usize>) -> Self {
        Self::new(
            inner,
            true,
            !negotiated.client_no_context_takeover,
            max_message_size,
            ReadState::Header,
        )
    }

    /// The client side, wrapped around the connection before the opening handshake: the
    /// server's HTTP response head passes through, then its frames are parsed.
    pub fn client(inner: S, max_message_size: Option<usize>) -> Self {
        Self::new(inner, false, true, max_message_size, ReadState::HttpHead(0))
    }

    fn new(
        inner: S,
        masked: bool,
        context_takeover: bool,
        max_message_size: Option<usize>,
        state: ReadState,
    ) -> Self {
        InflateStream {
            inner,
            masked,
            context_takeover,
            max_message_size: max_message_size.unwrap_or(usize::MAX),
            state,
            header: Vec::new(),
            head: Vec::new(),
            output: Vec::new(),
            output_pos: 0,
            message: None,
            history: Vec::new(),
            failed: None,
        }
    }

    /// The wrapped connection.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Runs `data` (fresh bytes from the connection) through the frame parser.
    fn feed(&mut self, mut data: &[u8]) -> Result<(), InflateError> {
        while !data.is_empty() {
            match &mut self.state {
                ReadState::HttpHead(matched) => {
                    const END: &[u8] = b"\r\n\r\n";
                    let byte = data[0];
                    data = &data[1..];
                    self.output.push(byte);
                    self.head.push(byte);
                    *matched = if byte == END[*matched as usize] {
                        *matched + 1
                    } else if byte == END[0] {
                        1
                    } else {
                        0
                    };
                    if *matched as usize == END.len() {
                        self.state = ReadState::Header;
                        // The server compresses each message on its own: keep no history.
                        let head = String::from_utf8_lossy(&self.head).to_ascii_lowercase();
                        if head.contains("server_no_context_takeover") {
                            self.context_takeover = false;
                        }
                        self.head = Vec::new();
                    }
                }
                ReadState::Header => {
                    let need = header_len(&self.header);
                    let take = (need - self.header.len()).min(data.len());
                    self.header.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if self.header.len() == header_len(&self.header) {
                        self.start_frame()?;
                    }
                }
                ReadState::Pass(remaining) => {
                    let take = (*remaining).min(data.len() as u64) as usize;
                    self.output.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    *remaining -= take as u64;
                    if *remaining == 0 {
                        self.state = ReadState::Header;
                    }
                }
                ReadState::Collect {
                    remaining,
                    mask,
                    offset,
                    fin,
                } => {
                    let take = (*remaining).min(data.len() as u64) as usize;
                    let Some((_, collected)) = self.message.as_mut() else {
                        return Err(InflateError::Invalid);
                    };
                    let start = collected.len();
                    collected.extend_from_slice(&data[..take]);
                    if let Some(key) = mask {
                        for (i, b) in collected[start..].iter_mut().enumerate() {
                            *b ^= key[(*offset + i) % 4];
                        }
                    }
                    *offset += take;
                    data = &data[take..];
                    *remaining -= take as u64;
                    if *remaining == 0 {
                        let fin = *fin;
                        self.state = ReadState::Header;
                        if fin {
                            self.finish_message()?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// A complete frame header is in `self.header`: pass the frame through or collect it.
    fn start_frame(&mut self) -> Result<(), InflateError> {
        let h = std::mem::take(&mut self.header);
        let fin = h[0] & 0x80 != 0;
        let rsv1 = h[0] & 0x40 != 0;
        let other_rsv = h[0] & 0x30 != 0;
        let opcode = h[0] & 0x0f;
        let len = payload_len(&h);
        let mask = (h[1] & 0x80 != 0).then(|| {
            let at = h.len() - 4;
            [h[at], h[at + 1], h[at + 2], h[at + 3]]
        });
        // A compressed message starts with RSV1 on a data frame; its continuation frames
        // carry no RSV1. Anything else (control frames, plain messages, and every protocol
        // violation) passes through for tungstenite to handle or refuse.
        let starts = rsv1 && !other_rsv && (opcode == 1 || opcode == 2) && self.message.is_none();
        let continues = !rsv1 && !other_rsv && opcode == 0 && self.message.is_some();
        if starts || continues {
            if starts {
                self.message = Some((opcode, Vec::new()));
            }
            let collected = self.message.as_ref().map_or(0, |(_, d)| d.len());
            if (collected as u64).saturating_add(len) > self.max_message_size as u64 {
                return Err(InflateError::TooBig);
            }
            self.state = ReadState::Collect {
                remaining: len,
                mask,
                offset: 0,
                fin,
            };
            if len == 0 {
                self.state = ReadState::Header;
                if fin {
                    self.finish_message()?;
                }
            }
        } else {
            self.output.extend_from_slice(&h);
            self.state = if len == 0 {
                ReadState::Header
            } else {
                ReadState::Pass(len)
            };
        }
        self.header = h;
        self.header.clear();
        Ok(())
    }

    /// The last frame of a compressed message arrived: inflate it and emit one plain frame.
    fn finish_message(&mut self) -> Result<(), InflateError> {
        let Some((opcode, data)) = self.message.take() else {
            return Ok(());
        };
        let prefix = if self.context_takeover {
            self.history.len()
        } else {
            0
        };
        let mut inflated = inflate(&self.history[..prefix], &data, self.max_message_size)?;
        if self.context_takeover {
            let keep = inflated.len().min(MAX_WINDOW);
            self.history = inflated[inflated.len() - keep..].to_vec();
        }
        let payload = inflated.split_off(prefix);
        write_header(&mut self.output, opcode, payload.len(), self.masked);
        self.output.extend_from_slice(&payload);
        Ok(())
    }
}

/// One message compressed on its own (as Herald sends them), inflated: what a client does
/// with each frame Herald compressed.
///
/// # Errors
/// As [`InflateStream`]: [`InflateError::TooBig`] past `max` bytes, else
/// [`InflateError::Invalid`].
pub fn inflate_message(compressed: &[u8], max: usize) -> Result<Vec<u8>, InflateError> {
    inflate(&[], compressed, max)
}

/// Inflates one message. With context takeover `history` (the peer's last window) goes first
/// as a stored block, so back-references into it resolve; the result starts with `history`.
fn inflate(history: &[u8], data: &[u8], max: usize) -> Result<Vec<u8>, InflateError> {
    let mut input = Vec::with_capacity(5 + history.len() + data.len() + SYNC_TAIL.len());
    if !history.is_empty() {
        // A non-final stored block: header byte 0 (BFINAL 0, BTYPE 00), LEN, NLEN.
        let len = history.len() as u16;
        input.push(0);
        input.extend_from_slice(&len.to_le_bytes());
        input.extend_from_slice(&(!len).to_le_bytes());
        input.extend_from_slice(history);
    }
    input.extend_from_slice(data);
    input.extend_from_slice(&SYNC_TAIL);
    let limit = history.len().saturating_add(max);
    DECOMPRESSOR.with(|cell| {
        let mut d = cell.borrow_mut();
        d.reset(false);
        inflate_with(&mut d, &input, history.len(), limit, data.len())
    })
}

/// The inflate loop of [`inflate`], on a reset decompressor.
fn inflate_with(
    d: &mut Decompress,
    input: &[u8],
    history: usize,
    limit: usize,
    data_len: usize,
) -> Result<Vec<u8>, InflateError> {
    let mut out = Vec::with_capacity((history + data_len * 4 + 64).min(limit));
    let mut rest = input;
    loop {
        if out.len() == out.capacity() {
            if out.len() >= limit {
                return Err(InflateError::TooBig);
            }
            out.reserve(out.len().max(256).min(limit - out.len()));
        }
        let (in_before, out_before) = (d.total_in(), out.len());
        let status = d
            .decompress_vec(rest, &mut out, FlushDecompress::Sync)
            .map_err(|_| InflateError::Invalid)?;
        rest = &rest[(d.total_in() - in_before) as usize..];
        if out.len() > limit {
            return Err(InflateError::TooBig);
        }
        if status == Status::StreamEnd || (rest.is_empty() && out.len() < out.capacity()) {
            break;
        }
        if d.total_in() == in_before && out.len() == out_before && out.len() < out.capacity() {
            return Err(InflateError::Invalid);
        }
    }
    if out.len() < history {
        return Err(InflateError::Invalid);
    }
    Ok(out)
}

/// How long the frame header that starts with `h` is (2 until its second byte is known).
fn header_len(h: &[u8]) -> usize {
    if h.len() < 2 {
        return 2;
    }
    let ext = match h[1] & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if h[1] & 0x80 != 0 { 4 } else { 0 };
    2 + ext + mask
}

/// The payload length of the complete frame header `h`.
fn payload_len(h: &[u8]) -> u64 {
    match h[1] & 0x7f {
        126 => u64::from(u16::from_be_bytes([h[2], h[3]])),
        127 => u64::from_be_bytes([h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9]]),
        n => u64::from(n),
    }
}

/// A final frame header with no reserved bits; `masked` adds an all-zero key (unmasking with
/// it is a no-op, and tungstenite's server side requires client frames to be masked).
fn write_header(out: &mut Vec<u8>, opcode: u8, len: usize, masked: bool) {
    let mask_bit = if masked { 0x80 } else { 0 };
    out.push(0x80 | opcode);
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if len <= usize::from(u16::MAX) {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    if masked {
        out.extend_from_slice(&[0; 4]);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for InflateStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.output_pos < this.output.len() {
                let n = (this.output.len() - this.output_pos).min(buf.remaining());
                buf.put_slice(&this.output[this.output_pos..this.output_pos + n]);
                this.output_pos += n;
                if this.output_pos == this.output.len() {
                    // Give the memory back: an idle socket keeps no buffer.
                    this.output = Vec::new();
                    this.output_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if let Some(err) = this.failed {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, err)));
            }
            let mut chunk = [0u8; 4096];
            let mut raw = ReadBuf::new(&mut chunk);
            std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, &mut raw))?;
            if raw.filled().is_empty() {
                return Poll::Ready(Ok(())); // end of stream
            }
            if let Err(err) = this.feed(raw.filled()) {
                // What was parsed before the bad message is still delivered first.
                this.failed = Some(err);
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for InflateStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn negotiate(offer: &str) -> Option<Negotiated> {
        Negotiated::from_offers([offer])
    }

    #[test]
    fn a_browser_offer_is_accepted_without_context_takeover_on_the_server_side() {
        let n = negotiate("permessage-deflate; client_max_window_bits").unwrap();
        assert_eq!(n.server_max_window_bits, 15);
        assert!(!n.client_no_context_takeover);
        assert_eq!(
            n.response(),
            "permessage-deflate; server_no_context_takeover"
        );
    }

    #[test]
    fn offered_parameters_shape_the_answer() {
        let n = negotiate(
            "permessage-deflate; client_no_context_takeover; server_max_window_bits=10; \
             server_no_context_takeover; client_max_window_bits=12",
        )
        .unwrap();
        assert!(n.client_no_context_takeover);
        assert_eq!(n.server_max_window_bits, 10);
        assert_eq!(
            n.response(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=10"
        );
        assert!(n.compresses(1024));
        assert!(!n.compresses(1025), "longer than the window: sent plain");
        assert!(!n.compresses(MIN_COMPRESS_SIZE - 1));
    }

    #[test]
    fn bad_offers_are_declined_and_the_next_one_is_taken() {
        for bad in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; client_no_context_takeover=1",
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
            "permessage-deflate; x-unknown",
            "x-webkit-deflate-frame",
        ] {
            assert_eq!(negotiate(bad), None, "{bad}");
        }
        let n = Negotiated::from_offers([
            "permessage-deflate; x-unknown, permessage-deflate; server_max_window_bits=\"9\"",
        ])
        .unwrap();
        assert_eq!(n.server_max_window_bits, 9);
        assert!(accepted(["permessage-deflate; server_no_context_takeover"]));
        assert!(!accepted(["x-other"]));
    }

    /// A client-side compressor with context takeover, as browsers run it.
    struct PeerCompressor(Compress);

    impl PeerCompressor {
        fn new() -> Self {
            PeerCompressor(Compress::new(Compression::default(), false))
        }

        fn message(&mut self, payload: &[u8]) -> Vec<u8> {
            let mut out = Vec::with_capacity(payload.len() + 64);
            self.0
                .compress_vec(payload, &mut out, FlushCompress::Sync)
                .unwrap();
            assert!(out.ends_with(&SYNC_TAIL));
            out.truncate(out.len() - 4);
            out
        }
    }

    fn masked_frame(first: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
        let mut out = vec![first];
        let len = payload.len();
        if len < 126 {
            out.push(0x80 | len as u8);
        } else {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        out
    }

    fn server_stream(client_no_context_takeover: bool) -> InflateStream<()> {
        InflateStream::server(
            (),
            &Negotiated {
                server_max_window_bits: 15,
                client_no_context_takeover,
            },
            Some(1 << 20),
        )
    }

    /// The plain frames the stream hands on, as (first byte, payload) pairs.
    fn frames(bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let hl = header_len(rest);
            let len = payload_len(rest) as usize;
            let key = if rest[1] & 0x80 != 0 {
                [rest[hl - 4], rest[hl - 3], rest[hl - 2], rest[hl - 1]]
            } else {
                [0; 4]
            };
            let payload = rest[hl..hl + len]
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ key[i % 4])
                .collect();
            out.push((rest[0], payload));
            rest = &rest[hl + len..];
        }
        out
    }

    #[test]
    fn compressed_messages_with_context_takeover_inflate_in_order_byte_by_byte() {
        let mut peer = PeerCompressor::new();
        let first = br#"{"type": "subscribe", "task_id": "2f1c0b6e-1111-4c1e-9d0b-000000000001"}"#;
        let second = br#"{"type": "subscribe", "task_id": "2f1c0b6e-1111-4c1e-9d0b-000000000002"}"#;
        let mut wire = masked_frame(0xc1, &peer.message(first), [1, 2, 3, 4]);
        wire.extend(masked_frame(0x89, b"ping", [9, 9, 9, 9])); // a plain ping between
        let c2 = peer.message(second);
        assert!(
            c2.len() < second.len() / 3,
            "the second message refers back into the first: {} bytes",
            c2.len()
        );
        // Fragmented: RSV1 on the first frame only.
        let (a, b) = c2.split_at(c2.len() / 2);
        wire.extend(masked_frame(0x41, a, [5, 6, 7, 8]));
        wire.extend(masked_frame(0x80, b, [8, 7, 6, 5]));
        let mut s = server_stream(false);
        for byte in &wire {
            s.feed(std::slice::from_ref(byte)).unwrap();
        }
        let got = frames(&s.output);
        assert_eq!(
            got,
            vec![
                (0x81, first.to_vec()),
                (0x89, b"ping".to_vec()),
                (0x81, second.to_vec())
            ]
        );
        assert_eq!(s.history.len(), first.len() + second.len());
    }

    #[test]
    fn without_context_takeover_nothing_is_kept() {
        let mut s = server_stream(true);
        let msg = b"hello hello hello hello hello hello hello";
        let c = compress(msg).unwrap();
        s.feed(&masked_frame(0xc1, &c, [0; 4])).unwrap();
        s.feed(&masked_frame(0xc1, &c, [3; 4])).unwrap();
        assert_eq!(
            frames(&s.output),
            vec![(0x81, msg.to_vec()), (0x81, msg.to_vec())]
        );
        assert!(s.history.is_empty());
    }

    #[test]
    fn a_bomb_is_too_big_and_garbage_is_invalid() {
        let zeros = vec![0u8; 4 << 20];
        let bomb = compress(&zeros).unwrap();
        let mut s = server_stream(true);
        assert_eq!(
            s.feed(&masked_frame(0xc1, &bomb, [7; 4])),
            Err(InflateError::TooBig)
        );
        let mut s = server_stream(true);
        assert_eq!(
            s.feed(&masked_frame(0xc1, &[0xff, 0xff, 0xff, 0x01], [7; 4])),
            Err(InflateError::Invalid)
        );
    }

    #[test]
    fn plain_frames_and_violations_pass_through_untouched() {
        let plain = masked_frame(0x81, b"plain text", [1, 1, 1, 1]);
        let rsv1_ping = masked_frame(0xc9, b"x", [1, 1, 1, 1]);
        let mut wire = plain.clone();
        wire.extend(&rsv1_ping);
        let mut s = server_stream(false);
        s.feed(&wire).unwrap();
        assert_eq!(
            s.output, wire,
            "tungstenite sees the RSV1 ping and refuses it"
        );
    }

    #[test]
    fn the_client_side_skips_the_http_head_and_inflates_unmasked_frames() {
        let msg = br#"{"type": "user_message", "username": "amadmin", "message": "Your report is ready! Your report is ready!"}"#;
        let c = compress(msg).unwrap();
        let head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";
        let mut wire = head.to_vec();
        wire.push(0xc1);
        wire.push(c.len() as u8);
        wire.extend_from_slice(&c);
        let mut s = InflateStream::client((), None);
        s.feed(&wire).unwrap();
        assert_eq!(&s.output[..head.len()], head);
        assert_eq!(frames(&s.output[head.len()..]), vec![(0x81, msg.to_vec())]);
        assert!(
            s.context_takeover,
            "the server did not say it keeps no context"
        );
        assert_eq!(s.history, msg.to_vec());

        // Told server_no_context_takeover (in a head that arrives in pieces): no history.
        let head = b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Extensions: \
                     permessage-deflate; server_no_context_takeover\r\n\r\n";
        let mut s = InflateStream::client((), None);
        for piece in head.chunks(7) {
            s.feed(piece).unwrap();
            s.output.clear();
        }
        s.feed(&wire[wire.len() - c.len() - 2..]).unwrap();
        assert_eq!(frames(&s.output), vec![(0x81, msg.to_vec())]);
        assert!(!s.context_takeover);
        assert!(s.history.is_empty());
    }

    #[test]
    fn compress_skips_what_does_not_shrink() {
        assert_eq!(compress(b"\x01\x7f"), None);
        let msg = br#"{"type": "notification", "message": "Export finished", "level": "info", "message_type": "notification"}"#;
        let c = compress(msg).unwrap();
        assert!(c.len() < msg.len());
        assert_eq!(inflate(&[], &c, 1 << 20).unwrap(), msg.to_vec());
    }
}

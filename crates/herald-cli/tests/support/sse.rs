//! A Server-Sent Events reader for the tests: a raw HTTP/1.1 GET, the status and headers, then
//! the chunked body parsed into events as `EventSource` parses them (the fields this server
//! writes: `event`, `id`, `data`, `retry`, comments).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::TIMEOUT;

/// One event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    pub event: Option<String>,
    pub id: Option<String>,
    pub data: String,
}

impl Event {
    /// The data as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).unwrap()
    }
}

/// An open event stream (or the refusal of one).
#[derive(Debug)]
pub struct EventStream {
    reader: BufReader<TcpStream>,
    pub status: u16,
    /// Lower-cased names.
    pub headers: Vec<(String, String)>,
    /// Decoded body text not yet parsed into events.
    text: String,
    ended: bool,
    /// `retry:` values seen.
    pub retries: Vec<u64>,
    /// Comment lines seen (keep-alives).
    pub comments: usize,
}

impl EventStream {
    /// `GET path` with `headers`; returns once the status line and headers are read.
    pub async fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> EventStream {
        tokio::time::timeout(TIMEOUT, Self::try_open(addr, path, headers))
            .await
            .unwrap()
    }

    async fn try_open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> EventStream {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        // The `Host` is the server's address unless the caller gives one (a browser on a
        // site name behind a proxy).
        let mut req = format!("GET {path} HTTP/1.1\r\nAccept: text/event-stream\r\n");
        if !headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("host"))
        {
            req.push_str(&format!("Host: {addr}\r\n"));
        }
        for (name, value) in headers {
            req.push_str(&format!("{name}: {value}\r\n"));
        }
        req.push_str("\r\n");
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).await.unwrap();
        let status = line.split(' ').nth(1).unwrap().parse().unwrap();
        let mut headers = Vec::new();
        loop {
            line.clear();
            reader.read_line(&mut line).await.unwrap();
            let trimmed = line.trim_end();
            if trimmed.is_empty() {
                break;
            }
            let (name, value) = trimmed.split_once(':').unwrap();
            headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
        }
        EventStream {
            reader,
            status,
            headers,
            text: String::new(),
            ended: false,
            retries: Vec::new(),
            comments: 0,
        }
    }

    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Reads the next chunk of the body into `text`; false at the end of the body.
    async fn read_chunk(&mut self) -> bool {
        let mut line = String::new();
        if self.reader.read_line(&mut line).await.unwrap() == 0 {
            return false;
        }
        let size = usize::from_str_radix(line.trim(), 16).unwrap();
        if size == 0 {
            line.clear();
            let _ = self.reader.read_line(&mut line).await;
            return false;
        }
        let mut data = vec![0; size + 2];
        self.reader.read_exact(&mut data).await.unwrap();
        data.truncate(size);
        self.text.push_str(&String::from_utf8(data).unwrap());
        true
    }

    /// The next event within `within`; `None` when the stream ended first. Panics on a timeout.
    pub async fn next_within(&mut self, within: Duration) -> Option<Event> {
        tokio::time::timeout(within, self.next_event())
            .await
            .expect("no event in time")
    }

    /// The next event (default timeout).
    pub async fn next(&mut self) -> Option<Event> {
        self.next_within(TIMEOUT).await
    }

    /// The next event whose data is JSON; panics if the stream ends.
    pub async fn next_json(&mut self) -> serde_json::Value {
        self.next().await.expect("the stream ended").json()
    }

    async fn next_event(&mut self) -> Option<Event> {
        loop {
            if let Some(end) = self.text.find("\n\n") {
                let block: String = self.text.drain(..end + 2).collect();
                let mut event = Event::default();
                let mut has_data = false;
                for line in block.lines() {
                    if line.starts_with(':') {
                        self.comments += 1;
                        continue;
                    }
                    let (field, value) = line.split_once(':').unwrap_or((line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value);
                    match field {
                        "event" => event.event = Some(value.to_owned()),
                        "id" => event.id = Some(value.to_owned()),
                        "retry" => self.retries.push(value.parse().unwrap()),
                        "data" => {
                            if has_data {
                                event.data.push('\n');
                            }
                            event.data.push_str(value);
                            has_data = true;
                        }
                        _ => {}
                    }
                }
                if has_data {
                    return Some(event);
                }
                continue;
            }
            if self.ended || !self.read_chunk().await {
                self.ended = true;
                return None;
            }
        }
    }

    /// Waits for the end of the stream within `within`, returning the events before it.
    pub async fn until_end(&mut self, within: Duration) -> Vec<Event> {
        let mut events = Vec::new();
        while let Some(event) = self.next_within(within).await {
            events.push(event);
        }
        events
    }
}

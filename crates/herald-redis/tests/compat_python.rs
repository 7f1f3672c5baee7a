//! Interop with the real Python `channels_redis` 4.3.0 (the pinned venv of `tests/compat/`).
//!
//! Every test drives `tests/compat/peer.py` (one-shot actions, a `listen` process that prints
//! what its channels receive, or a `repl` holding one layer instance) against a fresh
//! `redis-server`, and checks that what one side sends the other receives unchanged:
//! Python → Rust and Rust → Python, `send` and `group_send`, groups mixing Python and Rust
//! channels, with and without `symmetric_encryption_keys`, on 1 and 3 hosts, msgpack and
//! JSON serializers, a custom prefix and random prefix length, capacity, expiry, key
//! rotation, byte-identical payloads, and the same for the Pub/Sub layers (plus a Redis
//! restart).
//!
//! Layout: tagged-JSON helpers (the encoding `peer.py` documents), the peer wrappers
//! (`Setup` configures both sides identically, `Peer`/`Listener`/`Repl`), then scenarios as
//! `async fn`s, and at the end the matrix that runs them per configuration.
//!
//! Without the venv a test prints why and returns; with `HERALD_REQUIRE_COMPAT=1` (CI) it
//! fails instead. Build the venv with `tests/compat/setup.sh`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use herald_core::capacity::CapacityRule;
use herald_core::{ChannelLayer, Map, Message, Value};
use herald_redis::{
    RedisChannelLayer, RedisLayerConfig, RedisPubSubConfig, RedisPubSubLayer, SerializerFormat,
};
use herald_test_support::{RedisServer, compat_python, workspace_root};
use serde_json::{Value as J, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::time::timeout;

/// Bound on one Python one-shot run (interpreter + Django + channels import is ~0.5 s).
const PYTHON_RUN: Duration = Duration::from_secs(30);
/// Bound on waiting for a message that should arrive.
const ARRIVAL: Duration = Duration::from_secs(10);
/// How long "nothing more arrives" is watched for.
const SILENCE: Duration = Duration::from_millis(700);

// ------------------------------------------------------------------------------------------
// Tagged JSON (see the docstring of tests/compat/peer.py)
// ------------------------------------------------------------------------------------------

fn to_tagged(value: &Value) -> J {
    match value {
        Value::Nil => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(i) => json!(i),
        Value::UInt(u) => json!(u),
        // `{:?}` is the shortest round-trip text ("1.0", "1e300", "NaN", "inf"); Python's
        // float() reads all of them.
        Value::Float(f) => json!({ "$float": format!("{f:?}") }),
        Value::Str(s) => J::String(s.clone()),
        Value::Bytes(b) => json!({ "$bytes": hex(b) }),
        Value::Array(items) => J::Array(items.iter().map(to_tagged).collect()),
        Value::Map(map) => {
            let body: serde_json::Map<String, J> =
                map.iter().map(|(k, v)| (k.clone(), to_tagged(v))).collect();
            if body.len() == 1 && body.keys().all(|k| k.starts_with('$')) {
                json!({ "$map": body })
            } else {
                J::Object(body)
            }
        }
    }
}

fn from_tagged(json: &J) -> Value {
    match json {
        J::Null => Value::Nil,
        J::Bool(b) => Value::Bool(*b),
        J::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Int(i)
            } else if let Some(u) = n.as_u64() {
                Value::UInt(u)
            } else {
                panic!("untagged float {n} from the peer")
            }
        }
        J::String(s) => Value::Str(s.clone()),
        J::Array(items) => Value::Array(items.iter().map(from_tagged).collect()),
        J::Object(obj) => {
            if obj.len() == 1 {
                let (tag, inner) = obj.iter().next().unwrap();
                if tag.starts_with('$') {
                    return from_tag(tag, inner);
                }
            }
            Value::Map(
                obj.iter()
                    .map(|(k, v)| (k.clone(), from_tagged(v)))
                    .collect(),
            )
        }
    }
}

fn from_tag(tag: &str, inner: &J) -> Value {
    match tag {
        "$bytes" => Value::Bytes(unhex(inner.as_str().unwrap())),
        "$float" => Value::Float(inner.as_str().unwrap().parse().unwrap()),
        "$int" => panic!("integer {inner} does not fit 64 bits"),
        "$map" => Value::Map(
            inner
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), from_tagged(v)))
                .collect(),
        ),
        other => panic!("unexpected tag {other} from the peer"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn message_json(message: &Message) -> J {
    to_tagged(&Value::Map(message.map().clone()))
}

fn message_from(json: &J) -> Message {
    match from_tagged(json) {
        Value::Map(map) => Message::from(map),
        other => panic!("peer returned a non-map message: {other:?}"),
    }
}

/// Strict equality: map order, float bits (NaN equals NaN), int vs uint and str vs bytes all
/// count. `Value`'s own `PartialEq` ignores map order and says NaN != NaN.
fn assert_same(left: &Value, right: &Value, path: &str) {
    match (left, right) {
        (Value::Float(a), Value::Float(b)) => assert!(
            a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
            "{path}: float {a:?} != {b:?}"
        ),
        (Value::Array(a), Value::Array(b)) => {
            assert_eq!(a.len(), b.len(), "{path}: array length");
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                assert_same(x, y, &format!("{path}[{i}]"));
            }
        }
        (Value::Map(a), Value::Map(b)) => {
            let ka: Vec<&String> = a.keys().collect();
            let kb: Vec<&String> = b.keys().collect();
            assert_eq!(ka, kb, "{path}: map keys (in order)");
            for (k, x) in a {
                assert_same(x, &b[k], &format!("{path}.{k}"));
            }
        }
        (a, b) => assert_eq!(a, b, "{path}"),
    }
}

fn assert_same_message(left: &Message, right: &Message) {
    assert_same(
        &Value::Map(left.map().clone()),
        &Value::Map(right.map().clone()),
        "message",
    );
}

// ------------------------------------------------------------------------------------------
// The Python peer
// ------------------------------------------------------------------------------------------

/// What both sides are configured with, so they always agree (same ordered hosts, keys...).
#[derive(Debug, Clone)]
struct Setup {
    hosts: Vec<String>,
    keys: Vec<String>,
    json: bool,
    capacity: Option<usize>,
    channel_capacity: Vec<(String, usize)>,
    prefix: Option<String>,
    random_prefix_length: Option<usize>,
    expiry: Option<u64>,
    group_expiry: Option<u64>,
    /// Give Python bare URL hosts, keeping redis-py 8's 5 s default `socket_timeout` (which
    /// breaks idle receivers, see `python_hosts`).
    redis_py_default_timeout: bool,
}

impl Setup {
    fn new(servers: &[RedisServer]) -> Self {
        Setup {
            hosts: servers.iter().map(RedisServer::url).collect(),
            keys: Vec::new(),
            json: false,
            capacity: None,
            channel_capacity: Vec::new(),
            prefix: None,
            random_prefix_length: None,
            expiry: None,
            group_expiry: None,
            redis_py_default_timeout: false,
        }
    }

    /// A non-default key prefix and random prefix length, so both sides must agree on them.
    fn custom_layout(mut self) -> Self {
        self.prefix = Some("herald_interop".to_owned());
        self.random_prefix_length = Some(4);
        self
    }

    /// The layer prefix in force (Python's default `"asgi"` when unset).
    fn layer_prefix(&self) -> &str {
        self.prefix.as_deref().unwrap_or("asgi")
    }

    fn encrypted(mut self) -> Self {
        self.keys = vec!["interop-key-one-with-32-bytes-of-entropy".to_owned()];
        self
    }

    fn json(mut self) -> Self {
        self.json = true;
        self
    }

    fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = Some(capacity);
        self
    }

    /// Python's `hosts`: the same URLs in the same order, as `{"address": url,
    /// "socket_timeout": None}` dicts.
    ///
    /// redis-py 8 made `socket_timeout` default to 5 s, the same as channels_redis 4.3.0's
    /// `BZPOPMIN … 5`, so an idle `receive()` raises `redis.exceptions.TimeoutError` after ~5 s
    /// (see `python_idle_receive_fails_without_socket_timeout_fix`).
    /// A Django project on these pins needs this same host form; the extra key is passed to
    /// `ConnectionPool.from_url` by channels_redis' `create_pool`.
    fn python_hosts(&self) -> J {
        if self.redis_py_default_timeout {
            return json!(self.hosts);
        }
        J::Array(
            self.hosts
                .iter()
                .map(|url| json!({"address": url, "socket_timeout": null}))
                .collect(),
        )
    }

    /// The `CHANNEL_LAYERS["default"]["CONFIG"]` a Django project would write.
    fn python_config(&self, pubsub: bool) -> J {
        let mut config = serde_json::Map::new();
        config.insert("hosts".into(), self.python_hosts());
        if !self.keys.is_empty() {
            config.insert("symmetric_encryption_keys".into(), json!(self.keys));
        }
        if self.json {
            config.insert("serializer_format".into(), json!("json"));
        }
        if let Some(prefix) = &self.prefix {
            config.insert("prefix".into(), json!(prefix));
        }
        if !pubsub {
            if let Some(length) = self.random_prefix_length {
                config.insert("random_prefix_length".into(), json!(length));
            }
            if let Some(expiry) = self.expiry {
                config.insert("expiry".into(), json!(expiry));
            }
            if let Some(group_expiry) = self.group_expiry {
                config.insert("group_expiry".into(), json!(group_expiry));
            }
            if let Some(capacity) = self.capacity {
                config.insert("capacity".into(), json!(capacity));
            }
            if !self.channel_capacity.is_empty() {
                let rules: serde_json::Map<String, J> = self
                    .channel_capacity
                    .iter()
                    .map(|(p, c)| (p.clone(), json!(c)))
                    .collect();
                config.insert("channel_capacity".into(), J::Object(rules));
            }
        }
        J::Object(config)
    }

    fn peer(&self) -> Option<Peer> {
        Peer::new("core", self.python_config(false))
    }

    fn pubsub_peer(&self) -> Option<Peer> {
        Peer::new("pubsub", self.python_config(true))
    }
}

/// One reply line of the peer.
#[derive(Debug)]
struct Reply {
    json: J,
}

impl Reply {
    fn ok(&self) -> bool {
        self.json["ok"] == J::Bool(true)
    }

    fn unwrap(&self) -> &J {
        assert!(self.ok(), "peer failed: {}", self.json);
        &self.json["result"]
    }

    fn error(&self) -> Option<&str> {
        self.json["error"].as_str()
    }

    fn logs(&self) -> Vec<String> {
        self.json["logs"]
            .as_array()
            .map(|records| {
                records
                    .iter()
                    .filter_map(|r| r["message"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone)]
struct Peer {
    python: PathBuf,
    script: PathBuf,
    layer: &'static str,
    config: String,
}

impl Peer {
    fn new(layer: &'static str, config: J) -> Option<Peer> {
        let python = compat_python()?;
        Some(Peer {
            python,
            script: workspace_root().join("tests/compat/peer.py"),
            layer,
            config: config.to_string(),
        })
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.python);
        command
            .arg(&self.script)
            .args(["--layer", self.layer, "--config", &self.config])
            .kill_on_drop(true);
        command
    }

    /// Runs one one-shot action and returns its reply.
    async fn run(&self, args: &[&str]) -> Reply {
        let child = self
            .command()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let output = timeout(PYTHON_RUN, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("peer {args:?} did not finish in {PYTHON_RUN:?}"))
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let line = stdout.lines().last().unwrap_or_else(|| {
            panic!(
                "peer {args:?} printed nothing (status {}):\n{stderr}",
                output.status
            )
        });
        let json: J = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("peer {args:?} printed {line:?} ({e}):\n{stderr}"));
        Reply { json }
    }

    async fn send(&self, channel: &str, message: &Message) -> Reply {
        let body = message_json(message).to_string();
        self.run(&["send", channel, &body]).await
    }

    async fn group_send(&self, group: &str, message: &Message) -> Reply {
        let body = message_json(message).to_string();
        self.run(&["group_send", group, &body]).await
    }

    async fn receive(&self, channel: &str, seconds: f64) -> Reply {
        self.run(&["receive", channel, "--timeout", &seconds.to_string()])
            .await
    }

    /// Starts `listen` with `channels` new channels in `groups`, and waits until it is ready.
    async fn listen(&self, channels: usize, groups: &[&str], general: &[&str]) -> Listener {
        let mut command = self.command();
        command.args(["listen", "--channels", &channels.to_string()]);
        command.args(["--groups", &groups.join(",")]);
        for name in general {
            command.args(["--general", name]);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut listener = Listener {
            _child: child,
            _stdin: stdin,
            lines,
            channels: Vec::new(),
        };
        let ready = listener.next_line(PYTHON_RUN).await.unwrap();
        assert_eq!(ready["event"], "ready", "{ready}");
        listener.channels = ready["channels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_owned())
            .collect();
        listener
    }

    /// Starts a `repl`: one layer instance taking commands.
    async fn repl(&self) -> Repl {
        let mut child = self
            .command()
            .arg("repl")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Repl {
            _child: child,
            stdin,
            lines,
        }
    }
}

/// A running `peer.py listen`: Python channels that report what they receive.
#[derive(Debug)]
struct Listener {
    _child: Child,
    /// Kept open: the peer exits when its stdin closes.
    _stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    channels: Vec<String>,
}

impl Listener {
    async fn next_line(&mut self, within: Duration) -> Option<J> {
        let line = timeout(within, self.lines.next_line()).await.ok()?;
        let line = line.unwrap().expect("listener exited");
        Some(serde_json::from_str(&line).unwrap())
    }

    /// The next received message as (channel, message), or None if nothing came in `within`.
    async fn next_message(&mut self, within: Duration) -> Option<(String, Message)> {
        let event = self.next_line(within).await?;
        assert_eq!(event["event"], "message", "listener: {event}");
        Some((
            event["channel"].as_str().unwrap().to_owned(),
            message_from(&event["message"]),
        ))
    }

    async fn expect_message(&mut self) -> (String, Message) {
        self.next_message(ARRIVAL)
            .await
            .unwrap_or_else(|| panic!("no message reached the Python listener in {ARRIVAL:?}"))
    }

    async fn expect_silence(&mut self) {
        if let Some((channel, message)) = self.next_message(SILENCE).await {
            panic!("unexpected extra message on {channel}: {message:?}");
        }
    }
}

/// A running `peer.py repl`.
#[derive(Debug)]
struct Repl {
    _child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Repl {
    async fn call(&mut self, command: J) -> Reply {
        let mut line = command.to_string();
        line.push('\n');
        timeout(PYTHON_RUN, self.stdin.write_all(line.as_bytes()))
            .await
            .unwrap()
            .unwrap();
        let reply = timeout(PYTHON_RUN, self.lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("repl did not answer {command}"))
            .unwrap()
            .expect("repl exited");
        Reply {
            json: serde_json::from_str(&reply).unwrap(),
        }
    }
}

// ------------------------------------------------------------------------------------------
// Value zoo
// ------------------------------------------------------------------------------------------

/// Every kind of value a Python message can hold, at every msgpack width.
fn value_zoo(json_safe: bool) -> Message {
    let ints: Vec<Value> = [
        0i64,
        1,
        -1,
        -32,
        -33,
        127,
        128,
        255,
        256,
        -128,
        -129,
        32767,
        32768,
        65535,
        65536,
        -32768,
        -32769,
        2_147_483_647,
        2_147_483_648,
        -2_147_483_648,
        -2_147_483_649,
        4_294_967_295,
        4_294_967_296,
        i64::MAX,
        i64::MIN,
    ]
    .into_iter()
    .map(Value::Int)
    .chain([Value::UInt(1 << 63), Value::UInt(u64::MAX)])
    .collect();
    let mut floats = vec![1.5, 1.0, 0.0, -0.0, 0.1, -2.5e-8, 1e300, 5e-324, f64::MAX];
    if !json_safe {
        floats.extend([f64::INFINITY, f64::NEG_INFINITY, f64::NAN]);
    }
    let mut nested = Map::new();
    nested.insert(
        "list".into(),
        Value::Array(vec![Value::Int(1), "a".into(), Value::Nil]),
    );
    nested.insert("empty_map".into(), Value::Map(Map::new()));
    nested.insert("empty_list".into(), Value::Array(Vec::new()));
    let mut deeper = Map::new();
    deeper.insert("z".into(), Value::Float(-1.25));
    deeper.insert("a".into(), Value::Array(vec![Value::Map(Map::new())]));
    nested.insert("deeper".into(), Value::Map(deeper));
    let mut tag_like = Map::new();
    tag_like.insert("$bytes".into(), "not bytes".into());

    let mut msg = Message::with_type("zoo.message")
        .with("text", "héllo wörld ☃ 😀 \u{0} \"quoted\" \\ back")
        .with("empty", "")
        .with("numeric_str", "123")
        .with("str8", "s".repeat(40))
        .with("str16", "m".repeat(300))
        .with("str32", "l".repeat(70_000))
        .with("ints", Value::Array(ints))
        .with(
            "floats",
            Value::Array(floats.into_iter().map(Value::Float).collect()),
        )
        .with("none", Value::Nil)
        .with("yes", true)
        .with("no", false)
        .with("nested", Value::Map(nested))
        .with("tag_like", Value::Map(tag_like))
        .with(
            "mixed",
            Value::Array(vec![
                Value::Array(vec![Value::Array(vec![])]),
                Value::Bool(true),
                Value::Float(2.0),
                Value::Int(2),
            ]),
        );
    if !json_safe {
        msg.insert("bytes", Value::Bytes(vec![0, 1, 2, 0x7f, 0x80, 0xff]));
        msg.insert("empty_bytes", Value::Bytes(Vec::new()));
        msg.insert("bin16", Value::Bytes(vec![0xab; 300]));
        msg.insert(
            "bin32",
            Value::Bytes((0..70_000u32).map(|i| i as u8).collect()),
        );
        msg.insert(
            "str_vs_bytes",
            Value::Array(vec![Value::Str("ab".into()), Value::Bytes(b"ab".to_vec())]),
        );
    }
    msg
}

// ------------------------------------------------------------------------------------------
// RedisChannelLayer ↔ channels_redis.core.RedisChannelLayer
// ------------------------------------------------------------------------------------------

async fn rust_receive(layer: &impl ChannelLayer, channel: &str) -> Message {
    timeout(ARRIVAL, layer.receive(channel))
        .await
        .unwrap_or_else(|_| panic!("nothing reached Rust channel {channel} in {ARRIVAL:?}"))
        .unwrap()
}

async fn rust_expect_silence(layer: &impl ChannelLayer, channel: &str) {
    if let Ok(got) = timeout(SILENCE, layer.receive(channel)).await {
        panic!("Rust channel {channel} unexpectedly received {got:?}");
    }
}

/// Python `send` to a Rust specific channel and to a general channel; Rust receives both.
async fn python_send_reaches_rust(setup: Setup) {
    let Some(peer) = setup.peer() else { return };
    let layer = rust_layer(&setup);
    let channel = layer.new_channel("specific").await.unwrap();
    let msg = Message::with_type("chat.message").with("text", "from python");
    peer.send(&channel, &msg).await.unwrap();
    assert_same_message(&rust_receive(&layer, &channel).await, &msg);

    let general = Message::with_type("general.message").with("n", 7);
    peer.send("interop.general", &general).await.unwrap();
    assert_same_message(&rust_receive(&layer, "interop.general").await, &general);
}

/// Rust `send` to a Python specific channel and to a general channel Python receives on.
async fn rust_send_reaches_python(setup: Setup) {
    let Some(peer) = setup.peer() else { return };
    let layer = rust_layer(&setup);
    let mut listener = peer.listen(1, &[], &[]).await;
    let channel = listener.channels[0].clone();
    let msg = Message::with_type("chat.message").with("text", "from rust");
    timeout(ARRIVAL, layer.send(&channel, msg.clone()))
        .await
        .unwrap()
        .unwrap();
    let (got_channel, got) = listener.expect_message().await;
    assert_eq!(got_channel, channel);
    assert_same_message(&got, &msg);
    listener.expect_silence().await;

    let general = Message::with_type("general.message").with("n", 8);
    timeout(ARRIVAL, layer.send("interop.general2", general.clone()))
        .await
        .unwrap()
        .unwrap();
    let reply = peer.receive("interop.general2", 10.0).await;
    assert_same_message(&message_from(reply.unwrap()), &general);
}

/// A group holding two Python channels (one process, so one shared Redis key) and two Rust
/// channels: a `group_send` from either side reaches each of the four exactly once.
async fn mixed_group_delivers_exactly_once(setup: Setup) {
    let Some(peer) = setup.peer() else { return };
    let layer = rust_layer(&setup);
    let mut listener = peer.listen(2, &["interop-group"], &[]).await;
    let rust_a = layer.new_channel("specific").await.unwrap();
    let rust_b = layer.new_channel("specific").await.unwrap();
    for channel in [&rust_a, &rust_b] {
        timeout(ARRIVAL, layer.group_add("interop-group", channel))
            .await
            .unwrap()
            .unwrap();
    }

    let from_python = Message::with_type("group.message").with("from", "python");
    let reply = peer.group_send("interop-group", &from_python).await;
    reply.unwrap();
    assert!(reply.logs().is_empty(), "python logged {:?}", reply.logs());
    let from_rust = Message::with_type("group.message").with("from", "rust");
    let report = timeout(
        ARRIVAL,
        layer.group_send("interop-group", from_rust.clone()),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(report.members, 4);
    assert_eq!(report.over_capacity, 0);

    for channel in [&rust_a, &rust_b] {
        assert_same_message(&rust_receive(&layer, channel).await, &from_python);
        assert_same_message(&rust_receive(&layer, channel).await, &from_rust);
        rust_expect_silence(&layer, channel).await;
    }
    let mut got: Vec<(String, String)> = Vec::new();
    for _ in 0..4 {
        let (channel, msg) = listener.expect_message().await;
        let from = msg.get("from").and_then(Value::as_str).unwrap().to_owned();
        assert_eq!(msg.msg_type(), Some("group.message"));
        assert!(
            msg.get("__asgi_channel__").is_none(),
            "routing key leaked: {msg:?}"
        );
        got.push((channel, from));
    }
    listener.expect_silence().await;
    got.sort();
    let mut want: Vec<(String, String)> = listener
        .channels
        .iter()
        .flat_map(|c| {
            [
                (c.clone(), "python".to_owned()),
                (c.clone(), "rust".to_owned()),
            ]
        })
        .collect();
    want.sort();
    assert_eq!(got, want);

    // Discarded on either side: nobody receives any more.
    for channel in listener.channels.clone() {
        peer.run(&["group_discard", "interop-group", &channel])
            .await
            .unwrap();
    }
    layer.group_discard("interop-group", &rust_a).await.unwrap();
    layer.group_discard("interop-group", &rust_b).await.unwrap();
    let report = layer
        .group_send("interop-group", Message::with_type("late"))
        .await
        .unwrap();
    assert_eq!(report.members, 0);
    listener.expect_silence().await;
}

/// `group_send_many` (pipelined on one plain host, one by one otherwise) to two groups at
/// once: a Python process whose two channels share one Redis key, one of them in both groups,
/// reads every message once and each channel's in the order sent.
async fn send_many_reaches_python_in_order(setup: Setup) {
    const ROUNDS: usize = 40;
    let Some(peer) = setup.peer() else { return };
    let layer = rust_layer(&setup);
    let mut listener = peer.listen(2, &["many-all"], &[]).await;
    let (both, one) = (listener.channels[0].clone(), listener.channels[1].clone());
    peer.run(&["group_add", "many-solo", &both]).await.unwrap();
    let sends: Vec<(String, Message)> = (0..ROUNDS)
        .flat_map(|n| {
            let n = n as i64;
            [
                (
                    "many-all".to_owned(),
                    Message::with_type("all").with("n", n),
                ),
                (
                    "many-solo".to_owned(),
                    Message::with_type("solo").with("n", n),
                ),
            ]
        })
        .collect();
    let results = timeout(ARRIVAL, layer.group_send_many(sends))
        .await
        .unwrap();
    for (i, result) in results.into_iter().enumerate() {
        let report = result.unwrap();
        let want = if i % 2 == 0 { 2 } else { 1 };
        assert_eq!(
            (report.members, report.over_capacity),
            (want, 0),
            "entry {i}"
        );
    }
    let mut got: HashMap<String, Vec<(String, i64)>> = HashMap::new();
    for _ in 0..3 * ROUNDS {
        let (channel, msg) = listener.expect_message().await;
        let n = msg.get("n").and_then(Value::as_i64).unwrap();
        got.entry(channel)
            .or_default()
            .push((msg.msg_type().unwrap().to_owned(), n));
    }
    listener.expect_silence().await;
    let rounds = 0..ROUNDS as i64;
    let want_both: Vec<(String, i64)> = (rounds.clone())
        .flat_map(|n| [("all".to_owned(), n), ("solo".to_owned(), n)])
        .collect();
    let want_one: Vec<(String, i64)> = rounds.map(|n| ("all".to_owned(), n)).collect();
    assert_eq!(got.remove(&both).unwrap(), want_both);
    assert_eq!(got.remove(&one).unwrap(), want_one);
}

/// Python sends the value zoo to Rust; Rust sends what it got back to Python; both sides see
/// exactly the original.
async fn values_round_trip(setup: Setup) {
    let Some(peer) = setup.peer() else { return };
    let zoo = value_zoo(setup.json);
    let layer = rust_layer(&setup);
    let rust_channel = layer.new_channel("specific").await.unwrap();
    let mut repl = peer.repl().await;
    let reply = repl
        .call(json!({"op": "send", "channel": rust_channel, "message": message_json(&zoo)}))
        .await;
    reply.unwrap();
    let got = rust_receive(&layer, &rust_channel).await;
    assert_same_message(&got, &zoo);

    let python_channel = repl
        .call(json!({"op": "new_channel"}))
        .await
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned();
    layer.send(&python_channel, got).await.unwrap();
    let reply = repl
        .call(json!({"op": "receive", "channel": python_channel, "timeout": 10}))
        .await;
    assert_same_message(&message_from(reply.unwrap()), &zoo);
}

/// The Rust layer configured exactly like the Python side.
fn rust_layer(setup: &Setup) -> RedisChannelLayer {
    let mut config = RedisLayerConfig::default().with_hosts(setup.hosts.clone());
    if !setup.keys.is_empty() {
        config = config.with_symmetric_encryption_keys(&setup.keys);
    }
    if setup.json {
        config = config.with_serializer_format(SerializerFormat::Json);
    }
    if let Some(capacity) = setup.capacity {
        config = config.with_capacity(capacity);
    }
    if let Some(prefix) = &setup.prefix {
        config = config.with_prefix(prefix);
    }
    if let Some(length) = setup.random_prefix_length {
        config = config.with_random_prefix_length(length);
    }
    if let Some(expiry) = setup.expiry {
        config = config.with_expiry(Duration::from_secs(expiry));
    }
    if let Some(group_expiry) = setup.group_expiry {
        config = config.with_group_expiry(Duration::from_secs(group_expiry));
    }
    for (pattern, capacity) in &setup.channel_capacity {
        config = config.with_channel_capacity(CapacityRule::glob(pattern, *capacity).unwrap());
    }
    RedisChannelLayer::new(config).unwrap()
}

/// The Rust Pub/Sub layer configured exactly like the Python side.
fn rust_pubsub(setup: &Setup) -> RedisPubSubLayer {
    let mut config = RedisPubSubConfig::default().with_hosts(setup.hosts.clone());
    if !setup.keys.is_empty() {
        config = config.with_symmetric_encryption_keys(&setup.keys);
    }
    if setup.json {
        config = config.with_serializer_format(SerializerFormat::Json);
    }
    if let Some(prefix) = &setup.prefix {
        config = config.with_prefix(prefix);
    }
    RedisPubSubLayer::new(config).unwrap()
}

/// Python's channel_capacity semantics seen from Rust: a general channel filled by Python is
/// full for Rust (`ChannelFull`) and the other way round, with the same `capacity`.
async fn capacity_is_shared_with_python(setup: Setup) {
    let setup = setup.capacity(2);
    let Some(peer) = setup.peer() else { return };
    let layer = rust_layer(&setup);
    let msg = Message::with_type("cap.message");
    peer.send("cap.general", &msg).await.unwrap();
    peer.send("cap.general", &msg).await.unwrap();
    assert_eq!(
        peer.send("cap.general", &msg).await.error(),
        Some("ChannelFull")
    );
    let err = layer.send("cap.general", msg.clone()).await.unwrap_err();
    assert!(err.is_channel_full(), "{err:?}");

    rust_receive(&layer, "cap.general").await;
    layer.send("cap.general", msg.clone()).await.unwrap();
    assert_eq!(
        peer.send("cap.general", &msg).await.error(),
        Some("ChannelFull")
    );
    let err = layer.send("cap.general", msg.clone()).await.unwrap_err();
    assert!(err.is_channel_full(), "{err:?}");
}

/// The shared per-process key: a Python process's specific channels fill up from Rust sends
/// (`ChannelFull`), and a full Rust key makes Python's `group_send` drop the delivery with
/// its INFO log, exactly like two Python processes.
async fn capacity_of_process_keys(setup: Setup) {
    let setup = setup.capacity(2);
    let Some(peer) = setup.peer() else { return };
    let layer = rust_layer(&setup);

    // Python channel that nobody reads yet (repl: one layer instance).
    let mut repl = peer.repl().await;
    let python_channel = repl
        .call(json!({"op": "new_channel"}))
        .await
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned();
    for n in 0..2 {
        let msg = Message::with_type("fill").with("n", n);
        layer.send(&python_channel, msg).await.unwrap();
    }
    let err = layer
        .send(&python_channel, Message::with_type("fill"))
        .await
        .unwrap_err();
    assert!(err.is_channel_full(), "{err:?}");
    repl.call(json!({"op": "group_add", "group": "cap-group", "channel": python_channel}))
        .await
        .unwrap();
    let report = layer
        .group_send("cap-group", Message::with_type("dropped"))
        .await
        .unwrap();
    assert_eq!((report.members, report.over_capacity), (1, 1));
    let first = repl
        .call(json!({"op": "receive", "channel": python_channel, "timeout": 10}))
        .await;
    assert_eq!(first.unwrap()["n"], json!(0));

    // Rust channel: Herald drains its process key into per-channel buffers as messages
    // arrive, so Python never finds a live Herald key full; instead the channel's buffer keeps
    // the newest `capacity` messages, dropping the oldest like Python's BoundedQueue.
    let rust_channel = layer.new_channel("specific").await.unwrap();
    layer.group_add("rust-cap", &rust_channel).await.unwrap();
    for n in 0..3 {
        let reply = peer
            .group_send("rust-cap", &Message::with_type("grp").with("n", n))
            .await;
        reply.unwrap();
        assert!(
            reply.logs().is_empty(),
            "python saw a full key: {:?}",
            reply.logs()
        );
    }
    let deadline = tokio::time::Instant::now() + ARRIVAL;
    while layer.stats().buffer_drops < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            layer.stats()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for n in 1..3 {
        let got = rust_receive(&layer, &rust_channel).await;
        assert_eq!(got.get("n"), Some(&Value::Int(n)));
    }
    rust_expect_silence(&layer, &rust_channel).await;
}

/// `channel_capacity` globs mean the same thing on both sides.
async fn channel_capacity_patterns_agree(setup: Setup) {
    let mut setup = setup.capacity(5);
    setup.channel_capacity = vec![("tight.*".to_owned(), 1)];
    let Some(peer) = setup.peer() else { return };
    let layer = rust_layer(&setup);
    let msg = Message::with_type("x");
    peer.send("tight.one", &msg).await.unwrap();
    assert!(
        layer
            .send("tight.one", msg.clone())
            .await
            .unwrap_err()
            .is_channel_full()
    );
    layer.send("tight.two", msg.clone()).await.unwrap();
    assert_eq!(
        peer.send("tight.two", &msg).await.error(),
        Some("ChannelFull")
    );
    // Not matching the glob: the default capacity.
    peer.send("loose.one", &msg).await.unwrap();
    layer.send("loose.one", msg.clone()).await.unwrap();
    peer.send("loose.one", &msg).await.unwrap();
}

/// Key rotation: each side encrypts with its first key and decrypts with any.
async fn rotated_keys_interoperate(setup: Setup) {
    let old = "old-interop-key-with-32-bytes-of-entropy".to_owned();
    let new = "new-interop-key-with-32-bytes-of-entropy".to_owned();
    let mut python_side = setup.clone();
    python_side.keys = vec![new.clone(), old.clone()];
    let mut rust_side = setup;
    rust_side.keys = vec![old, new];
    let Some(peer) = python_side.peer() else {
        return;
    };
    let layer = rust_layer(&rust_side);
    let channel = layer.new_channel("specific").await.unwrap();
    let msg = Message::with_type("rotated").with("n", 1);
    peer.send(&channel, &msg).await.unwrap();
    assert_same_message(&rust_receive(&layer, &channel).await, &msg);
    layer.send("rotated.general", msg.clone()).await.unwrap();
    let reply = peer.receive("rotated.general", 10.0).await;
    assert_same_message(&message_from(reply.unwrap()), &msg);
}

/// A message encrypted with a key the receiver does not know is dropped by Rust (Python
/// would raise `InvalidToken` out of `receive`), and the next good one still arrives.
async fn unknown_key_is_dropped_not_fatal(setup: Setup) {
    let python_side = setup.clone().encrypted();
    let mut rust_side = setup;
    rust_side.keys = vec!["a-different-key-entirely-32-bytes-long".to_owned()];
    let Some(peer) = python_side.peer() else {
        return;
    };
    let layer = rust_layer(&rust_side);
    let channel = layer.new_channel("specific").await.unwrap();
    peer.send(&channel, &Message::with_type("unreadable"))
        .await
        .unwrap();
    // A Python peer holding the Rust side's key sends a readable one after it.
    let readable = rust_side.peer().unwrap();
    let msg = Message::with_type("readable");
    readable.send(&channel, &msg).await.unwrap();
    assert_same_message(&rust_receive(&layer, &channel).await, &msg);
    rust_expect_silence(&layer, &channel).await;
}

// ------------------------------------------------------------------------------------------
// RedisPubSubLayer ↔ channels_redis.pubsub.RedisPubSubChannelLayer
// ------------------------------------------------------------------------------------------

/// `PUBSUB NUMSUB name` summed over every host.
async fn numsub(hosts: &[String], name: &str) -> usize {
    let mut total = 0;
    for url in hosts {
        let client = redis::Client::open(url.as_str()).unwrap();
        let mut conn = timeout(ARRIVAL, client.get_multiplexed_async_connection())
            .await
            .unwrap()
            .unwrap();
        let (_, count): (String, usize) = timeout(
            ARRIVAL,
            redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(name)
                .query_async(&mut conn),
        )
        .await
        .unwrap()
        .unwrap();
        total += count;
    }
    total
}

async fn wait_numsub(hosts: &[String], name: &str, want: usize) {
    let deadline = tokio::time::Instant::now() + ARRIVAL;
    loop {
        let got = numsub(hosts, name).await;
        if got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name}: {got} subscribers, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Python pubsub `send` reaches a Rust pubsub channel, and Rust `send` reaches Python's.
async fn pubsub_send_both_ways(setup: Setup) {
    let Some(peer) = setup.pubsub_peer() else {
        return;
    };
    let layer = rust_pubsub(&setup);
    let channel = layer.new_channel("specific").await.unwrap();
    let msg = Message::with_type("pubsub.message").with("text", "from python");
    peer.send(&channel, &msg).await.unwrap();
    assert_same_message(&rust_receive(&layer, &channel).await, &msg);

    let mut listener = peer.listen(1, &[], &[]).await;
    let python_channel = listener.channels[0].clone();
    let python_prefix = format!("{}specific.", setup.layer_prefix());
    assert!(
        python_channel.starts_with(&python_prefix),
        "{python_channel}"
    );
    let msg = Message::with_type("pubsub.message").with("text", "from rust");
    layer.send(&python_channel, msg.clone()).await.unwrap();
    let (got_channel, got) = listener.expect_message().await;
    assert_eq!(got_channel, python_channel);
    assert_same_message(&got, &msg);
    listener.expect_silence().await;
}

/// A group with two Python channels and two Rust channels: each gets every group message
/// once, whoever sends it.
async fn pubsub_mixed_group(setup: Setup) {
    let Some(peer) = setup.pubsub_peer() else {
        return;
    };
    let layer = rust_pubsub(&setup);
    let mut listener = peer.listen(2, &["pubsub-group"], &[]).await;
    let rust_a = layer.new_channel("specific").await.unwrap();
    let rust_b = layer.new_channel("specific").await.unwrap();
    layer.group_add("pubsub-group", &rust_a).await.unwrap();
    layer.group_add("pubsub-group", &rust_b).await.unwrap();
    // One subscription per process, on the group's shard.
    let group_channel = format!("{}__group__pubsub-group", setup.layer_prefix());
    assert_eq!(layer.group_channel("pubsub-group"), group_channel);
    assert_eq!(numsub(&setup.hosts, &group_channel).await, 2);

    let from_python = Message::with_type("group.message").with("from", "python");
    peer.group_send("pubsub-group", &from_python).await.unwrap();
    let from_rust = Message::with_type("group.message").with("from", "rust");
    let report = layer
        .group_send("pubsub-group", from_rust.clone())
        .await
        .unwrap();
    assert_eq!(report.members, 2, "subscribed processes");
    for channel in [&rust_a, &rust_b] {
        assert_same_message(&rust_receive(&layer, channel).await, &from_python);
        assert_same_message(&rust_receive(&layer, channel).await, &from_rust);
        rust_expect_silence(&layer, channel).await;
    }
    let mut got: Vec<(String, String)> = Vec::new();
    for _ in 0..4 {
        let (channel, msg) = listener.expect_message().await;
        let from = msg.get("from").and_then(Value::as_str).unwrap().to_owned();
        got.push((channel, from));
    }
    listener.expect_silence().await;
    got.sort();
    let mut want: Vec<(String, String)> = listener
        .channels
        .iter()
        .flat_map(|c| {
            [
                (c.clone(), "python".to_owned()),
                (c.clone(), "rust".to_owned()),
            ]
        })
        .collect();
    want.sort();
    assert_eq!(got, want);

    layer.group_discard("pubsub-group", &rust_a).await.unwrap();
    layer.group_discard("pubsub-group", &rust_b).await.unwrap();
    wait_numsub(&setup.hosts, &group_channel, 1).await;
}

/// A general name is a broadcast in Pub/Sub: a Python and a Rust receiver both get it.
async fn pubsub_general_channel_broadcasts(setup: Setup) {
    let Some(peer) = setup.pubsub_peer() else {
        return;
    };
    let layer = rust_pubsub(&setup);
    let mut listener = peer.listen(0, &[], &["news.feed"]).await;
    let receiving = {
        let layer = layer.clone();
        tokio::spawn(async move { layer.receive("news.feed").await })
    };
    wait_numsub(&setup.hosts, "news.feed", 2).await;
    let msg = Message::with_type("news").with("headline", "hello");
    layer.send("news.feed", msg.clone()).await.unwrap();
    let got = timeout(ARRIVAL, receiving).await.unwrap().unwrap().unwrap();
    assert_same_message(&got, &msg);
    let (channel, got) = listener.expect_message().await;
    assert_eq!(channel, "news.feed");
    assert_same_message(&got, &msg);
}

/// The value zoo over Pub/Sub, Rust → Python → Rust.
async fn pubsub_values_round_trip(setup: Setup) {
    let Some(peer) = setup.pubsub_peer() else {
        return;
    };
    let zoo = value_zoo(setup.json);
    let layer = rust_pubsub(&setup);
    let rust_channel = layer.new_channel("specific").await.unwrap();
    let mut repl = peer.repl().await;
    let python_channel = repl
        .call(json!({"op": "new_channel"}))
        .await
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned();
    layer.send(&python_channel, zoo.clone()).await.unwrap();
    let reply = repl
        .call(json!({"op": "receive", "channel": python_channel, "timeout": 10}))
        .await;
    let got = message_from(reply.unwrap());
    assert_same_message(&got, &zoo);
    repl.call(json!({"op": "send", "channel": rust_channel, "message": message_json(&got)}))
        .await
        .unwrap();
    assert_same_message(&rust_receive(&layer, &rust_channel).await, &zoo);
}

/// `expiry` and `group_expiry` mean the same on both sides: a message left longer than
/// `expiry` is gone for either receiver, and a membership older than `group_expiry` no longer
/// receives `group_send`s from either sender.
async fn expiry_agrees_with_python(setup: Setup) {
    let mut setup = setup;
    setup.expiry = Some(1);
    setup.group_expiry = Some(1);
    let Some(peer) = setup.peer() else { return };
    let layer = rust_layer(&setup);
    let rust_channel = layer.new_channel("specific").await.unwrap();
    // Memberships made by each side, then messages left unread by each side.
    peer.run(&["group_add", "expiring", &rust_channel])
        .await
        .unwrap();
    peer.send("exp.for-rust", &Message::with_type("stale"))
        .await
        .unwrap();
    layer
        .send("exp.for-python", Message::with_type("stale"))
        .await
        .unwrap();
    // Waiting for time to pass is the behaviour under test (EXPIRE 1 / trims by whole
    // seconds), not a readiness wait.
    tokio::time::sleep(Duration::from_millis(2200)).await;

    rust_expect_silence(&layer, "exp.for-rust").await;
    assert_eq!(
        peer.receive("exp.for-python", 0.5).await.error(),
        Some("Timeout")
    );
    let report = layer
        .group_send("expiring", Message::with_type("late"))
        .await
        .unwrap();
    assert_eq!(report.members, 0, "expired membership still listed");
    peer.group_send("expiring", &Message::with_type("late"))
        .await
        .unwrap();
    rust_expect_silence(&layer, &rust_channel).await;
}

/// Any valid channel name may be a group member: a general channel in a group gets the
/// list-form `__asgi_channel__` on its own key, whichever side sends or receives.
///
/// One host only: with several, `group_send` writes a general member to the shard of
/// crc32(name) while each `receive()` of a general channel polls the *next* round-robin shard
/// until something arrives there (Python's `receive_single`, mirrored by Herald's general
/// reader), so consecutive receives miss deliveries on other shards, on both sides.
async fn group_with_general_channel_members(setup: Setup) {
    let Some(peer) = setup.peer() else { return };
    let layer = rust_layer(&setup);
    layer.group_add("with-general", "gen.rust").await.unwrap();
    peer.run(&["group_add", "with-general", "gen.for-python"])
        .await
        .unwrap();
    let from_python = Message::with_type("general.member").with("from", "python");
    peer.group_send("with-general", &from_python).await.unwrap();
    assert_same_message(&rust_receive(&layer, "gen.rust").await, &from_python);
    let reply = peer.receive("gen.for-python", 10.0).await;
    assert_same_message(&message_from(reply.unwrap()), &from_python);

    let from_rust = Message::with_type("general.member").with("from", "rust");
    let report = layer
        .group_send("with-general", from_rust.clone())
        .await
        .unwrap();
    assert_eq!(report.members, 2);
    assert_same_message(&rust_receive(&layer, "gen.rust").await, &from_rust);
    let reply = peer.receive("gen.for-python", 10.0).await;
    assert_same_message(&message_from(reply.unwrap()), &from_rust);
}

/// After Redis restarts, the Rust Pub/Sub layer resubscribes by itself and a Python
/// publisher (a fresh process, as after a Django worker restart) reaches it again, for a
/// channel and a group.
#[tokio::test]
async fn pubsub_rust_resubscribes_after_redis_restart_and_python_reaches_it() {
    let mut server = RedisServer::start();
    let port = server.port();
    let setup = Setup::new(std::slice::from_ref(&server));
    let Some(peer) = setup.pubsub_peer() else {
        return;
    };
    let layer = rust_pubsub(&setup);
    let channel = layer.new_channel("specific").await.unwrap();
    layer.group_add("restart-group", &channel).await.unwrap();

    server.kill();
    let _restarted = RedisServer::start_on_port(port, &[]).unwrap();
    wait_numsub(&setup.hosts, &channel, 1).await;
    wait_numsub(&setup.hosts, "asgi__group__restart-group", 1).await;

    let direct = Message::with_type("after.restart").with("via", "send");
    peer.send(&channel, &direct).await.unwrap();
    assert_same_message(&rust_receive(&layer, &channel).await, &direct);
    let grouped = Message::with_type("after.restart").with("via", "group_send");
    peer.group_send("restart-group", &grouped).await.unwrap();
    assert_same_message(&rust_receive(&layer, &channel).await, &grouped);
}

/// What the Rust Pub/Sub layer publishes is byte for byte what Python's serializer makes of
/// the same message (no prefix, no encryption, so the bytes are comparable): the whole value
/// zoo, in msgpack and in JSON.
async fn pubsub_payload_is_python_serialize(setup: Setup) {
    use futures_util::StreamExt;
    let Some(peer) = setup.pubsub_peer() else {
        return;
    };
    let zoo = value_zoo(setup.json);
    let layer = rust_pubsub(&setup);
    let client = redis::Client::open(setup.hosts[0].as_str()).unwrap();
    let mut raw = timeout(ARRIVAL, client.get_async_pubsub())
        .await
        .unwrap()
        .unwrap();
    timeout(ARRIVAL, raw.subscribe("bytes.check"))
        .await
        .unwrap()
        .unwrap();
    layer.send("bytes.check", zoo.clone()).await.unwrap();
    let published = timeout(ARRIVAL, raw.on_message().next())
        .await
        .unwrap()
        .unwrap()
        .get_payload_bytes()
        .to_vec();
    let mut repl = peer.repl().await;
    let reply = repl
        .call(json!({"op": "serialize", "message": message_json(&zoo)}))
        .await;
    let python = unhex(reply.unwrap()["$bytes"].as_str().unwrap());
    assert!(
        published == python,
        "rust and python bytes differ (lengths {} vs {}); first difference at {:?}",
        published.len(),
        python.len(),
        published.iter().zip(&python).position(|(a, b)| a != b)
    );
}

/// What the Rust core layer stores for a general-channel `send` is, after the random prefix,
/// byte for byte what Python's serializer makes of the same message.
async fn stored_member_is_python_serialize(setup: Setup) {
    let Some(peer) = setup.peer() else { return };
    let zoo = value_zoo(setup.json);
    let layer = rust_layer(&setup);
    layer.send("bytes.core", zoo.clone()).await.unwrap();
    let client = redis::Client::open(setup.hosts[0].as_str()).unwrap();
    let mut conn = timeout(ARRIVAL, client.get_multiplexed_async_connection())
        .await
        .unwrap()
        .unwrap();
    let members: Vec<Vec<u8>> = timeout(
        ARRIVAL,
        redis::cmd("ZRANGE")
            .arg("asgibytes.core")
            .arg(0)
            .arg(-1)
            .query_async(&mut conn),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(members.len(), 1);
    let mut repl = peer.repl().await;
    let reply = repl
        .call(json!({"op": "serialize", "message": message_json(&zoo)}))
        .await;
    let python = unhex(reply.unwrap()["$bytes"].as_str().unwrap());
    // Both carry 12 random bytes first; everything after them must be identical.
    assert_eq!(members[0].len(), python.len());
    assert!(
        members[0][12..] == python[12..],
        "bodies differ; first difference at {:?}",
        members[0][12..]
            .iter()
            .zip(&python[12..])
            .position(|(a, b)| a != b)
    );
}

#[tokio::test]
async fn stored_msgpack_member_is_python_serialize() {
    let servers = servers(1);
    stored_member_is_python_serialize(Setup::new(&servers)).await;
}

#[tokio::test]
async fn stored_json_member_is_python_serialize() {
    let servers = servers(1);
    stored_member_is_python_serialize(Setup::new(&servers).json()).await;
}

#[tokio::test]
async fn pubsub_msgpack_payload_is_python_serialize() {
    let servers = servers(1);
    pubsub_payload_is_python_serialize(Setup::new(&servers)).await;
}

#[tokio::test]
async fn pubsub_json_payload_is_python_serialize() {
    let servers = servers(1);
    pubsub_payload_is_python_serialize(Setup::new(&servers).json()).await;
}

// ------------------------------------------------------------------------------------------
// The matrix
// ------------------------------------------------------------------------------------------

fn servers(count: usize) -> Vec<RedisServer> {
    (0..count).map(|_| RedisServer::start()).collect()
}

/// One module per configuration; every scenario runs in each.
macro_rules! interop_suite {
    ($module:ident, hosts = $hosts:expr $(, $modifier:ident)*) => {
        mod $module {
            use super::*;

            fn setup(servers: &[RedisServer]) -> Setup {
                Setup::new(servers)$(.$modifier())*
            }

            #[tokio::test]
            async fn python_send_reaches_rust() {
                let servers = servers($hosts);
                super::python_send_reaches_rust(setup(&servers)).await;
            }

            #[tokio::test]
            async fn rust_send_reaches_python() {
                let servers = servers($hosts);
                super::rust_send_reaches_python(setup(&servers)).await;
            }

            #[tokio::test]
            async fn mixed_group_delivers_exactly_once() {
                let servers = servers($hosts);
                super::mixed_group_delivers_exactly_once(setup(&servers)).await;
            }

            #[tokio::test]
            async fn send_many_reaches_python_in_order() {
                let servers = servers($hosts);
                super::send_many_reaches_python_in_order(setup(&servers)).await;
            }

            #[tokio::test]
            async fn values_round_trip() {
                let servers = servers($hosts);
                super::values_round_trip(setup(&servers)).await;
            }

            #[tokio::test]
            async fn pubsub_send_both_ways() {
                let servers = servers($hosts);
                super::pubsub_send_both_ways(setup(&servers)).await;
            }

            #[tokio::test]
            async fn pubsub_mixed_group() {
                let servers = servers($hosts);
                super::pubsub_mixed_group(setup(&servers)).await;
            }

            #[tokio::test]
            async fn pubsub_values_round_trip() {
                let servers = servers($hosts);
                super::pubsub_values_round_trip(setup(&servers)).await;
            }
        }
    };
}

interop_suite!(one_host, hosts = 1);
interop_suite!(one_host_encrypted, hosts = 1, encrypted);
interop_suite!(one_host_json, hosts = 1, json);
interop_suite!(one_host_custom_layout, hosts = 1, custom_layout);
interop_suite!(three_hosts, hosts = 3);
interop_suite!(three_hosts_encrypted_json, hosts = 3, encrypted, json);

#[tokio::test]
async fn capacity_is_shared_with_python_on_one_host() {
    let servers = servers(1);
    capacity_is_shared_with_python(Setup::new(&servers)).await;
}

#[tokio::test]
async fn capacity_of_process_keys_on_one_host() {
    let servers = servers(1);
    capacity_of_process_keys(Setup::new(&servers)).await;
}

#[tokio::test]
async fn capacity_of_process_keys_on_three_hosts() {
    let servers = servers(3);
    capacity_of_process_keys(Setup::new(&servers)).await;
}

#[tokio::test]
async fn channel_capacity_patterns_agree_with_python() {
    let servers = servers(1);
    channel_capacity_patterns_agree(Setup::new(&servers)).await;
}

#[tokio::test]
async fn expiry_and_group_expiry_agree_with_python() {
    let servers = servers(1);
    expiry_agrees_with_python(Setup::new(&servers)).await;
}

#[tokio::test]
async fn group_with_general_channel_members_on_one_host() {
    let servers = servers(1);
    group_with_general_channel_members(Setup::new(&servers).encrypted()).await;
}

/// Canary for the pinned Python stack: with bare URL hosts (redis-py 8's default 5 s
/// `socket_timeout`), channels_redis 4.3.0's `receive()` on an idle channel raises
/// `TimeoutError` instead of waiting. Every other test uses the
/// `socket_timeout: None` host form; if this starts passing a receive, the workaround can go.
#[tokio::test]
async fn python_idle_receive_fails_without_socket_timeout_fix() {
    let servers = servers(1);
    let mut setup = Setup::new(&servers);
    setup.redis_py_default_timeout = true;
    let Some(peer) = setup.peer() else { return };
    let reply = peer.receive("idle.channel", 8.0).await;
    assert_eq!(reply.error(), Some("TimeoutError"), "{}", reply.json);
    let fixed = Setup::new(&servers).peer().unwrap();
    let reply = fixed.receive("idle.channel", 6.0).await;
    // Only the peer's own wait_for ends it: no error from redis-py.
    assert_eq!(reply.error(), Some("Timeout"), "{}", reply.json);
}

#[tokio::test]
async fn rotated_encryption_keys_interoperate() {
    let servers = servers(1);
    rotated_keys_interoperate(Setup::new(&servers)).await;
}

#[tokio::test]
async fn message_with_unknown_key_is_dropped_not_fatal() {
    let servers = servers(1);
    unknown_key_is_dropped_not_fatal(Setup::new(&servers)).await;
}

#[tokio::test]
async fn pubsub_general_channel_broadcasts_to_python_and_rust() {
    let servers = servers(1);
    pubsub_general_channel_broadcasts(Setup::new(&servers)).await;
}

#[tokio::test]
async fn pubsub_general_channel_broadcasts_on_three_hosts() {
    let servers = servers(3);
    pubsub_general_channel_broadcasts(Setup::new(&servers)).await;
}

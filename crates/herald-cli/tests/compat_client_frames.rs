//! Client frames on `/ws/tasks/`: the same user sends the same frames to Daphne (the test
//! project's consumer, which reads them with Python's `json.loads`, forms `f"task_{task_id}"`
//! and answers with `json.dumps`) and to `herald serve`, and gets the same bytes back; a Python
//! `group_send` to the groups those frames joined reaches both sockets.

mod support;

use herald_test_support::compat_python;
use herald_test_support::ws::{Ws, recv_text, send_text};
use support::django::Site;
use support::{Herald, ws_connect_browser};

/// Sends `frame` to both servers and returns the reply, asserting it is the same bytes.
async fn same_reply(herald: &mut Ws, daphne: &mut Ws, frame: &str) -> String {
    send_text(herald, frame).await;
    send_text(daphne, frame).await;
    let (ours, theirs) = (recv_text(herald).await, recv_text(daphne).await);
    assert_eq!(ours, theirs, "replies differ for {frame}");
    ours
}

fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_frames_get_the_same_replies_from_herald_and_daphne() {
    let Some(python) = compat_python() else {
        return;
    };
    let site = Site::start(python, "amadmin").await;
    let django = &site.db.django;
    let daphne = django.daphne().await;
    let cookie = &site.db.fixture.cookie;
    let mut herald = ws_connect_browser(&site.herald.addr.to_string(), cookie).await;
    let mut python = ws_connect_browser(&daphne.host, cookie).await;

    // Numeric ids: subscribed to `task_{str(id)}`, echoed as json.dumps writes the parsed id.
    let subscribes = [
        ("42", "42", "task_42"),
        ("1.5", "1.5", "task_1.5"),
        ("1E2", "100.0", "task_100.0"),
        ("-0", "0", "task_0"),
        ("NaN", "NaN", "task_nan"),
        ("Infinity", "Infinity", "task_inf"),
        ("-Infinity", "-Infinity", "task_-inf"),
        ("1e-5", "1e-05", "task_1e-05"),
        (
            "123456789012345678901234567890",
            "123456789012345678901234567890",
            "task_123456789012345678901234567890",
        ),
        (r#""abc-123""#, r#""abc-123""#, "task_abc-123"),
    ];
    for (sent, echoed, _) in subscribes {
        let reply = same_reply(
            &mut herald,
            &mut python,
            &format!(r#"{{"action": "subscribe", "task_id": {sent}}}"#),
        )
        .await;
        assert_eq!(
            reply,
            format!(r#"{{"type": "subscribed", "task_id": {echoed}}}"#)
        );
    }

    // Frames Python's json.loads accepts that serde_json does not, and what it refuses.
    let frames = [
        (
            format!(r#"{{"action": "ping", "deep": {}}}"#, nested(200)),
            r#"{"type": "pong"}"#,
        ),
        (
            format!(r#"{{"action": "ping", "deep": {}}}"#, nested(900)),
            r#"{"type": "pong"}"#,
        ),
        (
            r#"{"action": "ping", "s": "\ud800", "n": [NaN, 1e400, -Infinity]}"#.to_owned(),
            r#"{"type": "pong"}"#,
        ),
        (
            r#"{"action": "ping", "action": "subscribe", "task_id": 1e400}"#.to_owned(),
            r#"{"type": "subscribed", "task_id": Infinity}"#,
        ),
        (
            r#"{"action": "subscribe", "task_id": "\ud800"}"#.to_owned(),
            r#"{"type": "error", "message": "invalid task_id"}"#,
        ),
        (
            r#"{"action": "subscribe", "task_id": 1e16}"#.to_owned(),
            r#"{"type": "error", "message": "invalid task_id"}"#,
        ),
        (
            r#"{"action": "subscribe", "task_id": true}"#.to_owned(),
            r#"{"type": "error", "message": "task_id must be a string or a number"}"#,
        ),
        (
            r#"{"action": "subscribe"}"#.to_owned(),
            r#"{"type": "error", "message": "task_id must be a string or a number"}"#,
        ),
        (
            r#"{"action": "subscribe", "task_id": ""}"#.to_owned(),
            r#"{"type": "error", "message": "invalid task_id"}"#,
        ),
        (
            format!(r#"{{"action": "ping", "n": {}}}"#, "1".repeat(4301)),
            r#"{"type": "error", "message": "invalid JSON"}"#,
        ),
        (
            "[1, 2]".to_owned(),
            r#"{"type": "error", "message": "expected a JSON object"}"#,
        ),
        (
            r#"{"action": "dance"}"#.to_owned(),
            r#"{"type": "error", "message": "unknown action"}"#,
        ),
    ];
    for (frame, want) in &frames {
        assert_eq!(same_reply(&mut herald, &mut python, frame).await, *want);
    }
    for bad in [
        r#"{"action": "ping",}"#,
        r#"{"action": "ping", "n": nan}"#,
        r#"{"action": "ping", "n": 01}"#,
        "{\"action\": \"ping\", \"s\": \"\t\"}",
        r#"{"action": "ping"} {}"#,
        "\u{feff}{\"action\": \"ping\"}",
    ] {
        assert_eq!(
            same_reply(&mut herald, &mut python, bad).await,
            r#"{"type": "error", "message": "invalid JSON"}"#,
            "for {bad}"
        );
    }

    // A Python sender reaches both sockets through each group the numeric ids joined.
    let groups: Vec<&str> = subscribes.iter().map(|(_, _, g)| *g).collect();
    django
        .shell(&format!(
            "from asgiref.sync import async_to_sync\n\
             from channels.layers import get_channel_layer\n\
             send = async_to_sync(get_channel_layer().group_send)\n\
             for g in {groups:?}:\n    send(g, {{'type': 'task.update', 'group': g}})\n"
        ))
        .await;
    let mut want: Vec<&str> = groups.clone();
    want.sort_unstable();
    for ws in [&mut herald, &mut python] {
        let mut got = Vec::new();
        for _ in &groups {
            let m: serde_json::Value = serde_json::from_str(&recv_text(ws).await).unwrap();
            got.push(m["group"].as_str().unwrap().to_owned());
        }
        // Herald keeps order within a group, not across groups (see the README).
        got.sort_unstable();
        assert_eq!(got, want);
    }

    // Unsubscribing by number leaves the group on both servers.
    assert_eq!(
        same_reply(
            &mut herald,
            &mut python,
            r#"{"action": "unsubscribe", "task_id": 42}"#
        )
        .await,
        r#"{"type": "unsubscribed", "task_id": 42}"#
    );
    django
        .shell(
            "from asgiref.sync import async_to_sync\n\
             from channels.layers import get_channel_layer\n\
             send = async_to_sync(get_channel_layer().group_send)\n\
             send('task_42', {'type': 'task.update', 'group': 'task_42'})\n\
             send('task_1.5', {'type': 'task.update', 'group': 'task_1.5'})\n",
        )
        .await;
    for ws in [&mut herald, &mut python] {
        let m: serde_json::Value = serde_json::from_str(&recv_text(ws).await).unwrap();
        assert_eq!(m["group"], "task_1.5");
    }
}

/// Deeper than Python's recursion limit: Herald answers with an error and keeps the socket
/// (Python's consumer dies with `RecursionError` there and Daphne drops the socket).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_nested_beyond_the_bound_get_an_error_and_the_socket_stays() {
    let server = Herald::start(&["--trusted-user-header", "X-Remote-User"]).await;
    let mut ws = support::ws_connect_as(server.addr, "amadmin").await;
    let depth = herald_core::pyjson::MAX_DEPTH;
    send_text(
        &mut ws,
        &format!(r#"{{"action": "ping", "x": {}}}"#, nested(depth - 1)),
    )
    .await;
    assert_eq!(recv_text(&mut ws).await, r#"{"type": "pong"}"#);
    send_text(
        &mut ws,
        &format!(r#"{{"action": "ping", "x": {}}}"#, nested(depth)),
    )
    .await;
    assert_eq!(
        recv_text(&mut ws).await,
        r#"{"type": "error", "message": "JSON nested too deeply"}"#
    );
    send_text(&mut ws, r#"{"action": "subscribe", "task_id": 7}"#).await;
    assert_eq!(
        recv_text(&mut ws).await,
        r#"{"type": "subscribed", "task_id": 7}"#
    );
}

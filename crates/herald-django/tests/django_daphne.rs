//! The test project as the end-to-end tests use it: Daphne serving `/ws/tasks/` behind
//! `AuthMiddlewareStack`, channels_redis on a real `redis-server`, and the guide's `ws_utils`
//! reaching a logged-in browser-like client.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::Django;
use herald_test_support::RedisServer;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Runs inside `manage.py shell`: connects with the session cookie, sends with `ws_utils` from a
/// thread (they use async_to_sync), prints what arrived; then tries without a cookie.
const CLIENT: &str = r#"
import asyncio, json, os
import websockets
from OptsIO import ws_utils as w

async def main():
    url = f"ws://127.0.0.1:{os.environ['HERALD_DAPHNE_PORT']}/ws/tasks/"
    headers = {"Cookie": os.environ["HERALD_COOKIE"], "Origin": "http://127.0.0.1"}
    async with websockets.connect(url, additional_headers=headers) as ws:
        sent = await asyncio.to_thread(
            w.ws_send_notification, "amadmin", "Report generated successfully!", "success", "Report Ready")
        received = json.loads(await asyncio.wait_for(ws.recv(), 20))
    try:
        async with websockets.connect(url, additional_headers={"Origin": "http://127.0.0.1"}):
            anonymous = "accepted"
    except websockets.exceptions.InvalidStatus as e:
        anonymous = e.response.status_code
    print(json.dumps({"sent": sent, "received": received, "anonymous": anonymous}))

asyncio.run(main())
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daphne_delivers_ws_utils_messages_to_the_logged_in_user_only() {
    let Some(python) = herald_test_support::compat_python() else {
        return;
    };
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite:///{}", dir.path().join("db.sqlite3").display());
    let django = Django::new(python, &db)
        .with_env("REDIS_URL", &redis.url())
        .with_env("DJANGO_LOG_LEVEL", "INFO");
    let f = django.fixture(&[]).await;

    let mut daphne = django
        .program(&django.daphne())
        .args(["-b", "127.0.0.1", "-p", "0", "herald_site.asgi:application"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(daphne.stderr.take().unwrap()).lines();
    let port = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(addr) = line.split("Listening on TCP address ").nth(1) {
                return addr.rsplit(':').next().unwrap().trim().to_owned();
            }
        }
        panic!("daphne exited before listening");
    })
    .await
    .unwrap();
    // Keep draining Daphne's log so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let out = django
        .with_env("HERALD_DAPHNE_PORT", &port)
        .with_env("HERALD_COOKIE", &f.header())
        .manage(&["shell", "-c", CLIENT])
        .await;
    let last = out.lines().rev().find(|l| !l.trim().is_empty()).unwrap();
    let json: serde_json::Value = serde_json::from_str(last).unwrap();
    assert_eq!(json["sent"], true);
    let got = &json["received"];
    assert_eq!(got["type"], "user.notification");
    assert_eq!(got["username"], "amadmin");
    assert_eq!(got["notification_type"], "success");
    assert_eq!(got["title"], "Report Ready");
    assert_eq!(got["message"], "Report generated successfully!");
    // Daphne answers a consumer that closes before accepting with HTTP 403.
    assert_eq!(json["anonymous"], 403);
    daphne.kill().await.unwrap();
}

//! The load generator's other transports against a real Herald server: `--deflate` (with
//! `permessage-deflate` on, every frame is counted and timed as without it, and the report's
//! wire bytes show what compression saved) and `--sse` (the same stream as Server-Sent Events).

use std::sync::Arc;
use std::time::Duration;

use herald_core::{ChannelLayer, InMemoryLayer};
use herald_load::{LoadConfig, LoadReport, Swarm, unix_now_secs};
use herald_server::{App, Identity, ServerConfig, StaticTokenAuthenticator, TasksConsumer};
use tokio::time::timeout;

const BOUND: Duration = Duration::from_secs(20);
const SOCKETS: usize = 10;
const MESSAGES: usize = 20;

/// How the clients connect.
#[derive(Clone, Copy, PartialEq)]
enum Client {
    Plain,
    Deflate,
    Sse,
}

/// One run: a fresh server (deflate on), `SOCKETS` clients of user amadmin, `MESSAGES`
/// notifications to the user's group. Returns the report and the server's deflated count.
async fn run(client: Client) -> (LoadReport, u64) {
    let layer: Arc<dyn ChannelLayer> = Arc::new(InMemoryLayer::new(Default::default()).unwrap());
    let app = App::builder()
        .layer(Arc::clone(&layer))
        .authenticator(
            StaticTokenAuthenticator::new().with_token("t0k", Identity::new("amadmin", "1")),
        )
        .config(ServerConfig::default().with_permessage_deflate(true))
        .route("/ws/tasks/", TasksConsumer::default)
        .sse_route("/sse/tasks/", "/ws/tasks/")
        .build()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(herald_server::serve(listener, app.clone(), async {
        stopped.await.ok();
    }));

    let path = if client == Client::Sse { "sse" } else { "ws" };
    let config = LoadConfig::new(format!("ws://{addr}/{path}/tasks/?token=t0k"))
        .unwrap()
        .with_connections(SOCKETS)
        .with_deflate(client == Client::Deflate)
        .with_sse(client == Client::Sse)
        .with_expect_frames(Some((SOCKETS * MESSAGES) as u64))
        .with_deadline(Duration::from_secs(10));
    let swarm = timeout(BOUND, Swarm::connect(config))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(swarm.connect_report().connected, SOCKETS as u64);
    for i in 0..MESSAGES {
        let mut message = herald_messaging::user_message(
            "amadmin",
            &format!("Your export #{i} is ready: 12,345 rows, download it from the reports page."),
            None,
        );
        message.insert("sent_at", unix_now_secs());
        layer.group_send("user_amadmin", message).await.unwrap();
    }
    let report = timeout(BOUND, swarm.finish()).await.unwrap();
    let deflated = app.metrics().frames_deflated();
    stop.send(()).unwrap();
    timeout(BOUND, server).await.unwrap().unwrap().unwrap();
    (report, deflated)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_frames_are_counted_timed_and_cost_fewer_wire_bytes() {
    let (plain, plain_deflated) = run(Client::Plain).await;
    let (compressed, deflated) = run(Client::Deflate).await;
    for report in [&plain, &compressed] {
        assert!(report.complete, "{report:?}");
        assert_eq!(report.frames, (SOCKETS * MESSAGES) as u64);
        assert_eq!(report.latency.samples, (SOCKETS * MESSAGES) as u64);
        assert_eq!(report.disconnects, 0);
    }
    assert_eq!(plain_deflated, 0, "no offer, no compression");
    assert_eq!(deflated, (SOCKETS * MESSAGES) as u64);
    assert!(
        plain.wire_bytes > 100 * (SOCKETS * MESSAGES) as u64,
        "{}",
        plain.wire_bytes
    );
    assert!(
        compressed.wire_bytes * 10 < plain.wire_bytes * 8,
        "compressed {} vs plain {}",
        compressed.wire_bytes,
        plain.wire_bytes
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_are_counted_and_timed_like_sockets() {
    let (report, deflated) = run(Client::Sse).await;
    assert!(report.complete, "{report:?}");
    assert_eq!(report.connect.connected, SOCKETS as u64);
    assert_eq!(report.frames, (SOCKETS * MESSAGES) as u64);
    assert_eq!(report.latency.samples, (SOCKETS * MESSAGES) as u64);
    assert_eq!(deflated, 0);
    assert!(report.wire_bytes > 100 * (SOCKETS * MESSAGES) as u64);
}

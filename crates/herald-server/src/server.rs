//! The accept loop: one task per TCP connection running hyper's HTTP/1 server with upgrades,
//! until the shutdown future resolves; then the graceful drain of `shutdown.rs`.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::app::App;
use crate::error::Result;
use crate::routing::{self, ConnInfo};
use crate::shutdown::{self, ShutdownSignal, TaskToken, TaskTracker};

/// Pause after a failed `accept` (e.g. `EMFILE`), so a full fd table does not spin a core.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// Serves `app` on `listener` until `shutdown` resolves, then shuts down gracefully: stops
/// accepting, closes every WebSocket with 1001, runs each consumer's `disconnect` (discarding
/// its group memberships), and returns once all connections are done or
/// [`shutdown_timeout`](crate::ServerConfig::shutdown_timeout) elapsed.
///
/// The library never binds or installs signal handlers: the caller passes a bound listener
/// and whatever shutdown future it likes (`tokio::signal::ctrl_c()`, a oneshot in tests).
///
/// ```no_run
/// # async fn run(app: herald_server::App) -> herald_server::Result<()> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
/// herald_server::serve(listener, app, async { tokio::signal::ctrl_c().await.ok(); }).await
/// # }
/// ```
///
/// # Errors
/// [`ErrorKind::Io`](crate::ErrorKind::Io) if the listener's address cannot be read.
pub async fn serve(
    listener: TcpListener,
    app: App,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let local = listener.local_addr()?;
    let (trigger, signal) = shutdown::channel();
    let mut tracker = TaskTracker::new();
    tokio::pin!(shutdown);
    let monitor = tokio::spawn(crate::health::monitor(
        std::sync::Arc::clone(&app.inner.health),
        signal.clone(),
    ));
    if let Some(presence) = &app.inner.presence
        && presence.announces()
    {
        // Offline announcements are swept fleet-wide, whether or not this instance has sockets.
        presence.start();
    }
    info!(addr = %local, "listening");

    loop {
        // Shutdown is checked first so a flood of connections cannot delay it.
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let info = ConnInfo {
                        app: app.clone(),
                        peer,
                        local,
                        shutdown: signal.clone(),
                        token: tracker.token(),
                    };
                    tokio::spawn(
                        serve_connection(stream, info)
                            .instrument(info_span!("http.connection", peer = %peer)),
                    );
                }
                Err(err) => {
                    warn!(error = %err, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                }
            },
        }
    }

    drop(listener);
    info!(
        open = app.metrics().connections_current(),
        "shutting down: closing websockets with 1001"
    );
    trigger.trigger();
    // It returns on the trigger; aborting also covers a check stuck in its timeout.
    monitor.abort();
    if tokio::time::timeout(app.config().shutdown_timeout, tracker.wait_idle())
        .await
        .is_err()
    {
        warn!(
            open = app.metrics().connections_current(),
            "shutdown timeout elapsed with connections still open"
        );
    }
    info!("shutdown complete");
    Ok(())
}

async fn serve_connection(stream: TcpStream, info: ConnInfo) {
    // Small frames (pongs, acks) should not wait for Nagle.
    let _ = stream.set_nodelay(true);
    let config = info.app.config().clone();
    let mut shutdown: ShutdownSignal = info.shutdown.clone();
    let _token: Option<TaskToken> = info.token.clone();
    let peer: SocketAddr = info.peer;
    let service = service_fn(move |req| routing::handle_request(req, info.clone()));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(config.handshake_timeout)
        .keep_alive(true);
    let conn = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(err) = res {
                debug!(error = %err, peer = %peer, "http connection error");
            }
        }
        () = shutdown.wait() => {
            // Finish an in-flight request (a handshake may be mid-connect), then close.
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(config.close_timeout, conn).await;
        }
    }
}

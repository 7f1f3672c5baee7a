//! The `herald` binary: parses flags and installs logging; everything else lives in the
//! libraries (`herald-server`, `herald-redis`, `herald-django`).
//!
//! # Layout
//! * `settings` — every option struct (flags + `HERALD_*` env + TOML table), the TOML file
//!   (read once, here) and the one merge of flags over it.
//! * `layer` — builds the channel layer from those settings.
//! * `demo` — `herald serve --demo`: the demo page and the loopback-only `demo` user.
//! * `serve` — `herald serve`: the app from the merged options, the auth glue, signals.
//! * `send` — `herald send | notify | file | broadcast | group-send | disconnect`.
//! * `connections` — `herald connections`: the fleet's sockets from the presence records.
//! * `client` — the publish-API client senders use when no Redis is configured.
//! * `check` — `herald check`: configuration, Redis, Django database and a cookie.

mod check;
mod client;
mod connections;
mod demo;
mod layer;
mod send;
mod serve;
mod settings;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// Herald: a Rust drop-in replacement for Daphne + channels_redis.
#[derive(Parser, Debug)]
#[command(name = "herald", version, about)]
struct Cli {
    #[command(flatten)]
    config: settings::ConfigFile,
    /// Log lines as text (coloured only on a terminal) or as one JSON object per line.
    #[arg(
        long,
        global = true,
        env = "HERALD_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve /ws/tasks/ (plus /healthz and /metrics).
    Serve(Box<settings::ServeArgs>),
    /// Send a user.message to a user (ws_send_message).
    Send(send::SendArgs),
    /// Send a typed user.notification (ws_send_notification).
    Notify(send::NotifyArgs),
    /// Tell a user a file is ready (ws_send_file).
    File(send::FileArgs),
    /// Send a user.message to several users (ws_broadcast_message).
    Broadcast(send::BroadcastArgs),
    /// group_send any message with a "type" to any group.
    GroupSend(send::GroupSendArgs),
    /// Is a user online (how many sockets)? Without USER: everyone online.
    Online(send::OnlineArgs),
    /// List a user's connections fleet-wide; without USER, sockets and users per instance.
    Connections(connections::ConnectionsArgs),
    /// Send the guide's test notification and count the sockets that received it.
    TestConnection(send::TestConnectionArgs),
    /// Close a user's sockets on every herald instance (close code 4401 by default).
    Disconnect(send::DisconnectArgs),
    /// Check the configuration, Redis, the Django database and (optionally) a cookie.
    Check(Box<check::CheckArgs>),
}

/// `--log-format`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LogFormat {
    /// Human-readable lines; ANSI colours only when stderr is a terminal.
    Text,
    /// One JSON object per line (`timestamp`, `level`, `fields`, `target`, `span`s), for log
    /// pipelines.
    Json,
}

/// Logs go to stderr (stdout is the senders' output), filtered by `RUST_LOG` (default `info`).
fn install_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    install_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("herald: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let config = cli.config.path.clone();
    let result = runtime.block_on(async move {
        // The one read of the TOML file; each subcommand merges its flags over it.
        let file = settings::load_file(config.as_deref())?;
        match cli.command {
            Command::Serve(args) => serve::run(*args, file).await,
            Command::Check(args) => check::run(*args, file).await,
            Command::Send(mut a) => {
                (a.common.layer, a.common.time_zone) =
                    file.merge_sender(a.common.layer, a.common.time_zone);
                send::send(a).await
            }
            Command::Notify(mut a) => {
                (a.common.layer, a.common.time_zone) =
                    file.merge_sender(a.common.layer, a.common.time_zone);
                send::notify(a).await
            }
            Command::File(mut a) => {
                (a.common.layer, a.common.time_zone) =
                    file.merge_sender(a.common.layer, a.common.time_zone);
                send::file(a).await
            }
            Command::Broadcast(mut a) => {
                (a.common.layer, a.common.time_zone) =
                    file.merge_sender(a.common.layer, a.common.time_zone);
                send::broadcast(a).await
            }
            Command::Online(mut a) => {
                a.layer = file.merge_layer(a.layer);
                send::online(a).await
            }
            Command::Connections(mut a) => {
                a.layer = file.merge_layer(a.layer);
                connections::run(a).await
            }
            Command::TestConnection(mut a) => {
                a.layer = file.merge_layer(a.layer);
                send::test_connection(a).await
            }
            Command::Disconnect(mut a) => {
                a.layer = file.merge_layer(a.layer);
                send::disconnect(a).await
            }
            Command::GroupSend(mut a) => {
                a.layer = file.merge_layer(a.layer);
                send::group_send(a).await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Each cause once: anyhow's `{:#}` repeats a source our errors already show.
            eprintln!("herald: {}", herald_core::error::error_chain(&*err));
            ExitCode::FAILURE
        }
    }
}

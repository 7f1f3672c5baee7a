//! `herald check`: tells a new user what is wrong before they start.
//!
//! Each check prints exactly one verdict, `ok`, `warn`, `skip` or `FAIL`, with what it found
//! (for a failure, the underlying error with every cause once and passwords masked); the exit
//! code is non-zero if any check failed. Nothing is written to Redis except a short-lived round-trip message and a group
//! membership that is removed again; nothing is written to the Django database.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use clap::Args;
use herald_core::Message;
use herald_core::error::{error_chain, mask_secrets};
use herald_django::{AuthOutcome, DjangoAuth};
use herald_redis::internals::{ANY_GROUP_KEY_PATTERN, Keys, group_key_prefix};

use crate::layer;
use crate::settings::{Backend, DjangoOpts, FileSettings, LayerOpts, ServeArgs};

/// How long each network check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// Keys asked for per `SCAN` step when looking for other prefixes' group keys: large enough
/// that a few rounds cover a typical Redis, small enough that one step never blocks it.
const SCAN_COUNT: u32 = 1000;
/// `SCAN` steps at most (up to 20,000 keys looked at): the prefix check is a hint, not an
/// audit, so a huge keyspace is sampled rather than walked.
const SCAN_ROUNDS: usize = 20;

/// `herald check` flags: everything `serve` takes, plus a cookie to try.
#[derive(Args, Debug, Clone)]
pub(crate) struct CheckArgs {
    #[command(flatten)]
    pub(crate) serve: ServeArgs,
    /// A Cookie header (or just `sessionid=…`) copied from a logged-in browser: checks that the
    /// secret key and database can authenticate it.
    #[arg(long)]
    pub(crate) cookie: Option<String>,
}

#[derive(Debug, Default)]
struct Report {
    failed: usize,
}

impl Report {
    fn ok(&mut self, what: &str, detail: &str) {
        println!("ok    {what}: {detail}");
    }
    fn warn(&mut self, what: &str, detail: &str) {
        println!("warn  {what}: {detail}");
    }
    fn skip(&mut self, what: &str, detail: &str) {
        println!("skip  {what}: {detail}");
    }
    fn fail(&mut self, what: &str, detail: &str) {
        self.failed += 1;
        println!("FAIL  {what}: {}", mask_secrets(detail));
    }
}

pub(crate) async fn run(args: CheckArgs, file: FileSettings) -> anyhow::Result<()> {
    let mut report = Report::default();
    let resolved = match file.merge_serve(args.serve) {
        Ok(r) => {
            report.ok("config", "flags, HERALD_* variables and config file parse");
            r
        }
        Err(err) => {
            report.fail("config", &error_chain(&*err));
            anyhow::bail!("1 check failed");
        }
    };

    let layer_ok = check_layer(&mut report, &resolved.layer).await;
    if resolved.layer.backend() == Backend::Core {
        if layer_ok {
            check_prefixes(&mut report, &resolved.layer).await;
            check_history(&mut report, &resolved.layer).await;
        } else {
            report.skip("key prefix", "needs a reachable channel layer");
            report.skip("history", "needs a reachable channel layer");
        }
    }
    check_django(&mut report, &resolved.django, args.cookie.as_deref()).await;

    if report.failed > 0 {
        anyhow::bail!("{} check(s) failed", report.failed);
    }
    Ok(())
}

/// A `PING` of every host, then a full round trip through the layer: new channel, group_add,
/// group_send, receive, discard. True if the layer works.
async fn check_layer(report: &mut Report, opts: &LayerOpts) -> bool {
    let built = match layer::build(opts, true) {
        Ok(b) => b,
        Err(err) => {
            report.fail("channel layer", &error_chain(&*err));
            return false;
        }
    };
    if opts.backend() == Backend::Memory {
        report.warn(
            "channel layer",
            "no Redis configured: in-memory layer, Python processes cannot reach herald",
        );
        return false;
    }
    let layer = built.layer;
    // An unreachable host fails here, fast and with its own error, instead of as a round trip
    // that never completes.
    match tokio::time::timeout(CHECK_TIMEOUT, layer.ping()).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => {
            report.fail("channel layer", &error_chain(&err));
            return false;
        }
        Err(_) => {
            report.fail(
                "channel layer",
                &format!("no PING answer within {CHECK_TIMEOUT:?}"),
            );
            return false;
        }
    }
    let started = Instant::now();
    let result = tokio::time::timeout(CHECK_TIMEOUT, async {
        let channel = layer.new_channel("specific").await?;
        let group = format!("herald-check-{}", herald_core::names::random_hex_id());
        layer.group_add(&group, &channel).await?;
        layer
            .group_send(&group, Message::with_type("herald.check"))
            .await?;
        let got = layer.receive(&channel).await;
        layer.group_discard(&group, &channel).await?;
        layer.close_channel(&channel);
        got
    })
    .await;
    match result {
        Ok(Ok(msg)) if msg.msg_type() == Some("herald.check") => {
            report.ok(
                "channel layer",
                &format!(
                    "{} host(s), group_send round trip in {} ms",
                    opts.hosts.len(),
                    started.elapsed().as_millis()
                ),
            );
            return true;
        }
        Ok(Ok(other)) => report.fail(
            "channel layer",
            &format!(
                "round trip returned an unexpected message type {:?}",
                other.msg_type()
            ),
        ),
        Ok(Err(err)) => report.fail("channel layer", &error_chain(&err)),
        Err(_) => report.fail(
            "channel layer",
            &format!("no round trip within {CHECK_TIMEOUT:?} (is every host reachable?)"),
        ),
    }
    false
}

/// Looks at which key prefixes the group keys in Redis use: if Python's groups live under
/// another prefix than ours, Python and herald will never meet.
async fn check_prefixes(report: &mut Report, opts: &LayerOpts) {
    let prefix = opts
        .prefix
        .clone()
        .unwrap_or_else(|| herald_redis::DEFAULT_PREFIX.to_owned());
    let mut seen = BTreeSet::new();
    for host in &opts.hosts {
        if !(host.starts_with("redis://")
            || host.starts_with("rediss://")
            || host.starts_with("unix://"))
        {
            continue;
        }
        let Ok(client) = redis::Client::open(host.as_str()) else {
            continue;
        };
        let shown = mask_secrets(host);
        let scan = async {
            let mut conn = client.get_multiplexed_async_connection().await?;
            let mut cursor: u64 = 0;
            for _ in 0..SCAN_ROUNDS {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(ANY_GROUP_KEY_PATTERN)
                    .arg("COUNT")
                    .arg(SCAN_COUNT)
                    .query_async(&mut conn)
                    .await?;
                for key in keys {
                    if let Some(p) = group_key_prefix(&key) {
                        seen.insert(p.to_owned());
                    }
                }
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
            Ok::<_, redis::RedisError>(())
        };
        // One verdict per check: a host that cannot be scanned leaves the answer unknown.
        match tokio::time::timeout(CHECK_TIMEOUT, scan).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                return report.warn(
                    "key prefix",
                    &format!("cannot scan {shown}: {}", error_chain(&err)),
                );
            }
            Err(_) => {
                return report.warn(
                    "key prefix",
                    &format!("cannot scan {shown} within {CHECK_TIMEOUT:?}"),
                );
            }
        }
    }
    if seen.is_empty() {
        report.ok("key prefix", &format!("{prefix:?}; no groups in Redis yet"));
    } else if seen.contains(&prefix) {
        report.ok(
            "key prefix",
            &format!("{prefix:?} matches groups already in Redis"),
        );
    } else {
        let others: Vec<_> = seen.into_iter().collect();
        report.warn(
            "key prefix",
            &format!(
                "herald uses {prefix:?} but the groups in Redis use {others:?}: set --prefix to \
                 the CHANNEL_LAYERS \"prefix\" your Django settings use"
            ),
        );
    }
}

/// The recorded-history rules, and what the first Redis host (where the history lives) holds:
/// its version (6.2 needed, 7 to tell exactly what a stream trimmed), the epoch, the log, the
/// recorded groups and whether a herald holds the capture lease.
async fn check_history(report: &mut Report, opts: &LayerOpts) {
    let config = match layer::history_config(opts) {
        Ok(Some(config)) => config,
        Ok(None) => {
            return report.ok(
                "history",
                "off (--history on records user_* and task_* groups): messages are delivered at \
                 most once",
            );
        }
        Err(err) => return report.fail("history", &error_chain(&*err)),
    };
    let rules: Vec<String> = config
        .rules
        .iter()
        .map(|r| format!("{}={}/{}s", r.pattern, r.max_len, r.max_age.as_secs()))
        .collect();
    let rules = rules.join(", ");
    let Some(host) = opts.hosts.first().filter(|h| {
        h.starts_with("redis://") || h.starts_with("rediss://") || h.starts_with("unix://")
    }) else {
        return report.ok(
            "history",
            &format!("{rules} (Redis not inspected: not a URL host)"),
        );
    };
    let prefix = opts
        .prefix
        .clone()
        .unwrap_or_else(|| herald_redis::DEFAULT_PREFIX.to_owned());
    let keys = Keys::new(prefix);
    let inspect = async {
        let client = redis::Client::open(host.as_str())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut conn)
            .await?;
        let version = info
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .unwrap_or("?")
            .trim()
            .to_owned();
        let (epoch, lease, log): (Option<String>, Option<String>, u64) = redis::pipe()
            .cmd("GET")
            .arg(keys.history_epoch_key())
            .cmd("GET")
            .arg(keys.history_lease_key())
            .cmd("XLEN")
            .arg(keys.history_log_key())
            .query_async(&mut conn)
            .await?;
        let mut groups = 0usize;
        let mut cursor: u64 = 0;
        let pattern = keys.history_stream_key("*");
        for _ in 0..SCAN_ROUNDS {
            let (next, found): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .query_async(&mut conn)
                .await?;
            groups += found.len();
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        Ok::<_, redis::RedisError>((version, epoch, lease, log, groups, cursor == 0))
    };
    let shown = mask_secrets(host);
    let (version, epoch, lease, log, groups, complete) =
        match tokio::time::timeout(CHECK_TIMEOUT, inspect).await {
            Ok(Ok(found)) => found,
            Ok(Err(err)) => {
                return report.warn(
                    "history",
                    &format!("{rules}; cannot inspect {shown}: {}", error_chain(&err)),
                );
            }
            Err(_) => {
                return report.warn(
                    "history",
                    &format!("{rules}; cannot inspect {shown} within {CHECK_TIMEOUT:?}"),
                );
            }
        };
    let held = if lease.is_some() {
        "a herald holds the capture lease"
    } else {
        "no herald captures now (none running, or none with a socket yet)"
    };
    let groups = if complete {
        groups.to_string()
    } else {
        format!("at least {groups}")
    };
    let detail = format!(
        "{rules}; Redis {version}; epoch {}; log {log} entries; {groups} recorded groups; {held}",
        epoch.as_deref().unwrap_or("not set yet")
    );
    let numbers: Vec<u32> = version.split('.').filter_map(|p| p.parse().ok()).collect();
    match numbers.as_slice() {
        [major, minor, ..] if (*major, *minor) < (6, 2) => report.fail(
            "history",
            &format!("{detail}: recording needs Redis 6.2 or later (or --history none)"),
        ),
        [6, ..] => report.warn(
            "history",
            &format!(
                "{detail}: Redis 6 cannot say what a stream trimmed, so some resumes are \
                 reported unrecoverable that were not (Redis 7 tells exactly)"
            ),
        ),
        _ => report.ok("history", &detail),
    }
}

async fn check_django(report: &mut Report, opts: &DjangoOpts, cookie: Option<&str>) {
    if !opts.configured() {
        report.warn(
            "django auth",
            "not configured (--secret-key + --django-db, or --auth-callback): /ws/tasks/ will \
             refuse every handshake unless --trusted-user-header is used",
        );
        if cookie.is_some() {
            report.fail(
                "cookie",
                "cannot check a cookie without Django authentication settings",
            );
        }
        return;
    }
    let auth = match opts.auth_config().and_then(|c| Ok(DjangoAuth::new(c)?)) {
        Ok(a) => a,
        Err(err) => return report.fail("django auth", &error_chain(&*err)),
    };
    match tokio::time::timeout(CHECK_TIMEOUT, auth.ping()).await {
        Ok(Ok(())) => report.ok(
            "django database",
            "reachable, session and user tables readable",
        ),
        Ok(Err(err)) => report.fail("django database", &error_chain(&err)),
        Err(_) => report.fail("django database", "no answer within 10 s"),
    }
    let Some(cookie) = cookie else { return };
    let header = if cookie.contains('=') {
        cookie.to_owned()
    } else {
        let name = opts.session_cookie_name.as_deref().unwrap_or("sessionid");
        format!("{name}={cookie}")
    };
    match tokio::time::timeout(CHECK_TIMEOUT, auth.check(Some(&header))).await {
        Ok(Ok(AuthOutcome::Authenticated(user))) => report.ok(
            "cookie",
            &format!(
                "authenticates user {:?} (id {})",
                user.username, user.user_id
            ),
        ),
        Ok(Ok(AuthOutcome::Anonymous(why))) => {
            report.fail("cookie", &format!("refused: {}", why.as_str()))
        }
        Ok(Ok(_)) => report.fail("cookie", "refused"),
        Ok(Err(err)) => report.fail("cookie", &error_chain(&err)),
        Err(_) => report.fail("cookie", "no answer within 10 s"),
    }
}

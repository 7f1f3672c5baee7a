//! One shard's connections: how to reach it (URL, host params or Sentinel), a shared
//! multiplexed connection for ordinary commands, and dedicated connections for blocking reads.
//!
//! redis-rs 1.x gives every multiplexed connection a 500 ms response timeout by default; a
//! `BZPOPMIN key 5` would always "time out" on it, and on a shared connection it would also
//! stall every other command. So blocking reads get their own connection whose response timeout
//! is the BZPOPMIN timeout plus a margin, and ordinary commands use
//! [`RedisLayerConfig::response_timeout`](crate::RedisLayerConfig).

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo,
};
use tokio::sync::Mutex;

use crate::config::HostSpec;
use crate::error::{Error, Result, config_error, is_connection_error, redis_error};

/// How a shard is reached.
enum Connector {
    Direct(Client),
    // SentinelClient needs `&mut` to resolve the master; the lock is held across that await,
    // which only serialises (re)connects to this shard.
    Sentinel(Mutex<SentinelClient>),
}

/// One shard (one entry of `hosts`).
pub(crate) struct Shard {
    index: usize,
    connector: Connector,
    response_timeout: Duration,
    connection_timeout: Duration,
    // (generation, connection). The lock is held across the connect await so concurrent
    // callers wait for one connection instead of each opening their own.
    shared: Mutex<(u64, Option<MultiplexedConnection>)>,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

impl Shard {
    /// Builds the connector for `host`; nothing is connected yet.
    pub(crate) fn new(
        index: usize,
        host: &HostSpec,
        response_timeout: Duration,
        connection_timeout: Duration,
    ) -> Result<Self> {
        let bad = |e: redis::RedisError| {
            Error::with_source(
                crate::ErrorKind::Config,
                format!("invalid Redis host #{index}"),
                e,
            )
        };
        let connector = match host {
            HostSpec::Url(url) => {
                if url.starts_with("rediss://") {
                    // rustls needs a process-wide crypto provider; keep one installed by the
                    // application if there is one.
                    let _ = rustls::crypto::ring::default_provider().install_default();
                }
                Connector::Direct(Client::open(normalize_url(url).as_str()).map_err(bad)?)
            }
            HostSpec::Params {
                host,
                port,
                db,
                password,
                username,
            } => {
                let mut redis = RedisConnectionInfo::default().set_db(*db);
                if let Some(p) = password {
                    redis = redis.set_password(p);
                }
                if let Some(u) = username {
                    redis = redis.set_username(u);
                }
                let info = ConnectionAddr::Tcp(host.clone(), *port)
                    .into_connection_info()
                    .map_err(bad)?
                    .set_redis_settings(redis);
                Connector::Direct(Client::open(info).map_err(bad)?)
            }
            HostSpec::Sentinel(spec) => {
                if spec.sentinels.is_empty() {
                    return Err(config_error(format!("host #{index}: no sentinels")));
                }
                let addrs = spec
                    .sentinels
                    .iter()
                    .map(|(h, p)| ConnectionAddr::Tcp(h.clone(), *p));
                let mut builder = SentinelClientBuilder::new(
                    addrs,
                    &spec.master_name,
                    SentinelServerType::Master,
                )
                .map_err(bad)?
                .set_client_to_redis_db(spec.db);
                if let Some(p) = &spec.password {
                    builder = builder.set_client_to_redis_password(p);
                }
                if let Some(u) = &spec.username {
                    builder = builder.set_client_to_redis_username(u);
                }
                if let Some(p) = &spec.sentinel_password {
                    builder = builder.set_client_to_sentinel_password(p);
                }
                if let Some(u) = &spec.sentinel_username {
                    builder = builder.set_client_to_sentinel_username(u);
                }
                Connector::Sentinel(Mutex::new(builder.build().map_err(bad)?))
            }
        };
        Ok(Shard {
            index,
            connector,
            response_timeout,
            connection_timeout,
            shared: Mutex::new((0, None)),
        })
    }

    /// The shard's position in `hosts`.
    pub(crate) fn index(&self) -> usize {
        self.index
    }

    /// Opens a new connection whose commands time out after `response_timeout`.
    pub(crate) async fn open(
        &self,
        response_timeout: Duration,
    ) -> redis::RedisResult<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_response_timeout(Some(response_timeout))
            .set_connection_timeout(Some(self.connection_timeout));
        match &self.connector {
            Connector::Direct(client) => {
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
            }
            Connector::Sentinel(client) => {
                client
                    .lock()
                    .await
                    .get_async_connection_with_config(&config)
                    .await
            }
        }
    }

    /// A client for the shard's current address (the Sentinel master is looked up now), for
    /// connections that are not multiplexed, such as the Pub/Sub layer's subscriber.
    pub(crate) async fn client(&self) -> redis::RedisResult<Client> {
        match &self.connector {
            Connector::Direct(client) => Ok(client.clone()),
            Connector::Sentinel(client) => client.lock().await.async_get_client().await,
        }
    }

    /// The shared connection (opened on first use), with its generation.
    async fn shared(&self) -> redis::RedisResult<(u64, MultiplexedConnection)> {
        let mut guard = self.shared.lock().await;
        if let Some(conn) = &guard.1 {
            return Ok((guard.0, conn.clone()));
        }
        let conn = self.open(self.response_timeout).await?;
        guard.0 += 1;
        guard.1 = Some(conn.clone());
        Ok((guard.0, conn))
    }

    /// Forgets the shared connection if it is still generation `generation`.
    async fn invalidate(&self, generation: u64) {
        let mut guard = self.shared.lock().await;
        if guard.0 == generation {
            guard.1 = None;
        }
    }

    /// Runs `op` on the shared connection. On a connection failure the connection is dropped
    /// and `op` is retried once on a fresh one (like redis-py's default retry); a reply lost
    /// after the server executed the command can therefore, rarely, duplicate a write.
    pub(crate) async fn run<T, F, Fut>(&self, what: &str, op: F) -> Result<T>
    where
        F: Fn(MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let mut last = None;
        for _ in 0..2 {
            let (generation, conn) = match self.shared().await {
                Ok(c) => c,
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            match op(conn).await {
                Ok(v) => return Ok(v),
                Err(e) if is_connection_error(&e) => {
                    self.invalidate(generation).await;
                    last = Some(e);
                }
                Err(e) => return Err(redis_error(what, e)),
            }
        }
        // The loop ran at least once, so `last` is set.
        Err(redis_error(what, last.unwrap()))
    }
}

/// redis-py spells the unix-socket query options `password`/`username`; redis-rs reads
/// `pass`/`user`.
fn normalize_url(url: &str) -> String {
    if !(url.starts_with("unix://") || url.starts_with("redis+unix://")) {
        return url.to_owned();
    }
    let Some((base, query)) = url.split_once('?') else {
        return url.to_owned();
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| {
            if let Some(v) = pair.strip_prefix("password=") {
                format!("pass={v}")
            } else if let Some(v) = pair.strip_prefix("username=") {
                format!("user={v}")
            } else {
                pair.to_owned()
            }
        })
        .collect();
    format!("{base}?{}", query.join("&"))
}

/// How long one shard may take to answer a health `PING`.
const PING_TIMEOUT: Duration = Duration::from_secs(3);

/// `PING` on every shard at once, each bounded by [`PING_TIMEOUT`] (the shared connection is
/// re-made once on a connection error, as for any command). The first failing shard is the
/// error. Both layers' `ChannelLayer::ping`.
pub(crate) async fn ping_all<'a>(shards: impl Iterator<Item = &'a Shard>) -> Result<()> {
    let pings = shards.map(|shard| async move {
        let index = shard.index();
        let pinged = shard.run("ping", |mut c| async move {
            redis::cmd("PING").query_async::<String>(&mut c).await
        });
        match tokio::time::timeout(PING_TIMEOUT, pinged).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => Err(Error::with_source(
                err.kind(),
                format!("redis host #{index}"),
                err,
            )),
            Err(_) => Err(Error::new(
                herald_core::ErrorKind::Timeout,
                format!("redis host #{index} did not answer PING within {PING_TIMEOUT:?}"),
            )),
        }
    });
    futures_util::future::join_all(pings)
        .await
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_query_names_follow_redis_py() {
        assert_eq!(
            normalize_url("unix:///tmp/r.sock?db=3&password=x"),
            "unix:///tmp/r.sock?db=3&pass=x"
        );
        assert_eq!(normalize_url("redis://h:1/2"), "redis://h:1/2");
    }

    #[test]
    fn every_host_form_builds() {
        let t = Duration::from_secs(1);
        for host in [
            HostSpec::url("redis://127.0.0.1:1/2"),
            HostSpec::url("rediss://127.0.0.1:1/0"),
            HostSpec::url("unix:///tmp/none.sock?db=1"),
            HostSpec::host_port("127.0.0.1", 1),
            HostSpec::sentinel(crate::config::SentinelSpec::new(
                "m",
                vec![("127.0.0.1".into(), 1)],
            )),
        ] {
            assert!(Shard::new(0, &host, t, t).is_ok(), "{host:?}");
        }
        assert!(
            Shard::new(0, &HostSpec::url("http://x"), t, t)
                .unwrap_err()
                .is_config()
        );
    }
}

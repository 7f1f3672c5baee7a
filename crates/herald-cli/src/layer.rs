//! Building the channel layer (and presence store) from [`LayerOpts`].

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use herald_core::capacity::CapacityRule;
use herald_core::{ChannelLayer, InMemoryConfig, InMemoryLayer};
use herald_redis::{
    HistoryConfig, HistoryRule, HostSpec, RedisChannelLayer, RedisLayerConfig, RedisPubSubConfig,
    RedisPubSubLayer, SentinelSpec, SerializerFormat,
};

use crate::settings::{Backend, LayerOpts, parse_capacity};

/// The layer `serve` and the senders talk through, with the Redis handle kept for stats.
#[derive(Debug, Clone)]
pub(crate) struct BuiltLayer {
    pub(crate) layer: Arc<dyn ChannelLayer>,
    pub(crate) redis: Option<Arc<RedisChannelLayer>>,
}

/// The Redis layer of `opts`, for the commands that read presence records from Redis itself;
/// an error naming the command (`needs`, e.g. "connections need") on any other backend.
pub(crate) fn redis_layer(opts: &LayerOpts, needs: &str) -> anyhow::Result<Arc<RedisChannelLayer>> {
    match build(opts, false)?.redis {
        Some(redis) => Ok(redis),
        None => anyhow::bail!("{needs} the core Redis backend (or --server)"),
    }
}

/// Parses one `--redis` value into a host spec.
///
/// `redis://`, `rediss://` and `unix://` URLs pass through to redis-rs. Sentinel masters are
/// written `sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT…]/MASTER_NAME[?db=N&password=P]`, where the
/// userinfo password is the sentinels' own (`sentinel_kwargs`) and `password` the master's.
pub(crate) fn parse_host(value: &str) -> anyhow::Result<HostSpec> {
    let Some(rest) = value.strip_prefix("sentinel://") else {
        if !(value.starts_with("redis://")
            || value.starts_with("rediss://")
            || value.starts_with("unix://"))
        {
            bail!(
                "redis host {value:?} must start with redis://, rediss://, unix:// or sentinel://"
            );
        }
        return Ok(HostSpec::url(value));
    };
    let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (addrs, master) = main.split_once('/').with_context(|| {
        format!("sentinel host {value:?} needs /MASTER_NAME after the addresses")
    })?;
    let (sentinel_password, addrs) = match addrs.rsplit_once('@') {
        Some((userinfo, a)) => (
            Some(userinfo.rsplit(':').next().unwrap_or(userinfo).to_owned()),
            a,
        ),
        None => (None, addrs),
    };
    let mut sentinels = Vec::new();
    for addr in addrs.split(',') {
        let (host, port) = addr
            .rsplit_once(':')
            .with_context(|| format!("sentinel address {addr:?} must be HOST:PORT"))?;
        let port: u16 = port
            .parse()
            .with_context(|| format!("sentinel address {addr:?}: bad port"))?;
        sentinels.push((host.to_owned(), port));
    }
    if master.is_empty() {
        bail!("sentinel host {value:?}: empty master name");
    }
    let mut spec = SentinelSpec::new(master, sentinels);
    if let Some(p) = sentinel_password.filter(|p| !p.is_empty()) {
        spec = spec.with_sentinel_password(p);
    }
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("db", n)) => {
                spec = spec.with_db(n.parse().with_context(|| format!("bad db {n:?}"))?)
            }
            Some(("password", p)) => spec = spec.with_password(p),
            _ => bail!("sentinel host {value:?}: unknown option {pair:?} (db, password)"),
        }
    }
    Ok(HostSpec::sentinel(spec))
}

fn capacity_rules(opts: &LayerOpts) -> anyhow::Result<Vec<CapacityRule>> {
    opts.channel_capacity
        .iter()
        .map(|spec| {
            let spec = parse_capacity(spec)?;
            let rule = if spec.is_regex {
                CapacityRule::regex(&spec.pattern, spec.capacity)
            } else {
                CapacityRule::glob(&spec.pattern, spec.capacity)
            };
            rule.map_err(anyhow::Error::from)
        })
        .collect()
}

/// The `--history` option: `GLOB=MESSAGES/SECONDS` rules, `on` (the default rules), `none`
/// or nothing (off).
///
/// Off unless asked for: measured on this project's fan-out benchmark, recording cost the
/// per-user scenario a third of its throughput, and on an overloaded machine the shared
/// history keys overflowed channels_redis's `capacity` (messages refused for every socket)
/// where the unrecorded path did not.
pub(crate) fn history_config(opts: &LayerOpts) -> anyhow::Result<Option<HistoryConfig>> {
    match opts.history.as_slice() {
        [] => return Ok(None),
        [one] if one.trim() == "none" => return Ok(None),
        [one] if one.trim() == "on" => return Ok(Some(HistoryConfig::default())),
        _ => {}
    }
    let mut rules = Vec::with_capacity(opts.history.len());
    for spec in &opts.history {
        let bad = || {
            format!(
                "--history {spec:?}: expected GLOB=MESSAGES/SECONDS (e.g. user_*=100/300) or none"
            )
        };
        let (pattern, retention) = spec.trim().rsplit_once('=').with_context(bad)?;
        let (messages, seconds) = retention.split_once('/').with_context(bad)?;
        let messages: usize = messages.trim().parse().with_context(bad)?;
        let seconds: u64 = seconds.trim().parse().with_context(bad)?;
        rules.push(HistoryRule::new(
            pattern.trim(),
            messages,
            Duration::from_secs(seconds),
        ));
    }
    Ok(Some(HistoryConfig { rules }))
}

/// The `--serializer` option, checked once for both backends.
fn serializer(opts: &LayerOpts) -> anyhow::Result<Option<SerializerFormat>> {
    opts.serializer_format
        .as_deref()
        .map(|name| {
            SerializerFormat::from_name(name)
                .with_context(|| format!("unknown serializer {name:?}: expected msgpack or json"))
        })
        .transpose()
}

/// The `RedisLayerConfig` the options describe (Python defaults for whatever is not given).
pub(crate) fn redis_config(opts: &LayerOpts) -> anyhow::Result<RedisLayerConfig> {
    let hosts = opts
        .hosts
        .iter()
        .map(|h| parse_host(h))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut config = RedisLayerConfig::default().with_hosts(hosts);
    if let Some(prefix) = &opts.prefix {
        config = config.with_prefix(prefix.clone());
    }
    if let Some(s) = opts.expiry {
        config = config.with_expiry(Duration::from_secs(s));
    }
    if let Some(s) = opts.group_expiry {
        config = config.with_group_expiry(Duration::from_secs(s));
    }
    if let Some(c) = opts.capacity {
        config = config.with_capacity(c);
    }
    for rule in capacity_rules(opts)? {
        config = config.with_channel_capacity(rule);
    }
    if !opts.symmetric_encryption_keys.is_empty() {
        config = config.with_symmetric_encryption_keys(&opts.symmetric_encryption_keys);
    }
    if let Some(n) = opts.random_prefix_length {
        config = config.with_random_prefix_length(n);
    }
    if let Some(format) = serializer(opts)? {
        config = config.with_serializer_format(format);
    }
    config = config.with_history(history_config(opts)?);
    Ok(config)
}

/// Builds the layer. `allow_memory` is false for senders: an in-memory layer in a short-lived
/// `herald send` process would reach nobody, so that is an error rather than a silent no-op.
pub(crate) fn build(opts: &LayerOpts, allow_memory: bool) -> anyhow::Result<BuiltLayer> {
    let backend = opts.backend();
    match backend {
        Backend::Memory => {
            if !allow_memory {
                bail!(
                    "no Redis configured: pass --redis redis://HOST:PORT (or HERALD_REDIS) so the \
                     message reaches the herald and Python processes sharing that Redis"
                );
            }
            let mut config = InMemoryConfig::default();
            if let Some(s) = opts.expiry {
                config = config.with_expiry(Duration::from_secs(s));
            }
            if let Some(s) = opts.group_expiry {
                config = config.with_group_expiry(Duration::from_secs(s));
            }
            if let Some(c) = opts.capacity {
                config = config.with_capacity(c);
            }
            for rule in capacity_rules(opts)? {
                config = config.with_channel_capacity(rule);
            }
            Ok(BuiltLayer {
                layer: Arc::new(InMemoryLayer::new(config)?),
                redis: None,
            })
        }
        Backend::Core => {
            let layer = Arc::new(RedisChannelLayer::new(redis_config(opts)?)?);
            Ok(BuiltLayer {
                layer: layer.clone(),
                redis: Some(layer),
            })
        }
        Backend::Pubsub => {
            // channels_redis.pubsub takes only hosts, prefix, keys and serializer; the
            // core-only options would silently do nothing, so they are refused.
            if opts.expiry.is_some()
                || opts.group_expiry.is_some()
                || opts.capacity.is_some()
                || !opts.channel_capacity.is_empty()
                || opts.random_prefix_length.is_some()
                || !opts.history.is_empty()
            {
                bail!(
                    "--backend pubsub takes only hosts, prefix, encryption keys and serializer \
                     (expiry, group expiry, capacity, random prefix length and history are \
                     core-only)"
                );
            }
            let hosts = opts
                .hosts
                .iter()
                .map(|h| parse_host(h))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let mut config = RedisPubSubConfig::default().with_hosts(hosts);
            if let Some(prefix) = &opts.prefix {
                config = config.with_prefix(prefix.clone());
            }
            if !opts.symmetric_encryption_keys.is_empty() {
                config = config.with_symmetric_encryption_keys(&opts.symmetric_encryption_keys);
            }
            if let Some(format) = serializer(opts)? {
                config = config.with_serializer_format(format);
            }
            Ok(BuiltLayer {
                layer: Arc::new(RedisPubSubLayer::new(config)?),
                redis: None,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_pass_through_and_junk_is_refused() {
        assert_eq!(
            parse_host("redis://127.0.0.1:6379/2").unwrap(),
            HostSpec::url("redis://127.0.0.1:6379/2")
        );
        assert!(parse_host("unix:///tmp/r.sock").is_ok());
        assert!(parse_host("127.0.0.1:6379").is_err());
    }

    #[test]
    fn sentinel_urls_parse() {
        let spec = parse_host("sentinel://:sp@a:26379,b:26380/mymaster?db=3&password=mp").unwrap();
        let expected = SentinelSpec::new(
            "mymaster",
            vec![("a".to_owned(), 26379), ("b".to_owned(), 26380)],
        )
        .with_sentinel_password("sp")
        .with_db(3)
        .with_password("mp");
        assert_eq!(spec, HostSpec::sentinel(expected));
        assert!(parse_host("sentinel://a:1").is_err());
        assert!(parse_host("sentinel://a:x/m").is_err());
    }

    #[test]
    fn senders_refuse_the_memory_layer() {
        let err = build(&LayerOpts::default(), false).unwrap_err();
        assert!(err.to_string().contains("--redis"));
        assert!(build(&LayerOpts::default(), true).is_ok());
    }
}

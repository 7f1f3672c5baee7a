//! The constructor arguments of `channels_redis.core.RedisChannelLayer` as a
//! [`RedisLayerConfig`].
//!
//! The Python side (`herald.layers`) has already normalised `hosts` the way channels_redis's
//! `decode_hosts` does, into a list of dicts; each dict is read here the way its
//! `create_pool` reads it:
//! * `{"address": url, …}` — a URL (`redis://`, `rediss://`, `unix://`);
//! * `{"master_name": …, "sentinels": [(host, port), …], "sentinel_kwargs": {"password": …},
//!   "db": …, "password": …, "username": …}` — a Sentinel-managed master;
//! * `{"host": …, "port": …, "db": …, "password": …, "username": …}` — host parameters.
//!
//! Other redis-py connection options in a host dict (`socket_timeout`, `retry_on_timeout`,
//! `ssl_cert_reqs`, …) are accepted and not used: herald-redis has its own timeouts and
//! reconnects (see its `RedisLayerConfig`).

use std::time::Duration;

use herald_core::capacity::CapacityRule;
use herald_redis::{HostSpec, RedisLayerConfig, SentinelSpec, SerializerFormat};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use crate::errors::to_py_err;

/// One host dict as a [`HostSpec`].
fn host_from_py(index: usize, host: &Bound<'_, PyDict>) -> PyResult<HostSpec> {
    let get_str = |key: &str| -> PyResult<Option<String>> {
        match host.get_item(key)? {
            Some(v) if !v.is_none() => Ok(Some(v.str()?.to_str()?.to_owned())),
            _ => Ok(None),
        }
    };
    let get_int = |key: &str, default: i64| -> PyResult<i64> {
        match host.get_item(key)? {
            Some(v) if !v.is_none() => v.extract(),
            _ => Ok(default),
        }
    };
    if let Some(address) = get_str("address")? {
        return Ok(HostSpec::url(address));
    }
    if let Some(master_name) = get_str("master_name")? {
        let sentinels: Vec<(String, u16)> = match host.get_item("sentinels")? {
            Some(list) => list.extract()?,
            None => {
                return Err(PyValueError::new_err(format!(
                    "hosts[{index}]: a Sentinel host needs \"sentinels\""
                )));
            }
        };
        let mut spec = SentinelSpec::new(master_name, sentinels).with_db(get_int("db", 0)?);
        spec.username = get_str("username")?;
        spec.password = get_str("password")?;
        if let Some(kwargs) = host.get_item("sentinel_kwargs")?
            && let Ok(kwargs) = kwargs.cast::<PyDict>()
        {
            for (key, value) in kwargs.iter() {
                let key: String = key.extract()?;
                let value = (!value.is_none())
                    .then(|| value.str().map(|s| s.to_string()))
                    .transpose()?;
                match key.as_str() {
                    "password" => spec.sentinel_password = value,
                    "username" => spec.sentinel_username = value,
                    _ => {}
                }
            }
        }
        return Ok(HostSpec::sentinel(spec));
    }
    let port = get_int("port", 6379)?;
    let port = u16::try_from(port)
        .map_err(|_| PyValueError::new_err(format!("hosts[{index}]: bad port {port}")))?;
    Ok(HostSpec::Params {
        host: get_str("host")?.unwrap_or_else(|| "localhost".to_owned()),
        port,
        db: get_int("db", 0)?,
        password: get_str("password")?,
        username: get_str("username")?,
    })
}

/// Whole seconds, as channels_redis puts them on the wire (`int(expiry)`).
fn seconds(name: &str, value: f64) -> PyResult<Duration> {
    if !value.is_finite() || value < 0.0 {
        return Err(PyValueError::new_err(format!(
            "{name} must be a non-negative number"
        )));
    }
    Ok(Duration::from_secs(value as u64))
}

/// The arguments of `_herald.Layer(...)`, which `herald.layers.RedisChannelLayer` passes
/// after normalising them.
#[expect(
    clippy::too_many_arguments,
    reason = "mirrors Python's keyword arguments one to one"
)]
pub(crate) fn layer_config(
    hosts: &[Bound<'_, PyDict>],
    prefix: String,
    expiry: f64,
    group_expiry: f64,
    capacity: usize,
    channel_capacity: &[(Bound<'_, PyAny>, usize)],
    symmetric_encryption_keys: Vec<Vec<u8>>,
    random_prefix_length: usize,
    serializer_format: &str,
) -> PyResult<RedisLayerConfig> {
    let hosts = hosts
        .iter()
        .enumerate()
        .map(|(i, host)| host_from_py(i, host))
        .collect::<PyResult<Vec<_>>>()?;
    let format = SerializerFormat::from_name(serializer_format).ok_or_else(|| {
        PyValueError::new_err(format!(
            "unknown serializer_format {serializer_format:?} (herald has \"msgpack\" and \"json\")"
        ))
    })?;
    let mut config = RedisLayerConfig::default()
        .with_hosts(hosts)
        .with_prefix(prefix)
        .with_expiry(seconds("expiry", expiry)?)
        .with_group_expiry(seconds("group_expiry", group_expiry)?)
        .with_capacity(capacity)
        .with_symmetric_encryption_keys(&symmetric_encryption_keys)
        .with_random_prefix_length(random_prefix_length)
        .with_serializer_format(format)
        // channels_redis leaves a message in Redis until a receive takes it: there it expires,
        // and capacity refuses later sends.
        .with_read_on_demand(true);
    for (pattern, capacity) in channel_capacity {
        // A str key is a glob (fnmatch); a compiled re.Pattern is a regex.
        let rule = if let Ok(glob) = pattern.cast::<PyString>() {
            CapacityRule::glob(glob.to_str()?, *capacity)
        } else if let Ok(source) = pattern.getattr("pattern") {
            let source: String = source.extract().map_err(|_| {
                PyTypeError::new_err("channel_capacity: only str regex patterns are supported")
            })?;
            CapacityRule::regex(&source, *capacity)
        } else {
            return Err(PyTypeError::new_err(
                "channel_capacity keys must be str globs or compiled regexes",
            ));
        };
        config = config.with_channel_capacity(rule.map_err(to_py_err)?);
    }
    Ok(config)
}

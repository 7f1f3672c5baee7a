//! Flags, `HERALD_*` environment variables and the optional TOML file, merged into one view.
//!
//! Precedence: a flag (or its `HERALD_*` variable, which clap treats as the same thing) beats the
//! TOML file, which beats the library default. Every layer option keeps the channels_redis kwarg
//! name in TOML (`group_expiry`, `symmetric_encryption_keys`, ...) so a `CHANNEL_LAYERS` config
//! can be copied over by eye.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use serde::Deserialize;

/// Which Python backend the layer must be compatible with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Backend {
    /// `channels_redis.core.RedisChannelLayer` (sorted sets; the default).
    Core,
    /// `channels_redis.pubsub.RedisPubSubChannelLayer` (PUBLISH/SUBSCRIBE).
    Pubsub,
    /// In-process only (no Redis): for trying herald out; other processes cannot reach it.
    Memory,
}

/// Channel layer options, shared by `serve` and every sending subcommand.
#[derive(Args, Debug, Default, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct LayerOpts {
    /// Redis host URLs (redis://, rediss://, unix://), in CHANNEL_LAYERS order; repeat or
    /// comma-separate. None given: `serve` runs on the in-memory layer.
    #[arg(long = "redis", env = "HERALD_REDIS", value_delimiter = ',')]
    pub(crate) hosts: Vec<String>,
    /// Python backend to be compatible with [default: core when hosts are given, else memory].
    #[arg(long, env = "HERALD_BACKEND", value_enum)]
    pub(crate) backend: Option<Backend>,
    /// Key prefix (channels_redis `prefix`) [default: asgi].
    #[arg(long, env = "HERALD_PREFIX")]
    pub(crate) prefix: Option<String>,
    /// Message lifetime in seconds (`expiry`) [default: 60].
    #[arg(long, env = "HERALD_EXPIRY")]
    pub(crate) expiry: Option<u64>,
    /// Group membership lifetime in seconds (`group_expiry`) [default: 86400].
    #[arg(long, env = "HERALD_GROUP_EXPIRY")]
    pub(crate) group_expiry: Option<u64>,
    /// Default channel capacity (`capacity`) [default: 100].
    #[arg(long, env = "HERALD_CAPACITY")]
    pub(crate) capacity: Option<usize>,
    /// Per-channel capacity (`channel_capacity`): `GLOB=N` or `re:REGEX=N`, first match wins.
    #[arg(
        long = "channel-capacity",
        env = "HERALD_CHANNEL_CAPACITY",
        value_delimiter = ','
    )]
    pub(crate) channel_capacity: Vec<String>,
    /// Fernet keys (`symmetric_encryption_keys`); the first encrypts, all decrypt.
    #[arg(
        long = "encryption-key",
        env = "HERALD_ENCRYPTION_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub(crate) symmetric_encryption_keys: Vec<String>,
    /// Random bytes before each stored message (`random_prefix_length`) [default: 12].
    #[arg(long, env = "HERALD_RANDOM_PREFIX_LENGTH")]
    pub(crate) random_prefix_length: Option<usize>,
    /// `msgpack` or `json` (`serializer_format`) [default: msgpack].
    #[arg(long = "serializer", env = "HERALD_SERIALIZER")]
    pub(crate) serializer_format: Option<String>,
}

impl LayerOpts {
    /// Fills every option not given on the command line from `file`.
    pub(crate) fn or(self, file: LayerOpts) -> LayerOpts {
        LayerOpts {
            hosts: join_sentinel_pieces(or_vec(self.hosts, file.hosts)),
            backend: self.backend.or(file.backend),
            prefix: self.prefix.or(file.prefix),
            expiry: self.expiry.or(file.expiry),
            group_expiry: self.group_expiry.or(file.group_expiry),
            capacity: self.capacity.or(file.capacity),
            channel_capacity: or_vec(self.channel_capacity, file.channel_capacity),
            symmetric_encryption_keys: or_vec(
                self.symmetric_encryption_keys,
                file.symmetric_encryption_keys,
            ),
            random_prefix_length: self.random_prefix_length.or(file.random_prefix_length),
            serializer_format: self.serializer_format.or(file.serializer_format),
        }
    }

    /// The backend in effect: explicit, else `core` with hosts and `memory` without.
    pub(crate) fn backend(&self) -> Backend {
        self.backend.unwrap_or(if self.hosts.is_empty() {
            Backend::Memory
        } else {
            Backend::Core
        })
    }
}

/// Re-joins a `sentinel://H:P,H:P/MASTER` host that the comma delimiter of `--redis` and
/// `HERALD_REDIS` split apart: a piece without `://` continues a preceding Sentinel host whose
/// `/MASTER` has not been seen yet. Every other piece is a host of its own.
pub(crate) fn join_sentinel_pieces(pieces: Vec<String>) -> Vec<String> {
    let mut hosts: Vec<String> = Vec::with_capacity(pieces.len());
    for piece in pieces {
        match hosts.last_mut() {
            Some(last)
                if !piece.contains("://")
                    && last
                        .strip_prefix("sentinel://")
                        .is_some_and(|rest| !rest.contains('/')) =>
            {
                last.push(',');
                last.push_str(&piece);
            }
            _ => hosts.push(piece),
        }
    }
    hosts
}

/// `cli` unless it is empty, else `file`.
pub(crate) fn or_vec<T>(cli: Vec<T>, file: Vec<T>) -> Vec<T> {
    if cli.is_empty() { file } else { cli }
}

/// One `channel_capacity` entry parsed from `GLOB=N` or `re:REGEX=N`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CapacitySpec {
    pub(crate) pattern: String,
    pub(crate) is_regex: bool,
    pub(crate) capacity: usize,
}

/// Parses `GLOB=N` / `re:REGEX=N`; the number is after the last `=`.
pub(crate) fn parse_capacity(spec: &str) -> anyhow::Result<CapacitySpec> {
    let (pattern, n) = spec
        .rsplit_once('=')
        .with_context(|| format!("channel capacity {spec:?} must look like PATTERN=N"))?;
    let capacity: usize = n
        .trim()
        .parse()
        .with_context(|| format!("channel capacity {spec:?}: {n:?} is not a whole number"))?;
    if capacity == 0 {
        bail!("channel capacity {spec:?}: capacity must be at least 1");
    }
    let (pattern, is_regex) = match pattern.strip_prefix("re:") {
        Some(re) => (re, true),
        None => (pattern, false),
    };
    if pattern.is_empty() {
        bail!("channel capacity {spec:?}: empty pattern");
    }
    Ok(CapacitySpec {
        pattern: pattern.to_owned(),
        is_regex,
        capacity,
    })
}

/// Django's `TIME_ZONE` (`--time-zone`, `HERALD_TIME_ZONE`, `[django] time_zone`): the zone in
/// which the guide's `datetime.now().isoformat()` stamps are local time. Django makes it the
/// process's zone at start-up (`TZ`, with `USE_TZ` on or off) and refuses a name that is not a
/// file under `/usr/share/zoneinfo`; this looks the name up in the same system database, with
/// the same exact spelling.
#[derive(Debug, Clone)]
pub(crate) struct TimeZone {
    zone: jiff::tz::TimeZone,
}

impl TimeZone {
    /// Looks `name` up; an unknown or misspelt zone is an error.
    pub(crate) fn new(name: &str) -> anyhow::Result<TimeZone> {
        let zone = jiff::tz::TimeZone::get(name)
            .ok()
            .filter(|zone| zone.iana_name() == Some(name))
            .with_context(|| {
                format!(
                    "unknown time zone {name:?}: expected an IANA name such as \"Europe/Paris\" \
                     (Django's TIME_ZONE) from the system's zoneinfo database"
                )
            })?;
        Ok(TimeZone { zone })
    }

    /// The setting if given, else `None` (the machine's zone).
    pub(crate) fn from_setting(name: Option<&str>) -> anyhow::Result<Option<TimeZone>> {
        name.map(TimeZone::new).transpose()
    }

    /// `datetime.now().isoformat()` in a Django process with this `TIME_ZONE`.
    pub(crate) fn isoformat_now(&self) -> String {
        let now = chrono::Utc::now();
        let offset = jiff::Timestamp::from_microsecond(now.timestamp_micros())
            .map(|t| self.zone.to_offset(t).seconds())
            .unwrap_or(0);
        herald_messaging::python_isoformat(
            now.naive_utc() + chrono::TimeDelta::seconds(offset.into()),
        )
    }
}

/// The TOML file: one table per component.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct FileSettings {
    /// `[layer]`: channel layer options.
    pub(crate) layer: LayerOpts,
    /// `[server]`: WebSocket server options.
    pub(crate) server: crate::serve::ServerOpts,
    /// `[django]`: authentication options.
    pub(crate) django: crate::serve::DjangoOpts,
}

/// Reads the TOML file at `path`; unknown keys are errors so typos do not pass silently.
pub(crate) fn load_file(path: Option<&Path>) -> anyhow::Result<FileSettings> {
    let Some(path) = path else {
        return Ok(FileSettings::default());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}

/// The `--config` flag, shared by every subcommand.
#[derive(Args, Debug, Default, Clone)]
pub(crate) struct ConfigFile {
    /// TOML file with `[layer]`, `[server]` and `[django]` tables; flags and `HERALD_*` win over it.
    #[arg(long = "config", env = "HERALD_CONFIG", global = true)]
    pub(crate) path: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comma_separated_sentinels_stay_one_host() {
        let split = |s: &str| s.split(',').map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(
            join_sentinel_pieces(split(
                "redis://a:1,sentinel://:pw@h:1,h:2,h:3/mymaster?db=2,redis://b:2"
            )),
            [
                "redis://a:1",
                "sentinel://:pw@h:1,h:2,h:3/mymaster?db=2",
                "redis://b:2"
            ]
        );
        // A stray piece after a complete host stays separate (and fails to parse later).
        assert_eq!(
            join_sentinel_pieces(split("sentinel://h:1/m,h:2")),
            ["sentinel://h:1/m", "h:2"]
        );
    }

    #[test]
    fn flags_beat_file_and_file_fills_gaps() {
        let cli = LayerOpts {
            prefix: Some("cli".into()),
            ..LayerOpts::default()
        };
        let file = LayerOpts {
            prefix: Some("file".into()),
            expiry: Some(30),
            hosts: vec!["redis://h:1".into()],
            ..LayerOpts::default()
        };
        let merged = cli.or(file);
        assert_eq!(merged.prefix.as_deref(), Some("cli"));
        assert_eq!(merged.expiry, Some(30));
        assert_eq!(merged.hosts, ["redis://h:1"]);
        assert_eq!(merged.backend(), Backend::Core);
    }

    #[test]
    fn no_hosts_means_memory() {
        assert_eq!(LayerOpts::default().backend(), Backend::Memory);
    }

    #[test]
    fn capacity_specs_parse_globs_and_regexes() {
        assert_eq!(
            parse_capacity("http.response!*=10").unwrap(),
            CapacitySpec {
                pattern: "http.response!*".into(),
                is_regex: false,
                capacity: 10
            }
        );
        let re = parse_capacity("re:^a=b$=3").unwrap();
        assert_eq!(
            (re.pattern.as_str(), re.is_regex, re.capacity),
            ("^a=b$", true, 3)
        );
        assert!(parse_capacity("nope").is_err());
        assert!(parse_capacity("x=0").is_err());
        assert!(parse_capacity("x=abc").is_err());
    }

    #[test]
    fn time_zones_are_checked_like_django() {
        assert!(TimeZone::new("Asia/Kathmandu").is_ok());
        assert!(TimeZone::new("UTC").is_ok());
        for wrong in ["Mars/Base", "asia/kathmandu", "", "+05:45", "../etc/passwd"] {
            let err = TimeZone::new(wrong).unwrap_err().to_string();
            assert!(err.contains("unknown time zone"), "{wrong}: {err}");
        }
        assert!(TimeZone::from_setting(None).unwrap().is_none());
        let file: FileSettings =
            toml::from_str("[django]\ntime_zone = \"Europe/Paris\"\n").unwrap();
        assert_eq!(file.django.time_zone.as_deref(), Some("Europe/Paris"));
    }

    #[test]
    fn file_rejects_unknown_keys() {
        let err = toml::from_str::<FileSettings>("[layer]\nprefx = \"x\"\n").unwrap_err();
        assert!(err.to_string().contains("prefx"));
        let ok: FileSettings =
            toml::from_str("[layer]\nhosts = [\"redis://a\"]\ngroup_expiry = 5\n").unwrap();
        assert_eq!(ok.layer.group_expiry, Some(5));
    }
}

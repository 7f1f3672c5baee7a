"""Herald's TOML configuration from the running Django settings.

``herald_toml()`` maps what ``herald serve`` must share with Django — ``CHANNEL_LAYERS``,
``SECRET_KEY``, ``SECRET_KEY_FALLBACKS``, ``DATABASES["default"]``, ``SESSION_ENGINE``,
``SESSION_COOKIE_NAME``, ``AUTH_USER_MODEL``'s table and username column,
``AUTHENTICATION_BACKENDS``, ``ALLOWED_HOSTS`` and ``TIME_ZONE`` — onto the ``[layer]``,
``[server]`` and ``[django]`` tables that ``herald serve --config`` reads, so nothing is
copied by hand (where one mismatch silently delivers nothing).
"""

from urllib.parse import quote

from django.conf import settings

#: Layers herald reads, by ``BACKEND``: the ``backend`` value of ``[layer]``.
BACKENDS = {
    "channels_redis.core.RedisChannelLayer": "core",
    "herald.layers.RedisChannelLayer": "core",
    "channels_redis.pubsub.RedisPubSubChannelLayer": "pubsub",
}

#: Session engines herald reads itself; others need the authentication callback view.
SESSION_ENGINES = {
    "django.contrib.sessions.backends.db": "db",
    "django.contrib.sessions.backends.cached_db": "cached_db",
    "django.contrib.sessions.backends.signed_cookies": "signed_cookies",
}


class ConfigError(Exception):
    """A setting herald cannot take; the message says which and what to do."""


def _userinfo(username, password):
    if not username and not password:
        return ""
    user = quote(str(username or ""), safe="")
    return f"{user}:{quote(str(password), safe='')}@" if password else f"{user}@"


def redis_url(host):
    """One entry of ``CONFIG["hosts"]`` (any form channels_redis takes) as herald's host URL."""
    if isinstance(host, bytes):
        host = host.decode()
    if isinstance(host, str):
        return host
    if isinstance(host, (tuple, list)):
        return f"redis://{host[0]}:{host[1]}"
    if not isinstance(host, dict):
        raise ConfigError(f"CHANNEL_LAYERS host {host!r}: not a URL, (host, port) or dict")
    if "address" in host:
        return redis_url(host["address"])
    if "master_name" in host:
        kwargs = host.get("sentinel_kwargs") or {}
        sentinels = ",".join(f"{h}:{p}" for h, p in host["sentinels"])
        auth = f":{quote(str(kwargs['password']), safe='')}@" if kwargs.get("password") else ""
        query = [f"db={int(host.get('db') or 0)}"]
        if host.get("password"):
            query.append(f"password={quote(str(host['password']), safe='')}")
        return f"sentinel://{auth}{sentinels}/{host['master_name']}?{'&'.join(query)}"
    userinfo = _userinfo(host.get("username"), host.get("password"))
    return (
        f"redis://{userinfo}{host.get('host', 'localhost')}:{int(host.get('port', 6379))}"
        f"/{int(host.get('db') or 0)}"
    )


def database_url(database):
    """``DATABASES["default"]`` as herald's ``database_url`` (PostgreSQL or SQLite)."""
    engine = database.get("ENGINE", "")
    if engine == "django.db.backends.sqlite3":
        from pathlib import Path

        return f"sqlite:///{Path(str(database['NAME'])).resolve()}"
    if engine in ("django.db.backends.postgresql", "django.db.backends.postgresql_psycopg2"):
        userinfo = _userinfo(database.get("USER"), database.get("PASSWORD"))
        host = database.get("HOST") or "localhost"
        if host.startswith("/"):
            # A Unix socket directory.
            return f"postgres://{userinfo}localhost/{database['NAME']}?host={quote(host, safe='')}"
        port = f":{database['PORT']}" if database.get("PORT") else ""
        url = f"postgres://{userinfo}{host}{port}/{quote(str(database['NAME']), safe='')}"
        sslmode = (database.get("OPTIONS") or {}).get("sslmode")
        return f"{url}?sslmode={sslmode}" if sslmode else url
    raise ConfigError(
        f"DATABASES['default'] ENGINE {engine!r}: herald reads sessions from PostgreSQL or "
        "SQLite; use the authentication callback (herald.django.urls) instead"
    )


def _channel_capacity(rules):
    out = []
    for pattern, capacity in (rules or {}).items():
        if hasattr(pattern, "pattern"):
            out.append(f"re:{pattern.pattern}={int(capacity)}")
        else:
            out.append(f"{pattern}={int(capacity)}")
    return out


def herald_config(alias="default"):
    """The configuration as ``{table: {key: value}}`` plus a list of warnings."""
    from django.contrib.auth import get_user_model

    warnings = []
    layer = {}
    layers = getattr(settings, "CHANNEL_LAYERS", {}) or {}
    if alias not in layers:
        raise ConfigError(f"CHANNEL_LAYERS has no {alias!r} layer")
    backend = layers[alias].get("BACKEND", "")
    if backend not in BACKENDS:
        raise ConfigError(
            f"CHANNEL_LAYERS[{alias!r}] BACKEND {backend!r}: herald shares only Redis layers "
            f"({', '.join(sorted(BACKENDS))})"
        )
    config = layers[alias].get("CONFIG", {}) or {}
    hosts = config.get("hosts") or ["redis://localhost:6379"]
    if isinstance(hosts, (str, bytes)):
        raise ConfigError("CHANNEL_LAYERS hosts must be a list, even of one host")
    layer["backend"] = BACKENDS[backend]
    layer["hosts"] = [redis_url(h) for h in hosts]
    for key in ("prefix", "expiry", "group_expiry", "capacity", "random_prefix_length"):
        if key in config:
            layer[key] = config[key]
    if config.get("channel_capacity"):
        layer["channel_capacity"] = _channel_capacity(config["channel_capacity"])
    if config.get("symmetric_encryption_keys"):
        layer["symmetric_encryption_keys"] = [
            k.decode() if isinstance(k, bytes) else str(k)
            for k in config["symmetric_encryption_keys"]
        ]
    if "serializer_format" in config:
        layer["serializer_format"] = config["serializer_format"]

    server = {}
    allowed = [h for h in settings.ALLOWED_HOSTS]
    if allowed:
        server["allowed_origins"] = allowed

    django = {"secret_key": str(settings.SECRET_KEY)}
    fallbacks = [str(k) for k in getattr(settings, "SECRET_KEY_FALLBACKS", []) or []]
    if fallbacks:
        django["secret_key_fallbacks"] = fallbacks
    engine = settings.SESSION_ENGINE
    if engine in SESSION_ENGINES:
        django["session_engine"] = SESSION_ENGINES[engine]
        django["database_url"] = database_url(settings.DATABASES["default"])
    else:
        warnings.append(
            f"SESSION_ENGINE {engine!r} is not readable by herald: add herald.django.urls to "
            "your URLconf and set [django] auth_callback to the URL of its herald-whoami view"
        )
    django["session_cookie_name"] = settings.SESSION_COOKIE_NAME
    user = get_user_model()
    django["user_table"] = user._meta.db_table
    django["username_column"] = user._meta.get_field(user.USERNAME_FIELD).column
    django["authentication_backends"] = list(settings.AUTHENTICATION_BACKENDS)
    if getattr(settings, "TIME_ZONE", None):
        django["time_zone"] = settings.TIME_ZONE
    return {"layer": layer, "server": server, "django": django}, warnings


def _toml_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != int(value):
            raise ConfigError(f"{value!r}: herald takes whole seconds")
        return str(int(value))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    text = str(value)
    escaped = (
        text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    )
    escaped = "".join(c if ord(c) >= 0x20 and c != "\x7f" else f"\\u{ord(c):04x}" for c in escaped)
    return f'"{escaped}"'


def to_toml(config):
    """``{table: {key: value}}`` as TOML text."""
    lines = ["# Written by `manage.py herald_config` from the Django settings. It holds", "# SECRET_KEY: keep it readable by herald only (0600).", ""]
    for table, values in config.items():
        if not values:
            continue
        lines.append(f"[{table}]")
        for key, value in values.items():
            lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)

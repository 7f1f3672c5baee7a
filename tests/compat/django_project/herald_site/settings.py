"""Settings of Herald's Django test project, driven entirely by environment variables.

DATABASE_URL            sqlite:///relative.sqlite3, sqlite:////abs/path.sqlite3 (dj-database-url
                        rules, as herald-django reads them) or postgres://user:pass@host:port/name.
                        Default: sqlite db.sqlite3 next to manage.py.
SECRET_KEY              default "django-insecure-herald-test-secret-key".
SECRET_KEY_FALLBACKS    a JSON list, or comma-separated keys. Default: none.
SESSION_ENGINE          db | cached_db | signed_cookies | a full module path. Default: db.
SESSION_COOKIE_AGE      seconds (Django's default 1209600).
AUTHENTICATION_BACKENDS a JSON list or comma-separated paths. Default: ModelBackend.
REDIS_URL               redis://host:port[/db] for channels_redis; unset = InMemoryChannelLayer.
CHANNEL_LAYERS_BACKEND  the layer class with REDIS_URL (default channels_redis.core.RedisChannelLayer;
                        herald.layers.RedisChannelLayer for herald's package).
CHANNEL_LAYERS_PREFIX   channels_redis "prefix" (default "asgi").
CHANNEL_LAYERS_SYMMETRIC_ENCRYPTION_KEYS  JSON list or comma-separated keys (enables encryption).
TIME_ZONE               an IANA zone name (default "UTC"); Django makes it the process's local time,
                        so the guide's `datetime.now().isoformat()` stamps are in this zone.
USE_TZ                  "0" or "false" to turn it off (default on).
"""
import json
import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent


def _env_list(name, default=()):
    raw = os.environ.get(name, "").strip()
    if not raw:
        return list(default)
    if raw.startswith("["):
        return list(json.loads(raw))
    return [item.strip() for item in raw.split(",") if item.strip()]


def _database(url):
    if url.startswith("sqlite://"):
        path = url[len("sqlite://"):]
        path = path[1:] if path.startswith("/") else path  # dj-database-url drops one '/'
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": path or BASE_DIR / "db.sqlite3"}
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ValueError(f"unsupported DATABASE_URL scheme {parts.scheme!r}")
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parts.path.lstrip("/")),
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
    }


SECRET_KEY = os.environ.get("SECRET_KEY", "django-insecure-herald-test-secret-key")
SECRET_KEY_FALLBACKS = _env_list("SECRET_KEY_FALLBACKS")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]
USE_TZ = os.environ.get("USE_TZ", "1") not in ("0", "false", "False")
TIME_ZONE = os.environ.get("TIME_ZONE", "UTC")

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "channels",
    "OptsIO",
]
try:
    # The herald package (python/), when scripts/test.sh has built it into the venv: its app
    # gives manage.py herald_config / herald_check and the authentication callback view.
    import herald.django  # noqa: F401
except ImportError:
    pass
else:
    INSTALLED_APPS.append("herald.django")
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
ROOT_URLCONF = "herald_site.urls"
WSGI_APPLICATION = "herald_site.wsgi.application"
ASGI_APPLICATION = "herald_site.asgi.application"

DATABASES = {"default": _database(os.environ.get("DATABASE_URL", "sqlite:///" + str(BASE_DIR / "db.sqlite3")))}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

_engine = os.environ.get("SESSION_ENGINE", "db")
SESSION_ENGINE = _engine if "." in _engine else f"django.contrib.sessions.backends.{_engine}"
SESSION_COOKIE_AGE = int(os.environ.get("SESSION_COOKIE_AGE", 1209600))
AUTHENTICATION_BACKENDS = _env_list(
    "AUTHENTICATION_BACKENDS", ["django.contrib.auth.backends.ModelBackend"]
)

_redis = os.environ.get("REDIS_URL")
if _redis:
    # redis-py 8 defaults socket_timeout to 5 s, the same as channels_redis's BZPOPMIN timeout,
    # so an idle receive() raises TimeoutError; None restores blocking.
    _layer_config = {
        "hosts": [{"address": _redis, "socket_timeout": None}],
        "prefix": os.environ.get("CHANNEL_LAYERS_PREFIX", "asgi"),
    }
    _keys = _env_list("CHANNEL_LAYERS_SYMMETRIC_ENCRYPTION_KEYS")
    if _keys:
        _layer_config["symmetric_encryption_keys"] = _keys
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": os.environ.get("CHANNEL_LAYERS_BACKEND", "channels_redis.core.RedisChannelLayer"),
            "CONFIG": _layer_config,
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["stderr"], "level": os.environ.get("DJANGO_LOG_LEVEL", "WARNING")},
}

# Celery (the guide's Example 3): the broker is a Redis URL given by the tests.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "memory://")
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

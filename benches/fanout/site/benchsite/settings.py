"""Settings of the Daphne baseline site, all from environment variables (set by run.sh).

The names match tests/compat/django_project (and so what herald-django reads), so one set of
variables configures Daphne and herald alike:

DATABASE_URL          sqlite:////abs/path.sqlite3 or postgres://user@host:port/name
                      (default: sqlite bench.sqlite3 next to manage.py)
SECRET_KEY            Django SECRET_KEY
SESSION_ENGINE        db | cached_db | signed_cookies | a module path (default db)
REDIS_URL             channels_redis host, e.g. redis://127.0.0.1:6390
BENCH_LAYER_CAPACITY  channels_redis "capacity" (unset = channels_redis default, 100)
"""
import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("SECRET_KEY", "herald-fanout-bench-not-secret")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "channels",
    "benchapp",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
ROOT_URLCONF = "benchsite.urls"
ASGI_APPLICATION = "benchsite.asgi.application"


def _database(url):
    """dj-database-url rules for the two forms run.sh uses."""
    if url.startswith("sqlite://"):
        path = url[len("sqlite://"):]
        path = path[1:] if path.startswith("/") else path
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": path}
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


DATABASES = {
    "default": _database(os.environ.get("DATABASE_URL", "sqlite:///" + str(BASE_DIR / "bench.sqlite3")))
}

_engine = os.environ.get("SESSION_ENGINE", "db")
SESSION_ENGINE = _engine if "." in _engine else f"django.contrib.sessions.backends.{_engine}"

# redis-py 8 defaults socket_timeout to 5 s, the same as channels_redis's BZPOPMIN timeout,
# so an idle receive() raises TimeoutError; None restores blocking.
_layer_config = {"hosts": [{"address": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379"), "socket_timeout": None}]}
if os.environ.get("BENCH_LAYER_CAPACITY"):
    _layer_config["capacity"] = int(os.environ["BENCH_LAYER_CAPACITY"])
# BENCH_LAYER_BACKEND=herald.layers.RedisChannelLayer measures the Python senders on herald's
# drop-in layer (the package in python/) instead of channels_redis.
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": os.environ.get("BENCH_LAYER_BACKEND", "channels_redis.core.RedisChannelLayer"),
        "CONFIG": _layer_config,
    }
}

USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}

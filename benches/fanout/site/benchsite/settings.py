"""Settings of the Daphne baseline site, all from environment variables (set by run.sh).

BENCH_SECRET_KEY      Django SECRET_KEY (herald must be given the same one to read sessions)
BENCH_DB              "sqlite" (default) or "postgres"
BENCH_DB_NAME         SQLite file path, or PostgreSQL database name
BENCH_PG_HOST/PORT/USER  PostgreSQL connection (default 127.0.0.1 / 5432 / postgres)
BENCH_REDIS_URL       channels_redis host, e.g. redis://127.0.0.1:6390
BENCH_LAYER_CAPACITY  channels_redis "capacity" (unset = channels_redis default, 100)
BENCH_SESSION_ENGINE  Django SESSION_ENGINE (default django.contrib.sessions.backends.db)
"""
import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("BENCH_SECRET_KEY", "herald-fanout-bench-not-secret")
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

if os.environ.get("BENCH_DB", "sqlite") == "postgres":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ.get("BENCH_DB_NAME", "herald_fanout_bench"),
            "HOST": os.environ.get("BENCH_PG_HOST", "127.0.0.1"),
            "PORT": os.environ.get("BENCH_PG_PORT", "5432"),
            "USER": os.environ.get("BENCH_PG_USER", "postgres"),
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("BENCH_DB_NAME", str(BASE_DIR / "bench.sqlite3")),
        }
    }

SESSION_ENGINE = os.environ.get("BENCH_SESSION_ENGINE", "django.contrib.sessions.backends.db")

_layer_config = {"hosts": [os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379")]}
if os.environ.get("BENCH_LAYER_CAPACITY"):
    _layer_config["capacity"] = int(os.environ["BENCH_LAYER_CAPACITY"])
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
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

"""herald.django: the browser client as a static file and the guide's helpers."""

import asyncio
import re
from pathlib import Path

import pytest

from channels_redis.core import RedisChannelLayer as PythonLayer

from conftest import DJANGO_PREFIX

REPO = Path(__file__).resolve().parents[2]
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?$")


def test_the_static_client_is_the_file_herald_serve_serves(django_settings):
    from django.contrib.staticfiles import finders

    found = finders.find("herald/task-notifications.js")
    assert found, "herald/task-notifications.js is not a static file of herald.django"
    served = REPO / "crates/herald-server/assets/task-notifications.js"
    assert Path(found).read_bytes() == served.read_bytes()


def test_the_helpers_send_the_guides_shapes_to_the_users_group(django_settings, hosts):
    from herald.django import messaging

    consumer = PythonLayer(hosts=hosts, prefix=DJANGO_PREFIX)
    loop = asyncio.new_event_loop()
    try:
        channel = loop.run_until_complete(consumer.new_channel())
        for user in ("amadmin", "bob"):
            loop.run_until_complete(consumer.group_add(f"user_{user}", channel))

        assert messaging.ws_send_message("amadmin", "Hello", data={"n": 1})
        assert messaging.ws_send_notification(
            "amadmin", "Done", notification_type="success", title="Report"
        )
        assert not messaging.ws_send_notification("amadmin", "x", notification_type="loud")
        assert messaging.ws_send_file(
            "amadmin", "/media/exports/data.csv?sig=1", file_size=156789
        )
        assert messaging.ws_broadcast_message("Maintenance", ["amadmin", "bob"]) == 2
        assert messaging.test_websocket_connection("bob")

        got = [
            loop.run_until_complete(asyncio.wait_for(consumer.receive(channel), 5))
            for _ in range(6)
        ]
        loop.run_until_complete(consumer.flush())
    finally:
        loop.close()
    for message in got:
        assert ISO.match(message.pop("timestamp"))
    assert got == [
        {"type": "user.message", "username": "amadmin", "message": "Hello", "data": {"n": 1}},
        {
            "type": "user.notification",
            "username": "amadmin",
            "notification_type": "success",
            "title": "Report",
            "message": "Done",
            "data": {},
        },
        {
            "type": "user.file",
            "username": "amadmin",
            "message": "File ready for download",
            "file_url": "/media/exports/data.csv?sig=1",
            "file_name": "data.csv",
            "file_size": 156789,
            "data": {},
        },
        {"type": "user.message", "username": "amadmin", "message": "Maintenance", "data": {}},
        {"type": "user.message", "username": "bob", "message": "Maintenance", "data": {}},
        {
            "type": "user.notification",
            "username": "bob",
            "notification_type": "info",
            "title": "WebSocket Test",
            "message": "WebSocket connection test for bob",
            "data": {"test": True},
        },
    ]


def test_a_helper_reports_failure_instead_of_raising(django_settings, monkeypatch, prefix):
    from herald.django import messaging
    from herald.layers import RedisChannelLayer

    # A layer whose Redis cannot be reached (nothing listens on port 1).
    unreachable = RedisChannelLayer(hosts=["redis://127.0.0.1:1"], prefix=prefix)
    monkeypatch.setattr(messaging, "get_channel_layer", lambda: unreachable)
    assert messaging.ws_send_message("amadmin", "lost") is False


def test_every_host_form_becomes_the_url_herald_reads():
    from herald.django.config import redis_url

    assert redis_url("redis://h:1/2") == "redis://h:1/2"
    assert redis_url(("h", 6380)) == "redis://h:6380"
    assert redis_url({"address": "rediss://h:1", "socket_timeout": None}) == "rediss://h:1"
    assert (
        redis_url({"host": "h", "port": 1, "db": 3, "password": "p@ss/w"})
        == "redis://:p%40ss%2Fw@h:1/3"
    )
    assert redis_url({"host": "h", "port": 1, "username": "u", "password": "p"}) == (
        "redis://u:p@h:1/0"
    )
    assert (
        redis_url(
            {
                "master_name": "mymaster",
                "sentinels": [("a", 26379), ("b", 26380)],
                "sentinel_kwargs": {"password": "sp"},
                "db": 3,
                "password": "mp",
            }
        )
        == "sentinel://:sp@a:26379,b:26380/mymaster?db=3&password=mp"
    )


def test_databases_become_database_urls():
    from herald.django.config import ConfigError, database_url

    assert (
        database_url(
            {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": "app",
                "USER": "ro",
                "PASSWORD": "p@ss",
                "HOST": "db",
                "PORT": 5433,
                "OPTIONS": {"sslmode": "verify-full"},
            }
        )
        == "postgres://ro:p%40ss@db:5433/app?sslmode=verify-full"
    )
    assert database_url({"ENGINE": "django.db.backends.sqlite3", "NAME": "/srv/db.sqlite3"}) == (
        "sqlite:////srv/db.sqlite3"
    )
    with pytest.raises(ConfigError):
        database_url({"ENGINE": "django.db.backends.mysql", "NAME": "app"})


def test_the_toml_reads_back_as_written():
    import tomllib

    from herald.django.config import to_toml

    config = {
        "layer": {"hosts": ["redis://h:1"], "expiry": 60, "symmetric_encryption_keys": ['a"b\\c']},
        "server": {},
        "django": {"secret_key": "k\n\t\x01é", "secret_key_fallbacks": ["old"]},
    }
    assert tomllib.loads(to_toml(config)) == {
        "layer": config["layer"],
        "django": config["django"],
    }


def test_the_auth_callback_view_says_who_the_session_belongs_to(django_settings):
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django.urls import reverse

    user, _ = get_user_model().objects.get_or_create(username="carol")
    url = reverse("herald-whoami")
    assert url == "/herald/whoami/"
    client = Client()
    assert client.get(url).status_code == 401
    client.force_login(user)
    response = client.get(url)
    assert response.status_code == 200
    assert response.json() == {"username": "carol", "user_id": user.pk}
    assert client.post(url).status_code == 405


def test_herald_config_writes_the_settings_as_toml_with_mode_0600(django_settings, tmp_path):
    import stat
    import tomllib

    from django.core.management import call_command

    path = tmp_path / "herald.toml"
    path.write_text("old")
    path.chmod(0o644)
    call_command("herald_config", output=str(path))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    config = tomllib.loads(path.read_text())
    assert config["layer"]["hosts"] == [django_settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"][0]["address"]]
    assert config["layer"]["prefix"] == DJANGO_PREFIX
    assert config["django"]["secret_key"] == "herald-package-tests"
    assert config["django"]["session_engine"] == "db"
    assert config["django"]["database_url"] == f"sqlite:///{django_settings.DATABASES['default']['NAME']}"
    assert config["django"]["user_table"] == "auth_user"
    assert config["server"]["allowed_origins"] == ["testserver"]

"""herald.django: the browser client as a static file and the guide's helpers."""

import asyncio
import re
from pathlib import Path

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

"""The user guide's helpers for sending to a user's sockets from Django code.

Each helper builds one message exactly as the guide shows it and sends it to the group
``user_<username>`` through the configured channel layer (``CHANNEL_LAYERS["default"]``), where
``herald serve`` (or a Channels consumer) delivers it to every socket of that user. They never
raise: failures are logged and reported as ``False`` (the broadcast returns a count), as the
guide promises. They work from views, Celery tasks and management commands: with
``herald.layers.RedisChannelLayer`` they use its ``group_send_sync`` (no event loop), with any
other layer ``async_to_sync(layer.group_send)``.
"""

import logging
import re
from datetime import datetime

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

logger = logging.getLogger(__name__)

NOTIFICATION_TYPES = ("success", "error", "info", "warning")


def user_group(username):
    """The group every socket of ``username`` joins."""
    return f"user_{username}"


def _group_send(group, message):
    layer = get_channel_layer()
    if layer is None:
        raise RuntimeError("no channel layer configured (CHANNEL_LAYERS)")
    send_sync = getattr(layer, "group_send_sync", None)
    if send_sync is not None:
        send_sync(group, message)
    else:
        async_to_sync(layer.group_send)(group, message)


def _send(username, message):
    try:
        _group_send(user_group(username), message)
        return True
    except Exception:  # the guide's helpers report failure as False
        logger.exception("websocket send to %s failed", username)
        return False


def _now():
    # The guide's timestamps: local wall-clock time (Django sets the process's zone to
    # TIME_ZONE), naive ISO 8601.
    return datetime.now().isoformat()


def ws_send_message(username, message, data=None):
    """A ``user.message`` to one user (a toast in the browser client)."""
    return _send(
        username,
        {
            "type": "user.message",
            "username": username,
            "message": message,
            "data": data or {},
            "timestamp": _now(),
        },
    )


def ws_send_notification(username, message, notification_type="info", title=None, data=None):
    """A typed ``user.notification``: ``notification_type`` is success, error, info or warning."""
    if notification_type not in NOTIFICATION_TYPES:
        logger.error("unknown notification type %r", notification_type)
        return False
    return _send(
        username,
        {
            "type": "user.notification",
            "username": username,
            "notification_type": notification_type,
            "title": title or "",
            "message": message,
            "data": data or {},
            "timestamp": _now(),
        },
    )


def ws_send_file(username, file_url, file_name=None, message=None, file_size=None, data=None):
    """A ``user.file`` download notice; ``file_name`` defaults to the URL's last path part."""
    if not file_name:
        file_name = re.split(r"[?#]", file_url, maxsplit=1)[0].rsplit("/", 1)[-1]
    return _send(
        username,
        {
            "type": "user.file",
            "username": username,
            "message": message or "File ready for download",
            "file_url": file_url,
            "file_name": file_name,
            "file_size": file_size,
            "data": data or {},
            "timestamp": _now(),
        },
    )


def ws_broadcast_message(message, usernames, data=None):
    """The same ``user.message`` to each user; returns how many sends succeeded."""
    return sum(1 for username in usernames if ws_send_message(username, message, data=data))


def test_websocket_connection(username):
    """Sends the guide's test notification; ``True`` if the layer accepted it."""
    return ws_send_notification(
        username,
        f"WebSocket connection test for {username}",
        "info",
        "WebSocket Test",
        data={"test": True},
    )


# Not a pytest test, despite its name (the guide's).
test_websocket_connection.__test__ = False

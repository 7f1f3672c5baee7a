"""The guide's WebSocket helpers (shared/seed/websocket-user-messaging-guide.md).

Each helper builds one message dict exactly as the guide shows it and `group_send`s it to the
group `user_{username}` through the configured channel layer. They return True/False (the
broadcast returns a count) and never raise, as the guide promises.
"""
import logging
import re
from datetime import datetime

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

logger = logging.getLogger(__name__)


def user_group(username):
    return f"user_{username}"


def _send(username, message):
    try:
        layer = get_channel_layer()
        if layer is None:
            logger.error("no channel layer configured")
            return False
        async_to_sync(layer.group_send)(user_group(username), message)
        return True
    except Exception:  # the guide's helpers report failure as False
        logger.exception("websocket send to %s failed", username)
        return False


def user_message(username, message, data=None):
    return {
        "type": "user.message",
        "username": username,
        "message": message,
        "data": data or {},
        "timestamp": datetime.now().isoformat(),
    }


def user_notification(username, message, notification_type="info", title=None, data=None):
    return {
        "type": "user.notification",
        "username": username,
        "notification_type": notification_type,
        "title": title or "",
        "message": message,
        "data": data or {},
        "timestamp": datetime.now().isoformat(),
    }


def file_name_from_url(file_url):
    return re.split(r"[?#]", file_url, maxsplit=1)[0].rsplit("/", 1)[-1]


def user_file(username, file_url, file_name=None, message=None, file_size=None, data=None):
    return {
        "type": "user.file",
        "username": username,
        "message": message or "File ready for download",
        "file_url": file_url,
        "file_name": file_name or file_name_from_url(file_url),
        "file_size": file_size,
        "data": data or {},
        "timestamp": datetime.now().isoformat(),
    }


def ws_send_message(username, message, data=None):
    """A `user.message` to one user."""
    return _send(username, user_message(username, message, data))


def ws_connect(username, message, data=None):
    """The guide's alias of ws_send_message."""
    return ws_send_message(username, message, data=data)


def ws_send_notification(username, message, notification_type="info", title=None, data=None):
    """A typed `user.notification` (success, error, info, warning)."""
    if notification_type not in ("success", "error", "info", "warning"):
        logger.error("unknown notification type %r", notification_type)
        return False
    return _send(username, user_notification(username, message, notification_type, title, data))


def ws_send_file(username, file_url, file_name=None, message=None, file_size=None, data=None):
    """A `user.file` download notice."""
    return _send(username, user_file(username, file_url, file_name, message, file_size, data))


def ws_broadcast_message(message, usernames, data=None):
    """The same `user.message` to each user; returns how many sends succeeded."""
    return sum(1 for username in usernames if ws_send_message(username, message, data=data))


def test_websocket_connection(username):
    """Sends an info notification; True if the layer accepted it."""
    return ws_send_notification(
        username,
        f"WebSocket connection test for {username}",
        "info",
        "WebSocket Test",
        data={"test": True},
    )

"""The oracle: who Django HTTP and Channels think a Cookie header belongs to.

Prints {"django": {"user_id", "username"} | null, "channels": {...} | null}.

* "django": django.contrib.auth.get_user (what SessionMiddleware + AuthenticationMiddleware give a
  view; accepts SECRET_KEY_FALLBACKS hashes).
* "channels": channels.auth.get_user (what AuthMiddlewareStack gives a consumer).

Both may write (flush the session on a mismatch, re-key it on a fallback hash), so each runs in a
transaction that is rolled back: the database is left as it was.
"""
import json
from importlib import import_module

from channels.auth import get_user as channels_get_user
from django.conf import settings
from django.contrib.auth import get_user as django_get_user
from django.core.management.base import BaseCommand
from django.db import transaction
from django.http import HttpRequest, parse_cookie


def _describe(user):
    if user is None or not user.is_authenticated:
        return None
    return {"user_id": str(user.pk), "username": user.get_username()}


def _rolled_back(fn):
    with transaction.atomic():
        result = fn()
        transaction.set_rollback(True)
    return result


class Command(BaseCommand):
    help = "Print which user Django HTTP and Channels see for a Cookie header."

    def add_arguments(self, parser):
        parser.add_argument("--cookie", default="", help="the Cookie header value")

    def handle(self, *args, **opts):
        engine = import_module(settings.SESSION_ENGINE)
        key = parse_cookie(opts["cookie"]).get(settings.SESSION_COOKIE_NAME)

        def django_http():
            request = HttpRequest()
            request.session = engine.SessionStore(key)
            return _describe(django_get_user(request))

        def channels():
            scope = {"session": engine.SessionStore(key)}
            # The undecorated function: run in this thread, inside this transaction.
            return _describe(channels_get_user.func(scope))

        self.stdout.write(
            json.dumps({"django": _rolled_back(django_http), "channels": _rolled_back(channels)})
        )

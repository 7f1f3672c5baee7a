"""Migrate, create a user and log it in through Django's real login machinery.

Prints one JSON line:
{"cookie": "sessionid=...", "cookie_name": "sessionid", "session_key": "...",
 "user_id": "1", "username": "amadmin"}

The session is made like django.test.Client.force_login does: a SessionStore of the configured
SESSION_ENGINE, django.contrib.auth.login() (which cycles the key and stores _auth_user_id,
_auth_user_backend and _auth_user_hash), then save(). Options then spoil it on purpose.
"""
import json
import time
from datetime import timedelta
from importlib import import_module
from unittest import mock

from django.conf import settings
from django.contrib.auth import get_user_model, login
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.http import HttpRequest


class Command(BaseCommand):
    help = "Create a user and a logged-in session for Herald's tests; print them as JSON."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="amadmin")
        parser.add_argument("--password", default="herald-test-password")
        parser.add_argument("--no-migrate", action="store_true", help="skip `migrate`")
        parser.add_argument("--inactive", action="store_true", help="create the user inactive")
        parser.add_argument(
            "--backend",
            help="backend path stored in the session (default: first AUTHENTICATION_BACKENDS)",
        )
        parser.add_argument(
            "--expired",
            action="store_true",
            help="db: expire_date in the past; signed_cookies: signed SESSION_COOKIE_AGE+60 s ago",
        )
        parser.add_argument(
            "--change-password", metavar="NEW", help="set a new password after logging in"
        )
        parser.add_argument(
            "--deactivate", action="store_true", help="set is_active=False after logging in"
        )

    def handle(self, *args, **opts):
        if not opts["no_migrate"]:
            call_command("migrate", verbosity=0, interactive=False)
        User = get_user_model()
        user, _ = User.objects.get_or_create(username=opts["username"])
        user.set_password(opts["password"])
        user.is_active = not opts["inactive"]
        user.save()

        engine = import_module(settings.SESSION_ENGINE)
        request = HttpRequest()
        request.session = engine.SessionStore()
        backend = opts["backend"] or settings.AUTHENTICATION_BACKENDS[0]
        login(request, user, backend=backend)

        signed_cookies = settings.SESSION_ENGINE.endswith("signed_cookies")
        if opts["expired"] and not signed_cookies:
            request.session.set_expiry(timedelta(seconds=-60))
        if opts["expired"] and signed_cookies:
            # The token's timestamp is time.time() at save(): move it past SESSION_COOKIE_AGE.
            past = time.time() - settings.SESSION_COOKIE_AGE - 60
            with mock.patch("time.time", return_value=past):
                request.session.save()
        else:
            request.session.save()

        if opts["change_password"]:
            user.set_password(opts["change_password"])
            user.save()
        if opts["deactivate"]:
            user.is_active = False
            user.save()

        key = request.session.session_key
        self.stdout.write(
            json.dumps(
                {
                    "cookie": f"{settings.SESSION_COOKIE_NAME}={key}",
                    "cookie_name": settings.SESSION_COOKIE_NAME,
                    "session_key": key,
                    "user_id": str(user.pk),
                    "username": user.get_username(),
                }
            )
        )

"""Create N users, each with one logged-in session, and write their cookies and usernames.

    python manage.py bench_users --prefix u --count 1000 --cookies-out c.txt --users-out u.txt

Users are named ``{prefix}{i:05d}``; existing users with that prefix are deleted first. With
the database session engine the sessions are bulk-inserted (a login per user would take
minutes at 10k users); other engines go through SessionStore. The session holds exactly what
``django.contrib.auth.login`` stores: user id, backend path and the session auth hash, so
Channels' AuthMiddleware (and herald) accept it as a logged-in user.
"""
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.auth.hashers import make_password
from django.contrib.sessions.backends.base import VALID_KEY_CHARS
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone
from django.utils.crypto import get_random_string
from importlib import import_module

BACKEND = "django.contrib.auth.backends.ModelBackend"
BATCH = 5000


class Command(BaseCommand):
    help = "Create bench users with logged-in sessions; write cookie and username files."

    def add_arguments(self, parser):
        parser.add_argument("--prefix", required=True)
        parser.add_argument("--count", type=int, required=True)
        parser.add_argument("--cookies-out", required=True)
        parser.add_argument("--users-out", required=True)

    def handle(self, *args, prefix, count, cookies_out, users_out, **options):
        User = get_user_model()
        engine = import_module(settings.SESSION_ENGINE)
        # One real hash shared by all bench users: hashing 50k passwords would take minutes.
        password = make_password("bench-password")
        names = [f"{prefix}{i:05d}" for i in range(count)]
        with transaction.atomic():
            User.objects.filter(username__startswith=prefix).delete()
            for start in range(0, count, BATCH):
                User.objects.bulk_create(
                    User(username=n, password=password, is_active=True)
                    for n in names[start : start + BATCH]
                )
        users = {u.username: u for u in User.objects.filter(username__in=names)}
        keys = []
        if settings.SESSION_ENGINE == "django.contrib.sessions.backends.db":
            from django.contrib.sessions.models import Session

            store = engine.SessionStore()
            expire = timezone.now() + timedelta(seconds=settings.SESSION_COOKIE_AGE)
            rows = []
            for n in names:
                user = users[n]
                key = get_random_string(32, VALID_KEY_CHARS)
                data = store.encode(
                    {
                        SESSION_KEY: str(user.pk),
                        BACKEND_SESSION_KEY: BACKEND,
                        HASH_SESSION_KEY: user.get_session_auth_hash(),
                    }
                )
                rows.append(Session(session_key=key, session_data=data, expire_date=expire))
                keys.append(key)
            with transaction.atomic():
                for start in range(0, len(rows), BATCH):
                    Session.objects.bulk_create(rows[start : start + BATCH])
        else:
            for n in names:
                user = users[n]
                session = engine.SessionStore()
                session[SESSION_KEY] = str(user.pk)
                session[BACKEND_SESSION_KEY] = BACKEND
                session[HASH_SESSION_KEY] = user.get_session_auth_hash()
                session.save()
                keys.append(session.session_key)
        cookie_name = settings.SESSION_COOKIE_NAME
        with open(cookies_out, "w") as f:
            f.writelines(f"{cookie_name}={k}\n" for k in keys)
        with open(users_out, "w") as f:
            f.writelines(f"{n}\n" for n in names)
        self.stdout.write(f"created {count} users with prefix {prefix!r}")

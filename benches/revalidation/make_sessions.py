"""Creates BENCH_SESSIONS users, each logged in once (a `db` session like django.contrib.auth.login
makes: _auth_user_id, _auth_user_backend, _auth_user_hash), and writes the session keys, one a
line, to BENCH_KEYS. Run inside the test project: manage.py shell -c "$(cat make_sessions.py)".

Bulk inserts instead of one login() per user: 10,000 password hashes would take minutes; every
user shares one hash, and the sessions are exactly what login() stores.
"""
import os
from datetime import timedelta

from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.utils import timezone
from django.utils.crypto import get_random_string

count = int(os.environ["BENCH_SESSIONS"])
User = get_user_model()
proto = User(username="proto")
proto.set_password("bench-password")
users = User.objects.bulk_create(
    [User(username=f"bench{i}", password=proto.password) for i in range(count)], batch_size=1000
)
store = SessionStore()
expire = timezone.now() + timedelta(days=1)
rows, keys = [], []
for user in users:
    key = get_random_string(32, "abcdefghijklmnopqrstuvwxyz0123456789")
    data = {
        SESSION_KEY: str(user.pk),
        BACKEND_SESSION_KEY: "django.contrib.auth.backends.ModelBackend",
        HASH_SESSION_KEY: user.get_session_auth_hash(),
    }
    rows.append(Session(session_key=key, session_data=store.encode(data), expire_date=expire))
    keys.append(key)
Session.objects.bulk_create(rows, batch_size=1000)
with open(os.environ["BENCH_KEYS"], "w") as out:
    out.write("\n".join(keys))
print(f"{count} users and sessions")

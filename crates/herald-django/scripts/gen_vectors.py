"""Golden vectors for herald-django's unit tests, produced by the real Django (5.2.19).

Run with the compat venv from the workspace root:

    tests/compat/.venv/bin/python crates/herald-django/scripts/gen_vectors.py

It freezes time.time() at T so TimestampSigner output is reproducible, and prints one
`name = value` line per vector; src/signing.rs, src/session.rs and src/user.rs quote the
lines they use next to their literals.
"""
import json
from unittest import mock

from django.conf import settings

K = "django-insecure-test-secret-key"
OLD = "old-secret-key-before-rotation"
UNICODE_KEY = "ключ-секрет-🔑"
T = 1795634701  # b62 "1xWIc1", the spec's vector time

settings.configure(SECRET_KEY=K, SECRET_KEY_FALLBACKS=[OLD], USE_TZ=True)

import django  # noqa: E402

django.setup()

from django.contrib.auth.base_user import AbstractBaseUser  # noqa: E402
from django.contrib.sessions.backends.signed_cookies import SessionStore as CookieStore  # noqa: E402
from django.core import signing  # noqa: E402
from django.utils.crypto import salted_hmac  # noqa: E402

SESSION = {
    "_auth_user_id": "1",
    "_auth_user_backend": "django.contrib.auth.backends.ModelBackend",
    "_auth_user_hash": "0" * 64,
}


def out(name, value):
    print(f"{name} = {json.dumps(value, ensure_ascii=False)}")


with mock.patch("time.time", return_value=float(T)):
    out("b62", {str(n): signing.b62_encode(n) for n in (0, 1, 61, 62, -1, -62, T)})
    out("salted_hmac_hex", salted_hmac("herald.salt", "value", secret=K, algorithm="sha256").hexdigest())
    out("salted_hmac_unicode_key_hex",
        salted_hmac("herald.salt", "välue", secret=UNICODE_KEY, algorithm="sha256").hexdigest())
    out("signer_abc", signing.Signer().sign("abc"))
    out("signer_salted_value_with_colons", signing.Signer(salt="herald.test").sign("a:b:c"))
    out("signer_unicode_key", signing.Signer(key=UNICODE_KEY).sign("abc"))
    out("timestamp_signer_hello", signing.TimestampSigner().sign("hello"))
    out("dumps_u1", signing.dumps({"u": 1}))
    out("dumps_unicode_salt_x",
        signing.dumps({"é": "ünïcode", "n": [1, 2.5, None, True, False]}, salt="x"))
    out("dumps_compressed", signing.dumps({"k": "a" * 200}, compress=True))
    out("dumps_compress_not_worth_it", signing.dumps({"a": 1}, compress=True))
    out("dumps_old_key", signing.dumps({"rotated": True}, key=OLD))
    out("session_db", signing.dumps(SESSION, salt="django.contrib.sessions.SessionStore", compress=True))
    out("session_custom_store",
        signing.dumps(SESSION, salt="django.contrib.sessions.MyStore", compress=True))
    out("session_signed_cookie", signing.dumps(SESSION, salt=CookieStore.__module__, compress=True))
    class User:
        """A plain object borrowing AbstractBaseUser's real methods (the model is abstract)."""

        _get_session_auth_hash = AbstractBaseUser._get_session_auth_hash
        get_session_auth_hash = AbstractBaseUser.get_session_auth_hash
        get_session_auth_fallback_hash = AbstractBaseUser.get_session_auth_fallback_hash

        def __init__(self, password):
            self.password = password

    out("session_hash_pbkdf2", User("pbkdf2_sha256$870000$salt$hash=").get_session_auth_hash())
    out("session_hash_unusable", User("!unusablePasswordXYZ").get_session_auth_hash())
    out("session_hash_fallbacks",
        list(User("pbkdf2_sha256$870000$salt$hash=").get_session_auth_fallback_hash()))

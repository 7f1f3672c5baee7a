"""A SESSION_ENGINE whose store class has another name, as some projects do.

Django salts session data with "django.contrib.sessions." + the class's __qualname__, so this
engine signs with "django.contrib.sessions.MyStore" (herald-django: with_session_key_salt).
"""
from django.contrib.sessions.backends.db import SessionStore as DbStore


class MyStore(DbStore):
    pass


SessionStore = MyStore

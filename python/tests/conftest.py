"""Fixtures of the ``herald`` package's tests.

The Rust test that runs them (crates/herald-py/tests/py_package.rs) starts a real
``redis-server`` on an ephemeral port and passes its URL as ``HERALD_TEST_REDIS_URL``; each
test gets its own key prefix on it, so tests never see each other's keys.
"""

import os
import uuid

import pytest

# The wheel test (crates/herald-py/tests/py_wheel.rs) installs the built wheel into a directory
# of its own and runs these tests against it: make sure that is the `herald` they import, not
# the editable install or the source tree.
_EXPECTED = os.environ.get("HERALD_EXPECT_PACKAGE_DIR")
if _EXPECTED:
    import herald

    if not os.path.realpath(herald.__file__).startswith(os.path.realpath(_EXPECTED) + os.sep):
        raise RuntimeError(f"imported {herald.__file__}, not the wheel installed in {_EXPECTED}")


@pytest.fixture
def redis_url():
    url = os.environ.get("HERALD_TEST_REDIS_URL")
    if not url:
        pytest.fail("HERALD_TEST_REDIS_URL is not set: run these tests through cargo nextest")
    return url


@pytest.fixture
def prefix():
    """A key prefix of this test's own."""
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def hosts(redis_url):
    # redis-py 8's default socket_timeout (5 s) equals channels_redis's BZPOPMIN timeout, so an
    # idle channels_redis receive() times out with bare URLs (channels_redis#422).
    return [{"address": redis_url, "socket_timeout": None}]


@pytest.fixture
def sharded_hosts(redis_url):
    """Three shards: databases 1-3 of the test server."""
    return [{"address": f"{redis_url}/{db}", "socket_timeout": None} for db in (1, 2, 3)]


#: The key prefix of the Django project the tests configure (one per pytest process).
DJANGO_PREFIX = f"dj{uuid.uuid4().hex[:12]}"


@pytest.fixture
def django_settings(redis_url, tmp_path_factory):
    """A Django project switched to herald: ``herald.django`` installed (its URLs as the
    URLconf), ``herald.layers.RedisChannelLayer`` as the default layer, sessions and users in
    a migrated SQLite database (configured once per process)."""
    from django.conf import settings

    if not settings.configured:
        db = tmp_path_factory.mktemp("django") / "db.sqlite3"
        settings.configure(
            SECRET_KEY="herald-package-tests",
            INSTALLED_APPS=[
                "django.contrib.contenttypes",
                "django.contrib.auth",
                "django.contrib.sessions",
                "django.contrib.staticfiles",
                "channels",
                "herald.django",
            ],
            MIDDLEWARE=[
                "django.contrib.sessions.middleware.SessionMiddleware",
                "django.contrib.auth.middleware.AuthenticationMiddleware",
            ],
            ROOT_URLCONF="herald.django.urls",
            DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(db)}},
            ALLOWED_HOSTS=["testserver"],
            STATIC_URL="/static/",
            CHANNEL_LAYERS={
                "default": {
                    "BACKEND": "herald.layers.RedisChannelLayer",
                    "CONFIG": {
                        "hosts": [{"address": redis_url, "socket_timeout": None}],
                        "prefix": DJANGO_PREFIX,
                    },
                }
            },
        )
        import django
        from django.core.management import call_command

        django.setup()
        call_command("migrate", verbosity=0, interactive=False)
    return settings

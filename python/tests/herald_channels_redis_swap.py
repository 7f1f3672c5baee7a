"""pytest plugin: runs channels_redis 4.3.0's own test suite, unchanged, against herald.

Loaded with ``-p herald_channels_redis_swap`` from the unpacked channels_redis source
distribution (its setup.cfg supplies the pytest options). Before the test modules are
imported it puts herald's classes where they import channels_redis's from:

* ``channels_redis.core.RedisChannelLayer`` -> a subclass of ``herald.layers.RedisChannelLayer``
  that only moves the suite's fixed addresses (``localhost:6379`` and a Sentinel on
  ``localhost:26379``) to the servers the test run started on ephemeral ports
  (``HERALD_TEST_REDIS_URL``, ``HERALD_TEST_SENTINEL_PORT``);
* ``channels_redis.serializers.MsgPackSerializer`` / ``JSONSerializer`` -> herald's;
* ``channels_redis.utils._consistent_hash`` -> herald's.

The tests that inspect channels_redis internals are deselected, each with its reason
(``INTERNALS``), and the run fails if one of them no longer exists.
"""

import os
import re

import channels_redis.core
import channels_redis.serializers
import channels_redis.utils
import pytest

import herald.layers
from herald import _herald

_RECEIVE_BUFFER = (
    "inspects channel_layer.receive_buffer, channels_redis's per-loop asyncio queues; herald "
    "buffers received messages in Rust (bounded by `capacity` the same way, covered by "
    "herald-redis's layer_capacity tests)"
)
_REGISTRY = (
    "tests channels_redis's SerializersRegistry, which herald does not have: herald's "
    "serializer_format is 'msgpack' or 'json', no custom serializer classes"
)

#: Tests of channels_redis internals, not of the layer's behaviour: node id -> reason.
INTERNALS = {
    "tests/test_core.py::test_receive_buffer_respects_capacity": _RECEIVE_BUFFER,
    "tests/test_sentinel.py::test_receive_buffer_respects_capacity": _RECEIVE_BUFFER,
    "tests/test_serializers.py::test_refuse_to_register_bad_serializers": _REGISTRY,
    "tests/test_serializers.py::test_raise_error_for_unregistered_serializer": _REGISTRY,
    "tests/test_serializers.py::test_register_custom_serializer": _REGISTRY,
}

_REDIS_URL = os.environ.get("HERALD_TEST_REDIS_URL")
_SENTINEL_PORT = os.environ.get("HERALD_TEST_SENTINEL_PORT")
_LOCAL = re.compile(r"^redis://localhost:6379")


def _move_host(host):
    if isinstance(host, str) and _REDIS_URL:
        return _LOCAL.sub(_REDIS_URL, host)
    if isinstance(host, dict) and "sentinels" in host and _SENTINEL_PORT:
        host = dict(host)
        host["sentinels"] = [
            ("127.0.0.1", int(_SENTINEL_PORT)) if (h, p) == ("localhost", 26379) else (h, p)
            for h, p in host["sentinels"]
        ]
    return host


class SuiteLayer(herald.layers.RedisChannelLayer):
    """herald's layer, on the servers of this run instead of the suite's fixed addresses."""

    def __init__(self, hosts=None, *args, **kwargs):
        if not hosts and _REDIS_URL:
            hosts = [_REDIS_URL]
        elif hosts:
            hosts = [_move_host(h) for h in hosts]
        super().__init__(hosts, *args, **kwargs)


def _consistent_hash(value, ring_size):
    return _herald.consistent_hash(value, ring_size)


channels_redis.core.RedisChannelLayer = SuiteLayer
channels_redis.serializers.MsgPackSerializer = herald.layers.MsgPackSerializer
channels_redis.serializers.JSONSerializer = herald.layers.JSONSerializer
channels_redis.utils._consistent_hash = _consistent_hash


def _base_id(item):
    return item.nodeid.split("[", 1)[0]


def pytest_collection_modifyitems(config, items):
    selected, deselected, seen = [], [], set()
    for item in items:
        base = _base_id(item)
        if base in INTERNALS:
            deselected.append(item)
            seen.add(base)
        else:
            selected.append(item)
    collected_files = {_base_id(i).split("::")[0] for i in items}
    missing = [
        nodeid
        for nodeid in INTERNALS
        if nodeid.split("::")[0] in collected_files and nodeid not in seen
    ]
    if missing:
        raise pytest.UsageError(f"internals list names tests that do not exist: {missing}")
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = selected
    config._herald_internals = sorted({_base_id(i) for i in deselected})


def pytest_terminal_summary(terminalreporter, config):
    internals = getattr(config, "_herald_internals", [])
    if internals:
        terminalreporter.section("not run: channels_redis internals")
        for nodeid in internals:
            terminalreporter.write_line(f"{nodeid}: {INTERNALS[nodeid]}")
    terminalreporter.write_line(
        f"layer under test: {channels_redis.core.RedisChannelLayer.__mro__[1].__module__}"
        f".{channels_redis.core.RedisChannelLayer.__mro__[1].__name__}"
    )

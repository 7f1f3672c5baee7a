"""A drop-in ``CHANNEL_LAYERS`` backend: ``channels_redis.core.RedisChannelLayer`` in Rust.

Switch a Django project by changing only the backend::

    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "herald.layers.RedisChannelLayer",
            "CONFIG": {"hosts": [("127.0.0.1", 6379)]},
        }
    }

The constructor takes channels_redis 4.3.0's arguments with its defaults, the coroutines are
the Channels layer API (``send``, ``receive``, ``new_channel``, ``group_add``,
``group_discard``, ``group_send``, ``flush``), and what goes to Redis is channels_redis's wire
format byte for byte, so processes on channels_redis, on this backend and ``herald serve``
share one Redis during a rolling switch.

The work is done by herald-redis on a tokio runtime that belongs to no event loop: a layer
works from any loop, ``async_to_sync(layer.group_send)`` can be called again and again, and
``group_send_sync``/``send_sync`` need no loop at all (Celery tasks, management commands).

Differences from channels_redis, each deliberate:

* ``send`` to a process-specific channel writes to the shard of the channel's non-local part,
  where its receiver listens (channels_redis hashes the full name, which loses messages with
  two or more shards); this backend reads both places, so channels_redis senders still reach
  it.
* Custom serializers are not supported: ``serializer_format`` is ``"msgpack"`` or ``"json"``.
* Redis connection options other than the address, db, username and password in a host dict
  (``socket_timeout``, ``retry_on_timeout``, ...) are accepted and not used; herald-redis has
  its own timeouts and reconnects.
* Groups that this layer's own channels joined are re-added while the channel lives, so a
  Redis restart or a long-lived consumer does not silently lose them.
"""

import asyncio
import logging
import os
import weakref

from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer

from . import _herald

__all__ = [
    "ChannelFull",
    "JSONSerializer",
    "MsgPackSerializer",
    "RedisChannelLayer",
    "RedisError",
    "decode_hosts",
]

logger = logging.getLogger(__name__)

#: Raised when Redis refuses a command or cannot be reached (a ``ConnectionError``).
RedisError = _herald.RedisError


_bridges = weakref.WeakKeyDictionary()
_last_bridge = (None, None)

# Every layer of this process, so a forked child can rebuild them (below).
_layers = weakref.WeakSet()
# The parent's Rust layers in a forked child: kept, never dropped (dropping one would wait
# for threads that only the parent has).
_orphans = []


def _after_fork_in_child():
    """A forked child (Celery's prefork pool, gunicorn ``--preload``) has none of the parent's
    threads: start a new runtime there and rebuild every layer on it."""
    global _last_bridge
    _herald._after_fork()
    _bridges.clear()
    _last_bridge = (None, None)
    for layer in list(_layers):
        _orphans.append(layer._core)
        layer._build()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _bridge(loop):
    """The ``_herald.Bridge`` that operations started on ``loop`` complete through: a pipe the
    loop watches, or (for loops that cannot watch file descriptors) a thread that calls
    ``loop.call_soon_threadsafe``."""
    global _last_bridge
    last_loop, bridge = _last_bridge
    if last_loop is loop:
        return bridge
    bridge = _bridges.get(loop)
    if bridge is None:
        bridge = _herald.Bridge()
        try:
            fd = bridge.fileno()
            os.set_blocking(fd, False)
            loop.add_reader(fd, bridge.drain)
        except NotImplementedError:
            bridge.use_completer(loop)
        _bridges[loop] = bridge
    _last_bridge = (loop, bridge)
    return bridge


def _running():
    """``(bridge, future)`` for an operation awaited on the running loop."""
    loop = asyncio.get_running_loop()
    return _bridge(loop), loop.create_future()


def decode_hosts(hosts):
    """The ``hosts`` argument as a list of host dicts, as channels_redis's ``decode_hosts``.

    ``None`` or empty means ``redis://localhost:6379``; each entry is a URL string (or
    ``bytes``), a ``(host, port)`` tuple or list, or a dict (``{"address": url, ...}``,
    ``{"host": ..., "port": ...}`` or a Sentinel dict with ``master_name`` and ``sentinels``).
    """
    if not hosts:
        return [{"address": "redis://localhost:6379"}]
    if isinstance(hosts, (str, bytes)):
        raise ValueError(
            "You must pass a list of Redis hosts, even if there is only one."
        )
    result = []
    for entry in hosts:
        if isinstance(entry, dict):
            result.append(entry)
        elif isinstance(entry, (tuple, list)):
            result.append({"host": entry[0], "port": entry[1]})
        elif isinstance(entry, bytes):
            result.append({"address": entry.decode("utf-8")})
        else:
            result.append({"address": entry})
    return result


def _secrets(symmetric_encryption_keys):
    if not symmetric_encryption_keys:
        return []
    if isinstance(symmetric_encryption_keys, (str, bytes)):
        raise ValueError("symmetric_encryption_keys must be a list of possible keys")
    return [k.encode("utf-8") if isinstance(k, str) else bytes(k) for k in symmetric_encryption_keys]


class _Serializer:
    """channels_redis's serializer interface on herald-redis's codec."""

    format = None

    def __init__(self, symmetric_encryption_keys=None, random_prefix_length=0, expiry=None):
        self.random_prefix_length = random_prefix_length
        self.expiry = expiry
        self._codec = _herald.Serializer(
            self.format,
            max(0, random_prefix_length),
            _secrets(symmetric_encryption_keys),
            None if expiry is None else int(expiry) + 10,
        )

    def serialize(self, message):
        """The bytes stored in Redis for ``message``."""
        return self._codec.serialize(message)

    def deserialize(self, message):
        """The message stored as ``message`` (bytes)."""
        return self._codec.deserialize(message)


class MsgPackSerializer(_Serializer):
    """``channels_redis.serializers.MsgPackSerializer``: msgpack bodies."""

    format = "msgpack"


class JSONSerializer(_Serializer):
    """``channels_redis.serializers.JSONSerializer``: ``json.dumps`` bodies."""

    format = "json"


class RedisChannelLayer(BaseChannelLayer):
    """Redis channel layer, wire-compatible with ``channels_redis.core.RedisChannelLayer``.

    Arguments and defaults are channels_redis 4.3.0's.
    """

    brpop_timeout = 5

    extensions = ["groups", "flush"]

    def __init__(
        self,
        hosts=None,
        prefix="asgi",
        expiry=60,
        group_expiry=86400,
        capacity=100,
        channel_capacity=None,
        symmetric_encryption_keys=None,
        random_prefix_length=12,
        serializer_format="msgpack",
    ):
        self.expiry = expiry
        self.group_expiry = group_expiry
        self.capacity = capacity
        self.channel_capacity = self.compile_capacities(channel_capacity or {})
        self.prefix = prefix
        assert isinstance(self.prefix, str), "Prefix must be unicode"
        self.hosts = decode_hosts(hosts)
        self.ring_size = len(self.hosts)
        self._arguments = (
            self.hosts,
            prefix,
            float(expiry),
            float(group_expiry),
            capacity,
            list((channel_capacity or {}).items()),
            _secrets(symmetric_encryption_keys),
            max(0, random_prefix_length),
            serializer_format,
        )
        self._build()
        _layers.add(self)

    def _build(self):
        # A new client prefix too: a forked child must not receive on its parent's channels.
        self._core = _herald.Layer(*self._arguments)
        self._serializer = self._core.serializer()
        self.client_prefix = self._core.client_prefix

    # Channel layer API

    async def send(self, channel, message):
        """Sends ``message`` (a dict) to ``channel``.

        Raises ``ChannelFull`` if the channel is at capacity, ``TypeError`` for a bad name or
        a value msgpack cannot carry, ``AssertionError`` if ``message`` is not a dict or
        holds ``__asgi_channel__``.
        """
        bridge, future = _running()
        self._core.send(bridge, future, channel, message)
        await future

    def send_sync(self, channel, message):
        """``send`` for sync code: blocks until Redis has stored the message; no event loop."""
        self._core.send_sync(channel, message)

    async def receive(self, channel):
        """The next message on ``channel``.

        Cancelling the caller leaves the next message in place for the next ``receive``.
        """
        self.require_valid_channel_name(channel)
        if "!" in channel:
            assert self.non_local_name(channel).endswith(
                self.client_prefix + "!"
            ), "Wrong client prefix"
        bridge, future = _running()
        operation = self._core.receive(bridge, future, channel)
        try:
            return await future
        except asyncio.CancelledError:
            operation.cancel()
            raise

    async def new_channel(self, prefix="specific"):
        """A new process-specific channel name that this layer receives on."""
        return self._core.new_channel(prefix)

    # Flush extension

    async def flush(self):
        """Deletes all messages and groups under this layer's prefix, on every shard."""
        bridge, future = _running()
        self._core.flush(bridge, future)
        await future

    async def close_pools(self):
        """Kept for channels_redis callers. Connections belong to no event loop here, so
        there is nothing to close per loop."""

    async def close(self):
        """Kept for callers that close layers; connections are shared and stay open."""

    async def wait_received(self):
        """Kept for channels_redis callers; nothing runs in the background per receive."""

    # Groups extension

    async def group_add(self, group, channel):
        """Adds ``channel`` to ``group`` (refreshing its membership time)."""
        bridge, future = _running()
        self._core.group_add(bridge, future, group, channel)
        await future

    async def group_discard(self, group, channel):
        """Removes ``channel`` from ``group``."""
        bridge, future = _running()
        self._core.group_discard(bridge, future, group, channel)
        await future

    async def group_send(self, group, message):
        """Sends ``message`` to every channel of ``group``; full channels are skipped and
        counted in an INFO log line, as channels_redis does."""
        bridge, future = _running()
        self._core.group_send(bridge, future, group, message)
        members, over = await future
        if over:
            logger.info(
                "%s of %s channels over capacity in group %s", over, members, group
            )

    def group_send_sync(self, group, message):
        """``group_send`` for sync code: blocks until Redis has stored the message for every
        member; no event loop. Returns the number of members."""
        members, over = self._core.group_send_sync(group, message)
        if over:
            logger.info(
                "%s of %s channels over capacity in group %s", over, members, group
            )
        return members

    # Helpers channels_redis has

    def _group_key(self, group):
        return self._core.group_key(group)

    def consistent_hash(self, value):
        """The shard of ``value`` (channels_redis's ``_consistent_hash``)."""
        return _herald.consistent_hash(value, self.ring_size)

    def serialize(self, message):
        """The bytes this layer stores for ``message``."""
        return self._serializer.serialize(message)

    def deserialize(self, message):
        """The message stored as ``message``."""
        return self._serializer.deserialize(message)

    def close_channel(self, channel):
        """Forgets a local channel and the messages buffered for it (herald extension)."""
        self._core.close_channel(channel)

    def __str__(self):
        return f"{self.__class__.__name__}(hosts={self.hosts})"

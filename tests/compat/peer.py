#!/usr/bin/env python3
"""A command-line peer that drives the real Python channels_redis for Herald's interop tests.

Run it with the pinned venv (tests/compat/setup.sh builds it):

    .venv/bin/python peer.py [--layer core|pubsub|herald] [--config JSON] ACTION [ARGS]

The layer is built the way a Django project builds it: ``settings.CHANNEL_LAYERS`` holds
``{"BACKEND": ..., "CONFIG": <--config>}`` and ``channels.layers.get_channel_layer()`` makes it,
i.e. ``RedisChannelLayer(**config)`` (``--layer core``, the default) or
``RedisPubSubChannelLayer(**config)`` (``--layer pubsub``), or herald's own drop-in
``herald.layers.RedisChannelLayer(**config)`` (``--layer herald``). CONFIG keys are passed verbatim, so a
key channels_redis does not know fails the way it fails in a Django project.

Hosts and redis-py 8: redis-py 8 defaults ``socket_timeout`` to 5 s, the same as the
``BZPOPMIN ... 5`` of channels_redis 4.3.0's ``receive()``, so with bare URL hosts an idle
``receive()`` raises ``redis.exceptions.TimeoutError`` after ~5 s.
The Rust tests therefore pass hosts as ``{"address": URL, "socket_timeout": null}``, the form a
Django project on these pins needs too (channels_redis forwards extra keys to redis-py).

Actions
-------
One-shot (one layer, one operation, one JSON line on stdout, then exit). ``send``,
``group_add``, ``group_discard`` and ``group_send`` go through ``async_to_sync`` exactly like the
sync code (views, Celery tasks) of the user guide:

    new_channel [--prefix P]          -> {"ok": true, "result": "<name>"}
    send CHANNEL MESSAGE              -> {"ok": true, "result": null}
    group_add GROUP CHANNEL
    group_discard GROUP CHANNEL
    group_send GROUP MESSAGE
    receive CHANNEL [--timeout S]     -> {"ok": true, "result": MESSAGE}
    flush

    A failure is {"ok": false, "error": "<exception class>", "detail": "<str(exc)>"}, e.g.
    "ChannelFull"; a receive that times out is {"ok": false, "error": "Timeout"}. Every reply
    also carries "logs": the channels_redis log records emitted during the call (e.g. the INFO
    "1 of 1 channels over capacity in group g" of an over-capacity group_send).

Long-running:

    listen [--channels N] [--prefix P] [--groups g1,g2] [--general NAME ...] [--count K]
        Creates N channels with new_channel (default 1), adds each to every group, prints
        {"event": "ready", "channels": [...], "general": [...]} and then one line
        {"event": "message", "channel": C, "message": MESSAGE} per received message, for the
        created channels and for the general channels named with --general. Exits after K
        messages (if given) or when stdin reaches EOF (so a dead parent never leaves it behind).

    repl
        Reads one JSON command per stdin line and answers one JSON line per command, all on one
        event loop and one layer instance (so a channel made by new_channel can be received on):
        {"op": "new_channel", "prefix": P?}, {"op": "send", "channel": C, "message": M},
        {"op": "receive", "channel": C, "timeout": S?}, {"op": "group_add"|"group_discard",
        "group": G, "channel": C}, {"op": "group_send", "group": G, "message": M},
        {"op": "flush"}, {"op": "serialize", "message": M} (result: {"$bytes": hex}),
        {"op": "deserialize", "data": {"$bytes": hex}}. Replies have the one-shot shape.

Tagged JSON encoding of values
------------------------------
JSON cannot tell bytes from str, floats from ints or tuples from lists, so MESSAGE (an argument
or a reply) uses this encoding, in both directions:

* null, true/false, strings, lists and objects map to None, bool, str, list and dict.
* JSON integers are Python ints (exact at any width). An int outside [-2**63, 2**64) is written
  as {"$int": "<decimal>"} so a reader with 64-bit JSON numbers cannot round it; input accepts
  both forms.
* Floats are always {"$float": "<repr>"} (shortest round-trip text: "1.5", "1e+300", "nan",
  "inf", "-inf", "-0.0"), so 1.0 never turns into 1 and no decimal parser can round. Bare JSON
  numbers with a fraction or exponent are accepted on input as floats.
* bytes are {"$bytes": "<lowercase hex>"}.
* A tuple is {"$tuple": [...]} (input only: msgpack and JSON turn tuples into lists, so the
  output never contains one).
* A dict whose only key starts with "$" is wrapped as {"$map": {...}} so it cannot be mistaken
  for a tag; a dict with a non-str key (e.g. a bytes key from msgpack) is
  {"$items": [[KEY, VALUE], ...]}.
* Any other single-key object whose key starts with "$" is an error (catches typos).
"""

import argparse
import asyncio
import json
import logging
import sys
import threading

INT_MIN = -(2**63)
INT_END = 2**64

BACKENDS = {
    "core": "channels_redis.core.RedisChannelLayer",
    "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
    # The `herald` package (python/), built into the venv by scripts/test.sh.
    "herald": "herald.layers.RedisChannelLayer",
}


# ---------------------------------------------------------------------------------------------
# Tagged JSON
# ---------------------------------------------------------------------------------------------


def decode(value):
    """Tagged JSON -> Python value."""
    if isinstance(value, dict):
        if len(value) == 1:
            ((key, inner),) = value.items()
            if key.startswith("$"):
                return _decode_tag(key, inner)
        return {key: decode(inner) for key, inner in value.items()}
    if isinstance(value, list):
        return [decode(item) for item in value]
    return value


def _decode_tag(tag, inner):
    if tag == "$bytes":
        return bytes.fromhex(inner)
    if tag == "$float":
        return float(inner)
    if tag == "$int":
        return int(inner)
    if tag == "$tuple":
        return tuple(decode(item) for item in inner)
    if tag == "$map":
        return {key: decode(item) for key, item in inner.items()}
    if tag == "$items":
        return {decode(key): decode(item) for key, item in inner}
    raise ValueError(f"unknown tag {tag!r}")


def encode(value):
    """Python value -> tagged JSON."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        if INT_MIN <= value < INT_END:
            return value
        return {"$int": str(value)}
    if isinstance(value, float):
        return {"$float": repr(value)}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$bytes": bytes(value).hex()}
    if isinstance(value, tuple):
        return {"$tuple": [encode(item) for item in value]}
    if isinstance(value, list):
        return [encode(item) for item in value]
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            return {"$items": [[encode(k), encode(v)] for k, v in value.items()]}
        body = {key: encode(item) for key, item in value.items()}
        if len(body) == 1 and next(iter(body)).startswith("$"):
            return {"$map": body}
        return body
    raise TypeError(f"cannot encode {type(value).__name__}")


# ---------------------------------------------------------------------------------------------
# Output and log capture
# ---------------------------------------------------------------------------------------------


def emit(obj):
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


class Captured(logging.Handler):
    """Collects channels_redis log records so a reply can report them."""

    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(
            {"logger": record.name, "level": record.levelname, "message": record.getMessage()}
        )

    def take(self):
        records, self.records = self.records, []
        return records


CAPTURE = Captured()


def ok(result):
    return {"ok": True, "result": encode(result), "logs": CAPTURE.take()}


def failed(exc):
    return {
        "ok": False,
        "error": type(exc).__name__,
        "detail": str(exc),
        "logs": CAPTURE.take(),
    }


def timed_out():
    return {"ok": False, "error": "Timeout", "detail": "", "logs": CAPTURE.take()}


# ---------------------------------------------------------------------------------------------
# Layer construction, the Django way
# ---------------------------------------------------------------------------------------------


def make_layer(kind, config):
    from django.conf import settings

    settings.configure(
        CHANNEL_LAYERS={"default": {"BACKEND": BACKENDS[kind], "CONFIG": config}},
    )
    from channels.layers import get_channel_layer

    return get_channel_layer()


# ---------------------------------------------------------------------------------------------
# Actions
# ---------------------------------------------------------------------------------------------


def one_shot(layer, args):
    from asgiref.sync import async_to_sync

    action = args.action
    if action == "new_channel":
        return ok(async_to_sync(new_channel)(layer, args.prefix))
    if action == "send":
        return ok(async_to_sync(layer.send)(args.channel, decode(json.loads(args.message))))
    if action == "group_add":
        return ok(async_to_sync(layer.group_add)(args.group, args.channel))
    if action == "group_discard":
        return ok(async_to_sync(layer.group_discard)(args.group, args.channel))
    if action == "group_send":
        return ok(async_to_sync(layer.group_send)(args.group, decode(json.loads(args.message))))
    if action == "flush":
        return ok(async_to_sync(layer.flush)())
    if action == "receive":

        async def receive():
            try:
                return ok(await asyncio.wait_for(layer.receive(args.channel), args.timeout))
            except asyncio.TimeoutError:
                return timed_out()

        return asyncio.run(receive())
    raise ValueError(f"unknown action {action}")


async def listen(layer, args):
    groups = [g for g in args.groups.split(",") if g] if args.groups else []
    channels = [await new_channel(layer, args.prefix) for _ in range(args.channels)]
    for channel in channels:
        for group in groups:
            await layer.group_add(group, channel)
    names = channels + list(args.general)
    inbox = asyncio.Queue()

    async def pump(name):
        while True:
            message = await layer.receive(name)
            await inbox.put((name, message))

    pumps = [asyncio.ensure_future(pump(name)) for name in names]
    stdin_closed = asyncio.ensure_future(wait_for_eof())
    emit({"event": "ready", "channels": channels, "general": list(args.general)})
    received = 0
    try:
        while args.count is None or received < args.count:
            getter = asyncio.ensure_future(inbox.get())
            done, _ = await asyncio.wait(
                [getter, stdin_closed, *pumps], return_when=asyncio.FIRST_COMPLETED
            )
            if getter not in done:
                getter.cancel()
                for pump_task in pumps:
                    if pump_task.done() and pump_task.exception() is not None:
                        exc = pump_task.exception()
                        emit({"event": "error", "error": type(exc).__name__, "detail": str(exc)})
                        return 1
                if stdin_closed in done:
                    return 0
                continue
            name, message = getter.result()
            emit({"event": "message", "channel": name, "message": encode(message)})
            received += 1
        return 0
    finally:
        for task in [*pumps, stdin_closed]:
            task.cancel()
        await asyncio.gather(*pumps, stdin_closed, return_exceptions=True)


async def new_channel(layer, prefix):
    # Without a prefix, each backend's own default applies ("specific" for the core layer,
    # "specific." for the pubsub one), as when a consumer calls new_channel().
    if prefix is None:
        return await layer.new_channel()
    return await layer.new_channel(prefix)


def stdin_lines():
    """An asyncio.Queue fed with stdin's lines, then None at EOF.

    A daemon thread blocks on stdin so the event loop never does, and it cannot keep the
    process alive at exit (an executor thread would: asyncio.run waits for it).
    """
    loop = asyncio.get_running_loop()
    queue = asyncio.Queue()

    def put(item):
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop is already closed
            pass

    def pump():
        for line in sys.stdin:
            put(line)
        put(None)

    threading.Thread(target=pump, daemon=True).start()
    return queue


async def wait_for_eof():
    # EOF on stdin means the parent went away.
    lines = stdin_lines()
    while await lines.get() is not None:
        pass


async def repl(layer):
    lines = stdin_lines()
    while True:
        line = await lines.get()
        if line is None:
            return 0
        if not line.strip():
            continue
        emit(await repl_command(layer, json.loads(line)))


async def repl_command(layer, cmd):
    op = cmd.get("op")
    try:
        if op == "new_channel":
            return ok(await new_channel(layer, cmd.get("prefix")))
        if op == "send":
            return ok(await layer.send(cmd["channel"], decode(cmd["message"])))
        if op == "receive":
            try:
                message = await asyncio.wait_for(
                    layer.receive(cmd["channel"]), cmd.get("timeout", 5)
                )
            except asyncio.TimeoutError:
                return timed_out()
            return ok(message)
        if op == "group_add":
            return ok(await layer.group_add(cmd["group"], cmd["channel"]))
        if op == "group_discard":
            return ok(await layer.group_discard(cmd["group"], cmd["channel"]))
        if op == "group_send":
            return ok(await layer.group_send(cmd["group"], decode(cmd["message"])))
        if op == "flush":
            return ok(await layer.flush())
        if op == "serialize":
            return ok(layer.serialize(decode(cmd["message"])))
        if op == "deserialize":
            return ok(layer.deserialize(decode(cmd["data"])))
        raise ValueError(f"unknown op {op!r}")
    except Exception as exc:  # reported to the caller, who asserts on the class name
        return failed(exc)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layer", choices=sorted(BACKENDS), default="core")
    parser.add_argument("--config", default="{}", help="the CHANNEL_LAYERS CONFIG dict, as JSON")
    sub = parser.add_subparsers(dest="action", required=True)
    p = sub.add_parser("new_channel")
    p.add_argument("--prefix", default=None)
    p = sub.add_parser("send")
    p.add_argument("channel")
    p.add_argument("message")
    for name in ("group_add", "group_discard"):
        p = sub.add_parser(name)
        p.add_argument("group")
        p.add_argument("channel")
    p = sub.add_parser("group_send")
    p.add_argument("group")
    p.add_argument("message")
    p = sub.add_parser("receive")
    p.add_argument("channel")
    p.add_argument("--timeout", type=float, default=5.0)
    sub.add_parser("flush")
    p = sub.add_parser("listen")
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--prefix", default=None)
    p.add_argument("--groups", default="")
    p.add_argument("--general", action="append", default=[])
    p.add_argument("--count", type=int, default=None)
    sub.add_parser("repl")
    return parser.parse_args(argv)


def main(argv):
    args = parse_args(argv)
    logging.getLogger("channels_redis").addHandler(CAPTURE)
    logging.getLogger("channels_redis").setLevel(logging.DEBUG)
    # Anything else (and a copy of the above) goes to stderr for the test's failure output.
    logging.basicConfig(stream=sys.stderr, level=logging.INFO)
    layer = make_layer(args.layer, json.loads(args.config))
    if args.action == "listen":
        return asyncio.run(listen(layer, args))
    if args.action == "repl":
        return asyncio.run(repl(layer))
    try:
        reply = one_shot(layer, args)
    except Exception as exc:
        reply = failed(exc)
    emit(reply)
    return 0 if reply["ok"] else 3


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

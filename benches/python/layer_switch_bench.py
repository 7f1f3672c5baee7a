"""The Python sender side by side: channels_redis 4.3.0 against herald.layers, one run, one Redis.

What a Django process pays per message when it switches only ``BACKEND``. Run with the compat
venv (the herald package built with ``maturin develop --release``; a dev build is several times
slower) against a redis-server started by hand:

    tests/compat/.venv/bin/python benches/python/layer_switch_bench.py redis://127.0.0.1:PORT [ROUNDS]

For each layer class, with the same settings (capacity raised so nothing is refused):

* ``group_send`` to a 1-member group and ``send`` to a process-specific channel, awaited one
  after the other and 64 at a time (``asyncio.gather``), while a consumer on the same layer
  receives everything (as a Daphne worker would);
* ``async_to_sync(layer.group_send)`` one after the other, as Django views and Celery tasks
  call it (a fresh event loop per call);
* herald only: ``group_send_sync``, which needs no event loop.

The layers alternate, ``ROUNDS`` times (default 3), so both see the same machine load; the
best round of each is reported, then ratios. Output: one line per measurement
``<layer> <what> <ops> <seconds> <ops/s>``, then a Markdown table.
"""

import asyncio
import statistics
import sys
import time

from asgiref.sync import async_to_sync
from channels_redis.core import RedisChannelLayer as PythonLayer

from herald.layers import RedisChannelLayer as HeraldLayer

URL = sys.argv[1] if len(sys.argv) > 1 else "redis://127.0.0.1:6379"
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
SEQUENTIAL = 2000
CONCURRENT_ROUNDS = 40
IN_FLIGHT = 64
SYNC_CALLS = 500

MESSAGE = {
    "type": "user.message",
    "message": "Your report is ready: quarterly-sales.pdf",
    "id": 123456,
    "ratio": 0.75,
    "meta": {"sender": "amadmin", "priority": 2},
}

LAYERS = {"channels_redis": PythonLayer, "herald": HeraldLayer}
RESULTS = {}  # (layer, what) -> [ops/s per round]


def record(layer, what, ops, seconds):
    rate = ops / seconds
    RESULTS.setdefault((layer, what), []).append(rate)
    print(f"{layer} {what} {ops} {seconds:.3f} {rate:.0f}", flush=True)


def make(name):
    # redis-py 8's socket_timeout equals the BZPOPMIN timeout (channels_redis#422).
    hosts = [{"address": URL, "socket_timeout": None}]
    return LAYERS[name](hosts=hosts, prefix=f"bench{name[:3]}", capacity=100_000)


async def consume(layer, channel, expected):
    for _ in range(expected):
        await layer.receive(channel)


async def async_ops(name):
    layer = make(name)
    channel = await layer.new_channel()
    await layer.group_add("bench-group", channel)
    total = 2 * (SEQUENTIAL + CONCURRENT_ROUNDS * IN_FLIGHT)
    consumer = asyncio.create_task(consume(layer, channel, total))

    start = time.perf_counter()
    for _ in range(SEQUENTIAL):
        await layer.group_send("bench-group", MESSAGE)
    record(name, "group_send_sequential", SEQUENTIAL, time.perf_counter() - start)

    start = time.perf_counter()
    for _ in range(CONCURRENT_ROUNDS):
        await asyncio.gather(*(layer.group_send("bench-group", MESSAGE) for _ in range(IN_FLIGHT)))
    record(name, "group_send_64_in_flight", CONCURRENT_ROUNDS * IN_FLIGHT, time.perf_counter() - start)

    start = time.perf_counter()
    for _ in range(SEQUENTIAL):
        await layer.send(channel, MESSAGE)
    record(name, "send_sequential", SEQUENTIAL, time.perf_counter() - start)

    start = time.perf_counter()
    for _ in range(CONCURRENT_ROUNDS):
        await asyncio.gather(*(layer.send(channel, MESSAGE) for _ in range(IN_FLIGHT)))
    record(name, "send_64_in_flight", CONCURRENT_ROUNDS * IN_FLIGHT, time.perf_counter() - start)

    await asyncio.wait_for(consumer, 60)
    await layer.flush()


def sync_ops(name):
    layer = make(name)
    send = async_to_sync(layer.group_send)
    start = time.perf_counter()
    for _ in range(SYNC_CALLS):
        send("bench-nobody", MESSAGE)
    record(name, "async_to_sync_group_send", SYNC_CALLS, time.perf_counter() - start)
    if name == "herald":
        start = time.perf_counter()
        for _ in range(SEQUENTIAL):
            layer.group_send_sync("bench-nobody", MESSAGE)
        record(name, "group_send_sync", SEQUENTIAL, time.perf_counter() - start)


def main():
    for _ in range(ROUNDS):
        for name in LAYERS:
            asyncio.run(async_ops(name))
            sync_ops(name)
    whats = [
        "group_send_sequential",
        "group_send_64_in_flight",
        "send_sequential",
        "send_64_in_flight",
        "async_to_sync_group_send",
    ]
    print()
    print("| calls/s (best of %d rounds; median) | channels_redis | herald.layers | herald / channels_redis |" % ROUNDS)
    print("|---|---:|---:|---:|")
    for what in whats:
        py = RESULTS[("channels_redis", what)]
        rs = RESULTS[("herald", what)]
        print(
            f"| {what} | {max(py):,.0f} ({statistics.median(py):,.0f}) "
            f"| {max(rs):,.0f} ({statistics.median(rs):,.0f}) | {max(rs) / max(py):.1f}× |"
        )
    rs = RESULTS[("herald", "group_send_sync")]
    print(f"| group_send_sync (herald only, no event loop) | – | {max(rs):,.0f} ({statistics.median(rs):,.0f}) | – |")


if __name__ == "__main__":
    main()

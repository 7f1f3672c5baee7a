"""Python channels_redis 4.3.0 side of docs/benchmarks.md "Channel layer".

Run with the compat venv against the same redis-server as the Rust bench:

    tests/compat/.venv/bin/python benches/python/channel_layer_bench.py redis://127.0.0.1:PORT

Measures, with default layer settings (prefix "benchpy"):
* receive drain: N messages for one local channel are put in the process key first (with the
  layer's own serializer, as its send() would store them), then timed: N awaited receive()s.
* group_send to a 1-member group: sequential awaits, and 64 at a time with asyncio.gather.
  The member's messages are drained by a concurrent receive loop, as a consumer would.
Prints one line per measurement: "<name> <ops> <seconds> <ops/s>".
"""

import asyncio
import sys
import time

from channels_redis.core import RedisChannelLayer

URL = sys.argv[1] if len(sys.argv) > 1 else "redis://127.0.0.1:6379"
DRAIN = 5000
SEQUENTIAL = 2000
CONCURRENT_ROUNDS = 40

MESSAGE = {
    "type": "user.message",
    "message": "Your report is ready: quarterly-sales.pdf",
    "id": 123456,
    "ratio": 0.75,
    "meta": {"sender": "amadmin", "priority": 2},
}


def report(name, ops, seconds):
    print(f"{name} {ops} {seconds:.3f} {ops / seconds:.0f}", flush=True)


async def receive_drain():
    layer = RedisChannelLayer(hosts=[URL], prefix="benchpy", capacity=DRAIN + 10)
    channel = await layer.new_channel()
    key = layer.prefix + layer.non_local_name(channel)
    conn = layer.connection(layer.consistent_hash(key))
    base = time.time()
    pipe = conn.pipeline(transaction=False)
    for i in range(DRAIN):
        member = layer.serialize({**MESSAGE, "__asgi_channel__": channel})
        pipe.zadd(key, {member: base + i * 1e-6})
    await pipe.execute()
    start = time.perf_counter()
    for _ in range(DRAIN):
        await layer.receive(channel)
    report("python_receive_drain", DRAIN, time.perf_counter() - start)
    await layer.flush()


async def group_send():
    layer = RedisChannelLayer(hosts=[URL], prefix="benchpy")
    channel = await layer.new_channel()
    await layer.group_add("bench-group", channel)

    async def consume():
        while True:
            await layer.receive(channel)

    consumer = asyncio.create_task(consume())
    start = time.perf_counter()
    for _ in range(SEQUENTIAL):
        await layer.group_send("bench-group", MESSAGE)
    report("python_group_send_sequential", SEQUENTIAL, time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(CONCURRENT_ROUNDS):
        await asyncio.gather(*(layer.group_send("bench-group", MESSAGE) for _ in range(64)))
    report("python_group_send_64_concurrent", CONCURRENT_ROUNDS * 64, time.perf_counter() - start)
    consumer.cancel()
    try:
        await consumer
    except (asyncio.CancelledError, Exception):
        # redis-py turns the cancelled BZPOPMIN into a TimeoutError.
        pass
    await layer.flush()


async def main():
    await receive_drain()
    await group_send()


asyncio.run(main())

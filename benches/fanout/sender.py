"""Python senders for the fan-out benchmark: channels_redis group_send, as Django code does it.

Every message is a guide-style ``user.message`` with a ``sent_at`` float Unix timestamp, which
herald-load turns into delivery latency. The layer comes from the baseline site's settings
(CHANNEL_LAYERS from REDIS_URL), exactly like ``OptsIO.ws_utils`` gets it.

    sender.py broadcast --group user_bcast00000 --count 100
    sender.py per-user  --users-file users.txt --per-user 10 [--procs 2] [--concurrency 16]
    sender.py paced     --users-file users.txt --rate 1000 --duration 10 [--procs 1]

``--style sync`` sends each message through ``async_to_sync(layer.group_send)`` like
``ws_utils.ws_send_message`` (a short-lived event loop and Redis connection per call);
the default ``async`` style awaits group_send on one long-lived loop, Python's fastest path.
Prints one JSON line: mode, sent, elapsed_s, rate.
"""
import argparse
import asyncio
import json
import multiprocessing
import os
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "site"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchsite.settings")

import django  # noqa: E402

django.setup()

from asgiref.sync import async_to_sync  # noqa: E402
from channels.layers import get_channel_layer  # noqa: E402


def message(username, seq):
    return {
        "type": "user.message",
        "username": username,
        "message": "bench",
        "data": {"seq": seq},
        "timestamp": datetime.now().isoformat(),
        "sent_at": time.time(),
    }


def read_users(path):
    return [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]


# channels_redis' Redis pool has 100 connections and raises MaxConnectionsError beyond that, so
# no sender keeps more group_sends in flight than this.
MAX_IN_FLIGHT = 64


# Seconds from each message's sent_at to its group_send returning (the message is in Redis by
# then): the part of the measured latency spent in the Python sender, before any server sees it.
SEND_TIMES = []


async def group_send(layer, style, group, msg):
    """One group_send; returns 1 on success, 0 on an error (counted, not fatal)."""
    try:
        if style == "sync":
            await asyncio.to_thread(async_to_sync(layer.group_send), group, msg)
        else:
            await layer.group_send(group, msg)
        SEND_TIMES.append(time.time() - msg["sent_at"])
        return 1
    except Exception as exc:  # noqa: BLE001 - a failed send is a measurement, not a crash
        print(f"group_send failed: {exc!r}", file=sys.stderr)
        return 0


async def send_all(jobs, concurrency, style):
    """Send (group, username, seq) jobs with at most `concurrency` group_sends in flight."""
    layer = get_channel_layer()
    queue = list(reversed(jobs))
    ok = 0

    async def worker():
        nonlocal ok
        while queue:
            group, username, seq = queue.pop()
            # Await first: `ok += await ...` would read `ok` before the await and lose the
            # other workers' increments.
            done = await group_send(layer, style, group, message(username, seq))
            ok += done

    await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, MAX_IN_FLIGHT)))))
    return ok


def run_jobs(jobs, concurrency, style):
    return asyncio.run(send_all(jobs, concurrency, style)), len(jobs), list(SEND_TIMES)


async def paced(users, rate, duration, offset, stride, style):
    """Message i goes to users[i % n] at t0 + i / rate; this process sends every stride-th i."""
    layer = get_channel_layer()
    total = int(rate * duration)
    loop = asyncio.get_running_loop()
    t0 = loop.time() + 0.05
    slots = asyncio.Semaphore(MAX_IN_FLIGHT)
    tasks = []
    slip_max = 0.0

    async def one(user, i):
        try:
            return await group_send(layer, style, f"user_{user}", message(user, i))
        finally:
            slots.release()

    for i in range(offset, total, stride):
        due = t0 + i / rate
        now = loop.time()
        if due > now:
            await asyncio.sleep(due - now)
        # Waiting for a free slot (too many sends in flight) shows up as schedule slip.
        await slots.acquire()
        slip_max = max(slip_max, loop.time() - due)
        tasks.append(asyncio.ensure_future(one(users[i % len(users)], i)))
    results = await asyncio.gather(*tasks)
    return sum(results), len(results), slip_max, list(SEND_TIMES)


def paced_proc(args_tuple):
    users, rate, duration, offset, stride, style = args_tuple
    return asyncio.run(paced(users, rate, duration, offset, stride, style))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["broadcast", "per-user", "paced"])
    p.add_argument("--group", default="user_bcast00000")
    p.add_argument("--count", type=int, default=100)
    p.add_argument("--users-file")
    p.add_argument("--per-user", type=int, default=10)
    p.add_argument("--procs", type=int, default=1)
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--style", choices=["async", "sync"], default="async")
    a = p.parse_args()

    started = time.time()
    extra = {}
    if a.mode == "broadcast":
        username = a.group.removeprefix("user_")
        results = [run_jobs([(a.group, username, i) for i in range(a.count)], a.concurrency, a.style)]
    elif a.mode == "per-user":
        users = read_users(a.users_file)
        jobs = [(f"user_{u}", u, r) for r in range(a.per_user) for u in users]
        slices = [jobs[k :: a.procs] for k in range(a.procs)]
        if a.procs == 1:
            results = [run_jobs(jobs, a.concurrency, a.style)]
        else:
            with multiprocessing.get_context("fork").Pool(a.procs) as pool:
                results = pool.starmap(run_jobs, [(s, a.concurrency, a.style) for s in slices])
    else:
        users = read_users(a.users_file)
        work = [(users, a.rate, a.duration, k, a.procs, a.style) for k in range(a.procs)]
        if a.procs == 1:
            paced_results = [paced_proc(work[0])]
        else:
            with multiprocessing.get_context("fork").Pool(a.procs) as pool:
                paced_results = pool.map(paced_proc, work)
        results = [(ok, n, times) for ok, n, _, times in paced_results]
        extra["schedule_slip_max_ms"] = round(max(r[2] for r in paced_results) * 1000, 1)
    sent = sum(ok for ok, _, _ in results)
    errors = sum(n - ok for ok, n, _ in results)
    times = sorted(t for _, _, ts in results for t in ts)
    if times:
        pick = lambda q: round(times[min(len(times) - 1, int(q * len(times)))] * 1000, 2)  # noqa: E731
        extra["send_p50_ms"], extra["send_p99_ms"] = pick(0.50), pick(0.99)
        extra["send_max_ms"] = round(times[-1] * 1000, 2)
    elapsed = time.time() - started
    print(json.dumps({"mode": a.mode, "style": a.style, "procs": a.procs, "sent": sent,
                      "errors": errors, "elapsed_s": round(elapsed, 3),
                      "rate": round(sent / elapsed, 1), **extra}))
    if sent == 0 and errors:
        sys.exit(1)


if __name__ == "__main__":
    main()

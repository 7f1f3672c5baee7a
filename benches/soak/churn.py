"""Churn client for the soak: CLIENTS loops of connect, ping/pong, publish a user message through
herald's /api/publish and receive it, close; for DURATION seconds. Loopback only.

Run with: python churn.py --url ws://127.0.0.1:8000/ws/tasks/ --token T --duration 300
(benches/soak/run.sh starts herald and runs this for you.)

Authentication is herald's --trusted-user-header x-remote-user (test setups only).
Prints one JSON line at the end: {"cycles": N, "errors": E}.
"""

import argparse
import asyncio
import json
import time
from urllib.parse import urlsplit

from websockets.asyncio.client import connect


async def publish(host, port, token, user, text):
    body = json.dumps({"user": user, "message": {"type": "user.message", "message": text}})
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        (
            f"POST /api/publish HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}"
        ).encode()
    )
    await writer.drain()
    head = await reader.read()
    writer.close()
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"publish failed: {head[:80]!r}")


async def one_cycle(url, host, port, token, user, n):
    async with connect(url, additional_headers={"x-remote-user": user}) as ws:
        await ws.send('{"action": "ping"}')
        while json.loads(await ws.recv())["type"] != "pong":
            pass
        text = f"soak {n}"
        await publish(host, port, token, user, text)
        while True:
            frame = json.loads(await ws.recv())
            if frame.get("message") == text:
                return


async def loop(i, args, host, port, deadline, counts):
    n = 0
    while time.monotonic() < deadline:
        try:
            await asyncio.wait_for(
                one_cycle(args.url, host, port, args.token, f"soak{i}", n), timeout=10
            )
            counts["cycles"] += 1
        except Exception:  # noqa: BLE001 - counted and reported, the soak goes on
            counts["errors"] += 1
        n += 1


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--duration", type=float, default=300)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    parts = urlsplit(args.url)
    assert parts.hostname in ("127.0.0.1", "localhost", "::1"), "loopback only"
    deadline = time.monotonic() + args.duration
    counts = {"cycles": 0, "errors": 0}
    await asyncio.gather(
        *(loop(i, args, parts.hostname, parts.port, deadline, counts) for i in range(args.clients))
    )
    print(json.dumps(counts), flush=True)


if __name__ == "__main__":
    asyncio.run(main())

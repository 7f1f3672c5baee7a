"""Holds one WebSocket per session key (the keys file, one a line) open on herald's /ws/tasks/.

Run with: python hold.py --url ws://127.0.0.1:PORT/ws/tasks/ --keys FILE
(benches/revalidation/run.sh starts everything for you.) Loopback only.

Prints {"open": N} once every socket is open, then, whenever sockets close, one line
{"closed": TOTAL, "codes": {"4401": n, ...}}; runs until killed.
"""

import argparse
import asyncio
import json
import sys
from collections import Counter

from websockets.asyncio.client import connect

HANDSHAKES_IN_FLIGHT = 100


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--keys", required=True)
    args = parser.parse_args()
    keys = open(args.keys).read().split()
    gate = asyncio.Semaphore(HANDSHAKES_IN_FLIGHT)
    codes = Counter()
    changed = asyncio.Event()

    async def one(key):
        async with gate:
            ws = await connect(
                args.url,
                additional_headers={"Cookie": f"sessionid={key}"},
                open_timeout=60,
                ping_interval=None,
                max_queue=4,
            )
        return ws

    sockets = await asyncio.gather(*(one(k) for k in keys))
    print(json.dumps({"open": len(sockets)}), flush=True)

    async def watch(ws):
        await ws.wait_closed()
        codes[str(ws.close_code)] += 1
        changed.set()

    watchers = [asyncio.create_task(watch(ws)) for ws in sockets]
    while True:
        await changed.wait()
        changed.clear()
        await asyncio.sleep(0.5)
        print(json.dumps({"closed": sum(codes.values()), "codes": dict(codes)}), flush=True)
    del watchers


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
